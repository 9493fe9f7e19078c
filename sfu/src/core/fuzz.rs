//! A fixed core for fuzzing its packet handling: one room, one joined participant (a real
//! str0m offer), and arbitrary datagrams from its address, from others, and as STUN with
//! its username. Used by the `sfu_packets` fuzz target and by the unit test below.

use super::*;
use sotto_proto::Handle;
use str0m::media::Direction;

/// A core with one participant waiting for its connection.
pub struct Harness {
    core: Core,
    now: Instant,
    sfu: SocketAddr,
    peer: SocketAddr,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// Builds the core and joins one participant.
    pub fn new() -> Self {
        let now = Instant::now();
        let sfu: SocketAddr = ([127, 0, 0, 1], 3478).into();
        let peer: SocketAddr = ([127, 0, 0, 2], 4000).into();
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(now);
        if let Ok(c) = Candidate::host(peer, "udp") {
            rtc.add_local_candidate(c);
        }
        let mut sdp = rtc.sdp_api();
        sdp.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        sdp.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let offer = sdp
            .apply()
            .map(|(o, _)| o.to_sdp_string())
            .unwrap_or_default();
        let mut core = Core::new(Config::new(sfu));
        let device = DeviceAddr {
            handle: Handle::parse("@fuzz").unwrap_or_else(|_| unreachable!("a valid handle")),
            device: 1,
        };
        let joined = core.join(now, RoomId([1; 16]), device, 0, &offer);
        debug_assert!(joined.is_ok(), "the fixed offer is accepted");
        Harness {
            core,
            now,
            sfu,
            peer,
        }
    }

    /// Feeds `data` as datagrams: each starts with a length byte and a source selector.
    /// Invariants: nothing panics, every datagram is counted, and no unauthenticated byte
    /// is ever forwarded (no DTLS-SRTP session exists, so nothing may reach a subscriber).
    pub fn run(&mut self, data: &[u8]) {
        let before = self.core.counters().datagrams_in;
        let mut fed = 0;
        let mut rest = data;
        while let [len, from, tail @ ..] = rest {
            let n = (*len as usize).min(tail.len());
            let (datagram, next) = tail.split_at(n);
            let source = if from & 1 == 0 {
                self.peer
            } else {
                SocketAddr::from(([10, 0, 0, *from], 5000))
            };
            self.now += Duration::from_millis(u64::from(from >> 4));
            self.core
                .handle_receive(self.now, source, self.sfu, datagram);
            self.core.handle_timeout(self.now);
            while self.core.poll_transmit().is_some() {}
            while self.core.poll_event().is_some() {}
            fed += 1;
            rest = next;
        }
        assert_eq!(self.core.counters().datagrams_in, before + fed);
        assert_eq!(
            self.core.counters().rtp_forwarded,
            0,
            "unauthenticated input forwarded"
        );
        assert_eq!(
            self.core.counters().rtp_in,
            0,
            "unauthenticated input accepted as RTP"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fuzz_harness_takes_hostile_input() {
        let mut h = Harness::new();
        let mut inputs: Vec<Vec<u8>> = vec![
            vec![],
            vec![0, 0],
            vec![12, 0, 0x80, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1],
            vec![8, 1, 0x81, 200, 0, 1, 0, 0, 0, 1],
            vec![
                20, 2, 0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
            ],
            vec![5, 0, 22, 254, 253, 0, 0],
        ];
        inputs.push([&[255u8, 0][..], &[0x80; 255][..]].concat());
        for input in inputs {
            h.run(&input);
        }
    }
}
