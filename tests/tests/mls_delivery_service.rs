//! The MLS delivery service over real QUIC: KeyPackages claimed exactly once under 20
//! concurrent claimers, the last-resort package, epoch fencing under concurrent commits,
//! Welcome/Commit fan-out and delivery to a device that was offline.

use std::collections::HashSet;

use sotto_client::signaling::{ClientError, Incoming};
use sotto_proto::{AddedMember, DeviceAddr, ErrorCode, MlsKind, Request, Response, Stored};
use sotto_tests::{h, server};

#[tokio::test]
async fn twenty_concurrent_claimers_each_get_a_distinct_package_or_the_last_resort() {
    let s = server(|_| {}).await;
    let bob = s.user("@bob", 1).await;
    let packages: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 100]).collect();
    bob.client
        .request(Request::UploadKeyPackages {
            packages: packages.clone(),
            last_resort: Some(vec![0xff; 100]),
        })
        .await
        .expect("upload");

    let mut claimers = Vec::new();
    for i in 0..20 {
        claimers.push(s.user(&format!("@claimer{i:02}"), 1).await);
    }
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
                assert_eq!(package, vec![0xff; 100]);
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
async fn key_package_caps_are_typed_errors() {
    let s = server(|c| c.core.limits.max_key_packages = 3).await;
    let bob = s.user("@bob", 1).await;
    let r = bob
        .client
        .request(Request::UploadKeyPackages {
            packages: vec![vec![1]; 4],
            last_resort: None,
        })
        .await;
    assert!(
        matches!(r, Err(ClientError::Server(e)) if matches!(e.code, ErrorCode::LimitReached { .. }))
    );
    let r = bob
        .client
        .request(Request::UploadKeyPackages {
            packages: vec![vec![]],
            last_resort: None,
        })
        .await;
    assert!(matches!(r, Err(ClientError::Server(e)) if e.code == ErrorCode::Malformed));
}

#[tokio::test]
async fn concurrent_commits_for_one_epoch_exactly_one_wins_and_members_get_it() {
    let s = server(|_| {}).await;
    let mut alice = s.user("@alice", 1).await;
    let mut bob = s.user("@bob", 1).await;
    let carol_device = DeviceAddr {
        handle: h("@carol"),
        device: 1,
    };
    s.user("@carol", 1).await.client.close();
    let group = b"call-group-0001".to_vec();
    alice
        .client
        .request(Request::CreateGroup {
            group: group.clone(),
        })
        .await
        .expect("create");
    let r = alice
        .client
        .request(Request::Commit {
            group: group.clone(),
            epoch: 0,
            commit: b"add bob".to_vec(),
            welcome: Some(b"welcome bob".to_vec()),
            added: vec![AddedMember {
                device: DeviceAddr {
                    handle: h("@bob"),
                    device: 1,
                },
                leaf: 1,
            }],
            removed: vec![],
        })
        .await
        .expect("commit");
    assert_eq!(r, Response::CommitAccepted { epoch: 1 });
    let Incoming::Delivery { seq, item } = bob.next().await else {
        panic!("delivery")
    };
    assert!(
        matches!(item, Stored::Mls { kind: MlsKind::Welcome, ref data, .. } if data == b"welcome bob")
    );
    bob.client.ack(seq).await.expect("ack");

    // Alice and Bob both commit in epoch 1, at the same moment.
    let commit = |who: &str, add_carol: bool| Request::Commit {
        group: group.clone(),
        epoch: 1,
        commit: format!("{who}'s commit").into_bytes(),
        welcome: add_carol.then(|| b"welcome carol".to_vec()),
        added: if add_carol {
            vec![AddedMember {
                device: carol_device.clone(),
                leaf: 2,
            }]
        } else {
            vec![]
        },
        removed: vec![],
    };
    let (a, b) = tokio::join!(
        alice.client.request(commit("alice", true)),
        bob.client.request(commit("bob", false))
    );
    let outcomes = [a, b];
    let won = outcomes
        .iter()
        .filter(|r| matches!(r, Ok(Response::CommitAccepted { epoch: 2 })))
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

    // The loser receives the winner's commit; so it can process it and retry on epoch 2.
    let (alice_won, loser) = if outcomes[0].is_ok() {
        (true, &mut bob)
    } else {
        (false, &mut alice)
    };
    let winner_commit = if alice_won {
        b"alice's commit".to_vec()
    } else {
        b"bob's commit".to_vec()
    };
    loser
        .expect("winning commit", |i| {
            matches!(i, Incoming::Delivery { item: Stored::Mls { kind: MlsKind::Commit, epoch: 1, data, .. }, .. } if *data == winner_commit)
        })
        .await;

    // Carol was offline: if she was added, her Welcome waits for her, in order.
    if alice_won {
        let carol = s.user("@carol", 1).await;
        let mut carol = carol;
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
