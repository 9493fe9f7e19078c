//! The RTP header extensions the SFU reads in the clear (authenticated by SRTP): audio
//! level (RFC 6464) for active-speaker detection and video frame marking (RFC 9626, short
//! non-scalable form and the long scalable form) for frame boundaries, keyframes and
//! layers. Values only; the one- or two-byte extension framing is the RTP stack's.

/// RFC 6464 URI.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
/// RFC 9626 URI.
pub const FRAME_MARKING_URI: &str = "urn:ietf:params:rtp-hdrext:framemarking";
/// Transport-wide congestion control sequence number.
pub const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// RFC 6464: voice activity and level in -dBov (0 loudest, 127 silence).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AudioLevel {
    /// The sender's voice activity flag.
    pub voice: bool,
    /// Level in -dBov, 0..=127.
    pub level: u8,
}

impl AudioLevel {
    /// The one-byte value.
    pub fn encode(self) -> [u8; 1] {
        [(if self.voice { 0x80 } else { 0 }) | self.level.min(127)]
    }

    /// Reads the value (first byte; any padding after it is ignored).
    pub fn parse(data: &[u8]) -> Option<Self> {
        let b = *data.first()?;
        Some(Self {
            voice: b & 0x80 != 0,
            level: b & 0x7f,
        })
    }

    /// The level of 16-bit samples in -dBov (RMS against full scale), as RFC 6464 defines.
    pub fn of_samples(samples: &[i16], voice: bool) -> Self {
        if samples.is_empty() {
            return Self { voice, level: 127 };
        }
        let mean_sq = samples
            .iter()
            .map(|&s| f64::from(s) * f64::from(s))
            .sum::<f64>()
            / samples.len() as f64;
        let rms = mean_sq.sqrt() / f64::from(i16::MAX);
        let dbov = if rms <= 0.0 {
            127.0
        } else {
            (-20.0 * rms.log10()).clamp(0.0, 127.0)
        };
        Self {
            voice,
            level: dbov.round() as u8,
        }
    }
}

/// RFC 9626 frame marking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FrameMarking {
    /// First packet of a frame.
    pub start: bool,
    /// Last packet of a frame.
    pub end: bool,
    /// Independent frame (keyframe).
    pub independent: bool,
    /// Discardable frame (no other frame depends on it).
    pub discardable: bool,
    /// Base-layer sync (scalable form only).
    pub base_sync: bool,
    /// Temporal layer id, 0..=7.
    pub tid: u8,
    /// Spatial/quality layer id (scalable form only).
    pub lid: Option<u8>,
    /// Temporal layer 0 picture index (scalable form only).
    pub tl0_pic_idx: Option<u8>,
}

impl FrameMarking {
    /// The extension value: 1 byte (non-scalable), 2 (with LID) or 3 (with TL0PICIDX).
    pub fn encode(&self) -> Vec<u8> {
        let mut b0 = 0u8;
        b0 |= if self.start { 0x80 } else { 0 };
        b0 |= if self.end { 0x40 } else { 0 };
        b0 |= if self.independent { 0x20 } else { 0 };
        b0 |= if self.discardable { 0x10 } else { 0 };
        let mut v = vec![b0];
        if let Some(lid) = self.lid {
            v[0] |= (if self.base_sync { 0x08 } else { 0 }) | (self.tid & 0x07);
            v.push(lid);
            if let Some(idx) = self.tl0_pic_idx {
                v.push(idx);
            }
        } else {
            v[0] |= self.tid & 0x07;
        }
        v
    }

    /// Reads a value of 1 to 3 bytes.
    pub fn parse(data: &[u8]) -> Option<Self> {
        let b0 = *data.first()?;
        if data.len() > 3 {
            return None;
        }
        Some(Self {
            start: b0 & 0x80 != 0,
            end: b0 & 0x40 != 0,
            independent: b0 & 0x20 != 0,
            discardable: b0 & 0x10 != 0,
            base_sync: data.len() > 1 && b0 & 0x08 != 0,
            tid: b0 & 0x07,
            lid: data.get(1).copied(),
            tl0_pic_idx: data.get(2).copied(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_level_roundtrip_and_measure() {
        let a = AudioLevel {
            voice: true,
            level: 42,
        };
        assert_eq!(a.encode(), [0x80 | 42]);
        assert_eq!(AudioLevel::parse(&a.encode()), Some(a));
        assert_eq!(AudioLevel::of_samples(&[0; 960], false).level, 127);
        let full: Vec<i16> = (0..960)
            .map(|i| if i % 2 == 0 { i16::MAX } else { -i16::MAX })
            .collect();
        assert_eq!(AudioLevel::of_samples(&full, true).level, 0);
        assert_eq!(AudioLevel::parse(&[]), None);
    }

    #[test]
    fn frame_marking_short_and_long_forms() {
        let key = FrameMarking {
            start: true,
            end: true,
            independent: true,
            ..Default::default()
        };
        assert_eq!(key.encode(), vec![0xe0]);
        assert_eq!(FrameMarking::parse(&[0xe0]), Some(key));
        let scal = FrameMarking {
            start: true,
            tid: 2,
            lid: Some(1),
            tl0_pic_idx: Some(9),
            base_sync: true,
            ..Default::default()
        };
        assert_eq!(scal.encode(), vec![0x80 | 0x08 | 2, 1, 9]);
        assert_eq!(FrameMarking::parse(&scal.encode()), Some(scal));
        assert_eq!(FrameMarking::parse(&[0; 4]), None);
    }
}
