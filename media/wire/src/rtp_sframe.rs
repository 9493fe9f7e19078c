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

use std::collections::BTreeMap;

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
}

impl Default for AssemblerLimits {
    fn default() -> Self {
        Self {
            max_frame: 1 << 20,
            max_pending: 2048,
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

    /// Adds one packet's payload; returns every frame it completes (usually 0 or 1).
    pub fn push(&mut self, seq: u16, timestamp: u32, payload: &[u8]) -> Vec<Reassembled> {
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
        self.collect()
    }

    /// Emits complete S..E runs in sequence order, dropping anything left behind them.
    fn collect(&mut self) -> Vec<Reassembled> {
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
            if !stale.is_empty() {
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
        assert!(a.push(seqs[2], 90, &pkts[2]).is_empty());
        assert!(a.push(seqs[0], 90, &pkts[0]).is_empty());
        let done = a.push(seqs[1], 90, &pkts[1]);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].frame, frame);
        // The next frame after the wrap.
        let next = a.push(1, 180, &packetize(b"second", 1200)[0]);
        assert_eq!(next[0].frame, b"second");
        // A late duplicate of an old packet yields nothing.
        assert!(a.push(65535, 90, &pkts[1]).is_empty());
    }

    #[test]
    fn a_lost_fragment_drops_its_frame_only() {
        let mut a = FrameAssembler::new(AssemblerLimits::default());
        let f1 = packetize(&[1u8; 2000], 1200);
        let f2 = packetize(&[2u8; 100], 1200);
        a.push(10, 1, &f1[0]); // f1[1] lost
        let done = a.push(12, 2, &f2[0]);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].frame, vec![2u8; 100]);
        assert_eq!(a.dropped_frames, 1);
    }

    #[test]
    fn hostile_input_is_bounded() {
        let mut a = FrameAssembler::new(AssemblerLimits {
            max_frame: 100,
            max_pending: 10,
        });
        // Never-ending frame: pending stays bounded.
        for s in 0..100u16 {
            a.push(s, 1, &[if s == 0 { START } else { 0 }, 1, 2, 3]);
        }
        assert!(a.pending.len() <= 10);
        // An oversized frame is dropped, not returned.
        let big = packetize(&[9u8; 500], 64);
        let mut b = FrameAssembler::new(AssemblerLimits {
            max_frame: 100,
            max_pending: 100,
        });
        let mut got = Vec::new();
        for (i, p) in big.iter().enumerate() {
            got.extend(b.push(i as u16, 5, p));
        }
        assert!(got.is_empty());
        assert!(a.push(0, 0, &[]).is_empty(), "empty payload ignored");
    }
}
