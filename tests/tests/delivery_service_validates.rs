//! The delivery service believes nothing a committer claims: it follows each group's
//! public MLS state, validates every handshake against it, and computes who a commit adds
//! and removes. A forged leaf claim, a commit from a non-member, a commit that does not
//! validate or leaves no GroupInfo, an add of a KeyPackage the committer did not claim and
//! a squatted group id are each
//! refused with their own typed error; standalone proposals validate and can be committed
//! by reference; a member that cannot process an accepted commit reports it and rejoins
//! by external commit from the latest member-signed GroupInfo the server keeps.

use sotto_client::{
    mls::{CallGroup, MlsDevice},
    signaling::{ClientError, Incoming},
};
use sotto_proto::{
    AddedMember, CallId, DeviceAddr, ErrorCode, MlsKind, Request, Response, RoomId, Stored,
};
use sotto_tests::{Member, TestServer, h, server};

fn code(r: Result<Response, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Server(e)) => e.code,
        other => panic!("expected a typed refusal, got {other:?}"),
    }
}

/// A room `owner` owns with `others` in it (so its owner may claim their KeyPackages).
async fn room_of(owner: &Member, others: &[&Member]) -> RoomId {
    let others: Vec<_> = others.iter().map(|m| &m.user).collect();
    owner.user.room_with(&others).await
}

/// Brings `m` into the room whose group is `group` (owned by `owner`).
async fn bring(owner: &Member, group: &CallGroup, m: &Member) {
    let room = RoomId(group.group_id().try_into().expect("a room's group id"));
    owner.user.bring(room, &m.user).await;
}

fn device(handle: &str) -> DeviceAddr {
    DeviceAddr {
        handle: h(handle),
        device: 1,
    }
}

/// Waits for the next MLS delivery of `kind` and acknowledges it.
async fn next_mls(m: &mut Member, kind: MlsKind) -> Vec<u8> {
    let Incoming::Delivery { seq, item } = m
        .user
        .expect("an MLS delivery", |i| {
            matches!(i, Incoming::Delivery { item: Stored::Mls { kind: k, .. }, .. } if *k == kind)
        })
        .await
    else {
        unreachable!()
    };
    m.user.client.ack(seq).await.expect("ack");
    let Stored::Mls { data, .. } = item else {
        unreachable!()
    };
    data
}

/// The latest GroupInfo the delivery service keeps for `group`, and its epoch.
async fn group_info(m: &Member, group: &[u8]) -> (u64, Vec<u8>) {
    match m
        .user
        .client
        .request(Request::GroupInfo {
            group: group.to_vec(),
        })
        .await
    {
        Ok(Response::GroupInfo { epoch, group_info }) => (epoch, group_info),
        other => panic!("group info: {other:?}"),
    }
}

/// @alice owns a room whose group holds alice (leaf 0) and bob (leaf 1).
async fn alice_and_bob(s: &TestServer) -> (Member, CallGroup, Member, CallGroup) {
    let alice = s.member("@alice", 1, 2).await;
    let mut bob = s.member("@bob", 1, 4).await;
    let room = room_of(&alice, &[&bob]).await;
    let mut alice_group = alice.create_group(&room.0).await.expect("group");
    alice
        .add(&mut alice_group, &["@bob"])
        .await
        .expect("add bob");
    let welcome = next_mls(&mut bob, MlsKind::Welcome).await;
    let bob_group = bob.join(&welcome);
    (alice, alice_group, bob, bob_group)
}

#[tokio::test]
async fn a_forged_leaf_claim_is_refused_and_the_server_computes_leaves() {
    let s = server(|_| {}).await;
    let alice = s.member("@alice", 1, 1).await;
    let bob = s.member("@bob", 1, 4).await;
    let carol = s.member("@carol", 1, 4).await;
    let room = room_of(&alice, &[&bob, &carol]).await;
    let mut group = alice.create_group(&room.0).await.expect("group");

    // Alice adds Bob but claims he sits at leaf 5 (so the SFU would bind him there).
    let packages = alice.claim(&["@bob"]).await;
    let commit = group.add(&alice.mls, &packages).expect("commit");
    let forged = Request::Commit {
        group: room.0.to_vec(),
        epoch: commit.epoch,
        commit: commit.commit.clone(),
        welcome: commit.welcome.clone(),
        group_info: commit.group_info.clone(),
        added: vec![AddedMember {
            device: device("@bob"),
            leaf: 5,
        }],
        removed: vec![],
    };
    assert_eq!(
        code(alice.user.client.request(forged).await),
        ErrorCode::ClaimMismatch
    );
    group.discard_pending(&alice.mls).expect("discard");

    // Without claims, the server says where Bob landed.
    let r = alice.add(&mut group, &["@bob"]).await.expect("add bob");
    let Response::CommitAccepted {
        epoch: 1,
        added,
        removed,
    } = r
    else {
        panic!("{r:?}")
    };
    assert_eq!(
        (added, removed),
        (
            vec![AddedMember {
                device: device("@bob"),
                leaf: 1
            }],
            vec![]
        )
    );
    // A claim that is true passes.
    let packages = alice.claim(&["@carol"]).await;
    let commit = group.add(&alice.mls, &packages).expect("commit");
    let honest = Request::Commit {
        group: room.0.to_vec(),
        epoch: commit.epoch,
        commit: commit.commit,
        welcome: commit.welcome,
        group_info: commit.group_info,
        added: vec![AddedMember {
            device: device("@carol"),
            leaf: 2,
        }],
        removed: vec![],
    };
    assert!(matches!(
        alice.user.client.request(honest).await,
        Ok(Response::CommitAccepted { epoch: 2, .. })
    ));
    group.merge_pending(&alice.mls).expect("merge");
}

#[tokio::test]
async fn commits_from_non_members_invalid_commits_and_unknown_packages_are_refused() {
    let s = server(|_| {}).await;
    let (alice, mut group, bob, mut bob_group) = alice_and_bob(&s).await;
    let carol_member = s.member("@carol", 1, 2).await;
    bring(&alice, &group, &carol_member).await;
    let room = group.group_id().to_vec();

    // Mallory is no member: her commit, made in a group of her own with the same id, is
    // refused before anything is fanned out.
    let mallory = s.member("@mallory", 1, 1).await;
    let mut fake = mallory.mls.create_group_with_id(&room).expect("group");
    let commit = fake.update(&mallory.mls).expect("commit");
    assert_eq!(
        code(mallory.send_commit(&mut fake, commit).await),
        ErrorCode::NotAMember
    );

    // A member's commit that does not validate.
    let garbage = Request::Commit {
        group: room.clone(),
        epoch: group.epoch(),
        commit: vec![0, 1, 0, 1, 42, 42],
        welcome: None,
        group_info: None,
        added: vec![],
        removed: vec![],
    };
    assert_eq!(
        code(alice.user.client.request(garbage).await),
        ErrorCode::InvalidCommit
    );
    // A commit made in a group other than the one it is sent to.
    let mut elsewhere = alice.mls.create_group_with_id(&[9; 16]).expect("group");
    let other = elsewhere.update(&alice.mls).expect("commit");
    let misrouted = Request::Commit {
        group: room.clone(),
        epoch: group.epoch(),
        commit: other.commit,
        welcome: None,
        group_info: None,
        added: vec![],
        removed: vec![],
    };
    assert_eq!(
        code(alice.user.client.request(misrouted).await),
        ErrorCode::InvalidCommit
    );

    // Adding a KeyPackage the server never handed out (so it cannot know whose device
    // would be added) is refused.
    let carol =
        MlsDevice::with_identity("@carol", &sotto_tests::key_for("@carol"), None).expect("device");
    let commit = group
        .add(&alice.mls, &[carol.key_package().expect("kp")])
        .expect("commit");
    assert_eq!(
        code(alice.send_commit(&mut group, commit).await),
        ErrorCode::UnknownKeyPackage
    );
    // A KeyPackage someone else claimed cannot be added: Bob (a member) tries to add the
    // package Alice claimed for Carol; nor can one claim serve twice.
    let carols = alice.claim(&["@carol"]).await;
    let theirs = bob_group.add(&bob.mls, &carols).expect("commit");
    assert_eq!(
        code(bob.send_commit(&mut bob_group, theirs).await),
        ErrorCode::UnknownKeyPackage
    );
    // A commit must leave the new epoch's GroupInfo behind.
    let commit = group.update(&alice.mls).expect("commit");
    let without = Request::Commit {
        group: room.clone(),
        epoch: commit.epoch,
        commit: commit.commit,
        welcome: None,
        group_info: None,
        added: vec![],
        removed: vec![],
    };
    assert_eq!(
        code(alice.user.client.request(without).await),
        ErrorCode::InvalidCommit
    );
    group.discard_pending(&alice.mls).expect("discard");
    // The group is untouched: a valid commit still wins epoch 1.
    let commit = group.update(&alice.mls).expect("commit");
    assert!(matches!(
        alice.send_commit(&mut group, commit).await,
        Ok(Response::CommitAccepted { epoch: 2, .. })
    ));
}

#[tokio::test]
async fn a_squatted_group_id_is_refused() {
    let s = server(|_| {}).await;
    let alice = s.member("@alice", 1, 1).await;
    let _bob = s.member("@bob", 1, 1).await;
    let mallory = s.member("@mallory", 1, 1).await;
    let room = room_of(&alice, &[]).await;
    // Mallory may not create the group of Alice's room,
    assert_eq!(
        code(mallory.create_group(&room.0).await.map(|_| Response::Ok)),
        ErrorCode::GroupIdNotYours
    );
    // nor of a call she is not in,
    let call = CallId(sotto_tests::random());
    alice
        .user
        .client
        .request(Request::Invite {
            call,
            to: h("@bob"),
        })
        .await
        .expect("ringing");
    assert_eq!(
        code(mallory.create_group(&call.0).await.map(|_| Response::Ok)),
        ErrorCode::GroupIdNotYours
    );
    // nor of an id that belongs to nothing.
    assert_eq!(
        code(
            mallory
                .create_group(&sotto_tests::random::<16>())
                .await
                .map(|_| Response::Ok)
        ),
        ErrorCode::GroupIdNotYours
    );
    // Alice may, but only with a GroupInfo in which she is the only member, as herself.
    let someone = MlsDevice::new("@mallory").expect("device");
    let theirs = someone.create_group_with_id(&room.0).expect("group");
    let not_hers = Request::CreateGroup {
        group: room.0.to_vec(),
        group_info: theirs.group_info(&someone).expect("info"),
    };
    assert_eq!(
        code(alice.user.client.request(not_hers).await),
        ErrorCode::InvalidCommit
    );
    alice
        .create_group(&room.0)
        .await
        .expect("the owner creates it");
}

#[tokio::test]
async fn proposals_validate_and_commit_by_reference_and_group_info_is_kept() {
    let s = server(|_| {}).await;
    let (mut alice, mut alice_group, mut bob, mut bob_group) = alice_and_bob(&s).await;
    let room = alice_group.group_id().to_vec();
    let carol = s.member("@carol", 1, 2).await;
    bring(&alice, &alice_group, &carol).await;
    alice
        .add(&mut alice_group, &["@carol"])
        .await
        .expect("add carol");
    let commit = next_mls(&mut bob, MlsKind::Commit).await;
    let staged = bob_group.stage(&bob.mls, &commit).expect("stage");
    bob_group.apply(&bob.mls, staged).expect("apply");

    // Bob proposes removing Carol; the server validates it and fans it out.
    let proposal = bob_group.propose_remove(&bob.mls, 2).expect("proposal");
    bob.user
        .client
        .request(Request::Proposal {
            group: room.clone(),
            epoch: bob_group.epoch(),
            proposal: proposal.clone(),
        })
        .await
        .expect("proposal accepted");
    let got = next_mls(&mut alice, MlsKind::Proposal).await;
    assert_eq!(got, proposal);
    let staged = alice_group.stage(&alice.mls, &got).expect("stage");
    alice_group.apply(&alice.mls, staged).expect("store");
    // A forged proposal is refused.
    assert_eq!(
        code(
            bob.user
                .client
                .request(Request::Proposal {
                    group: room.clone(),
                    epoch: bob_group.epoch(),
                    proposal: vec![1, 2, 3],
                })
                .await
        ),
        ErrorCode::InvalidCommit
    );
    // Alice commits it by reference; the server computes the removal.
    let commit = alice_group.commit_proposals(&alice.mls).expect("commit");
    let r = alice
        .send_commit(&mut alice_group, commit)
        .await
        .expect("commit");
    assert!(
        matches!(&r, Response::CommitAccepted { epoch: 3, removed, .. } if *removed == vec![2]),
        "{r:?}"
    );

    // The latest member-signed GroupInfo is kept, for a member that must rejoin.
    let (epoch, group_info) = group_info(&bob, &room).await;
    assert_eq!(epoch, 3);
    assert!(!group_info.is_empty());
}

#[tokio::test]
async fn a_member_that_cannot_process_a_commit_reports_it_and_rejoins_by_external_commit() {
    let s = server(|_| {}).await;
    let (mut alice, mut alice_group, mut bob, mut bob_group) = alice_and_bob(&s).await;
    let room = alice_group.group_id().to_vec();
    // Alice commits; Bob's copy cannot take it (say its confirmation tag fails).
    let commit = alice_group.update(&alice.mls).expect("update");
    alice
        .send_commit(&mut alice_group, commit)
        .await
        .expect("accepted");
    let _unprocessable = next_mls(&mut bob, MlsKind::Commit).await;
    bob.user
        .client
        .request(Request::ReportCommit {
            group: room.clone(),
            epoch: 1,
            reason: "confirmation tag mismatch".into(),
        })
        .await
        .expect("report taken");
    // The defined path: fetch the latest member-signed GroupInfo, rejoin from it.
    let (epoch, group_info) = group_info(&bob, &room).await;
    assert_eq!(epoch, 2);
    bob_group.delete(&bob.mls).expect("forget the broken copy");
    let (mut rejoined, commit) = bob.mls.rejoin(&group_info).expect("external commit");
    // Nobody else can use it to get in: Mallory's external commit is refused.
    let mallory = s.member("@mallory", 1, 1).await;
    let (mut intruder, theirs) = mallory.mls.rejoin(&group_info).expect("external commit");
    assert_eq!(
        code(mallory.send_commit(&mut intruder, theirs).await),
        ErrorCode::NotAMember
    );
    let r = bob
        .send_commit(&mut rejoined, commit)
        .await
        .expect("rejoined");
    let Response::CommitAccepted {
        epoch: 3,
        added,
        removed,
    } = r
    else {
        panic!("{r:?}")
    };
    assert_eq!(removed, vec![1], "the old leaf goes");
    assert_eq!(
        added.iter().map(|a| a.device.clone()).collect::<Vec<_>>(),
        vec![device("@bob")]
    );
    // Alice follows, and both are in the same epoch with the same keys again.
    let ext = next_mls(&mut alice, MlsKind::Commit).await;
    let staged = alice_group.stage(&alice.mls, &ext).expect("stage");
    alice_group.apply(&alice.mls, staged).expect("apply");
    assert_eq!(alice_group.epoch(), 3);
    assert_eq!(
        alice_group.epoch_authenticator(),
        rejoined.epoch_authenticator(),
        "same epoch, same verification code"
    );
    let m = sotto_tests::metrics_text(&s).await;
    assert!(m.contains("sotto_commit_reports_total 1"), "{m}");
}
