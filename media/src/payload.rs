//! What sotto puts inside an SFrame: a one-byte header, an optional capture stamp, then
//! the codec's bytes. Encrypted whole, so the SFU sees none of it.
//!
//! ```text
//! +--------+------------------------+-----------------------------+----------------+
//! | flags  | id (u64 BE, if stamped) | capture µs (u64 BE, if st.) | codec bytes... |
//! +--------+------------------------+-----------------------------+----------------+
//! ```
//! `flags` bit 0: stamped; bits 1-7 must be zero. The capture time is Unix microseconds,
//! the same clock for every process on a machine, so the bench measures capture-to-playout
//! across processes.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const STAMPED: u8 = 0x01;

/// A frame's id and capture time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Frame id.
    pub id: u64,
    /// Capture time, Unix microseconds.
    pub captured_us: u64,
}

/// Why a decrypted payload is not ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// Empty, or shorter than its header says.
    #[error("payload truncated")]
    Truncated,
    /// Reserved flag bits set.
    #[error("unknown payload flags {0:#04x}")]
    UnknownFlags(u8),
}

/// Writes `[flags][stamp?]codec` into `out` (cleared first).
pub fn encode(stamp: Option<Stamp>, codec: &[u8], out: &mut Vec<u8>) {
    out.clear();
    match stamp {
        Some(s) => {
            out.reserve(17 + codec.len());
            out.push(STAMPED);
            out.extend_from_slice(&s.id.to_be_bytes());
            out.extend_from_slice(&s.captured_us.to_be_bytes());
        }
        None => {
            out.reserve(1 + codec.len());
            out.push(0);
        }
    }
    out.extend_from_slice(codec);
}

/// Splits a decrypted payload into its stamp and codec bytes.
pub fn decode(payload: &[u8]) -> Result<(Option<Stamp>, &[u8]), PayloadError> {
    let (&flags, rest) = payload.split_first().ok_or(PayloadError::Truncated)?;
    if flags & !STAMPED != 0 {
        return Err(PayloadError::UnknownFlags(flags));
    }
    if flags & STAMPED == 0 {
        return Ok((None, rest));
    }
    if rest.len() < 16 {
        return Err(PayloadError::Truncated);
    }
    let (id, rest) = rest.split_at(8);
    let (us, codec) = rest.split_at(8);
    let stamp = Stamp {
        id: u64::from_be_bytes(id.try_into().map_err(|_| PayloadError::Truncated)?),
        captured_us: u64::from_be_bytes(us.try_into().map_err(|_| PayloadError::Truncated)?),
    };
    Ok((Some(stamp), codec))
}

/// Maps this process's monotonic [`Instant`]s to Unix microseconds and back, anchored once.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    anchor: Instant,
    anchor_us: u64,
}

impl WallClock {
    /// Anchors now.
    pub fn new() -> Self {
        let anchor_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        Self {
            anchor: Instant::now(),
            anchor_us,
        }
    }

    /// Unix microseconds of `t`.
    pub fn micros(&self, t: Instant) -> u64 {
        match t.checked_duration_since(self.anchor) {
            Some(d) => self.anchor_us + u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            None => self
                .anchor_us
                .saturating_sub(u64::try_from((self.anchor - t).as_micros()).unwrap_or(u64::MAX)),
        }
    }

    /// Time from a stamp's capture to `now`.
    pub fn since(&self, captured_us: u64, now: Instant) -> Duration {
        Duration::from_micros(self.micros(now).saturating_sub(captured_us))
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_hostile_inputs() {
        let mut out = Vec::new();
        let s = Stamp {
            id: 7,
            captured_us: 1_700_000_000_000_000,
        };
        encode(Some(s), b"opus", &mut out);
        assert_eq!(decode(&out), Ok((Some(s), &b"opus"[..])));
        encode(None, b"x", &mut out);
        assert_eq!(decode(&out), Ok((None, &b"x"[..])));
        assert_eq!(decode(&[]), Err(PayloadError::Truncated));
        assert_eq!(decode(&[1, 2, 3]), Err(PayloadError::Truncated));
        assert_eq!(decode(&[0x80]), Err(PayloadError::UnknownFlags(0x80)));
    }

    #[test]
    fn wall_clock_is_consistent() {
        let c = WallClock::new();
        let t = Instant::now();
        let later = t + Duration::from_millis(25);
        assert_eq!(c.micros(later) - c.micros(t), 25_000);
        assert_eq!(c.since(c.micros(t), later), Duration::from_millis(25));
    }
}
