//! How a real 1:1 call adapts while it runs (loopback, real server, real WebRTC): 10 ms
//! audio frames, MLS epoch changes mid-call (new keys, a keyframe after each), keyframe
//! requests after video loss, NACK/RTX repairing light loss, and Opus following the
//! send-side bandwidth estimate.

use std::time::Duration;

use sotto_client::{
    bitrate,
    call::{CallOptions, CallReport, VideoOptions},
    transport::TransportConfig,
};
use sotto_media::synth::AudioSignal;
use sotto_tests::{check_call, h, loopback, pair, server};

const VIDEO: VideoOptions = VideoOptions {
    width: 384,
    height: 240,
    fps: 15,
    bitrate: 300_000,
};

/// The same at 30 fps: enough video packets (about 120 in 4 s, each frame one or two)
/// that 5 % loss is sure to hit some (at 15 fps, one run in twenty lost none).
const VIDEO_30: VideoOptions = VideoOptions { fps: 30, ..VIDEO };

/// Alice calls Bob on a fresh server (ephemeral endpoints reusing a device id would
/// inherit KeyPackages they cannot open); both reports.
async fn call(alice_opts: CallOptions, bob_opts: CallOptions) -> (CallReport, CallReport) {
    let s = server(|_| {}).await;
    let (mut alice, mut bob) = pair(&s).await;
    let callee = tokio::spawn(async move { bob.answer(&bob_opts, Duration::from_secs(10)).await });
    let a = alice.call(&h("@bob"), &alice_opts).await;
    let b = callee.await.expect("join");
    match (a, b) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => panic!("alice: {:?}\nbob: {:?}", a.err(), b.err()),
    }
}

/// Alice: the default 440 Hz tone, hanging up after `secs`.
fn caller(secs: u64) -> CallOptions {
    CallOptions {
        duration: Some(Duration::from_secs(secs)),
        ..loopback()
    }
}

/// Bob: a 660 Hz tone, waiting for Alice to hang up.
fn callee() -> CallOptions {
    CallOptions {
        duration: None,
        audio: AudioSignal::Tone { hz: 660.0 },
        ..loopback()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_millisecond_audio_frames_both_ways_and_against_twenty() {
    // 10 ms on both sides.
    let ten = |o: CallOptions| CallOptions { frame_ms: 10, ..o };
    let (a, b) = call(ten(caller(3)), ten(callee())).await;
    check_call("alice", &a, &b, 660.0);
    check_call("bob", &b, &a, 440.0);
    assert!(
        a.audio_sent >= 250 && b.audio_sent >= 250,
        "about 3 s of 10 ms frames each way: {} and {}",
        a.audio_sent,
        b.audio_sent
    );
    let p50 = b.latency.latency_quantile(0.5).expect("latency");
    eprintln!("10 ms frames: bob's latency p50 {p50:?}");

    // Each side picks its own framing; the receiver follows the sender's.
    let (a, b) = call(ten(caller(3)), callee()).await;
    check_call("alice (10 ms) hearing 20 ms", &a, &b, 660.0);
    check_call("bob (20 ms) hearing 10 ms", &b, &a, 440.0);
    assert!(
        a.audio_sent >= 2 * b.audio_sent - 20,
        "{} vs {}",
        a.audio_sent,
        b.audio_sent
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epoch_changes_mid_call_rekey_the_media_and_bring_keyframes() {
    let bob_opts = CallOptions {
        video: Some(VIDEO),
        ..callee()
    };
    let alice_opts = CallOptions {
        video: Some(VIDEO),
        rekey_every: Some(Duration::from_secs(2)),
        ..caller(5)
    };
    let (a, b) = call(alice_opts, bob_opts).await;
    eprintln!(
        "epochs: alice {} (keyframes {}), bob {} (keyframes {})",
        a.epoch_changes, a.epoch_keyframes, b.epoch_changes, b.epoch_keyframes
    );
    // ≥ 95 % each way, no decrypt failure, codes equal at the end: the old epoch's frames
    // in flight were still accepted and the new keys took over on both sides.
    check_call("alice", &a, &b, 660.0);
    check_call("bob", &b, &a, 440.0);
    assert_eq!(a.epoch_changes, 2, "Alice committed at 2 s and 4 s");
    assert_eq!(b.epoch_changes, 2, "Bob processed both commits");
    assert_eq!(a.epoch_keyframes, 2, "a keyframe after each epoch change");
    assert_eq!(b.epoch_keyframes, 2, "both senders send one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_video_frames_bring_a_keyframe_request_and_recovery() {
    // Bob loses a burst of Alice's video packets (the synthetic pattern compresses to about
    // one packet per frame, so frames ~35–40, after the 2 s periodic keyframe and long
    // before the next), beyond what NACK can repair: the frames after it cannot be decoded
    // until a keyframe comes.
    let bob_opts = CallOptions {
        video: Some(VIDEO),
        test_drop_video: Some(35..41),
        ..callee()
    };
    let alice_opts = CallOptions {
        video: Some(VIDEO),
        ..caller(4)
    };
    let (a, b) = call(alice_opts, bob_opts).await;
    eprintln!(
        "bob: PLIs sent {}, frames skipped {}, decoded {} of {}; alice: requests {}, forced keyframes {}, keyframes {}",
        b.keyframe_requests_sent,
        b.video_skipped,
        b.video_decoded,
        a.video_sent,
        a.keyframe_requests_received,
        a.video_keyframes_forced,
        a.video_keyframes
    );
    assert!(b.keyframe_requests_sent >= 1, "Bob asked for a keyframe");
    assert!(
        a.keyframe_requests_received >= 1,
        "Alice's transport saw the request"
    );
    assert!(
        a.video_keyframes_forced >= 1,
        "Alice's encoder made a keyframe"
    );
    assert!(b.video_skipped >= 1, "frames after the loss were held back");
    // Recovery within a fraction of the 2 s (30-frame) keyframe period: the request worked,
    // not the periodic keyframe.
    assert!(
        b.video_skipped < 15,
        "{} frames skipped before recovery",
        b.video_skipped
    );
    assert_eq!(b.video_mismatches, 0, "no broken picture was shown");
    assert!(b.video.in_order());
    assert!(
        b.video_decoded + 20 >= a.video_sent,
        "decoding resumed: {} of {}",
        b.video_decoded,
        a.video_sent
    );
}

/// The encoders spend what the send-side estimate (transport-wide CC, str0m's delay and
/// loss controllers) allows: Opus and the video layer get `bitrate::split` of the last
/// estimate on each side, whatever the path. That the estimate itself falls on a lossy
/// path is the link's unit test (`a_direct_links_estimate_falls_on_a_lossy_path`, on a
/// virtual clock): on a real five-second call the loss controller's verdict depends on
/// how many observations this machine's timing gave it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_bitrate_follows_the_send_side_estimate() {
    // Bob's path drops 40 % of what Alice sends; Alice's path from Bob is clean.
    let bob_opts = CallOptions {
        transport: TransportConfig {
            test_inbound_loss: 0.4,
            ..TransportConfig::loopback()
        },
        ..callee()
    };
    let alice_opts = CallOptions {
        video: Some(VIDEO),
        ..caller(5)
    };
    let (a, b) = call(alice_opts, bob_opts).await;
    eprintln!(
        "alice (lossy path): estimate {:?} after {} updates, opus {} (min {}), video {}; bob (clean): estimate {:?} after {} updates, opus {}",
        a.estimate_bps,
        a.estimate_updates,
        a.audio_bitrate,
        a.audio_bitrate_min,
        a.video_bitrate,
        b.estimate_bps,
        b.estimate_updates,
        b.audio_bitrate
    );
    for (side, r) in [("alice", &a), ("bob", &b)] {
        let est = r.estimate_bps.expect("an estimate");
        assert_eq!(r.audio_bitrate, bitrate::split(est, None).audio, "{side}");
    }
    // Alice's estimate moved with her video, and her encoder followed every move.
    let est = a.estimate_bps.expect("alice's estimate");
    assert!(a.estimate_updates >= 2, "alice: the estimate moved");
    assert_eq!(
        a.video_bitrate,
        bitrate::split(est, Some(VIDEO.bitrate)).video,
        "alice's video target"
    );
    assert!(a.audio_bitrate_min > 0 && a.audio_bitrate_min <= a.audio_bitrate);
    // Bob's own sending was not held back by Alice's bad path.
    assert_eq!(b.audio_bitrate, bitrate::AUDIO_MAX_BPS);
    assert!(b.audio_played > 0 && a.audio_played > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn light_loss_is_repaired_by_nack_and_rtx() {
    // Bob's path drops 5 % of what arrives, retransmissions included.
    let bob_opts = CallOptions {
        video: Some(VIDEO_30),
        transport: TransportConfig {
            test_inbound_loss: 0.05,
            ..TransportConfig::loopback()
        },
        ..callee()
    };
    let alice_opts = CallOptions {
        video: Some(VIDEO_30),
        ..caller(4)
    };
    let (a, b) = call(alice_opts, bob_opts).await;
    eprintln!(
        "bob under 5 % loss: retransmissions {}, video decoded {} of {} (skipped {}, PLIs {}), audio played {} of {} (concealed {}, fec {})",
        b.retransmissions_received,
        b.video_decoded,
        a.video_sent,
        b.video_skipped,
        b.keyframe_requests_sent,
        b.audio_played,
        a.audio_sent,
        b.audio_concealed,
        b.audio_fec
    );
    assert!(b.retransmissions_received > 0, "NACKs were answered");
    // Repairs arrive within the reassembler's repair wait, so frames are not given up.
    assert!(
        b.video_decoded * 20 >= a.video_sent * 19,
        "≥ 95 % of video decoded: {} of {}",
        b.video_decoded,
        a.video_sent
    );
    assert_eq!(b.video_mismatches, 0, "no broken picture was shown");
    assert!(b.video.in_order());
    // Audio NACKs come back too late for a 20 ms jitter target; Opus FEC in the next
    // packet recovers those.
    assert!(
        (b.audio_played + b.audio_fec) * 10 >= a.audio_sent * 9,
        "≥ 90 % of audio played or recovered: {} + {} of {}",
        b.audio_played,
        b.audio_fec,
        a.audio_sent
    );
}
