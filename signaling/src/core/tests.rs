//! The core on a virtual clock: login, calls with timeouts, fencing, stored delivery.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use ed25519_dalek::{Signer, SigningKey};
use sotto_proto::*;

use sotto_client::mls::{CallGroup, MlsDevice};

use super::*;
use crate::storage::sqlite::SqliteStorage;

struct World {
    core: Core,
    now: Instant,
    next_id: u64,
    keys: HashMap<String, SigningKey>,
}

fn h(s: &str) -> Handle {
    Handle::parse(s).expect("handle")
}

impl World {
    fn new() -> Self {
        let now = Instant::now();
        let mut n = 0u8;
        let rng: Rng = Box::new(move |b: &mut [u8]| {
            for x in b.iter_mut() {
                n = n.wrapping_add(1);
                *x = n;
            }
        });
        let cfg = CoreConfig {
            sfu_secret: Some("sfu-secret".into()),
            ..CoreConfig::default()
        };
        let core = Core::new(
            cfg,
            Box::new(SqliteStorage::in_memory().expect("db")),
            ServiceKeys {
                token: SigningKey::from_bytes(&[7; 32]),
                external_sender: SigningKey::from_bytes(&[8; 32]),
            },
            rng,
            Arc::new(Metrics::default()),
            now,
            1_700_000_000,
        );
        Self {
            core,
            now,
            next_id: 1,
            keys: HashMap::new(),
        }
    }

    fn connect(&mut self) -> SessionId {
        let sid = self.core.connect(self.now).expect("under the cap");
        self.core.handle(
            sid,
            ClientMsg::Hello {
                version: PROTOCOL_VERSION,
                agent: "test".into(),
            },
            self.now,
        );
        self.drain(sid);
        sid
    }

    /// All outputs for `sid` (and discards others').
    fn drain(&mut self, sid: SessionId) -> Vec<ServerMsg> {
        let mut v = Vec::new();
        while let Some(o) = self.core.poll_output() {
            if let Output::Send(s, m) = o
                && s == sid
            {
                v.push(m);
            }
        }
        v
    }

    /// Sends a request; returns its answer and keeps every output queued for inspection.
    fn req(&mut self, sid: SessionId, body: Request) -> Result<Response, ErrorBody> {
        let id = self.next_id;
        self.next_id += 1;
        self.core
            .handle(sid, ClientMsg::Request { id, body }, self.now);
        let answer = self.core.outputs.iter().find_map(|o| match o {
            Output::Send(s, ServerMsg::Response { id: i, result }) if *s == sid && *i == id => {
                Some(result.clone())
            }
            _ => None,
        });
        answer.expect("every request gets an answer")
    }

    /// Events for `sid` queued so far (outputs for others are kept).
    fn events(&mut self, sid: SessionId) -> Vec<Event> {
        let mut mine = Vec::new();
        self.core.outputs.retain(|o| match o {
            Output::Send(s, ServerMsg::Event(e)) if *s == sid => {
                mine.push(e.clone());
                false
            }
            _ => true,
        });
        mine
    }

    fn login(&mut self, handle: &str, device: DeviceId) -> SessionId {
        let sid = self.connect();
        let key = self
            .keys
            .entry(handle.to_owned())
            .or_insert_with(|| {
                use sha2::Digest;
                let seed: [u8; 32] = sha2::Sha256::digest(format!("{handle}#{device}")).into();
                SigningKey::from_bytes(&seed)
            })
            .clone();
        let exists = self.core.storage.account(&h(handle)).expect("db").is_some();
        let body = if exists {
            Request::Login {
                handle: h(handle),
                device,
            }
        } else {
            Request::Register {
                handle: h(handle),
                identity_key: key.verifying_key().to_bytes().to_vec(),
                device,
            }
        };
        let Ok(Response::Challenge { nonce }) = self.req(sid, body) else {
            panic!("challenge expected")
        };
        let sig = key.sign(&login_transcript(&nonce, &h(handle), device));
        let r = self.req(
            sid,
            Request::Prove {
                signature: sig.to_bytes().to_vec(),
            },
        );
        assert!(matches!(r, Ok(Response::LoggedIn { .. })), "{r:?}");
        self.drain(sid);
        sid
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.core.handle_timeout(self.now);
    }
}

fn code(r: Result<Response, ErrorBody>) -> ErrorCode {
    r.expect_err("an error").code
}

#[test]
fn wrong_version_is_refused_with_goodbye() {
    let mut w = World::new();
    let sid = w.core.connect(w.now).expect("session");
    w.core.handle(
        sid,
        ClientMsg::Hello {
            version: 99,
            agent: "x".into(),
        },
        w.now,
    );
    assert!(matches!(
        w.core.poll_output(),
        Some(Output::Send(
            _,
            ServerMsg::Goodbye(ErrorBody {
                code: ErrorCode::UnsupportedVersion {
                    supported: PROTOCOL_VERSION
                },
                ..
            })
        ))
    ));
    assert_eq!(w.core.poll_output(), Some(Output::Close(sid)));
}

#[test]
fn replayed_signature_fails_and_wrong_key_fails() {
    let mut w = World::new();
    w.login("@alice", 1);
    let sid = w.connect();
    let Ok(Response::Challenge { nonce }) = w.req(
        sid,
        Request::Login {
            handle: h("@alice"),
            device: 1,
        },
    ) else {
        panic!()
    };
    let key = w.keys["@alice"].clone();
    let sig = key
        .sign(&login_transcript(&nonce, &h("@alice"), 1))
        .to_bytes()
        .to_vec();
    // Wrong key first: consumes the nonce.
    let bad = SigningKey::from_bytes(&[99; 32]).sign(&login_transcript(&nonce, &h("@alice"), 1));
    assert_eq!(
        code(w.req(
            sid,
            Request::Prove {
                signature: bad.to_bytes().to_vec()
            }
        )),
        ErrorCode::BadSignature
    );
    // The right signature over the spent nonce: no challenge outstanding.
    assert_eq!(
        code(w.req(
            sid,
            Request::Prove {
                signature: sig.clone()
            }
        )),
        ErrorCode::InvalidState
    );
    // A fresh challenge: the old signature does not verify.
    let _ = w.req(
        sid,
        Request::Login {
            handle: h("@alice"),
            device: 1,
        },
    );
    assert_eq!(
        code(w.req(sid, Request::Prove { signature: sig })),
        ErrorCode::BadSignature
    );
    assert_eq!(
        code(w.req(
            sid,
            Request::Lookup {
                handle: h("@alice")
            }
        )),
        ErrorCode::Unauthenticated
    );
}

#[test]
fn handle_taken_and_login_timeout() {
    let mut w = World::new();
    w.login("@alice", 1);
    let sid = w.connect();
    let r = w.req(
        sid,
        Request::Register {
            handle: h("@ALICE"),
            identity_key: SigningKey::from_bytes(&[5; 32])
                .verifying_key()
                .to_bytes()
                .to_vec(),
            device: 1,
        },
    );
    assert_eq!(code(r), ErrorCode::HandleTaken);
    w.drain(sid);
    w.advance(Duration::from_secs(31));
    assert!(
        w.core.outputs.contains(&Output::Close(sid)),
        "an idle unauthenticated session is closed"
    );
}

#[test]
fn ring_timeout_ends_the_call_for_both_sides() {
    let mut w = World::new();
    let alice = w.login("@alice", 1);
    let bob = w.login("@bob", 1);
    let call = CallId([1; 16]);
    assert!(matches!(
        w.req(
            alice,
            Request::Invite {
                call,
                to: h("@bob")
            }
        ),
        Ok(Response::Ringing { devices: 1, .. })
    ));
    assert!(matches!(w.events(bob)[..], [Event::IncomingCall { .. }]));
    w.advance(Duration::from_secs(44));
    assert!(w.events(alice).is_empty());
    w.advance(Duration::from_secs(1));
    let ended = Event::CallEnded {
        call,
        reason: EndReason::Timeout,
    };
    assert_eq!(w.events(alice), vec![ended.clone()]);
    assert_eq!(w.events(bob), vec![ended]);
    // Both are free again.
    assert!(
        w.req(
            bob,
            Request::Invite {
                call: CallId([2; 16]),
                to: h("@alice")
            }
        )
        .is_ok()
    );
}

#[test]
fn second_device_loses_the_accept_race() {
    let mut w = World::new();
    let alice = w.login("@alice", 1);
    let bob1 = w.login("@bob", 1);
    let bob2 = w.login("@bob", 2);
    let call = CallId([3; 16]);
    assert!(matches!(
        w.req(
            alice,
            Request::Invite {
                call,
                to: h("@bob")
            }
        ),
        Ok(Response::Ringing { devices: 2, .. })
    ));
    assert_eq!(w.req(bob2, Request::Accept { call }), Ok(Response::Ok));
    assert_eq!(
        code(w.req(bob1, Request::Accept { call })),
        ErrorCode::AlreadyAnswered
    );
    assert!(w.events(bob1).contains(&Event::CallEnded {
        call,
        reason: EndReason::AnsweredElsewhere
    }));
    assert!(
        w.events(alice)
            .iter()
            .any(|e| matches!(e, Event::CallAccepted { by, .. } if by.device == 2))
    );
    // Relay goes only between the two parties.
    assert_eq!(
        w.req(
            alice,
            Request::Relay {
                call,
                signal: RtcSignal::Offer("v=0".into())
            }
        ),
        Ok(Response::Ok)
    );
    assert!(matches!(w.events(bob2).last(), Some(Event::Relayed { .. })));

    assert!(w.events(bob1).is_empty());
    assert_eq!(
        code(w.req(
            bob1,
            Request::Relay {
                call,
                signal: RtcSignal::EndOfCandidates
            }
        )),
        ErrorCode::Forbidden
    );
    // A third party calling either is busy.
    let carol = w.login("@carol", 1);
    assert_eq!(
        code(w.req(
            carol,
            Request::Invite {
                call: CallId([4; 16]),
                to: h("@bob")
            }
        )),
        ErrorCode::Busy
    );
    // Losing the connection ends the call with a reason for the other side.
    w.core.disconnect(bob2, w.now);
    assert_eq!(
        w.events(alice),
        vec![Event::CallEnded {
            call,
            reason: EndReason::PeerDisconnected
        }]
    );
}

#[test]
fn epoch_fencing_accepts_one_commit_per_epoch() {
    let mut w = World::new();
    let (alice, alice_mls) = w.member("@alice", 2);
    let (bob, bob_mls) = w.member("@bob", 2);
    let room = w.room(alice);
    w.gather(alice, room, &[(bob, "@bob")]);
    let mut alice_group = w.create_group(alice, &alice_mls, &room.0);
    let added = w.add(alice, &alice_mls, &mut alice_group, &["@bob"]);
    assert_eq!(
        added,
        Ok(Response::CommitAccepted {
            epoch: 1,
            added: vec![AddedMember {
                device: DeviceAddr {
                    handle: h("@bob"),
                    device: 1
                },
                leaf: 1
            }],
            removed: vec![],
        })
    );
    let welcome = w.deliveries(bob).pop().expect("a Welcome for bob");
    let mut bob_group = join(&bob_mls, &welcome);
    let bobs = bob_group.update(&bob_mls).expect("bob's commit");
    let alices = alice_group.update(&alice_mls).expect("alice's commit");
    assert!(matches!(
        w.req(bob, bobs.into_request(bob_group.group_id().to_vec())),
        Ok(Response::CommitAccepted { epoch: 2, .. })
    ));
    assert_eq!(
        code(w.req(alice, alices.into_request(alice_group.group_id().to_vec()))),
        ErrorCode::StaleEpoch { current: 2 }
    );
}

#[test]
fn offline_device_gets_stored_messages_in_order_at_login() {
    let mut w = World::new();
    let (alice, alice_mls) = w.member("@alice", 1);
    let (bob, _bob_mls) = w.member("@bob", 1);
    let room = w.room(alice);
    w.gather(alice, room, &[(bob, "@bob")]);
    let mut group = w.create_group(alice, &alice_mls, &room.0);
    w.add(alice, &alice_mls, &mut group, &["@bob"])
        .expect("commit");
    // Bob goes offline before reading his Welcome.
    w.core.disconnect(bob, w.now);
    let mut sent = Vec::new();
    for _ in 1..=3 {
        let c = group.update(&alice_mls).expect("update");
        sent.push(c.commit.clone());
        w.req(alice, c.into_request(group.group_id().to_vec()))
            .expect("commit");
        group.merge_pending(&alice_mls).expect("merge");
    }
    // Log in on a fresh connection to see the deliveries.
    let sid = w.connect();
    let Ok(Response::Challenge { nonce }) = w.req(
        sid,
        Request::Login {
            handle: h("@bob"),
            device: 1,
        },
    ) else {
        panic!()
    };
    let sig = w.keys["@bob"]
        .sign(&login_transcript(&nonce, &h("@bob"), 1))
        .to_bytes()
        .to_vec();
    // The room invitation, the Welcome, the three commits.
    assert!(matches!(
        w.req(sid, Request::Prove { signature: sig }),
        Ok(Response::LoggedIn { pending: 5, .. })
    ));
    let data: Vec<(MlsKind, Vec<u8>)> = w
        .drain(sid)
        .into_iter()
        .filter_map(|m| match m {
            ServerMsg::Delivery {
                item: Stored::Mls { kind, data, .. },
                ..
            } => Some((kind, data)),
            _ => None,
        })
        .collect();
    assert_eq!(data.len(), 4);
    assert_eq!(data[0].0, MlsKind::Welcome);
    assert_eq!(
        data[1..].iter().map(|d| d.1.clone()).collect::<Vec<_>>(),
        sent,
        "the commits, in order"
    );
}

#[test]
fn a_claim_that_leaves_few_key_packages_asks_the_device_for_more() {
    let mut w = World::new();
    let low = w.core.cfg.limits.key_package_low_water;
    let (alice, _) = w.member("@alice", 0);
    let (bob, _) = w.member("@bob", low + 1);
    let room = w.room(alice);
    w.gather(alice, room, &[(bob, "@bob")]);
    let claim = Request::ClaimKeyPackage {
        handle: h("@bob"),
        device: None,
    };
    w.req(alice, claim.clone()).expect("claim");
    assert!(w.events(bob).is_empty(), "still at the low-water mark");
    w.req(alice, claim).expect("claim");
    assert_eq!(
        w.events(bob),
        vec![Event::KeyPackagesLow {
            remaining: (low - 1) as u32
        }]
    );
    // A burst of further claims does not repeat it until the device uploads again.
    for _ in 0..3 {
        w.req(
            alice,
            Request::ClaimKeyPackage {
                handle: h("@bob"),
                device: None,
            },
        )
        .expect("claim");
    }
    assert!(w.events(bob).is_empty(), "told once per low spell");
    w.req(
        bob,
        Request::UploadKeyPackages {
            packages: vec![],
            last_resort: None,
            replace: false,
        },
    )
    .expect("upload");
    w.req(
        alice,
        Request::ClaimKeyPackage {
            handle: h("@bob"),
            device: None,
        },
    )
    .expect("claim");
    assert_eq!(w.events(bob).len(), 1, "told again after an upload");
}

#[test]
fn key_packages_are_claimed_only_for_a_device_in_a_call_or_room_with_the_claimer() {
    let mut w = World::new();
    let (alice, _) = w.member("@alice", 0);
    let (bob, _) = w.member("@bob", 4);
    let (mallory, _) = w.member("@mallory", 0);
    let claim = |device| Request::ClaimKeyPackage {
        handle: h("@bob"),
        device,
    };
    assert_eq!(
        code(w.req(alice, claim(None))),
        ErrorCode::Forbidden,
        "no room or call in common yet"
    );
    let room = w.room(alice);
    let invite = Request::InviteToRoom {
        room,
        handles: vec![h("@bob")],
    };
    assert_eq!(w.req(alice, invite), Ok(Response::Ok));
    assert!(w.req(alice, Request::JoinRoom { room }).is_ok());
    assert_eq!(
        code(w.req(alice, claim(None))),
        ErrorCode::Forbidden,
        "invited is not enough: bob is not in the room"
    );
    assert!(w.req(bob, Request::JoinRoom { room }).is_ok());
    assert!(matches!(
        w.req(alice, claim(Some(1))),
        Ok(Response::KeyPackage { .. })
    ));
    assert_eq!(
        code(w.req(alice, claim(Some(2)))),
        ErrorCode::Forbidden,
        "a device of bob's that is not there"
    );
    assert_eq!(
        code(w.req(mallory, claim(None))),
        ErrorCode::Forbidden,
        "someone outside the room"
    );
    w.core.disconnect(bob, w.now);
    assert_eq!(
        code(w.req(alice, claim(None))),
        ErrorCode::Forbidden,
        "bob left"
    );
}

#[test]
fn session_rate_limit_answers_rate_limited() {
    let mut w = World::new();
    let alice = w.login("@alice", 1);
    let (_, burst) = Limits::default().session_rate;
    let tries = burst as usize + 150;
    let mut limited = 0;
    for _ in 0..tries {
        if let Err(e) = w.req(
            alice,
            Request::Lookup {
                handle: h("@alice"),
            },
        ) {
            assert!(matches!(e.code, ErrorCode::RateLimited { .. }));
            limited += 1;
        }
    }
    assert!(
        limited >= 140,
        "a burst of {tries} against a bucket of {burst} is limited, got {limited}"
    );
    w.advance(Duration::from_secs(2));
    assert!(
        w.req(
            alice,
            Request::Lookup {
                handle: h("@alice")
            }
        )
        .is_ok()
    );
}

#[test]
fn session_cap_refuses_new_connections() {
    let mut w = World::new();
    w.core.cfg.limits.max_sessions = 2;
    assert!(w.core.connect(w.now).is_some());
    assert!(w.core.connect(w.now).is_some());
    assert!(w.core.connect(w.now).is_none(), "third connection refused");
}

#[test]
fn a_full_device_queue_refuses_the_message_for_everyone_with_a_typed_error() {
    let mut w = World::new();
    let (alice, alice_mls) = w.member("@alice", 1);
    let (bob, _) = w.member("@bob", 1);
    let (carol, _) = w.member("@carol", 1);
    let room = w.room(alice);
    w.gather(alice, room, &[(bob, "@bob"), (carol, "@carol")]);
    // Bob reads nothing: the room invitation is 1 queued.
    w.core.cfg.limits.max_pending = 3;
    let mut group = w.create_group(alice, &alice_mls, &room.0);
    w.add(alice, &alice_mls, &mut group, &["@bob"])
        .expect("add bob"); // bob: Welcome (2 queued)
    w.add(alice, &alice_mls, &mut group, &["@carol"])
        .expect("add carol"); // bob: commit (3 queued)
    w.drain(carol);
    // Bob's queue is full: the next commit is refused, for everyone, and the epoch stays.
    let c = group.update(&alice_mls).expect("update");
    let r = w.req(alice, c.into_request(group.group_id().to_vec()));
    assert_eq!(code(r), ErrorCode::QueueFull);
    group.discard_pending(&alice_mls).expect("discard");
    assert_eq!(
        w.core
            .metrics
            .queue_drops
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(w.deliveries(carol).is_empty(), "nobody got half a commit");
    let c = group.update(&alice_mls).expect("update");
    assert_eq!(c.epoch, 2, "the group did not move");
}

/// A device id and its MLS state (the credential signed by the account's key).
fn join(mls: &MlsDevice, welcome: &[u8]) -> CallGroup {
    mls.stage_join(welcome)
        .expect("welcome")
        .join(mls)
        .expect("join")
}

impl World {
    /// Logs `handle` in as device 1 and publishes `packages` KeyPackages from a real MLS
    /// device whose credential carries the account key.
    fn member(&mut self, handle: &str, packages: usize) -> (SessionId, MlsDevice) {
        let sid = self.login(handle, 1);
        let mut mls = MlsDevice::with_identity(handle, &self.keys[handle], None).expect("mls");
        mls.set_service_key(self.core.sender.public());
        let kps = (0..packages)
            .map(|_| mls.key_package().expect("kp"))
            .collect();
        self.req(
            sid,
            Request::UploadKeyPackages {
                packages: kps,
                last_resort: None,
                replace: true,
            },
        )
        .expect("stored");
        (sid, mls)
    }

    fn room(&mut self, sid: SessionId) -> RoomId {
        let Ok(Response::RoomCreated { room }) = self.req(sid, Request::CreateRoom) else {
            panic!("room")
        };
        room
    }

    /// Invites `others` to `owner`'s room and brings everyone into it, as joiners are before
    /// anyone may claim their KeyPackages.
    fn gather(&mut self, owner: SessionId, room: RoomId, others: &[(SessionId, &str)]) {
        let invite = Request::InviteToRoom {
            room,
            handles: others.iter().map(|(_, hd)| h(hd)).collect(),
        };
        assert_eq!(self.req(owner, invite), Ok(Response::Ok));
        for sid in std::iter::once(owner).chain(others.iter().map(|(s, _)| *s)) {
            assert!(self.req(sid, Request::JoinRoom { room }).is_ok());
        }
    }

    fn create_group(&mut self, sid: SessionId, mls: &MlsDevice, id: &[u8]) -> CallGroup {
        let group = mls.create_group_with_id(id).expect("group");
        self.req(
            sid,
            Request::CreateGroup {
                group: id.to_vec(),
                group_info: group.group_info(mls).expect("info"),
            },
        )
        .expect("created");
        group
    }

    /// Claims each handle's KeyPackage and commits their addition (merged if accepted).
    fn add(
        &mut self,
        sid: SessionId,
        mls: &MlsDevice,
        group: &mut CallGroup,
        handles: &[&str],
    ) -> Result<Response, ErrorBody> {
        let mut kps = Vec::new();
        for hd in handles {
            let Ok(Response::KeyPackage { package, .. }) = self.req(
                sid,
                Request::ClaimKeyPackage {
                    handle: h(hd),
                    device: None,
                },
            ) else {
                panic!("claim")
            };
            kps.push(package);
        }
        let c = group.add(mls, &kps).expect("add");
        let r = self.req(sid, c.into_request(group.group_id().to_vec()));
        if r.is_ok() {
            group.merge_pending(mls).expect("merge");
        } else {
            group.discard_pending(mls).expect("discard");
        }
        r
    }

    /// The MLS payloads delivered to `sid` so far.
    fn deliveries(&mut self, sid: SessionId) -> Vec<Vec<u8>> {
        self.drain(sid)
            .into_iter()
            .filter_map(|m| match m {
                ServerMsg::Delivery {
                    item: Stored::Mls { data, .. },
                    ..
                } => Some(data),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn a_removal_is_sent_to_the_sfu_until_it_is_acknowledged() {
    let mut w = World::new();
    let sfu = register_sfu(&mut w);
    let (alice, _) = w.member("@alice", 1);
    let (bob, _) = w.member("@bob", 1);
    let room = w.room(alice);
    assert!(
        w.req(
            alice,
            Request::InviteToRoom {
                room,
                handles: vec![h("@bob")]
            }
        )
        .is_ok()
    );
    assert!(w.req(alice, Request::JoinRoom { room }).is_ok());
    assert!(w.req(bob, Request::JoinRoom { room }).is_ok());
    w.events(sfu);
    assert_eq!(w.req(bob, Request::LeaveRoom { room }), Ok(Response::Ok));
    let gone = Event::SfuParticipantGone {
        room,
        device: DeviceAddr {
            handle: h("@bob"),
            device: 1,
        },
    };
    assert_eq!(w.events(sfu), vec![gone.clone()]);
    // Not acknowledged: it comes again, once a second.
    w.advance(Duration::from_millis(1100));
    assert_eq!(w.events(sfu), vec![gone.clone()]);
    w.advance(Duration::from_millis(1100));
    assert_eq!(w.events(sfu), vec![gone.clone()]);
    // Only an SFU may acknowledge.
    let Event::SfuParticipantGone { device, .. } = gone else {
        unreachable!()
    };
    let ack = Request::SfuRemovalApplied { room, device };
    assert_eq!(code(w.req(alice, ack.clone())), ErrorCode::Forbidden);
    assert_eq!(w.req(sfu, ack), Ok(Response::Ok));
    w.advance(Duration::from_secs(5));
    assert_eq!(w.events(sfu), vec![]);
}

/// An SFU registered with the world's secret.
fn register_sfu(w: &mut World) -> SessionId {
    let sfu = w.connect();
    let r = w.req(
        sfu,
        Request::RegisterSfu {
            node: "sfu-1".into(),
            secret: "sfu-secret".into(),
            media_addr: "127.0.0.1:5000".into(),
            capacity: 10,
        },
    );
    assert!(matches!(r, Ok(Response::SfuRegistered { .. })), "{r:?}");
    sfu
}

#[test]
fn a_relayed_call_gets_a_room_of_its_two_parties_for_as_long_as_it_lasts() {
    let mut w = World::new();
    let (alice, _) = w.member("@alice", 1);
    let (bob, _) = w.member("@bob", 1);
    let (carol, _) = w.member("@carol", 1);
    let call = CallId([9; 16]);
    let invite = Request::Invite {
        call,
        to: h("@bob"),
    };
    assert!(w.req(alice, invite).is_ok());
    // Not before an answer, and not without an SFU.
    assert_eq!(
        code(w.req(alice, Request::RelayCall { call })),
        ErrorCode::Forbidden
    );
    assert_eq!(w.req(bob, Request::Accept { call }), Ok(Response::Ok));
    assert!(matches!(
        code(w.req(alice, Request::RelayCall { call })),
        ErrorCode::LimitReached { .. }
    ));
    register_sfu(&mut w);
    w.events(bob);
    let Ok(Response::RoomCreated { room }) = w.req(alice, Request::RelayCall { call }) else {
        panic!("the caller's relay request gives a room");
    };
    assert!(w.events(bob).contains(&Event::Relayed {
        call,
        from: DeviceAddr {
            handle: h("@alice"),
            device: 1
        },
        signal: RtcSignal::UseRoom { room },
    }));
    // Asking again (either party) gives the same room.
    assert_eq!(
        w.req(bob, Request::RelayCall { call }),
        Ok(Response::RoomCreated { room })
    );
    // A party cannot forge the move, and a third party can neither ask for it nor join.
    let forged = Request::Relay {
        call,
        signal: RtcSignal::UseRoom { room },
    };
    assert_eq!(code(w.req(alice, forged)), ErrorCode::Forbidden);
    assert_eq!(
        code(w.req(carol, Request::RelayCall { call })),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(w.req(carol, Request::JoinRoom { room })),
        ErrorCode::Forbidden
    );
    // Nor another device of a party's account: it is not in the call.
    let bob_laptop = w.login("@bob", 2);
    assert_eq!(
        code(w.req(bob_laptop, Request::JoinRoom { room })),
        ErrorCode::Forbidden
    );
    // Negotiation is negotiation-sized: a megabyte "offer" is refused.
    let huge = Request::Relay {
        call,
        signal: RtcSignal::Offer("v".repeat(200_000)),
    };
    assert_eq!(code(w.req(alice, huge)), ErrorCode::TooLarge);
    // Nobody is invited to it or removed from it, not even by the caller who owns it.
    let inv = Request::InviteToRoom {
        room,
        handles: vec![h("@carol")],
    };
    assert_eq!(code(w.req(alice, inv)), ErrorCode::Forbidden);
    let rm = Request::RemoveFromRoom {
        room,
        handle: h("@bob"),
    };
    assert_eq!(code(w.req(alice, rm)), ErrorCode::Forbidden);
    assert!(matches!(
        w.req(alice, Request::JoinRoom { room }),
        Ok(Response::RoomJoined { .. })
    ));
    assert!(matches!(
        w.req(bob, Request::JoinRoom { room }),
        Ok(Response::RoomJoined { .. })
    ));
    // The call ends: the room is gone with it, and whoever was still in it is out.
    w.events(bob);
    assert_eq!(w.req(alice, Request::Hangup { call }), Ok(Response::Ok));
    assert!(w.events(bob).contains(&Event::RemovedFromRoom { room }));
    assert_eq!(
        code(w.req(bob, Request::LeaveRoom { room })),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(w.req(bob, Request::JoinRoom { room })),
        ErrorCode::NotFound
    );
}

#[test]
fn a_big_room_filling_at_once_is_neither_throttled_nor_too_big_to_frame() {
    const JOINERS: usize = 200;
    const PER_COMMIT: usize = 50; // the client's MAX_ADDS
    let mut w = World::new();
    register_sfu(&mut w);
    let (owner, owner_mls) = w.member("@owner", 1);
    let names: Vec<String> = (0..JOINERS).map(|i| format!("@joiner{i}")).collect();
    let joiners: Vec<(SessionId, MlsDevice)> = names.iter().map(|n| w.member(n, 2)).collect();
    let room = w.room(owner);
    for chunk in names.chunks(100) {
        let inv = Request::InviteToRoom {
            room,
            handles: chunk.iter().map(|n| h(n)).collect(),
        };
        assert_eq!(w.req(owner, inv), Ok(Response::Ok));
    }
    assert!(w.req(owner, Request::JoinRoom { room }).is_ok());
    let mut group = w.create_group(owner, &owner_mls, &room.0);
    for (sid, _) in &joiners {
        assert!(w.req(*sid, Request::JoinRoom { room }).is_ok());
    }
    // The owner lets them in 50 a commit, a batch every 300 ms, as a member's session
    // does: the directory lookups, the claims and the commits all pass.
    let mut last_request = 0;
    for batch in names.chunks(PER_COMMIT) {
        for n in batch {
            let r = w.req(owner, Request::Lookup { handle: h(n) });
            assert!(matches!(r, Ok(Response::Identity { .. })), "{r:?}");
        }
        let handles: Vec<&str> = batch.iter().map(String::as_str).collect();
        let mut kps = Vec::new();
        for hd in &handles {
            let claim = Request::ClaimKeyPackage {
                handle: h(hd),
                device: None,
            };
            let Ok(Response::KeyPackage { package, .. }) = w.req(owner, claim) else {
                panic!("claim throttled or refused");
            };
            kps.push(package);
        }
        let c = group.add(&owner_mls, &kps).expect("add");
        let request = c.into_request(group.group_id().to_vec());
        last_request = encode(&ClientMsg::Request {
            id: 1,
            body: request.clone(),
        })
        .expect("the commit request fits a frame")
        .len();
        let r = w.req(owner, request);
        assert!(matches!(r, Ok(Response::CommitAccepted { .. })), "{r:?}");
        group.merge_pending(&owner_mls).expect("merge");
        w.advance(Duration::from_millis(300));
    }
    assert!(
        last_request > 64 * 1024,
        "the last commit request ({last_request} B) is beyond the old 64 KiB frame cap"
    );
    // The last joiner gets its Welcome as one delivery that frames.
    let (last_sid, last_mls) = joiners.last().expect("joiners");
    let delivered = w.drain(*last_sid).into_iter().find_map(|m| match m {
        ServerMsg::Delivery {
            item: item @ Stored::Mls { .. },
            seq,
        } => Some(ServerMsg::Delivery { seq, item }),
        _ => None,
    });
    let delivered = delivered.expect("a Welcome for the last joiner");
    encode(&delivered).expect("the delivery fits a frame");
    let ServerMsg::Delivery {
        item: Stored::Mls { data, .. },
        ..
    } = delivered
    else {
        unreachable!()
    };
    let joined = join(last_mls, &data);
    assert_eq!(joined.members().len(), JOINERS + 1);
}

/// The service's Remove proposals delivered to each of `sids` so far: (epoch, the device
/// removed, the proposal).
fn proposals(w: &mut World, sids: &[SessionId]) -> Vec<Vec<(u64, DeviceAddr, Vec<u8>)>> {
    let mut got = vec![Vec::new(); sids.len()];
    while let Some(o) = w.core.poll_output() {
        let Output::Send(sid, m) = o else { continue };
        let Some(i) = sids.iter().position(|s| *s == sid) else {
            continue;
        };
        if let ServerMsg::Delivery {
            item:
                Stored::Mls {
                    kind: MlsKind::Proposal,
                    epoch,
                    from,
                    data,
                    ..
                },
            ..
        } = m
        {
            got[i].push((epoch, from, data));
        }
    }
    got
}

#[test]
fn the_service_proposes_removing_whoever_left_until_a_member_commits_it() {
    let mut w = World::new();
    register_sfu(&mut w);
    let (alice, alice_mls) = w.member("@alice", 1);
    let (bob, bob_mls) = w.member("@bob", 1);
    let (carol, _) = w.member("@carol", 1);
    let room = w.room(alice);
    let invite = Request::InviteToRoom {
        room,
        handles: vec![h("@bob"), h("@carol")],
    };
    assert_eq!(w.req(alice, invite), Ok(Response::Ok));
    for sid in [alice, bob, carol] {
        assert!(w.req(sid, Request::JoinRoom { room }).is_ok());
    }
    let mut group = w.create_group(alice, &alice_mls, &room.0);
    assert!(
        w.add(alice, &alice_mls, &mut group, &["@bob", "@carol"])
            .is_ok()
    );
    let welcome = w.deliveries(bob).pop().expect("bob's Welcome");
    let mut bob_group = join(&bob_mls, &welcome);
    assert!(
        proposals(&mut w, &[alice]).concat().is_empty(),
        "nobody has left yet"
    );

    // Carol's connection drops: the two still there get the service's proposal.
    w.core.disconnect(carol, w.now);
    let carol_dev = DeviceAddr {
        handle: h("@carol"),
        device: 1,
    };
    let [to_alice, to_bob] = <[_; 2]>::try_from(proposals(&mut w, &[alice, bob])).expect("two");
    assert_eq!(to_alice.len(), 1, "one proposal for alice");
    assert_eq!(to_bob.len(), 1, "one for bob");
    let (epoch, from, data) = &to_alice[0];
    assert_eq!((*epoch, from), (1, &carol_dev));
    let staged = bob_group
        .stage(&bob_mls, data)
        .expect("a valid MLS message");
    assert_eq!(
        staged.service_removal(),
        Some(2),
        "an external Remove of carol's leaf"
    );

    // Alice commits something else without it: it goes stale, and the service proposes
    // again in the new epoch.
    let update = group.update(&alice_mls).expect("update");
    assert!(matches!(
        w.req(alice, update.into_request(room.0.to_vec())),
        Ok(Response::CommitAccepted { epoch: 2, removed, .. }) if removed.is_empty()
    ));
    group.merge_pending(&alice_mls).expect("merge");
    let again = proposals(&mut w, &[alice]).concat();
    assert_eq!(again.len(), 1, "proposed again: {again:?}");
    assert_eq!(again[0].0, 2);

    // Alice stores it and commits it by reference: carol's leaf goes, and nothing more
    // is proposed.
    let staged = group.stage(&alice_mls, &again[0].2).expect("valid");
    assert_eq!(staged.service_removal(), Some(2));
    group.apply(&alice_mls, staged).expect("stored");
    assert_eq!(group.pending_removals(), vec![2]);
    let commit = group.commit_proposals(&alice_mls).expect("commit");
    assert!(matches!(
        w.req(alice, commit.into_request(room.0.to_vec())),
        Ok(Response::CommitAccepted { epoch: 3, removed, .. }) if removed == [2]
    ));
    assert!(proposals(&mut w, &[alice, bob]).concat().is_empty());
}

#[test]
fn a_room_group_must_name_the_service_as_its_external_sender() {
    let mut w = World::new();
    let (alice, _) = w.member("@alice", 1);
    let room = w.room(alice);
    // A device that never learned the service's key (or left it out on purpose).
    let plain = MlsDevice::with_identity("@alice", &w.keys["@alice"], None).expect("mls");
    let group = plain.create_group_with_id(&room.0).expect("group");
    let r = w.req(
        alice,
        Request::CreateGroup {
            group: room.0.to_vec(),
            group_info: group.group_info(&plain).expect("info"),
        },
    );
    assert_eq!(code(r), ErrorCode::InvalidCommit);
}

#[test]
fn an_answered_call_has_a_room_of_its_two_devices_without_an_sfu_until_relayed() {
    let mut w = World::new();
    register_sfu(&mut w);
    let (alice, _) = w.member("@alice", 1);
    let (bob, _) = w.member("@bob", 1);
    let call = CallId([6; 16]);
    let room = RoomId(call.0);
    assert!(
        w.req(
            alice,
            Request::Invite {
                call,
                to: h("@bob")
            }
        )
        .is_ok()
    );
    assert_eq!(
        code(w.req(alice, Request::JoinRoom { room })),
        ErrorCode::NotFound,
        "no room before the answer"
    );
    assert_eq!(w.req(bob, Request::Accept { call }), Ok(Response::Ok));
    for sid in [alice, bob] {
        assert!(matches!(
            w.req(sid, Request::JoinRoom { room }),
            Ok(Response::RoomJoined { .. })
        ));
    }
    // Peer to peer: the room has no SFU, so there is no join token.
    assert!(matches!(
        code(w.req(alice, Request::SfuToken { room })),
        ErrorCode::LimitReached { .. }
    ));
    // Relayed: the same room (and so the same group) gets an SFU.
    assert_eq!(
        w.req(bob, Request::RelayCall { call }),
        Ok(Response::RoomCreated { room })
    );
    assert_eq!(
        code(w.req(alice, Request::SfuToken { room })),
        ErrorCode::NotFound,
        "now only the group is missing"
    );
    // A new call cannot take a room's id.
    let (carol, _) = w.member("@carol", 1);
    let taken = w.room(carol);
    let (dave, _) = w.member("@dave", 1);
    let _ = dave;
    assert_eq!(
        code(w.req(
            carol,
            Request::Invite {
                call: CallId(taken.0),
                to: h("@dave")
            }
        )),
        ErrorCode::InvalidState
    );
}
