//! The SFrame header of RFC 9605 §4.3: a config byte, then the key id and the counter as
//! compact big-endian integers.
//!
//! ```text
//!  0 1 2 3 4 5 6 7
//! +-+-+-+-+-+-+-+-+---------+---------+
//! |X|  K  |Y|  C  |  KID... |  CTR... |
//! +-+-+-+-+-+-+-+-+---------+---------+
//! ```
//! A value below 8 sits in K (or C) with X (or Y) clear; otherwise X (or Y) is set and
//! K + 1 (or C + 1) bytes follow. The `sframe` crate encodes the same header when it
//! encrypts; this keyless copy exists so the SFU can read a sender's KID without linking any
//! code that can derive keys. Both are checked against the RFC's 289 header vectors.

/// The longest possible header: one config byte, 8 bytes of KID and 8 of CTR.
pub const MAX_HEADER_LEN: usize = 17;

/// A parsed SFrame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SframeHeader {
    /// Key id (KID): names the key that encrypted the frame.
    pub kid: u64,
    /// Frame counter (CTR): the per-key nonce input, unique per frame.
    pub ctr: u64,
}

/// Why bytes are not an SFrame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The input is empty.
    #[error("empty SFrame header")]
    Empty,
    /// The config byte announces more bytes than there are.
    #[error("SFrame header needs {needed} bytes, only {available} present")]
    Truncated {
        /// Bytes the config byte announces.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
}

impl SframeHeader {
    /// Parses the header at the start of `buf`; returns it and its length in bytes.
    pub fn parse(buf: &[u8]) -> Result<(Self, usize), HeaderError> {
        let config = *buf.first().ok_or(HeaderError::Empty)?;
        let (kid_inline, kid_len) = field_shape(config >> 4);
        let (ctr_inline, ctr_len) = field_shape(config & 0x0f);
        let needed = 1 + kid_len + ctr_len;
        if buf.len() < needed {
            return Err(HeaderError::Truncated {
                needed,
                available: buf.len(),
            });
        }
        let kid = kid_inline.unwrap_or_else(|| read_be(&buf[1..1 + kid_len]));
        let ctr = ctr_inline.unwrap_or_else(|| read_be(&buf[1 + kid_len..needed]));
        Ok((Self { kid, ctr }, needed))
    }

    /// The encoded length of this header in bytes (1 to 17).
    pub fn encoded_len(&self) -> usize {
        1 + extended_len(self.kid) + extended_len(self.ctr)
    }

    /// Writes the header into the start of `out` and returns its length.
    ///
    /// # Errors
    /// [`HeaderError::Truncated`] when `out` is shorter than [`Self::encoded_len`].
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, HeaderError> {
        let len = self.encoded_len();
        if out.len() < len {
            return Err(HeaderError::Truncated {
                needed: len,
                available: out.len(),
            });
        }
        let kid_len = extended_len(self.kid);
        let ctr_len = extended_len(self.ctr);
        out[0] = (nibble(self.kid, kid_len) << 4) | nibble(self.ctr, ctr_len);
        write_be(self.kid, &mut out[1..1 + kid_len]);
        write_be(self.ctr, &mut out[1 + kid_len..len]);
        Ok(len)
    }
}

/// Splits one nibble of the config byte into an inline value or an extended length.
fn field_shape(nibble: u8) -> (Option<u64>, usize) {
    if nibble & 0x08 == 0 {
        (Some(u64::from(nibble & 0x07)), 0)
    } else {
        (None, usize::from(nibble & 0x07) + 1)
    }
}

/// Bytes a value takes after the config byte: 0 if it fits inline, else its minimal length.
fn extended_len(value: u64) -> usize {
    if value < 8 {
        0
    } else {
        // `value >= 8`, so at least one significant byte.
        8 - (value.leading_zeros() as usize / 8)
    }
}

fn nibble(value: u64, ext_len: usize) -> u8 {
    if ext_len == 0 {
        // Fits in three bits, checked by `extended_len`.
        (value & 0x07) as u8
    } else {
        // `ext_len` is 1..=8, so `ext_len - 1` fits in three bits.
        0x08 | ((ext_len - 1) as u8)
    }
}

fn read_be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

fn write_be(value: u64, out: &mut [u8]) {
    let be = value.to_be_bytes();
    out.copy_from_slice(&be[8 - out.len()..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_values_take_one_byte() {
        let h = SframeHeader { kid: 7, ctr: 3 };
        let mut out = [0u8; MAX_HEADER_LEN];
        assert_eq!(h.encode(&mut out), Ok(1));
        assert_eq!(out[0], 0x73);
        assert_eq!(SframeHeader::parse(&out[..1]), Ok((h, 1)));
    }

    #[test]
    fn truncated_and_empty_are_errors() {
        assert_eq!(SframeHeader::parse(&[]), Err(HeaderError::Empty));
        // X set with KLEN 2 (3 bytes of KID), only one present.
        assert_eq!(
            SframeHeader::parse(&[0xa0, 0x01]),
            Err(HeaderError::Truncated {
                needed: 4,
                available: 2
            })
        );
    }

    #[test]
    fn every_byte_string_parses_or_errors_and_reencodes_consistently() {
        // Exhaustive over the config byte with enough trailing bytes; non-minimal encodings
        // parse to the same values, and re-encoding is minimal and parses back identically.
        for config in 0u8..=255 {
            let mut buf = [0u8; MAX_HEADER_LEN];
            buf[0] = config;
            for (i, b) in buf.iter_mut().enumerate().skip(1) {
                *b = i as u8;
            }
            let (h, len) = SframeHeader::parse(&buf).expect("17 bytes always suffice");
            assert!(len <= MAX_HEADER_LEN);
            let mut out = [0u8; MAX_HEADER_LEN];
            let n = h.encode(&mut out).expect("buffer is large enough");
            assert!(n <= len);
            assert_eq!(SframeHeader::parse(&out[..n]), Ok((h, n)));
        }
    }
}
