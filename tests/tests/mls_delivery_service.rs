//! The MLS delivery service over real QUIC, with real MLS: KeyPackages checked on upload
//! and claimed exactly once under 20 concurrent claimers, the last-resort package, epoch
//! fencing under concurrent commits, Welcome/Commit fan-out and delivery to a device that
//! was offline.

use std::collections::HashSet;

use sotto_client::signaling::{ClientError, Incoming};
use sotto_proto::{DeviceAddr, ErrorCode, MlsKind, Request, Response, Stored};
use sotto_tests::{h, server};

#[tokio::test]
async fn twenty_concurrent_claimers_each_get_a_distinct_package_or_the_last_resort() {
    let s = server(|_| {}).await;
    let bob = s.member("@bob", 1, 0).await;
    let packages: Vec<Vec<u8>> = (0..10)
        .map(|_| bob.mls.key_package().expect("kp"))
        .collect();
    let last_resort_package = bob.mls.last_resort_key_package().expect("kp");
    bob.user
        .client
        .request(Request::UploadKeyPackages {
            packages: packages.clone(),
            last_resort: Some(last_resort_package.clone()),
            replace: true,
        })
        .await
        .expect("upload");

    let mut claimers = Vec::new();
    for i in 0..20 {
        claimers.push(s.user(&format!("@claimer{i:02}"), 1).await);
    }
    // Claims are only for devices in a call or room with the claimer.
    let claimer_refs: Vec<_> = claimers.iter().collect();
    bob.user.room_with(&claimer_refs).await;
    let results = futures_util::future::join_all(claimers.iter().map(|c| {
        c.client.request(Request::ClaimKeyPackage {
            handle: h("@bob"),
            device: None,
        })
    }))
    .await;
    let mut one_use = HashSet::new();
    let mut last_resort = 0;
    for r in results {
        match r.expect("claim") {
            Response::KeyPackage {
                package,
                last_resort: false,
                device,
            } => {
                assert_eq!(
                    device,
                    DeviceAddr {
                        handle: h("@bob"),
                        device: 1
                    }
                );
                assert!(
                    one_use.insert(package),
                    "a one-use package was handed out twice"
                );
            }
            Response::KeyPackage {
                package,
                last_resort: true,
                ..
            } => {
                assert_eq!(package, last_resort_package);
                last_resort += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        one_use,
        packages.into_iter().collect::<HashSet<_>>(),
        "each one-use package exactly once"
    );
    assert_eq!(
        last_resort, 10,
        "the rest got the last-resort package, which stays"
    );
}

#[tokio::test]
async fn key_packages_are_checked_and_capped_with_typed_errors() {
    let s = server(|c| c.core.limits.max_key_packages = 3).await;
    let bob = s.member("@bob", 1, 0).await;
    let upload = |packages: Vec<Vec<u8>>, last_resort: Option<Vec<u8>>| {
        bob.user.client.request(Request::UploadKeyPackages {
            packages,
            last_resort,
            replace: false,
        })
    };
    let kp = || bob.mls.key_package().expect("kp");
    let code = |r: Result<Response, ClientError>| match r {
        Err(ClientError::Server(e)) => e.code,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert!(matches!(
        code(upload(vec![kp(), kp(), kp(), kp()], None).await),
        ErrorCode::LimitReached { .. }
    ));
    assert_eq!(code(upload(vec![vec![]], None).await), ErrorCode::Malformed);
    assert_eq!(
        code(upload(vec![vec![1, 2, 3]], None).await),
        ErrorCode::InvalidKeyPackage,
        "garbage"
    );
    // A valid KeyPackage of someone else's key, or naming another handle, is refused.
    let mallory = sotto_client::mls::MlsDevice::new("@bob").expect("device");
    assert_eq!(
        code(upload(vec![mallory.key_package().expect("kp")], None).await),
        ErrorCode::InvalidKeyPackage,
        "another key"
    );
    let other_name = sotto_client::mls::MlsDevice::with_identity("@robert", &bob.user.key, None)
        .expect("device");
    assert_eq!(
        code(upload(vec![other_name.key_package().expect("kp")], None).await),
        ErrorCode::InvalidKeyPackage,
        "another handle"
    );
    assert_eq!(
        code(upload(vec![], Some(kp())).await),
        ErrorCode::InvalidKeyPackage,
        "a last-resort package must say so"
    );
    assert_eq!(
        upload(vec![kp(), kp()], None).await.expect("valid"),
        Response::KeyPackagesStored {
            one_time: 2,
            forgotten: vec![]
        }
    );
}

#[tokio::test]
async fn concurrent_commits_for_one_epoch_exactly_one_wins_and_members_get_it() {
    let s = server(|_| {}).await;
    let mut alice = s.member("@alice", 1, 2).await;
    let mut bob = s.member("@bob", 1, 2).await;
    let carol = s.member("@carol", 1, 2).await;
    let room = alice.user.room_with(&[&bob.user, &carol.user]).await;
    let mut alice_group = alice.create_group(&room.0).await.expect("create");
    let r = alice
        .add(&mut alice_group, &["@bob"])
        .await
        .expect("commit");
    let Response::CommitAccepted {
        epoch: 1, added, ..
    } = r
    else {
        panic!("{r:?}")
    };
    assert_eq!(added.len(), 1);
    assert_eq!(
        (added[0].device.handle.clone(), added[0].leaf),
        (h("@bob"), 1),
        "the server computed who was added, and where"
    );
    // (Bob is also told his KeyPackages run low: the claim left him one; and his room
    // invitation came first.)
    let Incoming::Delivery { seq, item } = bob
        .user
        .expect("the Welcome", |i| {
            matches!(
                i,
                Incoming::Delivery {
                    item: Stored::Mls {
                        kind: MlsKind::Welcome,
                        ..
                    },
                    ..
                }
            )
        })
        .await
    else {
        panic!("delivery")
    };
    let Stored::Mls {
        kind: MlsKind::Welcome,
        data,
        ..
    } = item
    else {
        panic!("a Welcome")
    };
    let mut bob_group = bob.join(&data);
    bob.user.client.ack(seq).await.expect("ack");

    // Alice (adding Carol) and Bob (a self-update) both commit in epoch 1, at once.
    let carol_package = alice.claim(&["@carol"]).await;
    // Carol goes offline: if she is added, her Welcome waits for her.
    carol.user.client.close();
    let alice_commit = alice_group
        .add(&alice.mls, &carol_package)
        .expect("alice commit");
    let bob_commit = bob_group.update(&bob.mls).expect("bob commit");
    let (winner_bytes_a, winner_bytes_b) = (alice_commit.commit.clone(), bob_commit.commit.clone());
    let (a, b) = tokio::join!(
        alice.send_commit(&mut alice_group, alice_commit),
        bob.send_commit(&mut bob_group, bob_commit)
    );
    let outcomes = [a, b];
    let won = outcomes
        .iter()
        .filter(|r| matches!(r, Ok(Response::CommitAccepted { epoch: 2, .. })))
        .count();
    let stale = outcomes
        .iter()
        .filter(|r| matches!(r, Err(ClientError::Server(e)) if e.code == ErrorCode::StaleEpoch { current: 2 }))
        .count();
    assert_eq!(
        (won, stale),
        (1, 1),
        "exactly one commit per epoch: {outcomes:?}"
    );

    // The loser receives the winner's commit, so it can process it and retry on epoch 2.
    let alice_won = outcomes[0].is_ok();
    let (loser, winner_commit) = if alice_won {
        (&mut bob, winner_bytes_a)
    } else {
        (&mut alice, winner_bytes_b)
    };
    loser
        .user
        .expect("winning commit", |i| {
            matches!(i, Incoming::Delivery { item: Stored::Mls { kind: MlsKind::Commit, epoch: 1, data, .. }, .. } if *data == winner_commit)
        })
        .await;

    // Carol was offline: if she was added, her Welcome waits for her.
    if alice_won {
        let mut carol = s.user("@carol", 1).await;
        carol
            .expect("welcome", |i| {
                matches!(
                    i,
                    Incoming::Delivery {
                        item: Stored::Mls {
                            kind: MlsKind::Welcome,
                            ..
                        },
                        ..
                    }
                )
            })
            .await;
    }
}
