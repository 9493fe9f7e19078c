//! What an SDP blob reveals about where its sender is (the addresses of its connection
//! lines and ICE candidates: a relayed call's SDP must name the SFU only, never the peer),
//! and a check str0m needs before it negotiates one (payload types that mean one thing).

use std::net::IpAddr;

/// Every IP address `sdp` names in `c=` lines and `a=candidate:` lines (including a
/// candidate's related address), each once, in order of first appearance; the
/// unspecified address (a placeholder, nobody's) is left out. Lines that do not parse are
/// skipped: this reads, it does not validate.
pub fn addresses(sdp: &str) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    let mut add = |s: &str| {
        if let Ok(ip) = s.parse::<IpAddr>()
            && !ip.is_unspecified()
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    };
    for line in sdp.lines().map(str::trim) {
        if let Some(c) = line.strip_prefix("c=") {
            // c=IN IP4 192.0.2.1
            if let Some(addr) = c.split_whitespace().nth(2) {
                add(addr);
            }
        } else if let Some(c) = line
            .strip_prefix("a=candidate:")
            .or_else(|| line.strip_prefix("candidate:"))
        {
            candidate_addresses(c, &mut add);
        }
    }
    out
}

/// The address of one candidate line (without its `candidate:` prefix), and its related
/// address (`raddr`) if any.
pub fn candidate_addresses(candidate: &str, add: &mut impl FnMut(&str)) {
    // foundation component transport priority address port typ type [raddr a rport p]
    let fields: Vec<&str> = candidate.split_whitespace().collect();
    if let Some(addr) = fields.get(4) {
        add(addr);
    }
    if let Some(i) = fields.iter().position(|f| *f == "raddr")
        && let Some(addr) = fields.get(i + 1)
    {
        add(addr);
    }
}

/// Whether every payload type `sdp` maps (`a=rtpmap:`) means one codec throughout it.
/// str0m asserts this while it negotiates, so an offer or answer that maps one number to
/// two codecs (a hostile peer's, or a hostile SFU's) would abort the call's task; such SDP
/// is refused before it gets there.
pub fn payload_types_are_consistent(sdp: &str) -> bool {
    let mut seen: Vec<(u8, String)> = Vec::new();
    for rest in sdp
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=rtpmap:"))
    {
        let mut it = rest.splitn(2, char::is_whitespace);
        let (Some(pt), Some(codec)) = (it.next(), it.next()) else {
            return false;
        };
        let Ok(pt) = pt.parse::<u8>() else {
            return false;
        };
        let codec = codec.trim().to_ascii_lowercase();
        match seen.iter().find(|(p, _)| *p == pt) {
            Some((_, c)) if *c != codec => return false,
            Some(_) => {}
            None => seen.push((pt, codec)),
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_and_candidate_addresses_each_once() {
        let sdp = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
            c=IN IP4 0.0.0.0\r\n\
            a=candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host\r\n\
            a=candidate:2 1 udp 1694498815 203.0.113.7 6000 typ srflx raddr 10.0.0.1 rport 5000\r\n\
            a=candidate:3 1 udp 2130706431 fd00::1 5000 typ host\r\n\
            a=candidate:broken\r\n";
        let ips: Vec<String> = addresses(sdp).iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["10.0.0.1", "203.0.113.7", "fd00::1"]);
    }

    #[test]
    fn a_trickled_candidate_line_reads_too() {
        let mut seen = Vec::new();
        candidate_addresses("1 1 udp 1 192.0.2.9 4000 typ host", &mut |a| {
            seen.push(a.to_owned())
        });
        assert_eq!(seen, ["192.0.2.9"]);
        assert_eq!(
            addresses("candidate:1 1 udp 1 192.0.2.9 4000 typ host"),
            ["192.0.2.9".parse::<IpAddr>().expect("an address")]
        );
    }

    #[test]
    fn one_number_for_two_codecs_is_refused() {
        let ok =
            "a=rtpmap:111 opus/48000/2\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:102 H264/90000\r\n";
        assert!(payload_types_are_consistent(ok));
        let clash = "a=rtpmap:111 opus/48000/2\r\na=rtpmap:111 H264/90000\r\n";
        assert!(!payload_types_are_consistent(clash));
        assert!(!payload_types_are_consistent(
            "a=rtpmap:999 opus/48000/2\r\n"
        ));
        assert!(!payload_types_are_consistent("a=rtpmap:111\r\n"));
    }
}
