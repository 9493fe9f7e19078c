//! Three, then four, real openmls members derive SFrame keys from their group (RFC 9605
//! §5.2) and exchange frames: identical keys, removal cuts a member off, a late joiner
//! cannot read the past, and every kind of bad frame is rejected with its own reason.

use std::time::{Duration, Instant};

use sotto_client::mls::{CallGroup, GroupEvent, MlsDevice};
use sotto_media::{
    ContextId,
    keys::{CallKeys, KeyConfig, RejectReason},
};
use sotto_wire::SframeHeader;

struct Member {
    name: &'static str,
    device: MlsDevice,
    group: CallGroup,
    keys: CallKeys,
}

impl Member {
    /// Stages and applies a handshake message (these tests check keys, not credentials).
    fn process(&mut self, message: &[u8]) -> Result<GroupEvent, sotto_client::mls::MlsError> {
        let staged = self.group.stage(&self.device, message)?;
        self.group.apply(&self.device, staged)
    }

    fn new(name: &'static str, device: MlsDevice, group: CallGroup) -> Self {
        let epoch = group
            .epoch_keys(&device, &KeyConfig::default())
            .expect("epoch keys");
        let keys = CallKeys::new(group.own_index(), epoch).expect("call keys");
        Self {
            name,
            device,
            group,
            keys,
        }
    }

    /// After a commit merged: rotate sender and receiver keys at `now`.
    fn rotate(&mut self, now: Instant) {
        let epoch = self
            .group
            .epoch_keys(&self.device, &KeyConfig::default())
            .expect("epoch keys");
        self.keys.advance(epoch, now).expect("advance");
    }

    fn send(&mut self, context: ContextId, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.keys
            .encrypt(context, b"", payload, &mut out)
            .expect("encrypt");
        out
    }

    fn send_audio(&mut self, payload: &[u8]) -> Vec<u8> {
        self.send(ContextId::Audio, payload)
    }

    fn recv(&mut self, frame: &[u8], now: Instant) -> Result<Vec<u8>, RejectReason> {
        let mut out = Vec::new();
        match self.keys.decrypt(frame, b"", &mut out, now) {
            Ok(_) => Ok(out),
            Err(e) => {
                assert!(out.is_empty(), "{}: no plaintext on error", self.name);
                Err(e.reason)
            }
        }
    }
}

/// Alice creates the group and adds Bob and Carol with one commit; they join from the
/// Welcome.
fn three_members() -> (Member, Member, Member) {
    let alice = MlsDevice::new("@alice").expect("device");
    let bob = MlsDevice::new("@bob").expect("device");
    let carol = MlsDevice::new("@carol").expect("device");
    let mut group = alice.create_group().expect("create");
    let commit = group
        .add(
            &alice,
            &[
                bob.key_package().expect("kp"),
                carol.key_package().expect("kp"),
            ],
        )
        .expect("add");
    assert_eq!(commit.epoch, 0);
    assert_eq!(group.merge_pending(&alice).expect("merge"), 1);
    let welcome = commit.welcome.expect("welcome");
    let bob_group = bob
        .stage_join(&welcome)
        .expect("welcome")
        .join(&bob)
        .expect("bob joins");
    let carol_group = carol
        .stage_join(&welcome)
        .expect("welcome")
        .join(&carol)
        .expect("carol joins");
    (
        Member::new("alice", alice, group),
        Member::new("bob", bob, bob_group),
        Member::new("carol", carol, carol_group),
    )
}

#[test]
fn all_members_derive_identical_keys_and_frames_roundtrip() {
    let (mut alice, mut bob, mut carol) = three_members();
    let now = Instant::now();
    for m in [&alice, &bob, &carol] {
        assert_eq!(m.group.epoch(), 1);
        assert_eq!(m.group.member_indices(), vec![0, 1, 2]);
        assert_eq!(
            m.group.epoch_authenticator(),
            alice.group.epoch_authenticator()
        );
    }
    // Identical keys: every member's frames, in every context, decrypt at every other.
    let members = [&mut alice, &mut bob, &mut carol];
    for s in 0..3 {
        let audio = members[s].send(ContextId::Audio, b"audio");
        let video = members[s].send(ContextId::Video, b"video");
        for r in (0..3).filter(|r| *r != s) {
            let sender = members[s].group.own_index();
            let mut out = Vec::new();
            let got = members[r]
                .keys
                .decrypt(&audio, b"", &mut out, now)
                .expect("audio decrypts");
            assert_eq!(
                (got.sender, got.context, got.epoch, &out[..]),
                (sender, ContextId::Audio, 1, &b"audio"[..])
            );
            let got = members[r]
                .keys
                .decrypt(&video, b"", &mut out, now)
                .expect("video decrypts");
            assert_eq!(
                (got.sender, got.context, &out[..]),
                (sender, ContextId::Video, &b"video"[..])
            );
        }
    }
    // The two directions the issue names.
    let f = alice.send_audio(b"alice to bob");
    assert_eq!(bob.recv(&f, now).expect("bob reads alice"), b"alice to bob");
    let f = carol.send_audio(b"carol to alice");
    assert_eq!(
        alice.recv(&f, now).expect("alice reads carol"),
        b"carol to alice"
    );
}

#[test]
fn removed_member_is_cut_off_and_old_epoch_dies_after_grace() {
    let (mut alice, mut bob, mut carol) = three_members();
    let t0 = Instant::now();
    let in_flight = alice.send_audio(b"sent in epoch 1");

    let commit = alice
        .group
        .remove(&alice.device, &[carol.group.own_index()])
        .expect("remove");
    alice.group.merge_pending(&alice.device).expect("merge");
    assert_eq!(
        bob.process(&commit.commit).expect("bob processes"),
        GroupEvent::EpochAdvanced { epoch: 2 }
    );
    assert_eq!(
        carol.process(&commit.commit).expect("carol processes"),
        GroupEvent::Removed
    );
    assert!(!carol.group.is_active());
    alice.rotate(t0);
    bob.rotate(t0);
    assert_eq!(
        alice.group.epoch_authenticator(),
        bob.group.epoch_authenticator()
    );

    // New-epoch media: Bob reads it, Carol cannot, and cannot derive the new keys either.
    let fresh = alice.send_audio(b"after carol left");
    assert_eq!(
        bob.recv(&fresh, t0).expect("bob reads"),
        b"after carol left"
    );
    assert_eq!(carol.recv(&fresh, t0), Err(RejectReason::UnknownKid));
    let carol_keys = carol.group.epoch_keys(&carol.device, &KeyConfig::default());
    assert!(
        carol_keys.map_or(true, |k| k.epoch() < 2),
        "a removed member never gets epoch 2 keys"
    );
    let to_carol = bob.send_audio(b"bob after carol left");
    assert!(carol.recv(&to_carol, t0).is_err());

    // The old epoch is readable during the grace period, and by nobody after it.
    assert_eq!(
        bob.recv(&in_flight, t0 + Duration::from_millis(1900))
            .expect("in grace"),
        b"sent in epoch 1"
    );
    let late_old = carol.send_audio(b"old epoch, late: carol still has her old key");

    for m in [&mut alice, &mut bob] {
        assert_eq!(
            m.recv(&late_old, t0 + Duration::from_secs(2)),
            Err(RejectReason::EpochExpired { epoch: 1 }),
            "{} must refuse old-epoch frames after the grace",
            m.name
        );
    }
}

#[test]
fn late_joiner_cannot_decrypt_frames_from_before_he_joined() {
    let (mut alice, mut bob, _carol) = three_members();
    let t0 = Instant::now();
    let before = alice.send_audio(b"before dave");
    let before_bob = bob.send_audio(b"bob before dave");

    let dave_device = MlsDevice::new("@dave").expect("device");
    let commit = alice
        .group
        .add(&alice.device, &[dave_device.key_package().expect("kp")])
        .expect("add");
    alice.group.merge_pending(&alice.device).expect("merge");
    bob.process(&commit.commit).expect("bob processes");
    alice.rotate(t0);
    bob.rotate(t0);
    let dave_group = dave_device
        .stage_join(&commit.welcome.expect("welcome"))
        .expect("a Welcome")
        .join(&dave_device)
        .expect("dave joins");
    let mut dave = Member::new("dave", dave_device, dave_group);
    assert_eq!(dave.group.epoch(), 2);

    assert_eq!(dave.recv(&before, t0), Err(RejectReason::UnknownKid));
    assert_eq!(dave.recv(&before_bob, t0), Err(RejectReason::UnknownKid));
    // Relabelled with the current epoch's KID, the old ciphertext still fails: it was
    // sealed under a key Dave never had.
    let (h, n) = SframeHeader::parse(&before).expect("header");
    let current_kid = dave
        .keys
        .receiver()
        .current()
        .kid(ContextId::Audio, alice.group.own_index())
        .expect("kid");
    assert_eq!(
        dave.recv(&relabel(&before[n..], current_kid, h.ctr), t0),
        Err(RejectReason::AuthenticationFailed)
    );
    // What is sent after the join is readable.
    let after = alice.send_audio(b"welcome dave");
    assert_eq!(dave.recv(&after, t0).expect("dave reads"), b"welcome dave");
}

#[test]
fn bad_frames_are_rejected_each_with_its_own_reason() {
    let (mut alice, mut bob, _carol) = three_members();
    let now = Instant::now();
    let frame = alice.send_audio(b"a perfectly good opus frame");
    let (header, hlen) = SframeHeader::parse(&frame).expect("header");

    let mut tampered = frame.clone();
    *tampered.last_mut().expect("non-empty") ^= 0x01;
    assert_eq!(
        bob.recv(&tampered, now),
        Err(RejectReason::AuthenticationFailed)
    );

    let truncated = &frame[..hlen + 10];
    assert_eq!(
        bob.recv(truncated, now),
        Err(RejectReason::Truncated { len: hlen + 10 })
    );
    assert_eq!(
        bob.recv(&frame[..hlen - 1], now),
        Err(RejectReason::Malformed)
    );

    // Wrong KID: one naming no key we hold (an unknown context), and one naming another
    // member (Bob's own index) -- an impersonation attempt, caught by authentication.
    assert_eq!(
        bob.recv(&relabel(&frame[hlen..], 5 << 22, header.ctr), now),
        Err(RejectReason::UnknownKid)
    );
    let bobs_kid = bob
        .keys
        .receiver()
        .current()
        .kid(ContextId::Audio, bob.group.own_index())
        .expect("kid");
    assert_eq!(
        bob.recv(&relabel(&frame[hlen..], bobs_kid, header.ctr), now),
        Err(RejectReason::AuthenticationFailed)
    );

    // A sender index that is not in the group.
    let outsider_kid = bob
        .keys
        .receiver()
        .current()
        .config()
        .layout
        .kid(ContextId::Audio, 9, 1)
        .expect("kid");
    assert_eq!(
        bob.recv(&relabel(&frame[hlen..], outsider_kid, header.ctr), now),
        Err(RejectReason::SenderNotInGroup)
    );

    // None of that disturbed the genuine frame, which decrypts once and then is a replay.
    assert_eq!(
        bob.recv(&frame, now).expect("genuine"),
        b"a perfectly good opus frame"
    );
    assert_eq!(
        bob.recv(&frame, now),
        Err(RejectReason::Replay { ctr: header.ctr })
    );
}

/// The same ciphertext under a different header.
fn relabel(body: &[u8], kid: u64, ctr: u64) -> Vec<u8> {
    let mut out = vec![0u8; sotto_wire::sframe_header::MAX_HEADER_LEN];
    let n = SframeHeader { kid, ctr }.encode(&mut out).expect("encode");
    out.truncate(n);
    out.extend_from_slice(body);
    out
}
