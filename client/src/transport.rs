//! Where a call's media is sent from: the local addresses host candidates are gathered
//! on (every usable interface, as browsers do, or the ones a person pinned), and the STUN
//! servers that find our address as the Internet sees it. The media link itself is the
//! session core's (`session::sfu_link`, str0m), for peer-to-peer calls and the SFU alike.

use std::net::IpAddr;

/// Which local addresses host candidates are gathered on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Bind {
    /// Every address of every interface that is up, as browsers do, except loopback and
    /// link-local ones (IPv4 and IPv6). When there is none, loopback, with a warning: the
    /// call can then only reach this machine.
    #[default]
    AllInterfaces,
    /// Exactly these addresses (tests pin loopback; people pin an interface).
    Addrs(Vec<IpAddr>),
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Local addresses to gather host candidates on; every usable interface by default.
    pub bind: Bind,
    /// STUN servers (`stun:host:port`), none by default.
    pub stun: Vec<String>,
    /// Test hook: once media is up, drop this fraction of inbound datagrams before the
    /// transport sees them (a lossy path, since this kernel has no netem).
    #[doc(hidden)]
    pub test_inbound_loss: f64,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            bind: Bind::AllInterfaces,
            stun: Vec::new(),
            test_inbound_loss: 0.0,
        }
    }
}

impl TransportConfig {
    /// Media on 127.0.0.1 only: for tests, the demo and the bench, which must not send to
    /// this machine's other addresses.
    pub fn loopback() -> Self {
        Self {
            bind: Bind::Addrs(vec![IpAddr::from([127, 0, 0, 1])]),
            ..Self::default()
        }
    }
}

/// The addresses [`Bind`] stands for on this machine now (see [`usable_host_addrs`]).
pub fn host_addrs(bind: &Bind) -> Vec<IpAddr> {
    match bind {
        Bind::Addrs(addrs) => addrs.clone(),
        Bind::AllInterfaces => {
            let found = match if_addrs::get_if_addrs() {
                Ok(interfaces) => usable_host_addrs(
                    interfaces
                        .iter()
                        .map(|i| (i.ip(), i.is_oper_up() && !i.is_loopback())),
                ),
                Err(e) => {
                    tracing::warn!("cannot list the network interfaces: {e}");
                    Vec::new()
                }
            };
            if found.is_empty() {
                tracing::warn!(
                    "no network interface is up: media is bound to loopback and can reach only this machine"
                );
                vec![IpAddr::from([127, 0, 0, 1])]
            } else {
                found
            }
        }
    }
}

/// Of `(address, interface is up)` pairs, the addresses a peer elsewhere could send to:
/// those of interfaces that are up, without loopback, unspecified, link-local
/// (169.254/16, fe80::/10: an IPv6 link-local needs a scope id no candidate carries) or
/// multicast addresses, and without duplicates.
pub fn usable_host_addrs(interfaces: impl IntoIterator<Item = (IpAddr, bool)>) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for (ip, up) in interfaces {
        let link_local = match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => v6.is_unicast_link_local(),
        };
        if up
            && !ip.is_loopback()
            && !ip.is_unspecified()
            && !ip.is_multicast()
            && !link_local
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn all_interfaces_keeps_routable_addresses_of_interfaces_that_are_up() {
        let found = usable_host_addrs([
            (ip("127.0.0.1"), true),
            (ip("::1"), true),
            (ip("10.0.0.5"), true),
            (ip("10.0.0.5"), true),
            (ip("192.168.1.9"), false),
            (ip("169.254.3.4"), true),
            (ip("fe80::1"), true),
            (ip("2001:db8::7"), true),
            (ip("fd00::2"), true),
            (ip("0.0.0.0"), true),
            (ip("224.0.0.251"), true),
        ]);
        assert_eq!(found, [ip("10.0.0.5"), ip("2001:db8::7"), ip("fd00::2")]);
    }

    #[test]
    fn pinned_addresses_are_used_as_given_and_loopback_is_loopback() {
        let pinned = Bind::Addrs(vec![ip("10.1.2.3"), ip("::1")]);
        assert_eq!(host_addrs(&pinned), [ip("10.1.2.3"), ip("::1")]);
        assert_eq!(
            host_addrs(&TransportConfig::loopback().bind),
            [ip("127.0.0.1")]
        );
        assert_eq!(TransportConfig::default().bind, Bind::AllInterfaces);
    }
}
