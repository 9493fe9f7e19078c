//! What the delivery service cannot check, members recover from: the server accepts a
//! commit whose MAC (membership tag) only members can verify, and @bob cannot process it.
//! He reports it and rejoins the call's group by external commit from the GroupInfo the
//! server keeps; the call goes on, both sides end in the same epoch with the same
//! verification code, and the report is counted.

use std::time::Duration;

use sotto_client::call::{CallError, CallOptions};
use sotto_proto::EndReason;
use sotto_tests::{
    h,
    hostile::{self, Attack, Outcome},
    loopback, metrics_text,
};

/// @alice calls @bob for 4 s with one MLS self-update at 2 s (the commit the attack
/// spoils for Bob), through a server playing `attack`.
async fn call_with_a_rekey(attack: Attack) -> Outcome {
    let bob_opts = CallOptions {
        duration: None,
        audio: sotto_media::synth::AudioSignal::Tone { hz: 660.0 },
        ..loopback()
    };
    let alice_opts = CallOptions {
        duration: Some(Duration::from_secs(4)),
        rekey_every: Some(Duration::from_secs(2)),
        ..loopback()
    };
    hostile::call_through(attack, alice_opts, bob_opts).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_cannot_process_an_accepted_commit_rejoins_and_the_call_goes_on() {
    let Outcome {
        alice,
        bob,
        log,
        server: s,
    } = call_with_a_rekey(Attack::CorruptFirstCommitTag).await;
    let a = alice.expect("alice's call");
    let b = bob.expect("bob's call survives");
    assert_eq!(
        log.lock().expect("log").commits_corrupted,
        1,
        "the attack ran"
    );
    assert_eq!(
        (a.ended, b.ended),
        (Some(EndReason::HungUp), Some(EndReason::HungUp))
    );
    assert!(b.rejoins >= 1, "bob rejoined by external commit");
    assert_eq!(
        a.verification_code, b.verification_code,
        "both ended in the same epoch with the same keys"
    );
    // The call went on across the rejoin: most of each side's audio was heard.
    for (who, me, peer) in [("alice", &a, &b), ("bob", &b, &a)] {
        assert!(
            me.audio_played * 10 >= peer.audio_sent * 8,
            "{who} played {} of {}",
            me.audio_played,
            peer.audio_sent
        );
    }
    let m = metrics_text(&s).await;
    assert!(m.contains("sotto_commit_reports_total 1"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_group_info_offered_for_the_rejoin_is_refused() {
    let Outcome {
        alice: a,
        bob: b,
        log,
        ..
    } = call_with_a_rekey(Attack::CorruptCommitThenForgeGroupInfo).await;
    let log = log.lock().expect("log");
    assert_eq!(
        (log.commits_corrupted, log.group_infos_forged),
        (1, 1),
        "the attack ran"
    );
    match b {
        Err(CallError::KeyMismatch { handle, .. }) => {
            assert_eq!(
                handle, "@alice",
                "the peer bob had is not in the offered group"
            )
        }
        other => panic!("bob must refuse the forged group: {other:?}"),
    }
    match a {
        Err(CallError::PeerSawKeyMismatch { peer }) => {
            assert_eq!(peer.handle, h("@bob"))
        }
        other => panic!("alice must hear why bob refused: {other:?}"),
    }
    assert_eq!(
        log.commits.len(),
        2,
        "alice's add and her update; bob never committed into the forged group"
    );
}
