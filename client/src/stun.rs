//! Our address as the Internet sees it (RFC 8489 Binding): before a direct call offers,
//! each media socket asks the STUN servers given with `--stun`, and what they report
//! becomes a server-reflexive candidate beside the host ones, so a peer behind another
//! NAT can reach us. STUN messages are built and parsed by `rtc-stun` (str0m's own parser
//! refuses a Binding response without ICE's MESSAGE-INTEGRITY, which a server's answer to
//! an unauthenticated request never carries); what comes back is untrusted: only a
//! success response to a request we sent, from the server we sent it to, counts.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use rtc_stun::{
    message::{BINDING_REQUEST, BINDING_SUCCESS, Getter, Message, TransactionId},
    xoraddr::XorMappedAddress,
};

use crate::media_sockets::MediaSockets;

/// How long the servers get to answer, all requests together.
pub const GATHER_WAIT: Duration = Duration::from_millis(800);
/// Requests are sent again this often while no answer came (UDP loses them).
const RESEND: Duration = Duration::from_millis(200);

/// The `host:port` of a STUN server given as `stun:host[:port]` (the port defaults to
/// 3478); a clear error for anything else.
pub fn host_port(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("stun:")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| format!("{url}: a STUN server is given as stun:host:port"))?;
    let has_port = rest
        .rsplit_once(':')
        .is_some_and(|(h, p)| p.parse::<u16>().is_ok() && (!h.contains(':') || h.ends_with(']')));
    Ok(if has_port {
        rest.to_string()
    } else {
        format!("{rest}:3478")
    })
}

/// The addresses of the STUN server `url` ([`host_port`]), resolved.
pub async fn resolve(url: &str) -> Result<Vec<SocketAddr>, String> {
    let with_port = host_port(url)?;
    let found: Vec<SocketAddr> = tokio::net::lookup_host(&with_port)
        .await
        .map_err(|e| format!("{url}: cannot resolve the STUN server ({e})"))?
        .collect();
    if found.is_empty() {
        return Err(format!("{url}: the name resolves to no address"));
    }
    Ok(found)
}

/// A Binding request with transaction id `id`.
fn binding_request(id: TransactionId) -> Option<Vec<u8>> {
    let mut m = Message::new();
    m.build(&[Box::new(id), Box::new(BINDING_REQUEST)]).ok()?;
    Some(m.raw)
}

/// The mapped address in `datagram` if it is a success response to `id`.
fn mapped(datagram: &[u8], id: &TransactionId) -> Option<SocketAddr> {
    let mut m = Message::new();
    m.unmarshal_binary(datagram).ok()?;
    if m.typ != BINDING_SUCCESS || m.transaction_id != *id {
        return None;
    }
    let mut x = XorMappedAddress::default();
    x.get_from(&m).ok()?;
    Some(SocketAddr::new(x.ip, x.port))
}

/// Asks every server in `servers` from every socket of `sockets`; returns the
/// server-reflexive candidates found, as (mapped address, our local address), without
/// duplicates. Servers of the other IP family than a socket are not asked from it.
pub async fn gather(
    sockets: &MediaSockets,
    servers: &[SocketAddr],
) -> Vec<(SocketAddr, SocketAddr)> {
    let mut asks: Vec<(SocketAddr, SocketAddr, TransactionId, Vec<u8>)> = Vec::new();
    for local in sockets.locals() {
        for server in servers.iter().filter(|s| s.is_ipv4() == local.is_ipv4()) {
            let id = TransactionId::new();
            if let Some(req) = binding_request(id) {
                asks.push((local, *server, id, req));
            }
        }
    }
    let mut found = Vec::new();
    let mut answered = vec![false; asks.len()];
    let end = Instant::now() + GATHER_WAIT;
    let mut buf = vec![0u8; 1500];
    while Instant::now() < end && answered.iter().any(|a| !a) {
        for (i, (local, server, _, req)) in asks.iter().enumerate() {
            if !answered[i] {
                sockets.try_send(*local, *server, req);
            }
        }
        let round = (Instant::now() + RESEND).min(end);
        while let Ok(Ok((n, from, on))) =
            tokio::time::timeout_at(round.into(), sockets.recv(&mut buf)).await
        {
            for (i, (local, server, id, _)) in asks.iter().enumerate() {
                if answered[i] || *local != on || *server != from {
                    continue;
                }
                if let Some(addr) = mapped(&buf[..n], id) {
                    answered[i] = true;
                    if !found.contains(&(addr, on)) {
                        found.push((addr, on));
                    }
                }
            }
        }
    }
    found
}

/// Feeds untrusted bytes to the path a STUN server's answer takes, as a hostile server
/// (or anyone who can send us a datagram) would: nothing may panic. For the fuzz target
/// `stun_response`.
#[doc(hidden)]
pub fn exercise_response(data: &[u8]) -> Option<SocketAddr> {
    let id = TransactionId(
        data.get(8..20)
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 12]),
    );
    mapped(data, &id)
}

/// What a STUN server answers a Binding request `req` that came from `from`: a success
/// response naming `from`; `None` for anything else. For the tests' loopback STUN server.
#[doc(hidden)]
pub fn answer_binding(req: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    let mut q = Message::new();
    q.unmarshal_binary(req).ok()?;
    if q.typ != BINDING_REQUEST {
        return None;
    }
    let mut m = Message::new();
    let x = XorMappedAddress {
        ip: from.ip(),
        port: from.port(),
    };
    m.build(&[
        Box::new(q.transaction_id),
        Box::new(BINDING_SUCCESS),
        Box::new(x),
    ])
    .ok()?;
    Some(m.raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_counts_only_for_its_own_request() {
        let id = TransactionId::new();
        let req = binding_request(id).expect("request");
        let addr: SocketAddr = "203.0.113.7:40000".parse().expect("addr");
        let reply = answer_binding(&req, addr).expect("reply");
        assert_eq!(mapped(&reply, &id), Some(addr));
        assert_eq!(
            mapped(&reply, &TransactionId::new()),
            None,
            "another request's"
        );
        assert_eq!(mapped(&req, &id), None, "a request is no answer");
        for cut in 0..reply.len() {
            let _ = mapped(&reply[..cut], &id);
            let mut flipped = reply.clone();
            flipped[cut] ^= 0x41;
            let _ = mapped(&flipped, &id);
        }
    }

    #[tokio::test]
    async fn stun_urls_resolve_with_the_default_port() {
        let a = resolve("stun:127.0.0.1").await.expect("resolves");
        assert_eq!(a, ["127.0.0.1:3478".parse::<SocketAddr>().expect("addr")]);
        let b = resolve("stun:127.0.0.1:19302").await.expect("resolves");
        assert_eq!(b[0].port(), 19302);
        assert!(resolve("127.0.0.1:3478").await.is_err(), "no scheme");
        assert!(host_port("stun:").is_err());
        assert_eq!(host_port("stun:[::1]:5000").as_deref(), Ok("[::1]:5000"));
        assert_eq!(host_port("stun:[::1]").as_deref(), Ok("[::1]:3478"));
    }
}
