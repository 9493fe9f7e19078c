//! The layout of an MLS-derived SFrame key id (RFC 9605 §5.2):
//!
//! ```text
//! +----------------------+--------------------+-----------------+
//! | context id (rest)    | sender index (S)   | epoch mod 2^E   |
//! +----------------------+--------------------+-----------------+
//! ```
//! The context id separates the media kinds one sender encrypts (audio, video, screen,
//! data), so each gets its own key and counter space. The sender index is the sender's MLS
//! leaf index, which is what the SFU checks against the participant a packet came from.

/// What a key protects. Each kind has its own key per sender and epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ContextId {
    /// Microphone audio.
    Audio = 0,
    /// Camera video.
    Video = 1,
    /// Screen share.
    Screen = 2,
    /// Application data (chat, reactions) sent over the media path.
    Data = 3,
}

impl ContextId {
    /// All contexts, in KID order.
    pub const ALL: [ContextId; 4] = [Self::Audio, Self::Video, Self::Screen, Self::Data];

    /// The context for a raw KID field value, if it names one.
    pub fn from_raw(raw: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|c| *c as u64 == raw)
    }
}

/// How many bits of the KID carry the epoch and the sender index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KidLayout {
    epoch_bits: u8,
    index_bits: u8,
}

/// The fields of a key id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KidParts {
    /// What the key protects.
    pub context: ContextId,
    /// The sender's MLS leaf index.
    pub sender_index: u32,
    /// The low `epoch_bits` of the MLS epoch.
    pub epoch_bits: u64,
}

/// Why a key id cannot be built or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KidError {
    /// Epoch and index bits leave no room for the context id.
    #[error(
        "KID layout with {epoch_bits} epoch bits and {index_bits} index bits leaves no room for a context"
    )]
    BadLayout {
        /// Requested epoch bits.
        epoch_bits: u8,
        /// Requested index bits.
        index_bits: u8,
    },
    /// The sender index does not fit in the layout's index bits.
    #[error("sender index {index} does not fit in {bits} bits")]
    IndexTooLarge {
        /// The index.
        index: u32,
        /// Bits available.
        bits: u8,
    },
    /// The KID's context field names no known context.
    #[error("KID {kid:#x} names unknown context {context}")]
    UnknownContext {
        /// The key id.
        kid: u64,
        /// Its context field.
        context: u64,
    },
}

impl Default for KidLayout {
    /// 8 epoch bits and 14 index bits: up to 16384 leaves, and every KID of the four
    /// contexts fits in 3 bytes, so an SFrame header costs at most 1 + 3 + CTR bytes.
    fn default() -> Self {
        Self {
            epoch_bits: 8,
            index_bits: 14,
        }
    }
}

impl KidLayout {
    /// A layout with `epoch_bits` (E) and `index_bits` (S), leaving at least 2 bits of context.
    pub fn new(epoch_bits: u8, index_bits: u8) -> Result<Self, KidError> {
        if u32::from(epoch_bits) + u32::from(index_bits) > 62 || index_bits > 32 {
            return Err(KidError::BadLayout {
                epoch_bits,
                index_bits,
            });
        }
        Ok(Self {
            epoch_bits,
            index_bits,
        })
    }

    /// Bits of the epoch carried (E).
    pub fn epoch_bits(&self) -> u8 {
        self.epoch_bits
    }

    /// Bits of the sender index carried (S).
    pub fn index_bits(&self) -> u8 {
        self.index_bits
    }

    /// The low E bits of an epoch, as they appear in a KID.
    pub fn epoch_tag(&self, epoch: u64) -> u64 {
        epoch & mask(self.epoch_bits)
    }

    /// Builds the KID for `context`, `sender_index` and `epoch`.
    pub fn kid(&self, context: ContextId, sender_index: u32, epoch: u64) -> Result<u64, KidError> {
        if u64::from(sender_index) > mask(self.index_bits) {
            return Err(KidError::IndexTooLarge {
                index: sender_index,
                bits: self.index_bits,
            });
        }
        let shift = u32::from(self.epoch_bits) + u32::from(self.index_bits);
        Ok(((context as u64) << shift)
            | (u64::from(sender_index) << self.epoch_bits)
            | self.epoch_tag(epoch))
    }

    /// Splits a KID into its fields. Needs no key: the SFU uses this for sender binding.
    pub fn parse(&self, kid: u64) -> Result<KidParts, KidError> {
        let shift = u32::from(self.epoch_bits) + u32::from(self.index_bits);
        let raw_context = kid >> shift;
        let context = ContextId::from_raw(raw_context).ok_or(KidError::UnknownContext {
            kid,
            context: raw_context,
        })?;
        // `index_bits <= 32`, so the masked value fits in u32.
        let sender_index = ((kid >> self.epoch_bits) & mask(self.index_bits)) as u32;
        Ok(KidParts {
            context,
            sender_index,
            epoch_bits: self.epoch_tag(kid),
        })
    }
}

fn mask(bits: u8) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_every_context() {
        let layout = KidLayout::default();
        for context in ContextId::ALL {
            for (index, epoch) in [(0u32, 0u64), (1, 1), (16383, 255), (42, 1000)] {
                let kid = layout.kid(context, index, epoch).expect("fits");
                assert!(kid < 1 << 24, "default layout keeps KIDs in 3 bytes");
                let parts = layout.parse(kid).expect("parses");
                assert_eq!(parts.context, context);
                assert_eq!(parts.sender_index, index);
                assert_eq!(parts.epoch_bits, epoch % 256);
            }
        }
    }

    #[test]
    fn rejects_oversized_index_and_unknown_context() {
        let layout = KidLayout::default();
        assert_eq!(
            layout.kid(ContextId::Audio, 1 << 14, 0),
            Err(KidError::IndexTooLarge {
                index: 1 << 14,
                bits: 14
            })
        );
        assert!(matches!(
            layout.parse(4 << 22),
            Err(KidError::UnknownContext { context: 4, .. })
        ));
        assert!(KidLayout::new(40, 30).is_err());
    }
}
