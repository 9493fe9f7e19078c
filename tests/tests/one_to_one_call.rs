//! A real one-to-one call on loopback: real signaling server, real QUIC, an MLS group of
//! two, real WebRTC (ICE, DTLS-SRTP), Opus, SFrame. Each side hears the other's tone.

use std::time::Duration;

use sotto_client::call::{CallOptions, CallReport, Endpoint};
use sotto_media::synth::AudioSignal;
use sotto_proto::EndReason;
use sotto_tests::{h, key_for, server};

fn check(side: &str, me: &CallReport, peer: &CallReport, expect_hz: f64) {
    eprintln!(
        "{side}: sent {} played {} concealed {} (fec {}) decrypt failures {:?} latency p50 {:?} p99 {:?} tone {:?} Hz setup {:?}",
        me.audio_sent,
        me.audio_played,
        me.audio_concealed,
        me.audio_fec,
        me.decrypt_failures,
        me.latency.latency_quantile(0.5),
        me.latency.latency_quantile(0.99),
        me.received_hz,
        me.setup_time,
    );
    assert_eq!(me.ended, Some(EndReason::HungUp), "{side} ended by hang-up");
    assert!(
        me.decrypt_failures.is_empty(),
        "{side}: nothing fails to decrypt"
    );
    // Frames still in flight when the call ends cannot be played: allow the last 10.
    let want = (peer.audio_sent as f64 * 0.95) as u64;
    assert!(
        me.audio_played + 10 >= want,
        "{side} played {} of the peer's {}",
        me.audio_played,
        peer.audio_sent
    );
    assert!(me.latency.in_order(), "{side}: frames played in order");
    let hz = me.received_hz.expect("a tone was heard");
    assert!(
        (hz - expect_hz).abs() < 10.0,
        "{side} heard {hz} Hz, expected {expect_hz}"
    );
    assert_eq!(me.safety_number, peer.safety_number, "safety numbers match");
    assert_eq!(
        me.verification_code, peer.verification_code,
        "verification codes match"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_audio_call_both_ways_for_five_seconds() {
    let s = server(|_| {}).await;
    let addr = s.running.addr;
    let mut alice = Endpoint::connect(addr, &s.pin, h("@alice"), key_for("@alice"), 1)
        .await
        .expect("alice");
    let mut bob = Endpoint::connect(addr, &s.pin, h("@bob"), key_for("@bob"), 1)
        .await
        .expect("bob");

    let bob_opts = CallOptions {
        duration: None,
        audio: AudioSignal::Tone { hz: 660.0 },
        ..CallOptions::default()
    };
    let callee = tokio::spawn(async move { bob.answer(&bob_opts, Duration::from_secs(10)).await });
    let alice_opts = CallOptions {
        duration: Some(Duration::from_secs(5)),
        ..CallOptions::default()
    };
    let a = alice
        .call(&h("@bob"), &alice_opts)
        .await
        .expect("alice's call");
    let b = callee.await.expect("join").expect("bob's call");
    check("alice", &a, &b, 660.0);
    check("bob", &b, &a, 440.0);
    assert!(
        a.audio_sent >= 200,
        "about 5 s of 20 ms frames, got {}",
        a.audio_sent
    );
}
