//! Who is speaking, from the RFC 6464 audio levels in the packets' header extensions (never
//! from the payload): a level meter per participant, a ranking per room every
//! [`SPEAKER_INTERVAL`], and the dominant speaker with some hysteresis so the
//! announcement does not flap between two people talking at once.
//!
//! The ranking drives what the SFU forwards in big rooms: video of the first N (last-N),
//! and above a room size, audio of the few loudest only.

use super::ParticipantId;
use std::time::{Duration, Instant};

/// How often rooms are ranked and the dominant speaker is chosen.
pub const SPEAKER_INTERVAL: Duration = Duration::from_millis(300);
/// Someone who spoke within this long still counts as speaking.
const STILL_SPEAKING: Duration = Duration::from_millis(1500);
/// A challenger must be this much louder (in the meter's 0–127 scale, ≈ dB) to take the
/// floor from a dominant speaker who is still talking.
const TAKEOVER_MARGIN: f32 = 3.0;
/// Weight of the newest interval in the smoothed level.
const SMOOTHING: f32 = 0.5;

/// One participant's speech level.
#[derive(Debug, Clone, Default)]
pub struct SpeechMeter {
    sum: u32,
    n: u32,
    /// The smoothed loudness, 0 (silence) to 127 (0 dBov).
    pub loudness: f32,
    /// When its packets last said "voice".
    pub last_spoke: Option<Instant>,
}

impl SpeechMeter {
    /// One audio packet's level: str0m gives RFC 6464's value as `-dBov` (0 loudest,
    /// -127 silence), and the voice-activity bit.
    pub fn observe(&mut self, level: i8, voice: bool, now: Instant) {
        if voice {
            let loudness = 127 - u32::from(level.unsigned_abs().min(127));
            self.sum += loudness;
            self.n += 1;
            self.last_spoke = Some(now);
        }
    }

    /// Folds the interval's packets into the smoothed level.
    pub fn tick(&mut self) {
        let interval = if self.n == 0 {
            0.0
        } else {
            self.sum as f32 / self.n as f32
        };
        self.loudness = SMOOTHING * interval + (1.0 - SMOOTHING) * self.loudness;
        self.sum = 0;
        self.n = 0;
    }

    /// Whether it spoke recently.
    pub fn speaking(&self, now: Instant) -> bool {
        self.last_spoke
            .is_some_and(|t| now.saturating_duration_since(t) < STILL_SPEAKING)
    }
}

/// Ranks `members` (in join order, with their meters): people speaking first, loudest
/// first; then the rest, most recent speaker first, then join order.
pub fn rank(members: &[(ParticipantId, &SpeechMeter)], now: Instant) -> Vec<ParticipantId> {
    let mut order: Vec<(usize, ParticipantId, bool, f32, Option<Instant>)> = members
        .iter()
        .enumerate()
        .map(|(i, (id, m))| (i, *id, m.speaking(now), m.loudness, m.last_spoke))
        .collect();
    order.sort_by(|a, b| {
        b.2.cmp(&a.2)
            .then_with(|| {
                if a.2 {
                    b.3.total_cmp(&a.3)
                } else {
                    b.4.cmp(&a.4)
                }
            })
            .then_with(|| a.0.cmp(&b.0))
    });
    order.into_iter().map(|o| o.1).collect()
}

/// The dominant speaker after this interval: the current one keeps the floor while it is
/// speaking unless the top-ranked speaker is [`TAKEOVER_MARGIN`] louder.
pub fn dominant(
    current: Option<ParticipantId>,
    ranking: &[ParticipantId],
    meter: impl Fn(ParticipantId) -> Option<(bool, f32)>,
) -> Option<ParticipantId> {
    let top = *ranking.first()?;
    let (top_speaking, top_loud) = meter(top)?;
    if !top_speaking {
        return current.filter(|c| meter(*c).is_some());
    }
    match current.and_then(|c| meter(c).map(|m| (c, m))) {
        Some((c, (true, loud))) if c != top && top_loud < loud + TAKEOVER_MARGIN => Some(c),
        _ => Some(top),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn meters(levels: &[(u64, Option<i8>)], now: Instant) -> HashMap<ParticipantId, SpeechMeter> {
        levels
            .iter()
            .map(|(id, level)| {
                let mut m = SpeechMeter::default();
                if let Some(l) = level {
                    for _ in 0..15 {
                        m.observe(*l, true, now);
                    }
                }
                m.tick();
                (ParticipantId(*id), m)
            })
            .collect()
    }

    #[test]
    fn speakers_rank_by_loudness_then_recency_then_join_order() {
        let now = Instant::now();
        let m = meters(&[(1, None), (2, Some(-40)), (3, Some(-10)), (4, None)], now);
        let members: Vec<(ParticipantId, &SpeechMeter)> = (1..=4)
            .map(|i| (ParticipantId(i), &m[&ParticipantId(i)]))
            .collect();
        let r = rank(&members, now);
        assert_eq!(r, [3, 2, 1, 4].map(ParticipantId));
        // After 2 s of silence nobody is speaking: the most recent speakers come first.
        let later = now + Duration::from_secs(2);
        assert_eq!(rank(&members, later), [2, 3, 1, 4].map(ParticipantId));
    }

    #[test]
    fn the_floor_changes_only_for_a_clearly_louder_voice() {
        let now = Instant::now();
        let m = meters(&[(1, Some(-20)), (2, Some(-19)), (3, Some(-5))], now);
        let look = |p: ParticipantId| m.get(&p).map(|m| (m.speaking(now), m.loudness));
        let ids = |v: &[u64]| v.iter().map(|i| ParticipantId(*i)).collect::<Vec<_>>();
        // 2 is a hair louder than the current speaker 1: 1 keeps the floor.
        assert_eq!(
            dominant(Some(ParticipantId(1)), &ids(&[2, 1]), look),
            Some(ParticipantId(1))
        );
        // 3 is much louder: it takes it.
        assert_eq!(
            dominant(Some(ParticipantId(1)), &ids(&[3, 2, 1]), look),
            Some(ParticipantId(3))
        );
        // Nobody yet: the top speaker.
        assert_eq!(dominant(None, &ids(&[2, 1]), look), Some(ParticipantId(2)));
    }

    #[test]
    fn silence_decays_the_meter() {
        let now = Instant::now();
        let mut m = SpeechMeter::default();
        for _ in 0..15 {
            m.observe(-10, true, now);
        }
        m.tick();
        let loud = m.loudness;
        m.tick();
        m.tick();
        assert!(m.loudness < loud / 3.0);
        // Packets without the voice bit (DTX comfort noise, or marked silent) count for nothing.
        let mut q = SpeechMeter::default();
        q.observe(-10, false, now);
        q.tick();
        assert_eq!(q.loudness, 0.0);
        assert!(!q.speaking(now));
    }
}
