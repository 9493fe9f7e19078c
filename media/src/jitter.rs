//! An adaptive jitter buffer for fixed-duration frames (Opus audio), sans-IO: frames and
//! time in, playout decisions out.
//!
//! Frames are indexed by `rtp_timestamp / samples_per_frame` (unwrapped by the caller), so
//! DTX pauses are gaps like any other. Playout runs on a schedule that starts at the first
//! frame's arrival plus the target delay and advances one frame per slot. For each slot the
//! buffer hands out the frame, or a concealment order (with the next frame's bytes when
//! present, for Opus in-band FEC).
//!
//! The delay earns its keep: on a clean path it is a small margin plus four times the
//! interarrival jitter (RFC 3550 §6.4.1 estimator), well under a frame. Once a frame is
//! missing at its slot, the buffer waits one frame longer for a while
//! ([`JitterConfig::repair_memory`]), so that when the next one goes missing the frame
//! after it, whose in-band FEC rebuilds it, is already here. (Audio is never retransmitted,
//! so no longer wait could repair anything.) A frame that arrives after its slot stretches
//! the schedule by one frame; a buffer that kept a whole frame more than its target for a
//! second (or far more for a moment) skips one, which is how the delay comes back down.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

/// Tuning.
#[derive(Clone, Copy, Debug)]
pub struct JitterConfig {
    /// Duration of one frame.
    pub frame: Duration,
    /// Least playout delay: the margin kept on a clean path, on top of the jitter's.
    pub min_delay: Duration,
    /// Most playout delay.
    pub max_delay: Duration,
    /// Frames held at most; beyond that the oldest is dropped.
    pub capacity: usize,
    /// How long after a missing frame the buffer keeps one frame more delay for FEC.
    pub repair_memory: Duration,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            frame: Duration::from_millis(20),
            min_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(300),
            capacity: 64,
            repair_memory: Duration::from_secs(10),
        }
    }
}

/// Slots over which the least slack is taken before the delay may come down by a frame.
const TRIM_WINDOW: u32 = 50;
/// Windows in a row with a frame to spare before a late frame's stretch is undone, once
/// frames have been late more than once within [`LATE_MEMORY`]: a busy host is late now
/// and then, and each stretch costs a concealed slot, so the delay lateness asked for
/// stays until the path has been clean for a while (5 s). A one-off is undone after one.
const UNDO_LATE_WINDOWS: u32 = 5;
/// How long a late frame counts towards the patience above.
const LATE_MEMORY: Duration = Duration::from_secs(30);
/// Late frames remembered for it.
const LATES_KEPT: usize = 8;
/// Slots after which a buffer far deeper than its target skips a frame at once.
const TRIM_FAST: u32 = 10;
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
    /// Buffered frames by index: when each arrived, and its bytes.
    frames: BTreeMap<u64, (Instant, Vec<u8>)>,
    next_index: Option<u64>,
    next_at: Option<Instant>,
    /// Interarrival jitter estimate, seconds.
    jitter: f64,
    prev_transit: Option<f64>,
    origin: Option<Instant>,
    /// Until when the buffer keeps one frame more delay for FEC (a frame went missing).
    repair_until: Option<Instant>,
    /// What it was before the missing frame that last stretched the schedule.
    repair_before: Option<Instant>,
    /// Whether that wait was on at the last slot.
    repairing: bool,
    /// The next due slot is a stretch: one concealed slot more, to add a frame of delay.
    stretch_pending: bool,
    /// The missing frame that last stretched the schedule (its late arrival adds nothing).
    stretched_for: Option<u64>,
    /// Stretches for late frames not undone yet.
    late_stretches: u32,
    /// Whether the repair wait stretched the schedule (undone when the wait ends).
    repair_stretched: bool,
    /// Least slack (playout minus arrival, seconds) of the frames played this window.
    least_slack: f64,
    /// Slots in the current trim window, and whether any was late or missing.
    window: u32,
    window_clean: bool,
    /// Windows in a row that were clean with a frame to spare.
    spare_windows: u32,
    /// When the last few late frames arrived.
    lates: std::collections::VecDeque<Instant>,
    /// Slots in a row the buffer held far more frames than it needs.
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
            repair_until: None,
            repair_before: None,
            repairing: false,
            stretch_pending: false,
            stretched_for: None,
            late_stretches: 0,
            repair_stretched: false,
            least_slack: f64::INFINITY,
            window: 0,
            window_clean: true,
            spare_windows: 0,
            lates: std::collections::VecDeque::new(),
            deep_slots: 0,
            stats: JitterStats::default(),
        }
    }

    /// Empties the buffer for a new talk spurt of `frame`-long frames (a sender back from
    /// a pause, perhaps with another framing), with fresh counters and a new schedule,
    /// but keeping what it learned of the path: the jitter and a recent loss.
    pub fn restart(&mut self, frame: Duration) {
        let (jitter, repair_until) = (self.jitter, self.repair_until);
        let lates = std::mem::take(&mut self.lates);
        *self = Self::new(JitterConfig { frame, ..self.cfg });
        self.jitter = jitter;
        self.repair_until = repair_until;
        self.lates = lates;
    }

    /// Counters so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// The delay the buffer aims for now: the least delay plus four times the jitter, and
    /// one frame more while it waits for FEC after a loss; clamped.
    pub fn target_delay(&self) -> Duration {
        let repair = if self.repairing {
            self.cfg.frame.as_secs_f64()
        } else {
            0.0
        };
        let d = self.cfg.min_delay.as_secs_f64() + 4.0 * self.jitter + repair;
        Duration::from_secs_f64(d).clamp(self.cfg.min_delay, self.cfg.max_delay)
    }

    /// The target in whole frames, rounding up but forgiving a millisecond.
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
            // A new schedule: the old one's stretches and windows are not its.
            self.stretch_pending = false;
            self.stretched_for = None;
            self.late_stretches = 0;
            self.repair_stretched = false;
            self.window = 0;
            self.window_clean = true;
            self.spare_windows = 0;
            self.least_slack = f64::INFINITY;
        }
        self.update_jitter(index, arrival);
        match self.next_index {
            None => {
                self.repairing = self.repair_until.is_some_and(|until| arrival < until);
                self.next_index = Some(index);
                self.next_at = Some(arrival + self.target_delay());
            }
            Some(next) if index < next => {
                self.stats.late += 1;
                self.window_clean = false;
                if self.lates.len() >= LATES_KEPT {
                    self.lates.pop_front();
                }
                self.lates.push_back(arrival);
                if self.stretched_for == Some(index) {
                    // The frame that started the FEC wait was late, not lost: its stretch
                    // stays, but as a late frame's (undone once jitter settles), and the
                    // wait it started ends.
                    if std::mem::take(&mut self.repair_stretched) {
                        self.repair_until = self.repair_before;
                        self.late_stretches += 1;
                    }
                } else if self.stretch() {
                    // Evidence the delay is too short.
                    self.late_stretches += 1;
                }
                return Pushed::Late;
            }
            Some(_) => {}
        }
        if self.frames.contains_key(&index) {
            self.stats.duplicates += 1;
            return Pushed::Duplicate;
        }
        self.frames.insert(index, (arrival, payload));
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

    /// Plays one concealed slot more at the next due time, if the delay may grow and no
    /// stretch is pending already; whether it will.
    fn stretch(&mut self) -> bool {
        // The delay now: the target the schedule started from and every stretch since.
        let stretches = self.late_stretches + u32::from(self.repair_stretched) + 1;
        let grow = !self.stretch_pending
            && self.target_delay() + self.cfg.frame * stretches <= self.cfg.max_delay;
        self.stretch_pending |= grow;
        grow
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
        self.repairing = self.repair_until.is_some_and(|until| now < until);
        if std::mem::take(&mut self.stretch_pending) {
            self.stats.concealed += 1;
            return Some(Playout::Conceal {
                index: None,
                next: None,
            });
        }
        self.next_index = Some(index + 1);
        let out = match self.frames.remove(&index) {
            Some((arrival, payload)) => {
                self.stats.played += 1;
                let slack = now.saturating_duration_since(arrival).as_secs_f64();
                self.least_slack = self.least_slack.min(slack);
                Playout::Frame { index, payload }
            }
            None => {
                self.stats.concealed += 1;
                let next = self.frames.get(&(index + 1)).map(|(_, p)| p.clone());
                self.missing(index, now, next.is_some());
                Playout::Conceal {
                    index: Some(index),
                    next,
                }
            }
        };
        self.trim(now);
        Some(out)
    }

    /// A slot found its frame missing: wait for FEC for a while, and if the next frame
    /// was not here to rebuild this one, add the frame of delay that lets it be next time.
    fn missing(&mut self, index: u64, now: Instant, repaired: bool) {
        let was_repairing = self.repairing;
        let before = self.repair_until.replace(now + self.cfg.repair_memory);
        self.repairing = true;
        self.window_clean = false;
        if !was_repairing && !repaired && self.stretch() {
            self.stretched_for = Some(index);
            self.repair_stretched = true;
            self.repair_before = before;
        }
    }

    /// Cuts a frame of delay when it is not earning its keep: the FEC wait that added it
    /// is over; or every frame of a clean window (of five in a row, to undo a late
    /// frame's stretch) arrived a frame (and the least delay, unless a late frame's
    /// stretch is being undone) before it played, a frame more while waiting for FEC; or
    /// the buffer held far more frames than its target for a
    /// while (a stall released a burst). Slack is measured to the actual playout, so the
    /// device's pull granularity counts as the margin it is.
    fn trim(&mut self, now: Instant) {
        let Some(next) = self.next_index else { return };
        let depth = self.frames.range(next..).count() as u64;
        if depth > self.target_frames() + 2 {
            self.deep_slots += 1;
        } else {
            self.deep_slots = 0;
        }
        let frame = self.cfg.frame.as_secs_f64();
        let undo_repair = self.repair_stretched && !self.repairing;
        self.window += 1;
        let mut window_cut = false;
        if self.window >= TRIM_WINDOW {
            let mut need = if self.repairing { frame } else { 0.0 };
            if self.late_stretches == 0 {
                need += self.cfg.min_delay.as_secs_f64();
            }
            let spare = self.window_clean
                && self.least_slack.is_finite()
                && self.least_slack - frame >= need;
            self.spare_windows = if spare { self.spare_windows + 1 } else { 0 };
            let recent = self
                .lates
                .iter()
                .filter(|t| now.saturating_duration_since(**t) < LATE_MEMORY)
                .count();
            let patience = if self.late_stretches > 0 && recent > 1 {
                UNDO_LATE_WINDOWS
            } else {
                1
            };
            window_cut = self.spare_windows >= patience;
            self.window = 0;
            self.window_clean = true;
            self.least_slack = f64::INFINITY;
        }
        let cut = undo_repair || window_cut || self.deep_slots >= TRIM_FAST;
        if cut && self.frames.remove(&next).is_some() {
            self.next_index = Some(next + 1);
            self.stats.dropped += 1;
            self.deep_slots = 0;
            if undo_repair {
                self.repair_stretched = false;
            } else if window_cut {
                self.late_stretches = self.late_stretches.saturating_sub(1);
                self.spare_windows = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: Duration = Duration::from_millis(20);
    const MS: Duration = Duration::from_millis(1);

    /// Plays everything due up to `until`, in 1 ms steps.
    fn drain(jb: &mut JitterBuffer, from: Instant, until: Instant) -> Vec<(Instant, Playout)> {
        simulate(jb, from, Vec::new(), until)
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
            t += MS;
        }
        out
    }

    /// Frames `0..n` sent every frame from `t0`, arriving on time except `lost` (never)
    /// and `late` (by the given delay).
    fn stream(t0: Instant, n: u32, lost: &[u64], late: &[(u64, Duration)]) -> Vec<(u64, Instant)> {
        (0..n)
            .map(u64::from)
            .filter(|i| !lost.contains(i))
            .map(|i| {
                let extra = late
                    .iter()
                    .find(|(l, _)| *l == i)
                    .map_or(Duration::ZERO, |(_, d)| *d);
                (i, t0 + F * u32::try_from(i).expect("short") + extra)
            })
            .collect()
    }

    fn indices(out: &[(Instant, Playout)]) -> Vec<Option<u64>> {
        out.iter()
            .map(|(_, p)| match p {
                Playout::Frame { index, .. } => Some(*index),
                Playout::Conceal { .. } => None,
            })
            .collect()
    }

    /// When frame `index` was played.
    fn played_at(out: &[(Instant, Playout)], index: u64) -> Instant {
        out.iter()
            .find(|(_, p)| matches!(p, Playout::Frame { index: i, .. } if *i == index))
            .map(|(t, _)| *t)
            .unwrap_or_else(|| panic!("frame {index} played"))
    }

    #[test]
    fn a_clean_stream_plays_in_order_at_the_least_delay() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let out = simulate(&mut jb, t0, stream(t0, 50, &[], &[]), t0 + F * 49 + 2 * MS);
        assert_eq!(
            indices(&out),
            (0..50).map(Some).collect::<Vec<_>>(),
            "every frame, no concealment"
        );
        // Played the least delay after it arrived, well under a frame.
        assert_eq!(out[0].0, t0 + 2 * MS);
        assert_eq!(played_at(&out, 49), t0 + F * 49 + 2 * MS);
        assert_eq!(jb.stats().concealed, 0);
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
    fn a_missing_frame_adds_a_frame_of_delay_so_the_next_loss_is_rebuilt_from_fec() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let out = simulate(&mut jb, t0, stream(t0, 100, &[10, 30], &[]), t0 + F * 99);
        // Frame 10 is missing and frame 11 not yet here: concealed without FEC data, then
        // one slot more (the stretch) before frame 11.
        let at10 = out
            .iter()
            .position(|(_, p)| {
                matches!(
                    p,
                    Playout::Conceal {
                        index: Some(10),
                        ..
                    }
                )
            })
            .expect("slot 10");
        assert_eq!(
            out[at10].1,
            Playout::Conceal {
                index: Some(10),
                next: None
            }
        );
        assert_eq!(
            out[at10 + 1].1,
            Playout::Conceal {
                index: None,
                next: None
            }
        );
        assert_eq!(played_at(&out, 11), t0 + F * 11 + F + 2 * MS);
        // With that frame more, frame 31 is here when slot 30 is due: FEC rebuilds it.
        assert!(out.contains(&(
            t0 + F * 30 + F + 2 * MS,
            Playout::Conceal {
                index: Some(30),
                next: Some(vec![31])
            }
        )));
        assert_eq!(jb.stats().concealed, 3, "two losses and one stretch");
    }

    #[test]
    fn the_fec_wait_ends_after_a_clean_spell() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig {
            repair_memory: Duration::from_secs(1),
            ..JitterConfig::default()
        });
        let out = simulate(&mut jb, t0, stream(t0, 200, &[5], &[]), t0 + F * 199);
        assert_eq!(played_at(&out, 20), t0 + F * 20 + F + 2 * MS, "waiting");
        assert_eq!(
            played_at(&out, 150),
            t0 + F * 150 + 2 * MS,
            "back to the least delay a second after the loss"
        );
        assert_eq!(jb.stats().dropped, 1, "one frame skipped to get there");
    }

    #[test]
    fn a_late_frame_stretches_the_delay_until_jitter_settles() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        // Frame 3 is lost (the FEC wait starts: a frame more); frame 60 comes 50 ms late,
        // after even that: a one-off.
        let arrivals = stream(t0, 200, &[3], &[(60, 50 * MS)]);
        let out = simulate(&mut jb, t0, arrivals, t0 + F * 199);
        assert_eq!(jb.stats().late, 1);
        assert_eq!(
            played_at(&out, 62),
            t0 + F * 62 + 2 * F + 2 * MS,
            "two frames of delay"
        );
        assert_eq!(
            played_at(&out, 190),
            t0 + F * 190 + F + 2 * MS,
            "a one-off's stretch is undone after a clean second; the FEC wait stays"
        );
    }

    #[test]
    fn frames_late_again_and_again_keep_their_delay_for_longer() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig {
            repair_memory: Duration::from_secs(100),
            ..JitterConfig::default()
        });
        // The FEC wait (frame 3 lost), then two late frames a fifth of a second apart.
        let arrivals = stream(t0, 700, &[3], &[(60, 50 * MS), (70, 70 * MS)]);
        let out = simulate(&mut jb, t0, arrivals, t0 + F * 699);
        assert_eq!(jb.stats().late, 2);
        assert_eq!(
            played_at(&out, 250),
            t0 + F * 250 + 3 * F + 2 * MS,
            "both stretches kept for a while"
        );
        assert_eq!(
            played_at(&out, 690),
            t0 + F * 690 + F + 2 * MS,
            "both undone after clean spells of five seconds; the FEC wait stays"
        );
    }

    #[test]
    fn a_frame_late_rather_than_lost_starts_no_fec_wait() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        // Frame 10 comes 10 ms late: its slot is concealed and stretched, but once it
        // shows up the stretch is a late frame's, undone after clean seconds.
        let out = simulate(
            &mut jb,
            t0,
            stream(t0, 400, &[], &[(10, 10 * MS)]),
            t0 + F * 399,
        );
        assert_eq!(jb.stats().late, 1);
        assert_eq!(played_at(&out, 11), t0 + F * 11 + F + 2 * MS, "stretched");
        assert_eq!(
            played_at(&out, 350),
            t0 + F * 350 + 2 * MS,
            "back to the least delay once the path is clean, long before a loss's 10 s wait would end"
        );
    }

    #[test]
    fn stretches_stop_at_the_most_delay() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig {
            max_delay: F * 3,
            ..JitterConfig::default()
        });
        // Every frame comes ever later: each is late, and each would stretch.
        let arrivals = (0..100u32)
            .map(|i| (u64::from(i), t0 + F * i + F * i / 2))
            .collect();
        let out = simulate(&mut jb, t0, arrivals, t0 + F * 200);
        let stretches = out
            .iter()
            .filter(|(_, p)| matches!(p, Playout::Conceal { index: None, .. }))
            .count();
        assert!(
            (1..3).contains(&stretches),
            "{stretches} stretches against a 3-frame limit"
        );
    }

    #[test]
    fn jitter_raises_the_target_delay() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        for i in 0..200u32 {
            let wobble = if i % 2 == 0 { 0 } else { 30 };
            jb.push(u64::from(i), t0 + F * i + wobble * MS, vec![]);
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
    fn a_restart_keeps_the_jitter_and_the_fec_wait() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let wobbly: Vec<_> = (0..50u32)
            .map(|i| (u64::from(i), t0 + F * i + (i % 2) * 4 * MS))
            .filter(|(i, _)| *i != 40)
            .collect();
        simulate(&mut jb, t0, wobbly, t0 + F * 50);
        let before = jb.target_delay();
        assert!(before > F, "jitter and the FEC wait: {before:?}");
        jb.restart(F);
        assert_eq!(jb.stats(), JitterStats::default());
        let t1 = t0 + F * 60;
        jb.push(1000, t1, vec![]);
        assert_eq!(
            jb.poll_timeout(),
            Some(t1 + before),
            "the new spurt starts with what the path taught"
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
