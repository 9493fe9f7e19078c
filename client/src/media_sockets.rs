//! The UDP sockets a room call's media goes through: one per local address. A room or a
//! relayed call has one (the address that routes to the server); a direct call has one per
//! usable interface, each a host candidate, so two machines find the pair that reaches.
//! Datagrams say which local address they arrived on, and leave from the one the media
//! link chose.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    task::Poll,
};

use tokio::{io::ReadBuf, net::UdpSocket};

use crate::call::CallError;

/// See the module docs.
pub struct MediaSockets {
    sockets: Vec<(SocketAddr, UdpSocket)>,
    /// The socket polled first next time (turns round, so a flood on one cannot starve
    /// the others).
    next: std::sync::atomic::AtomicUsize,
}

impl MediaSockets {
    /// A socket on each of `ips` (an ephemeral port each).
    pub async fn bind(ips: &[IpAddr]) -> Result<Self, CallError> {
        let mut sockets = Vec::with_capacity(ips.len());
        for ip in ips {
            let socket = UdpSocket::bind((*ip, 0)).await.map_err(|e| {
                CallError::Room(format!(
                    "cannot open a media socket on {ip} ({e}): check the address or the system's limits"
                ))
            })?;
            let local = socket
                .local_addr()
                .map_err(|e| CallError::Room(format!("the media socket has no address ({e})")))?;
            sockets.push((local, socket));
        }
        if sockets.is_empty() {
            return Err(CallError::Room("no address to send media from".into()));
        }
        Ok(Self {
            sockets,
            next: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// The local addresses, the first being the primary one.
    pub fn locals(&self) -> Vec<SocketAddr> {
        self.sockets.iter().map(|(a, _)| *a).collect()
    }

    /// The next datagram on any socket: (length, from, our address it arrived on).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, SocketAddr)> {
        let n = self.sockets.len();
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n.max(1);
        std::future::poll_fn(|cx| {
            for i in 0..n {
                let (local, socket) = &self.sockets[(start + i) % n];
                let mut rb = ReadBuf::new(buf);
                if let Poll::Ready(r) = socket.poll_recv_from(cx, &mut rb) {
                    return Poll::Ready(r.map(|from| (rb.filled().len(), from, *local)));
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Sends `data` to `to` from our address `from` (the first socket if `from` is not
    /// ours); false if the socket could not take it now.
    pub fn try_send(&self, from: SocketAddr, to: SocketAddr, data: &[u8]) -> bool {
        let socket = self
            .sockets
            .iter()
            .find(|(a, _)| *a == from)
            .or_else(|| self.sockets.first())
            .map(|(_, s)| s);
        socket.is_some_and(|s| s.try_send_to(data, to).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn datagrams_name_the_socket_they_came_in_on_and_leave_from_the_one_asked() {
        let lo: IpAddr = [127, 0, 0, 1].into();
        let socks = MediaSockets::bind(&[lo, lo]).await.expect("two sockets");
        let [a, b] = <[SocketAddr; 2]>::try_from(socks.locals()).expect("two");
        let peer = UdpSocket::bind((lo, 0)).await.expect("peer");
        peer.send_to(b"to b", b).await.expect("sent");
        let mut buf = [0u8; 64];
        let (n, from, on) = socks.recv(&mut buf).await.expect("received");
        assert_eq!(
            (&buf[..n], from, on),
            (&b"to b"[..], peer.local_addr().expect("addr"), b)
        );
        assert!(socks.try_send(a, peer.local_addr().expect("addr"), b"from a"));
        let (n, from) = peer.recv_from(&mut buf).await.expect("received");
        assert_eq!((&buf[..n], from), (&b"from a"[..], a));
    }
}
