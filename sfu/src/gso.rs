//! Sends a batch of datagrams grouped per destination into GSO runs: one `sendmsg` carries
//! a run of equal-size datagrams to one address (the last may be shorter). Shared by the
//! SFU's workers and the bench's bare relay, so both get the same GSO chances.

use quinn_udp::{Transmit, UdpSockRef, UdpSocketState};
use std::net::SocketAddr;

/// What one [`GsoBatcher::send`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// `sendmsg` calls made.
    pub calls: u64,
    /// Datagrams in calls that succeeded.
    pub datagrams: u64,
    /// Bytes in calls that succeeded.
    pub bytes: u64,
    /// Calls that failed (their datagrams are lost, as on any UDP path).
    pub errors: u64,
}

/// The reusable buffers of the grouping (no allocation once warm).
#[derive(Debug, Default)]
pub struct GsoBatcher {
    /// (destination, index) of every datagram, sorted to group destinations.
    order: Vec<(SocketAddr, usize)>,
    /// One run being assembled.
    run: Vec<u8>,
}

impl GsoBatcher {
    /// Sends the `n` datagrams `get(0..n)` returns (destination, bytes). Each destination
    /// keeps its datagrams in index order.
    pub fn send<'a, S: std::os::fd::AsFd>(
        &mut self,
        state: &UdpSocketState,
        socket: &S,
        n: usize,
        get: impl Fn(usize) -> (SocketAddr, &'a [u8]),
    ) -> Sent {
        self.order.clear();
        self.order.extend((0..n).map(|i| (get(i).0, i)));
        // Unique keys (destination, index): deterministic and allocation-free.
        self.order.sort_unstable();
        let max_segments = state.max_gso_segments().max(1);
        let mut sent = Sent::default();
        let mut i = 0;
        while i < self.order.len() {
            let (dest, first) = self.order[i];
            let segment = get(first).1.len();
            self.run.clear();
            let mut count = 0;
            while i < self.order.len() && count < max_segments {
                let (d, idx) = self.order[i];
                let bytes = get(idx).1;
                // A run: same destination, every segment the first one's size but the
                // last, which may be shorter.
                if d != dest
                    || bytes.len() > segment
                    || (count > 0 && !self.run.len().is_multiple_of(segment))
                {
                    break;
                }
                self.run.extend_from_slice(bytes);
                count += 1;
                i += 1;
            }
            let transmit = Transmit {
                destination: dest,
                ecn: None,
                contents: &self.run,
                segment_size: (count > 1).then_some(segment),
                src_ip: None,
            };
            sent.calls += 1;
            match state.send(UdpSockRef::from(socket), &transmit) {
                Ok(()) => {
                    sent.datagrams += count as u64;
                    sent.bytes += self.run.len() as u64;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "send failed");
                    sent.errors += 1;
                }
            }
        }
        sent
    }
}
