//! A server that substitutes keys is caught, whatever it substitutes: the directory
//! answers honestly (so trust on first use alone would pass), but underneath the server
//! hands out a KeyPackage of its own for the callee, or replaces the callee's Welcome
//! with one into a group where its own member claims to be the caller. Both sides refuse
//! the call with the key-mismatch errors, naming who did not check out, before any media
//! key is derived; the same test against an honest server connects (the control).

use std::time::Duration;

use sotto_client::call::{CallError, CallOptions};
use sotto_tests::{
    check_call, h,
    hostile::{self, Attack, Outcome},
    loopback,
};

/// @alice calls @bob (tones of 440 and 660 Hz, two seconds) through a server playing
/// `attack`.
async fn call_through(attack: Attack) -> Outcome {
    let bob_opts = CallOptions {
        duration: None,
        audio: sotto_media::synth::AudioSignal::Tone { hz: 660.0 },
        ..loopback()
    };
    let alice_opts = CallOptions {
        duration: Some(Duration::from_secs(2)),
        ..loopback()
    };
    hostile::call_through(attack, alice_opts, bob_opts).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_server_connects_the_call() {
    let o = call_through(Attack::None).await;
    let (a, b) = (o.alice.expect("alice's call"), o.bob.expect("bob's call"));
    check_call("alice", &a, &b, 660.0);
    check_call("bob", &b, &a, 440.0);
    assert!(a.audio_played > 0 && b.audio_played > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_substituted_key_package_is_refused_on_both_sides() {
    let o = call_through(Attack::SubstituteKeyPackage).await;
    let log = o.log.lock().expect("log");
    assert_eq!(log.packages_substituted, 1, "the attack ran");
    match o.alice {
        Err(CallError::KeyMismatch { handle, .. }) => assert_eq!(handle, "@bob"),
        other => panic!("alice must refuse the substituted package: {other:?}"),
    }
    match o.bob {
        Err(CallError::PeerSawKeyMismatch { peer }) => assert_eq!(peer.handle, h("@alice")),
        other => panic!("bob must hear why alice refused: {other:?}"),
    }
    assert!(
        log.commits.is_empty(),
        "nothing was committed to the substituted key, so nothing was ever encrypted to it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_substituted_welcome_member_is_refused_on_both_sides() {
    let o = call_through(Attack::SubstituteWelcomeMember).await;
    let log = o.log.lock().expect("log");
    assert_eq!(log.welcomes_substituted, 1, "the attack ran");
    match o.bob {
        Err(CallError::KeyMismatch { handle, .. }) => assert_eq!(handle, "@alice"),
        other => panic!("bob must refuse the forged group: {other:?}"),
    }
    match o.alice {
        Err(CallError::PeerSawKeyMismatch { peer }) => assert_eq!(peer.handle, h("@bob")),
        other => panic!("alice must hear why bob refused: {other:?}"),
    }
    assert_eq!(
        log.commits.len(),
        1,
        "only alice's add was committed; bob never committed in the forged group"
    );
}
