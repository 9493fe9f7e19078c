//! RTP payload format for SFrame (draft-ietf-avtcore-rtp-sframe-02), per-frame mode.
//!
//! A whole encoded frame is encrypted once; its ciphertext is split into packets, each
//! starting with the one-byte SFrame payload descriptor:
//!
//! ```text
//!  0 1 2 3 4 5 6 7
//! +-+-+-+-+-+-+-+-+
//! |S|E|T|x x x x x|   S: first fragment, E: last fragment, T: 0 = whole (raw) frame
//! +-+-+-+-+-+-+-+-+   x: reserved, sent as 0
//! ```
//! The RTP marker bit is set on the packet with E. The receiver reassembles the shortest
//! run of consecutive sequence numbers from an S packet to an E packet with one timestamp,
//! then decrypts. Keyless: the SFU uses it to find frame boundaries and the SFrame header.
//!
//! Frames come out in sequence order. A complete frame behind a gap (an earlier frame still
//! missing packets) waits up to `repair_wait` for a retransmission to fill the gap before
//! the earlier frame is given up: the gap is only visible once a later packet arrives, so
//! without the wait a NACK could never save a one-packet frame. Time is passed in.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

/// First fragment of a frame.
pub const START: u8 = 0x80;
/// Last fragment of a frame.
pub const END: u8 = 0x40;
/// Packetized content (per-packet mode); we send whole frames, T = 0.
pub const PACKETIZED: u8 = 0x20;

/// The descriptor of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// First fragment.
    pub start: bool,
    /// Last fragment.
    pub end: bool,
    /// Per-packet mode content.
    pub packetized: bool,
}

impl Descriptor {
    /// Reads the descriptor at the start of an RTP payload.
    pub fn parse(payload: &[u8]) -> Option<(Descriptor, &[u8])> {
        let (&b, rest) = payload.split_first()?;
        Some((
            Descriptor {
                start: b & START != 0,
                end: b & END != 0,
                packetized: b & PACKETIZED != 0,
            },
            rest,
        ))
    }

    /// The descriptor byte.
    pub fn byte(self) -> u8 {
        (if self.start { START } else { 0 })
            | (if self.end { END } else { 0 })
            | (if self.packetized { PACKETIZED } else { 0 })
    }
}

/// Splits an encrypted frame into RTP payloads of at most `max_payload` bytes (descriptor
/// included). Returns them in order; the last one is the one to mark.
pub fn packetize(frame: &[u8], max_payload: usize) -> Vec<Vec<u8>> {
    let chunk = max_payload.saturating_sub(1).max(1);
    let n = frame.len().div_ceil(chunk).max(1);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let part = &frame[(i * chunk).min(frame.len())..((i + 1) * chunk).min(frame.len())];
        let d = Descriptor {
            start: i == 0,
            end: i == n - 1,
            packetized: false,
        };
        let mut p = Vec::with_capacity(1 + part.len());
        p.push(d.byte());
        p.extend_from_slice(part);
        out.push(p);
    }
    out
}

/// A reassembled encrypted frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reassembled {
    /// RTP timestamp shared by its packets.
    pub timestamp: u32,
    /// Sequence number of its first packet (unwrapped).
    pub first_seq: u64,
    /// Sequence number of its last packet (unwrapped): a receiver that sees the next
    /// frame start anywhere but `last_seq + 1` knows a frame was lost in between.
    pub last_seq: u64,
    /// The encrypted frame.
    pub frame: Vec<u8>,
}

/// Limits of the reassembler: a hostile sender cannot make it hold more.
#[derive(Clone, Copy, Debug)]
pub struct AssemblerLimits {
    /// Largest frame accepted, bytes.
    pub max_frame: usize,
    /// Packets held waiting for their frame to complete.
    pub max_pending: usize,
    /// How long a complete frame behind a gap waits for the gap's repair (zero: give the
    /// earlier frame up at once).
    pub repair_wait: Duration,
}

impl Default for AssemblerLimits {
    fn default() -> Self {
        Self {
            max_frame: 1 << 20,
            max_pending: 2048,
            repair_wait: Duration::from_millis(60),
        }
    }
}

struct Fragment {
    timestamp: u32,
    desc: Descriptor,
    data: Vec<u8>,
}

/// Reassembles frames from packets that may arrive reordered or not at all.
pub struct FrameAssembler {
    limits: AssemblerLimits,
    pending: BTreeMap<u64, Fragment>,
    highest: Option<u64>,
    /// Everything at or below this sequence number is finished with.
    done_through: Option<u64>,
    /// Frames dropped as incomplete or invalid.
    pub dropped_frames: u64,
    /// The complete frame (its first sequence number) waiting behind a gap, and until when.
    hold: Option<(u64, Instant)>,
}

impl FrameAssembler {
    /// An empty assembler.
    pub fn new(limits: AssemblerLimits) -> Self {
        Self {
            limits,
            pending: BTreeMap::new(),
            highest: None,
            done_through: None,
            dropped_frames: 0,
            hold: None,
        }
    }

    /// Extends a 16-bit sequence number to 64 bits around the highest seen.
    fn unwrap_seq(&self, seq: u16) -> u64 {
        let Some(h) = self.highest else {
            return u64::from(seq) + (1 << 16);
        };
        let base = h & !0xffff;
        let candidates = [base.wrapping_sub(1 << 16), base, base + (1 << 16)];
        candidates
            .iter()
            .map(|b| b + u64::from(seq))
            .min_by_key(|c| c.abs_diff(h))
            .unwrap_or(base + u64::from(seq))
    }

    /// When [`Self::poll`] should run next: the end of a repair wait.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.hold.map(|(_, until)| until)
    }

    /// Frames released because their repair wait ended (the gap before them is given up).
    pub fn poll(&mut self, now: Instant) -> Vec<Reassembled> {
        self.collect(now)
    }

    /// Adds one packet's payload, arrived at `now`; returns every frame it releases (usually
    /// 0 or 1).
    pub fn push(
        &mut self,
        seq: u16,
        timestamp: u32,
        payload: &[u8],
        now: Instant,
    ) -> Vec<Reassembled> {
        let Some((desc, data)) = Descriptor::parse(payload) else {
            return Vec::new();
        };
        let s = self.unwrap_seq(seq);
        if self.done_through.is_some_and(|d| s <= d) || self.pending.contains_key(&s) {
            return Vec::new();
        }
        self.highest = Some(self.highest.map_or(s, |h| h.max(s)));
        self.pending.insert(
            s,
            Fragment {
                timestamp,
                desc,
                data: data.to_vec(),
            },
        );
        while self.pending.len() > self.limits.max_pending {
            self.pending.pop_first();
            self.dropped_frames += 1;
        }
        self.collect(now)
    }

    /// Emits complete S..E runs in sequence order, dropping anything left behind them once
    /// their repair wait is over.
    fn collect(&mut self, now: Instant) -> Vec<Reassembled> {
        // A held frame pushed out by the pending bound is no longer waited for.
        if self
            .hold
            .is_some_and(|(s, _)| !self.pending.contains_key(&s))
        {
            self.hold = None;
        }
        let mut out = Vec::new();
        let starts: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, f)| f.desc.start)
            .map(|(s, _)| *s)
            .collect();
        for start in starts {
            if !self.pending.contains_key(&start) {
                continue;
            }
            let ts = self.pending[&start].timestamp;
            let mut end = None;
            let mut size = 0usize;
            let mut s = start;
            while let Some(f) = self.pending.get(&s) {
                if f.timestamp != ts || (s != start && f.desc.start) {
                    break;
                }
                size += f.data.len();
                if f.desc.end {
                    end = Some(s);
                    break;
                }
                s += 1;
            }
            let Some(end) = end else { continue };
            // Something before this frame is missing: give its repair a moment, and keep
            // every later frame waiting behind this one so order holds. Packets missing
            // right after the last whole frame are at least one whole frame lost.
            let whole_missing = self.done_through.is_some_and(|d| start > d + 1);
            let gap = whole_missing || self.pending.range(..start).next().is_some();
            if gap && !self.limits.repair_wait.is_zero() {
                let until = match self.hold {
                    Some((s, until)) if s == start => until,
                    _ => now + self.limits.repair_wait,
                };
                if now < until {
                    self.hold = Some((start, until));
                    break;
                }
            }
            if self.hold.is_some_and(|(s, _)| s <= start) {
                self.hold = None;
            }
            let frame_ok = size <= self.limits.max_frame;
            let mut frame = Vec::with_capacity(if frame_ok { size } else { 0 });
            for seq in start..=end {
                if let Some(f) = self.pending.remove(&seq)
                    && frame_ok
                {
                    frame.extend_from_slice(&f.data);
                }
            }
            // Whatever was older than this frame can no longer complete.
            let stale: Vec<u64> = self.pending.range(..start).map(|(s, _)| *s).collect();
            if !stale.is_empty() || whole_missing {
                self.dropped_frames += 1;
            }
            for s in stale {
                self.pending.remove(&s);
            }
            self.done_through = Some(end);
            if frame_ok {
                out.push(Reassembled {
                    timestamp: ts,
                    first_seq: start,
                    last_seq: end,
                    frame,
                });
            } else {
                self.dropped_frames += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Instant {
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *T0.get_or_init(Instant::now) + Duration::from_millis(ms)
    }

    #[test]
    fn packetize_sets_start_end_and_fits_the_mtu() {
        let frame: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let pkts = packetize(&frame, 1000);
        assert_eq!(pkts.len(), 3);
        assert!(pkts.iter().all(|p| p.len() <= 1000));
        assert_eq!(pkts[0][0], START);
        assert_eq!(pkts[1][0], 0);
        assert_eq!(pkts[2][0], END);
        assert_eq!(
            packetize(b"tiny", 1000),
            vec![vec![START | END, b't', b'i', b'n', b'y']]
        );
    }

    #[test]
    fn reassembles_reordered_packets_across_the_seq_wrap() {
        let frame: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        let pkts = packetize(&frame, 1200);
        let mut a = FrameAssembler::new(AssemblerLimits::default());
        let seqs = [65534u16, 65535, 0];
        assert!(a.push(seqs[2], 90, &pkts[2], t(0)).is_empty());
        assert!(a.push(seqs[0], 90, &pkts[0], t(0)).is_empty());
        let done = a.push(seqs[1], 90, &pkts[1], t(0));
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].frame, frame);
        // The next frame after the wrap.
        let next = a.push(1, 180, &packetize(b"second", 1200)[0], t(0));
        assert_eq!(next[0].frame, b"second");
        // A late duplicate of an old packet yields nothing.
        assert!(a.push(65535, 90, &pkts[1], t(0)).is_empty());
    }

    #[test]
    fn a_lost_fragment_drops_its_frame_only_after_the_repair_wait() {
        let mut a = FrameAssembler::new(AssemblerLimits::default());
        let f1 = packetize(&[1u8; 2000], 1200);
        let f2 = packetize(&[2u8; 100], 1200);
        a.push(10, 1, &f1[0], t(0)); // f1[1] lost
        assert!(
            a.push(12, 2, &f2[0], t(5)).is_empty(),
            "f2 waits for f1's repair"
        );
        assert_eq!(a.poll_timeout(), Some(t(65)));
        assert!(a.poll(t(64)).is_empty());
        let done = a.poll(t(65));
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].frame, vec![2u8; 100]);
        assert_eq!(a.dropped_frames, 1);
        assert_eq!(a.poll_timeout(), None);
        // Its repair arriving now is too late and yields nothing.
        assert!(a.push(11, 1, &f1[1], t(70)).is_empty());
    }

    #[test]
    fn a_repair_within_the_wait_saves_the_frame_and_keeps_order() {
        let mut a = FrameAssembler::new(AssemblerLimits::default());
        let one = |b: u8| packetize(&[b; 10], 1200).remove(0);
        assert_eq!(a.push(1, 1, &one(1), t(0)).len(), 1);
        // Frame 2 (seq 2) lost; 3 and 4 complete and wait behind the gap.
        assert!(a.push(3, 3, &one(3), t(10)).is_empty());
        assert!(a.push(4, 4, &one(4), t(20)).is_empty());
        // The retransmission of 2 arrives within the wait: all three, in order.
        let done = a.push(2, 2, &one(2), t(40));
        let frames: Vec<u8> = done.iter().map(|f| f.frame[0]).collect();
        assert_eq!(frames, vec![2, 3, 4]);
        assert_eq!(a.dropped_frames, 0);
        assert_eq!(a.poll_timeout(), None);
    }

    #[test]
    fn no_repair_wait_gives_up_at_once() {
        let mut a = FrameAssembler::new(AssemblerLimits {
            repair_wait: Duration::ZERO,
            ..AssemblerLimits::default()
        });
        let one = |b: u8| packetize(&[b; 10], 1200).remove(0);
        a.push(1, 1, &one(1), t(0));
        assert_eq!(a.push(3, 3, &one(3), t(1)).len(), 1);
        assert_eq!(a.poll_timeout(), None);
        assert_eq!(a.dropped_frames, 1, "frame 2, whose only packet never came");
    }

    #[test]
    fn hostile_input_is_bounded() {
        let mut a = FrameAssembler::new(AssemblerLimits {
            max_frame: 100,
            max_pending: 10,
            ..AssemblerLimits::default()
        });
        // Never-ending frame: pending stays bounded.
        for s in 0..100u16 {
            a.push(s, 1, &[if s == 0 { START } else { 0 }, 1, 2, 3], t(0));
        }
        assert!(a.pending.len() <= 10);
        // An oversized frame is dropped, not returned.
        let big = packetize(&[9u8; 500], 64);
        let mut b = FrameAssembler::new(AssemblerLimits {
            max_frame: 100,
            max_pending: 100,
            ..AssemblerLimits::default()
        });
        let mut got = Vec::new();
        for (i, p) in big.iter().enumerate() {
            got.extend(b.push(i as u16, 5, p, t(0)));
        }
        assert!(got.is_empty());
        assert!(a.push(0, 0, &[], t(0)).is_empty(), "empty payload ignored");
    }
}
