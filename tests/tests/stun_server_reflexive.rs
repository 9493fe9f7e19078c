//! `--stun`: before a direct call offers, each side asks the STUN server for its address
//! as the server sees it and offers that as a server-reflexive candidate beside its host
//! ones. Here the STUN server is the test's own, on loopback; both parties ask it from
//! their media sockets, and the call connects and decodes both ways.

use std::{collections::BTreeSet, net::SocketAddr, sync::Arc, time::Duration};

use sotto_client::{
    call::CallOptions,
    transport::{Bind, TransportConfig},
};
use sotto_tests::{check_call, h, loopback, pair, server};
use tokio::{net::UdpSocket, sync::Mutex};

/// A STUN server on 127.0.0.1 that answers Binding requests and notes who asked.
async fn stun_server() -> (SocketAddr, Arc<Mutex<BTreeSet<SocketAddr>>>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("stun socket");
    let addr = socket.local_addr().expect("addr");
    let asked = Arc::new(Mutex::new(BTreeSet::new()));
    let seen = asked.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            if let Some(reply) = sotto_client::stun::answer_binding(&buf[..n], from) {
                seen.lock().await.insert(from);
                let _ = socket.send_to(&reply, from).await;
            }
        }
    });
    (addr, asked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stun_servers_answer_is_gathered_and_the_call_connects() {
    let s = server(|_| {}).await;
    let (stun, asked) = stun_server().await;
    let with_stun = |o: CallOptions| CallOptions {
        transport: TransportConfig {
            bind: Bind::Addrs(vec![[127, 0, 0, 1].into()]),
            stun: vec![format!("stun:{stun}")],
            ..TransportConfig::loopback()
        },
        ..o
    };
    let (mut alice, mut bob) = pair(&s).await;
    let bob_opts = with_stun(CallOptions {
        duration: None,
        audio: sotto_media::synth::AudioSignal::Tone { hz: 660.0 },
        ..loopback()
    });
    let callee = tokio::spawn(async move { bob.answer(&bob_opts, Duration::from_secs(10)).await });
    let a = alice
        .call(
            &h("@bob"),
            &with_stun(CallOptions {
                duration: Some(Duration::from_secs(3)),
                ..loopback()
            }),
        )
        .await
        .expect("alice's call");
    let b = callee.await.expect("join").expect("bob's call");
    check_call("alice", &a, &b, 660.0);
    check_call("bob", &b, &a, 440.0);
    assert!(!a.relayed && !b.relayed, "peer to peer");
    let asked = asked.lock().await;
    assert_eq!(
        asked.len(),
        2,
        "each party asked from its media socket: {asked:?}"
    );
}
