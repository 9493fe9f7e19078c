//! Per-subscriber rewriting of sequence numbers and timestamps, so that a subscriber sees
//! one continuous stream per slot even when the source behind the slot changes (another
//! speaker, another simulcast layer). Within one source the offsets stay fixed, so a packet
//! lost before the SFU is still a gap after it: the subscriber can NACK it and loss stays
//! measurable.

/// The rewriting state of one outgoing stream.
#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    /// Added (wrapping) to the source's extended sequence number.
    seq_delta: u64,
    /// Added (wrapping) to the source's RTP timestamp.
    ts_delta: u32,
    /// The first source sequence number since the last switch; older packets are refused
    /// (they would land on numbers already used for the previous source).
    first_in: u64,
    /// The highest outgoing sequence number and the timestamp sent with it.
    last_out: Option<(u64, u32)>,
}

/// Where an outgoing stream starts (kept below 2^16 so the SRTP rollover counter starts at
/// zero, as a fresh receiver assumes).
const FIRST_SEQ: u64 = 1;

impl Rewrite {
    /// Starts following a new source at its packet `(seq, ts)`; the next output continues
    /// one sequence number and `ts_step` ticks after the last one sent.
    pub fn switch(&mut self, seq: u64, ts: u32, ts_step: u32) {
        let (next_seq, next_ts) = match self.last_out {
            Some((s, t)) => (s + 1, t.wrapping_add(ts_step)),
            None => (FIRST_SEQ, ts),
        };
        self.seq_delta = next_seq.wrapping_sub(seq);
        self.ts_delta = next_ts.wrapping_sub(ts);
        self.first_in = seq;
    }

    /// The outgoing `(seq, ts)` for a source packet, or `None` for a packet from before
    /// the last switch.
    pub fn map(&mut self, seq: u64, ts: u32) -> Option<(u64, u32)> {
        if seq < self.first_in {
            return None;
        }
        let out = (
            seq.wrapping_add(self.seq_delta),
            ts.wrapping_add(self.ts_delta),
        );
        if self.last_out.is_none_or(|(s, _)| out.0 > s) {
            self.last_out = Some(out);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_survive_and_a_switch_continues_the_stream() {
        let mut r = Rewrite::default();
        r.switch(5000, 90_000, 960);
        assert_eq!(r.map(5000, 90_000), Some((1, 90_000)));
        // 5001 was lost upstream: the gap stays.
        assert_eq!(r.map(5002, 91_920), Some((3, 91_920)));
        // Reordered but after the switch point: fine.
        assert_eq!(r.map(5001, 90_960), Some((2, 90_960)));
        // Another source takes the slot.
        r.switch(70, 4_000_000_000, 960);
        assert_eq!(r.map(70, 4_000_000_000), Some((4, 92_880)));
        assert_eq!(r.map(71, 4_000_000_960), Some((5, 93_840)));
        // A late packet of the old source, or from before the new one's first: refused.
        assert_eq!(r.map(69, 3_999_999_040), None);
    }

    #[test]
    fn timestamps_wrap() {
        let mut r = Rewrite::default();
        r.switch(1, u32::MAX - 100, 960);
        assert_eq!(r.map(2, 859), Some((2, 859)));
    }
}
