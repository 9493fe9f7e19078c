//! An adaptive jitter buffer for fixed-duration frames (Opus audio), sans-IO: frames and
//! time in, playout decisions out.
//!
//! Frames are indexed by `rtp_timestamp / samples_per_frame` (unwrapped by the caller), so
//! DTX pauses are gaps like any other. Playout runs on a schedule that starts at the first
//! frame's arrival plus the target delay and advances one frame per slot. For each slot the
//! buffer hands out the frame, or a concealment order (with the next frame's bytes when
//! present, for Opus in-band FEC). The target delay follows the interarrival jitter
//! (RFC 3550 §6.4.1 estimator): a frame that arrives after its slot stretches the schedule
//! by one frame; a buffer persistently deeper than the target skips one.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

/// Tuning.
#[derive(Clone, Copy, Debug)]
pub struct JitterConfig {
    /// Duration of one frame.
    pub frame: Duration,
    /// Least playout delay.
    pub min_delay: Duration,
    /// Most playout delay.
    pub max_delay: Duration,
    /// Frames held at most; beyond that the oldest is dropped.
    pub capacity: usize,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            frame: Duration::from_millis(20),
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(300),
            capacity: 64,
        }
    }
}

/// What to play in one slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Playout {
    /// The frame for this slot.
    Frame {
        /// Its index.
        index: u64,
        /// Its bytes.
        payload: Vec<u8>,
    },
    /// Nothing arrived for this slot: conceal it. `next` holds the following frame's bytes
    /// when that is already here, so a decoder can recover this one from its FEC data.
    Conceal {
        /// The missing index, or `None` for a stretch (an extra slot to add delay).
        index: Option<u64>,
        /// The next frame, if buffered.
        next: Option<Vec<u8>>,
    },
}

/// What happened to a pushed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Buffered for playout.
    Accepted,
    /// Its slot has passed.
    Late,
    /// Already buffered or played.
    Duplicate,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Frames accepted.
    pub received: u64,
    /// Frames played.
    pub played: u64,
    /// Slots concealed (missing frames and stretches).
    pub concealed: u64,
    /// Frames that arrived after their slot.
    pub late: u64,
    /// Duplicates ignored.
    pub duplicates: u64,
    /// Frames dropped to cut latency or for lack of room.
    pub dropped: u64,
}

/// The buffer.
#[derive(Debug)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    frames: BTreeMap<u64, Vec<u8>>,
    next_index: Option<u64>,
    next_at: Option<Instant>,
    /// Interarrival jitter estimate, seconds.
    jitter: f64,
    prev_transit: Option<f64>,
    origin: Option<Instant>,
    /// Slots in a row the buffer was deeper than it needs to be.
    deep_slots: u32,
    stats: JitterStats,
}

impl JitterBuffer {
    /// An empty buffer.
    pub fn new(cfg: JitterConfig) -> Self {
        Self {
            cfg,
            frames: BTreeMap::new(),
            next_index: None,
            next_at: None,
            jitter: 0.0,
            prev_transit: None,
            origin: None,
            deep_slots: 0,
            stats: JitterStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// The delay the buffer aims for now: one frame plus four times the jitter, clamped.
    pub fn target_delay(&self) -> Duration {
        let d = self.cfg.frame.as_secs_f64() + 4.0 * self.jitter;
        Duration::from_secs_f64(d).clamp(self.cfg.min_delay, self.cfg.max_delay)
    }

    /// The target in whole frames, rounding up but forgiving a millisecond, so that a
    /// decayed jitter estimate of a few microseconds does not cost a whole frame.
    fn target_frames(&self) -> u64 {
        let frames = (self.target_delay().as_secs_f64() - 0.001) / self.cfg.frame.as_secs_f64();
        (frames.ceil() as u64).max(1)
    }

    /// Adds the frame `index` that arrived at `arrival`.
    pub fn push(&mut self, index: u64, arrival: Instant, payload: Vec<u8>) -> Pushed {
        // A frame far ahead of the schedule with nothing buffered: the sender restarted or
        // a long pause ended. Start a new schedule (and a new jitter baseline) from it
        // rather than conceal the whole gap.
        let horizon = 2 * (self.cfg.max_delay.as_nanos() / self.cfg.frame.as_nanos().max(1)) as u64;
        if let Some(next) = self.next_index
            && self.frames.is_empty()
            && index > next + horizon
        {
            self.next_index = None;
            self.origin = None;
            self.prev_transit = None;
        }
        self.update_jitter(index, arrival);
        match self.next_index {
            None => {
                self.next_index = Some(index);
                self.next_at = Some(arrival + self.target_delay());
            }
            Some(next) if index < next => {
                self.stats.late += 1;
                // Evidence the delay is too short: add one frame of delay.
                if self.target_delay() + self.cfg.frame <= self.cfg.max_delay {
                    self.next_at = self.next_at.map(|t| t + self.cfg.frame);
                }
                return Pushed::Late;
            }
            Some(_) => {}
        }
        if self.frames.contains_key(&index) {
            self.stats.duplicates += 1;
            return Pushed::Duplicate;
        }
        self.frames.insert(index, payload);
        self.stats.received += 1;
        while self.frames.len() > self.cfg.capacity {
            if let Some((dropped, _)) = self.frames.pop_first() {
                self.stats.dropped += 1;
                if Some(dropped) == self.next_index {
                    self.next_index = Some(dropped + 1);
                }
            }
        }
        Pushed::Accepted
    }

    fn update_jitter(&mut self, index: u64, arrival: Instant) {
        let origin = *self.origin.get_or_insert(arrival);
        let transit = arrival.saturating_duration_since(origin).as_secs_f64()
            - index as f64 * self.cfg.frame.as_secs_f64();
        if let Some(prev) = self.prev_transit {
            let d = (transit - prev).abs();
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.prev_transit = Some(transit);
    }

    /// When the next slot is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_at
    }

    /// The decision for the slot due at or before `now`, if any. Call it again until it
    /// returns `None`; each call consumes one slot.
    pub fn poll(&mut self, now: Instant) -> Option<Playout> {
        let (index, at) = (self.next_index?, self.next_at?);
        if now < at {
            return None;
        }
        self.next_at = Some(at + self.cfg.frame);
        self.next_index = Some(index + 1);
        let out = match self.frames.remove(&index) {
            Some(payload) => {
                self.stats.played += 1;
                Playout::Frame { index, payload }
            }
            None => {
                self.stats.concealed += 1;
                Playout::Conceal {
                    index: Some(index),
                    next: self.frames.get(&(index + 1)).cloned(),
                }
            }
        };
        self.trim_depth();
        Some(out)
    }

    /// If the buffer has held more than the target for a second (or far more for a
    /// moment), drop the oldest buffered frame to cut a frame of latency. This is what
    /// brings the delay back down after a late frame stretched it.
    fn trim_depth(&mut self) {
        let Some(next) = self.next_index else { return };
        let depth = self.frames.range(next..).count() as u64;
        let target = self.target_frames();
        if depth > target {
            self.deep_slots += 1;
        } else {
            self.deep_slots = 0;
        }
        let patience = if depth > target + 2 { 10 } else { 50 };
        if self.deep_slots >= patience && self.frames.remove(&next).is_some() {
            self.next_index = Some(next + 1);
            self.stats.dropped += 1;
            self.deep_slots = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: Duration = Duration::from_millis(20);

    /// Plays everything due up to `until`, in 1 ms steps.
    fn drain(jb: &mut JitterBuffer, from: Instant, until: Instant) -> Vec<(Instant, Playout)> {
        let mut out = Vec::new();
        let mut t = from;
        while t <= until {
            while let Some(p) = jb.poll(t) {
                out.push((t, p));
            }
            t += Duration::from_millis(1);
        }
        out
    }

    /// Drives time in 1 ms steps: frames are pushed when they arrive, slots polled when due.
    fn simulate(
        jb: &mut JitterBuffer,
        t0: Instant,
        mut arrivals: Vec<(u64, Instant)>,
        until: Instant,
    ) -> Vec<(Instant, Playout)> {
        arrivals.sort_by_key(|a| a.1);
        let mut out = Vec::new();
        let mut next = 0;
        let mut t = t0;
        while t <= until {
            while next < arrivals.len() && arrivals[next].1 <= t {
                let (i, at) = arrivals[next];
                jb.push(i, at, vec![i as u8]);
                next += 1;
            }
            while let Some(p) = jb.poll(t) {
                out.push((t, p));
            }
            t += Duration::from_millis(1);
        }
        out
    }

    fn indices(out: &[(Instant, Playout)]) -> Vec<Option<u64>> {
        out.iter()
            .map(|(_, p)| match p {
                Playout::Frame { index, .. } => Some(*index),
                Playout::Conceal { .. } => None,
            })
            .collect()
    }

    #[test]
    fn steady_stream_plays_in_order_at_min_delay() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let arrivals = (0..50u32).map(|i| (u64::from(i), t0 + F * i)).collect();
        let out = simulate(&mut jb, t0, arrivals, t0 + F * 60);
        assert_eq!(
            indices(&out),
            (0..50)
                .map(Some)
                .chain(std::iter::repeat_n(None, out.len() - 50))
                .collect::<Vec<_>>()
        );
        // First frame played one target delay after it arrived.
        assert_eq!(out[0].0, t0 + F);
        assert_eq!(jb.stats().concealed as usize, out.len() - 50);
    }

    #[test]
    fn reordering_inside_the_delay_is_repaired_and_loss_is_concealed_with_fec_data() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig {
            min_delay: F * 3,
            ..JitterConfig::default()
        });
        // 0, 2, 1 (swapped), 3 missing, 4 present.
        let arrivals = [(0u64, 0u64), (2, 40), (1, 45), (4, 80)]
            .iter()
            .map(|&(i, ms)| (i, t0 + Duration::from_millis(ms)))
            .collect();
        let out = simulate(&mut jb, t0, arrivals, t0 + F * 8);
        assert_eq!(
            &indices(&out)[..5],
            &[Some(0), Some(1), Some(2), None, Some(4)]
        );
        assert_eq!(
            out[3].1,
            Playout::Conceal {
                index: Some(3),
                next: Some(vec![4])
            }
        );
    }

    #[test]
    fn late_frames_are_refused_and_stretch_the_delay() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        jb.push(0, t0, vec![0]);
        let first = drain(&mut jb, t0, t0 + F * 2);
        assert_eq!(indices(&first)[..2], [Some(0), None]);
        let due_before = jb.poll_timeout().expect("scheduled");
        assert_eq!(jb.push(1, t0 + F * 2, vec![1]), Pushed::Late);
        assert_eq!(
            jb.poll_timeout(),
            Some(due_before + F),
            "one frame more delay"
        );
        assert_eq!(jb.stats().late, 1);
    }

    #[test]
    fn jitter_raises_the_target_delay() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        for i in 0..200u32 {
            let wobble = if i % 2 == 0 { 0 } else { 30 };
            jb.push(
                u64::from(i),
                t0 + F * i + Duration::from_millis(wobble),
                vec![],
            );
        }
        assert!(
            jb.target_delay() >= Duration::from_millis(100),
            "{:?}",
            jb.target_delay()
        );
    }

    #[test]
    fn a_burst_is_trimmed_back_toward_the_target() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        // 30 frames arrive at once (a stall released), then steady.
        for i in 0..30u64 {
            jb.push(i, t0, vec![]);
        }
        drain(&mut jb, t0, t0 + F * 30);
        assert!(jb.stats().dropped > 0, "latency was cut by skipping");
    }

    #[test]
    fn a_stretch_after_one_late_frame_is_undone_once_jitter_settles() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        // Frame 5 arrives 45 ms late (after its slot); everything else is on time.
        let arrivals = (0..200u32)
            .map(|i| {
                (
                    u64::from(i),
                    t0 + F * i
                        + if i == 5 {
                            Duration::from_millis(45)
                        } else {
                            Duration::ZERO
                        },
                )
            })
            .collect();
        let out = simulate(&mut jb, t0, arrivals, t0 + F * 200);
        assert_eq!(jb.stats().late, 1);
        // Frame 150 arrives at 150*20 ms; with the stretch undone it plays one frame later.
        let played_150 = out
            .iter()
            .find(|(_, p)| matches!(p, Playout::Frame { index: 150, .. }))
            .map(|(t, _)| *t)
            .expect("frame 150 played");
        assert!(
            played_150 <= t0 + F * 150 + F + Duration::from_millis(2),
            "delay back to one frame: {:?}",
            played_150 - (t0 + F * 150)
        );
    }

    #[test]
    fn duplicates_and_huge_jumps_are_handled() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        assert_eq!(jb.push(5, t0, vec![]), Pushed::Accepted);
        assert_eq!(jb.push(5, t0, vec![]), Pushed::Duplicate);
        drain(&mut jb, t0, t0 + F * 2);
        // A hostile or restarted sender jumps a billion frames: no billion concealments.
        jb.push(1_000_000_000, t0 + F * 3, vec![1]);
        let out = drain(&mut jb, t0 + F * 3, t0 + F * 6);
        assert!(out.iter().any(|(_, p)| matches!(
            p,
            Playout::Frame {
                index: 1_000_000_000,
                ..
            }
        )));
        assert!(out.len() < 10);
    }
}
