//! What the delivery service cannot check, members recover from: the server accepts a
//! commit whose MAC (membership tag) only members can verify, and @bob cannot process it.
//! He reports it and rejoins the call's group by external commit from the GroupInfo the
//! server keeps; the call goes on, both sides end in the same epoch with the same
//! verification code, and the report is counted.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use sotto_client::call::{CallOptions, Endpoint};
use sotto_proto::EndReason;
use sotto_tests::{
    h,
    hostile::{Attack, Hostile, Log},
    key_for, loopback, metrics_text, server_with_storage,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_cannot_process_an_accepted_commit_rejoins_and_the_call_goes_on() {
    let log = Arc::new(Mutex::new(Log::default()));
    let l = log.clone();
    let s = server_with_storage(
        |_| {},
        move |inner| Hostile::wrap(inner, Attack::CorruptFirstCommitTag, "@bob", "@alice", l),
    )
    .await;
    let addr = s.running.addr;
    let mut alice = Endpoint::connect(addr, &s.pin, h("@alice"), key_for("@alice"), 1)
        .await
        .expect("alice");
    let mut bob = Endpoint::connect(addr, &s.pin, h("@bob"), key_for("@bob"), 1)
        .await
        .expect("bob");
    let bob_opts = CallOptions {
        duration: None,
        audio: sotto_media::synth::AudioSignal::Tone { hz: 660.0 },
        ..loopback()
    };
    let callee = tokio::spawn(async move { bob.answer(&bob_opts, Duration::from_secs(10)).await });
    let alice_opts = CallOptions {
        duration: Some(Duration::from_secs(4)),
        // One self-update at 2 s: the commit Bob will not be able to process.
        rekey_every: Some(Duration::from_secs(2)),
        ..loopback()
    };
    let a = alice
        .call(&h("@bob"), &alice_opts)
        .await
        .expect("alice's call");
    let b = callee.await.expect("join").expect("bob's call survives");
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
    let log = Arc::new(Mutex::new(Log::default()));
    let l = log.clone();
    let s = server_with_storage(
        |_| {},
        move |inner| {
            Hostile::wrap(
                inner,
                Attack::CorruptCommitThenForgeGroupInfo,
                "@bob",
                "@alice",
                l,
            )
        },
    )
    .await;
    let addr = s.running.addr;
    let mut alice = Endpoint::connect(addr, &s.pin, h("@alice"), key_for("@alice"), 1)
        .await
        .expect("alice");
    let mut bob = Endpoint::connect(addr, &s.pin, h("@bob"), key_for("@bob"), 1)
        .await
        .expect("bob");
    let bob_opts = CallOptions {
        duration: None,
        ..loopback()
    };
    let callee = tokio::spawn(async move { bob.answer(&bob_opts, Duration::from_secs(10)).await });
    let alice_opts = CallOptions {
        duration: Some(Duration::from_secs(4)),
        rekey_every: Some(Duration::from_secs(2)),
        ..loopback()
    };
    let a = alice.call(&h("@bob"), &alice_opts).await;
    let b = callee.await.expect("join");
    let log = log.lock().expect("log");
    assert_eq!(
        (log.commits_corrupted, log.group_infos_forged),
        (1, 1),
        "the attack ran"
    );
    match b {
        Err(sotto_client::call::CallError::KeyMismatch { handle, .. }) => {
            assert_eq!(
                handle, "@alice",
                "the peer bob had is not in the offered group"
            )
        }
        other => panic!("bob must refuse the forged group: {other:?}"),
    }
    match a {
        Err(sotto_client::call::CallError::PeerSawKeyMismatch { peer }) => {
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
