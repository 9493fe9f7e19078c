//! Trust on first use: a contact whose identity key changed (a reinstall, or a directory
//! substituting keys) is refused for calls, both ways, with the key-change error, until
//! the user verifies the new key.

use std::time::Duration;

use sotto_client::{
    call::{CallError, CallOptions, Endpoint},
    profile::{Profile, ProfileError},
};
use sotto_proto::EndReason;
use sotto_tests::{h, key_for, loopback, server};

fn short() -> CallOptions {
    CallOptions {
        duration: Some(Duration::from_millis(800)),
        ..loopback()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_identity_key_is_refused_until_verified() {
    let profile_dir = tempfile::tempdir().expect("dir");

    // First server: Bob has key K1; Alice calls him and pins K1.
    let s1 = server(|_| {}).await;
    let mut alice = Endpoint::open(
        s1.running.addr,
        &s1.pin,
        h("@alice"),
        Profile::open(profile_dir.path()).expect("p"),
    )
    .await
    .expect("alice");
    let mut bob = Endpoint::connect(
        s1.running.addr,
        &s1.pin,
        h("@bob"),
        key_for("@bob-original"),
        1,
    )
    .await
    .expect("bob");
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
    let first = alice
        .call(&h("@bob"), &short())
        .await
        .expect("first call works");
    assert_eq!(first.ended, Some(EndReason::HungUp));
    callee.await.expect("join").expect("bob answered");
    drop(alice);

    // Second server hands out a different key for @bob.
    let s2 = server(|_| {}).await;
    let mut alice = Endpoint::open(
        s2.running.addr,
        &s2.pin,
        h("@alice"),
        Profile::open(profile_dir.path()).expect("p"),
    )
    .await
    .expect("alice again");
    let mut bob = Endpoint::connect(
        s2.running.addr,
        &s2.pin,
        h("@bob"),
        key_for("@bob-substituted"),
        1,
    )
    .await
    .expect("bob");

    // Alice calling Bob: refused before anything rings.
    let refused = alice.call(&h("@bob"), &short()).await;
    match refused {
        Err(CallError::Contact(ProfileError::KeyChanged { handle, .. })) => {
            assert_eq!(handle, "@bob")
        }
        other => panic!("expected the key-change error, got {other:?}"),
    }
    assert!(
        bob.next_call(Duration::from_millis(500)).await.is_err(),
        "Bob's device never rang"
    );

    // Bob calling Alice: Alice refuses to answer; Bob hears Declined.
    let alice_side = tokio::spawn(async move {
        let r = alice.answer(&short(), Duration::from_secs(10)).await;
        (alice, r)
    });
    let bob_report = bob.call(&h("@alice"), &short()).await.expect("bob's call");
    assert_eq!(bob_report.ended, Some(EndReason::Declined));
    let (mut alice, alice_result) = alice_side.await.expect("join");
    assert!(
        matches!(
            alice_result,
            Err(CallError::Contact(ProfileError::KeyChanged { .. }))
        ),
        "{alice_result:?}"
    );

    // After comparing safety numbers, Alice verifies the new key; calls work again.
    alice.verify_contact(&h("@bob")).await.expect("verify");
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
    let again = alice
        .call(&h("@bob"), &short())
        .await
        .expect("call after verification");
    assert_eq!(again.ended, Some(EndReason::HungUp));
    assert!(again.audio_played > 0);
    callee.await.expect("join").expect("bob answered");
    assert!(alice.profile().expect("profile").contacts()["@bob"].verified);
}
