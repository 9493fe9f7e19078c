//! A real one-to-one call on loopback: real signaling server, real QUIC, an MLS group of
//! two, real WebRTC (ICE, DTLS-SRTP), Opus, SFrame. Each side hears the other's tone.

use std::time::Duration;

use sotto_client::call::{CallOptions, Endpoint, VideoOptions};
use sotto_media::synth::AudioSignal;
use sotto_proto::EndReason;
use sotto_tests::{check_call as check, h, key_for, loopback, pair, server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_audio_and_video_call_both_ways_for_five_seconds() {
    let s = server(|_| {}).await;
    let addr = s.running.addr;
    let mut alice = Endpoint::connect(addr, &s.pin, h("@alice"), key_for("@alice"), 1)
        .await
        .expect("alice");
    let mut bob = Endpoint::connect(addr, &s.pin, h("@bob"), key_for("@bob"), 1)
        .await
        .expect("bob");

    let video = Some(VideoOptions {
        width: 384,
        height: 240,
        fps: 15,
        bitrate: 300_000,
    });
    let bob_opts = CallOptions {
        duration: None,
        audio: AudioSignal::Tone { hz: 660.0 },
        video,
        ..loopback()
    };
    let callee = tokio::spawn(async move { bob.answer(&bob_opts, Duration::from_secs(10)).await });
    let alice_opts = CallOptions {
        duration: Some(Duration::from_secs(5)),
        video,
        ..loopback()
    };
    let a = alice
        .call(&h("@bob"), &alice_opts)
        .await
        .expect("alice's call");
    let b = callee.await.expect("join").expect("bob's call");
    check("alice", &a, &b, 660.0);
    check("bob", &b, &a, 440.0);
    assert!(
        a.video_sent >= 60 && b.video_sent >= 60,
        "about 5 s of 15 fps video each way"
    );
    assert!(
        a.audio_sent >= 200,
        "about 5 s of 20 ms frames, got {}",
        a.audio_sent
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callee_hangs_up_and_both_sides_stop() {
    let s = server(|_| {}).await;
    let (mut alice, mut bob) = pair(&s).await;
    let bob_opts = CallOptions {
        duration: Some(Duration::from_secs(2)),
        ..loopback()
    };
    let callee = tokio::spawn(async move { bob.answer(&bob_opts, Duration::from_secs(10)).await });
    let a = alice
        .call(
            &h("@bob"),
            &CallOptions {
                duration: None,
                ..loopback()
            },
        )
        .await
        .expect("call");
    let b = callee.await.expect("join").expect("answer");
    assert_eq!(
        (a.ended, b.ended),
        (Some(EndReason::HungUp), Some(EndReason::HungUp))
    );
    assert!(
        a.audio_played > 50 && b.audio_played > 50,
        "media flowed before the hang-up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_call_ends_without_media() {
    let s = server(|_| {}).await;
    let (mut alice, mut bob) = pair(&s).await;
    let callee = tokio::spawn(async move {
        let (call, _) = bob.next_call(Duration::from_secs(10)).await.expect("rings");
        bob.decline(call).await.expect("decline");
    });
    let a = alice.call(&h("@bob"), &loopback()).await.expect("call");
    callee.await.expect("join");
    assert_eq!(a.ended, Some(EndReason::Declined));
    assert_eq!((a.audio_sent, a.audio_played), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_call_times_out_and_busy_callee_is_refused() {
    let s = server(|c| c.core.ring_timeout = Duration::from_millis(800)).await;
    let (mut alice, mut bob) = pair(&s).await;
    // Nobody answers: the ring timeout ends it.
    let a = alice.call(&h("@bob"), &loopback()).await.expect("call");
    assert_eq!(a.ended, Some(EndReason::Timeout));
    // Bob in a call with Carol: Alice gets Busy.
    let mut carol = Endpoint::connect(s.running.addr, &s.pin, h("@carol"), key_for("@carol"), 1)
        .await
        .expect("carol");
    let callee = tokio::spawn(async move {
        bob.answer(
            &CallOptions {
                duration: None,
                ..loopback()
            },
            Duration::from_secs(10),
        )
        .await
    });
    let caller = tokio::spawn(async move {
        carol
            .call(
                &h("@bob"),
                &CallOptions {
                    duration: Some(Duration::from_secs(2)),
                    ..loopback()
                },
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let busy = alice.call(&h("@bob"), &loopback()).await;
    assert!(
        matches!(&busy, Err(sotto_client::call::CallError::Signaling(sotto_client::signaling::ClientError::Server(e))) if e.code == sotto_proto::ErrorCode::Busy),
        "{busy:?}"
    );
    caller.await.expect("join").expect("carol's call");
    callee.await.expect("join").expect("bob's call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_mls_state_receives_packets_but_decodes_nothing() {
    let s = server(|_| {}).await;
    let (mut alice, mut bob) = pair(&s).await;
    let bob_opts = CallOptions {
        duration: None,
        test_wrong_keys: true,
        ..loopback()
    };
    let callee = tokio::spawn(async move { bob.answer(&bob_opts, Duration::from_secs(10)).await });
    let a = alice
        .call(
            &h("@bob"),
            &CallOptions {
                duration: Some(Duration::from_secs(2)),
                ..loopback()
            },
        )
        .await
        .expect("call");
    let b = callee.await.expect("join").expect("answer");
    // Bob got Alice's packets (leaf 0) but every one failed to decrypt; none was decoded.
    assert_eq!(
        b.audio_played, 0,
        "nothing undecryptable reaches the decoder"
    );
    assert!(
        b.decrypt_failures.get(&0).copied().unwrap_or(0) >= 50,
        "{:?}",
        b.decrypt_failures
    );
    // And Alice rejects what Bob sends, counted against Bob's leaf (1).
    assert_eq!(a.audio_played, 0);
    assert!(
        a.decrypt_failures.get(&1).copied().unwrap_or(0) >= 50,
        "{:?}",
        a.decrypt_failures
    );
}
