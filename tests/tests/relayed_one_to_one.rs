//! One-to-one calls through the SFU, between hosts of the test's own: three network
//! namespaces, @alice's, @bob's and the servers' (`sotto-signaling` and `sotto-sfu`), the
//! servers' host routing between the other two, so the clients can reach each other
//! directly as on a routed network. Everything runs as a user would run it: the real
//! binaries, the CLI, default candidate gathering (every interface that is up).
//!
//! - `sotto call @bob --relay`: the call works, and neither side's SDP, candidates or
//!   received packets carry the other's address (the SDP from the client's own report;
//!   the packets counted by the kernel, nftables in each client's host).
//! - `sotto listen --relay`: a callee that asks for the relay gets it from a plain caller.
//! - A plain call whose direct path the kernel drops (the servers' host forwards nothing
//!   between the clients) falls back to the relay by itself within a few seconds.
//!
//! Needs root, iproute2 and nftables (see `sotto_tests::netns`).

use sotto_tests::{
    netns::{CliCall, End, Net, call_by_cli},
    report::{Side, check_video_and_keys},
};

/// The servers' addresses on each client's link, and the clients'.
const SERVERS_TO_A: &str = "10.204.1.1";
const SERVERS_TO_B: &str = "10.204.2.1";
const ADDR_A: &str = "10.204.1.2";
const ADDR_B: &str = "10.204.2.2";
const SECRET: &str = "relay-test-secret";

/// The three hosts, addressed and routed; the servers running on theirs.
struct Hosts {
    net: Net,
    servers: String,
    a: String,
    b: String,
    fingerprint: String,
}

impl Hosts {
    fn new() -> Self {
        let mut net = Net::new();
        let (servers, a, b) = (net.host("srv"), net.host("a"), net.host("b"));
        for (client, dev, servers_addr, client_addr) in [
            (&a, "to-a", SERVERS_TO_A, ADDR_A),
            (&b, "to-b", SERVERS_TO_B, ADDR_B),
        ] {
            let (s, c) = (format!("{servers_addr}/24"), format!("{client_addr}/24"));
            net.link(
                End {
                    ns: &servers,
                    dev,
                    addrs: &[&s],
                },
                End {
                    ns: client,
                    dev: "veth0",
                    addrs: &[&c],
                },
            );
            net.default_route(client, servers_addr);
        }
        net.forward(&servers);
        let listen = format!("{SERVERS_TO_A}:4433");
        let fingerprint = net.start_signaling(&servers, &listen, SECRET);
        net.start_sfu(
            &servers,
            &listen,
            &fingerprint,
            &format!("{SERVERS_TO_A}:5000"),
            SECRET,
        );
        Self {
            net,
            servers,
            a,
            b,
            fingerprint,
        }
    }

    /// Counts, on each client's host, packets that come from the other client's address.
    fn count_packets_from_the_other(&self) {
        for (ns, other) in [(&self.a, ADDR_B), (&self.b, ADDR_A)] {
            self.net.nft(ns, "add table inet seen");
            self.net.nft(
                ns,
                "add chain inet seen input { type filter hook input priority 0; }",
            );
            self.net.nft(
                ns,
                &format!("add rule inet seen input ip saddr {other} counter"),
            );
        }
    }

    /// The servers' host forwards nothing between the clients (it still serves both).
    fn cut_the_direct_path(&self) {
        let ns = &self.servers;
        self.net.nft(ns, "add table inet cut");
        self.net.nft(
            ns,
            "add chain inet cut forward { type filter hook forward priority 0; }",
        );
        self.net.nft(
            ns,
            &format!("add rule inet cut forward ip saddr {ADDR_A} ip daddr {ADDR_B} counter drop"),
        );
        self.net.nft(
            ns,
            &format!("add rule inet cut forward ip saddr {ADDR_B} ip daddr {ADDR_A} drop"),
        );
    }

    fn call(&mut self, seconds: u32, alice_args: &[&str], bob_args: &[&str]) -> (Side, Side) {
        let server = format!("{SERVERS_TO_A}:4433");
        let (a, b, fingerprint) = (self.a.clone(), self.b.clone(), self.fingerprint.clone());
        let call = CliCall {
            server: &server,
            fingerprint: &fingerprint,
            alice: &a,
            bob: &b,
            seconds,
            alice_args,
            bob_args,
        };
        call_by_cli(&mut self.net, &call, |_| {})
    }
}

/// Both went through the SFU, heard each other's tone, and decoded ≥ 95 % of the other's
/// audio and video (the last frames in flight at hang-up allowed for), nothing rejected.
fn check_relayed_media(me: &Side, peer: &Side, expect_hz: f64) {
    check_video_and_keys(me, peer, expect_hz);
    let side = me.name;
    assert_eq!(me.report["relayed"], true, "{side} went through the SFU");
    let sent = peer.n("audio_sent");
    assert!(
        me.n("audio_played") + 10 >= sent * 95 / 100,
        "{side} played {} of {sent} audio frames",
        me.n("audio_played")
    );
    assert!(
        me.output.contains("it went through the SFU"),
        "{side} was told: {}",
        me.output
    );
}

#[test]
fn a_relayed_call_shows_neither_side_the_others_address() {
    let mut hosts = Hosts::new();
    hosts.count_packets_from_the_other();
    let (alice, bob) = hosts.call(6, &["--relay"], &[]);
    check_no_address_crossed(&hosts, &alice, &bob);
}

/// `sotto listen --relay`: the callee asks for the relay as it answers, so its address
/// reaches nobody. (The plain caller's own offer still reaches the callee over
/// signaling before the move: the caller chose to start peer to peer. The callee never
/// answers it, and no packet crosses.)
#[test]
fn a_callee_that_asks_for_the_relay_gets_it_from_a_plain_caller() {
    let mut hosts = Hosts::new();
    hosts.count_packets_from_the_other();
    let (alice, bob) = hosts.call(6, &[], &["--relay"]);
    check_no_address_crossed(&hosts, &alice, &bob);
}

/// Both went through the SFU and neither saw the other's address: not in the SDP of the
/// media connection each used (the SFU's answer), not as a media source, not in a packet
/// the kernel counted.
fn check_no_address_crossed(hosts: &Hosts, alice: &Side, bob: &Side) {
    for (me, peer, hz, other) in [(alice, bob, 660.0, ADDR_B), (bob, alice, 440.0, ADDR_A)] {
        check_relayed_media(me, peer, hz);
        // The SDP it got (the SFU's answer) names the SFU only, and media came from it.
        assert_eq!(
            me.strings("remote_addrs"),
            [SERVERS_TO_A],
            "{}: the SDP names the SFU only",
            me.name
        );
        assert_eq!(
            me.strings("media_from"),
            [SERVERS_TO_A],
            "{}: media came from the SFU only",
            me.name
        );
        assert!(!me.output.contains(other), "{}: {}", me.name, me.output);
    }
    for (ns, who) in [(&hosts.a, "alice"), (&hosts.b, "bob")] {
        assert_eq!(
            hosts.net.counted(ns, "seen"),
            0,
            "{who}'s host received packets from the other client"
        );
    }
}

#[test]
fn a_call_whose_direct_path_is_dropped_falls_back_to_the_relay() {
    let mut hosts = Hosts::new();
    hosts.cut_the_direct_path();
    let (alice, bob) = hosts.call(8, &[], &[]);
    for (me, peer, hz) in [(&alice, &bob, 660.0), (&bob, &alice, 440.0)] {
        check_relayed_media(me, peer, hz);
    }
    assert!(
        hosts.net.counted(&hosts.servers, "cut") > 0,
        "the clients tried the direct path first"
    );
    // By itself and soon: 4 s for the direct path, then the relay's own setup.
    let setup = alice.report["setup_ms"].as_f64().expect("setup time");
    assert!(setup < 10_000.0, "first audio after {setup} ms");
}
