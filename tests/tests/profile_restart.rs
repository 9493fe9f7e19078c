//! A client restarted on the same profile keeps its identity, its contacts and its MLS
//! group state: after reopening, it still decrypts and encrypts with its group.

use std::time::Instant;

use sotto_client::{
    mls::{CallGroup, MlsDevice},
    profile::{ContactStatus, Profile},
};
use sotto_media::{
    ContextId,
    keys::{CallKeys, KeyConfig},
};

#[test]
fn identity_contacts_and_group_state_survive_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let bob = MlsDevice::new("@bob").expect("bob");
    let (key, device, group_id, epoch, members);
    {
        let mut profile = Profile::open(dir.path()).expect("profile");
        profile.check_contact("@bob", &[7; 32]).expect("pin bob");
        let alice = MlsDevice::with_identity("@alice", profile.identity(), Some(&profile.mls_db()))
            .expect("alice");
        let mut group = alice.create_group_with_id(b"call-1234").expect("group");
        let commit = group
            .add(&alice, &[bob.key_package().expect("kp")])
            .expect("add");
        group.merge_pending(&alice).expect("merge");
        let _bob_group = bob
            .stage_join(&commit.welcome.expect("welcome"))
            .expect("a Welcome")
            .join(&bob)
            .expect("bob joins");
        key = profile.identity().to_bytes();
        device = profile.device();
        group_id = group.group_id().to_vec();
        epoch = group.epoch();
        members = group.member_indices();
    } // Everything of Alice's is dropped here: the process "restarts".

    let profile = Profile::open(dir.path()).expect("reopen");
    assert_eq!(profile.identity().to_bytes(), key, "same identity key");
    assert_eq!(profile.device(), device, "same device id");
    let mut profile = profile;
    assert_eq!(
        profile.check_contact("@bob", &[7; 32]).expect("pinned"),
        ContactStatus::Known
    );
    let alice = MlsDevice::with_identity("@alice", profile.identity(), Some(&profile.mls_db()))
        .expect("alice again");
    let group = CallGroup::load(&alice, &group_id)
        .expect("load")
        .expect("the group is still there");
    assert_eq!((group.epoch(), group.member_indices()), (epoch, members));

    // The reloaded group derives the same keys as Bob's: frames cross both ways.
    let bob_group = CallGroup::load(&bob, &group_id)
        .expect("load")
        .expect("bob's group");
    let cfg = KeyConfig::default();
    let mut a = CallKeys::new(
        group.own_index(),
        group.epoch_keys(&alice, &cfg).expect("keys"),
    )
    .expect("call keys");
    let mut b = CallKeys::new(
        bob_group.own_index(),
        bob_group.epoch_keys(&bob, &cfg).expect("keys"),
    )
    .expect("call keys");
    let (mut wire, mut out) = (Vec::new(), Vec::new());
    a.encrypt(ContextId::Audio, b"", b"after restart", &mut wire)
        .expect("encrypt");
    b.decrypt(&wire, b"", &mut out, Instant::now())
        .expect("bob decrypts");
    assert_eq!(out, b"after restart");
    b.encrypt(ContextId::Audio, b"", b"reply", &mut wire)
        .expect("encrypt");
    a.decrypt(&wire, b"", &mut out, Instant::now())
        .expect("alice decrypts");
    assert_eq!(out, b"reply");
}
