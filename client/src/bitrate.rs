//! How a call spends the send-side bandwidth estimate: audio first (it is small and what
//! people notice), video gets what is left up to its configured ceiling.

/// Opus never goes below this (narrow but intelligible speech with FEC).
pub const AUDIO_MIN_BPS: u32 = 8_000;
/// Opus never goes above this (wideband speech is transparent well below it).
pub const AUDIO_MAX_BPS: u32 = 32_000;
/// Video is never asked for less than this; below it a frame rate drop does better.
pub const VIDEO_MIN_BPS: u32 = 50_000;
/// RTP, SRTP, SFrame and UDP/IP headers, per second, set aside from the estimate
/// (≈ 100 packets/s of ≈ 60 bytes).
pub const OVERHEAD_BPS: u32 = 48_000;

/// What each encoder is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    /// Opus target, bits per second.
    pub audio: u32,
    /// Video encoder target, bits per second (0 without video).
    pub video: u32,
}

/// Splits an estimate (bits per second, as the congestion controller gives it) between
/// audio and video. `video_max` is the configured video ceiling, or `None` without video.
pub fn split(estimate: u64, video_max: Option<u32>) -> Split {
    let est = u32::try_from(estimate).unwrap_or(u32::MAX);
    let audio = (est / 2).clamp(AUDIO_MIN_BPS, AUDIO_MAX_BPS);
    let video = match video_max {
        None => 0,
        Some(max) => est
            .saturating_sub(audio)
            .saturating_sub(OVERHEAD_BPS)
            .clamp(VIDEO_MIN_BPS.min(max), max),
    };
    Split { audio, video }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plenty_gives_both_their_ceiling() {
        assert_eq!(
            split(2_000_000, Some(800_000)),
            Split {
                audio: AUDIO_MAX_BPS,
                video: 800_000
            }
        );
        assert_eq!(split(2_000_000, None).audio, AUDIO_MAX_BPS);
    }

    #[test]
    fn audio_follows_a_falling_estimate_down_to_its_floor() {
        let rates: Vec<u32> = [64_000, 40_000, 24_000, 10_000, 0]
            .iter()
            .map(|e| split(*e, None).audio)
            .collect();
        assert_eq!(rates, vec![32_000, 20_000, 12_000, 8_000, 8_000]);
    }

    #[test]
    fn video_gets_what_audio_and_headers_leave() {
        let s = split(500_000, Some(800_000));
        assert_eq!(s.audio, AUDIO_MAX_BPS);
        assert_eq!(s.video, 500_000 - AUDIO_MAX_BPS - OVERHEAD_BPS);
        assert_eq!(split(60_000, Some(800_000)).video, VIDEO_MIN_BPS);
        assert_eq!(split(u64::MAX, Some(300_000)).video, 300_000);
    }
}
