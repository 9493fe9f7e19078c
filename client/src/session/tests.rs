//! Session cores, the real signaling `Core` and a simulated signaling network, stepped on
//! one virtual clock (ordering and time deterministic; openmls' randomness is not seeded).
//! Media is not connected here: the SFU is a registered stand-in that never answers, so
//! these tests are about membership, epochs and keys.

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use ed25519_dalek::{Signer, SigningKey};
use sotto_proto::{
    ClientMsg, DeviceAddr, ErrorBody, Handle, PROTOCOL_VERSION, Request, Response, RoomId,
    ServerMsg, Stored, login_transcript,
};
use sotto_signaling::{
    core::{Core, CoreConfig, Output as CoreOutput, Rng, ServiceKeys, SessionId, metrics::Metrics},
    storage::sqlite::SqliteStorage,
};

use super::*;
use crate::mls::MlsDevice;
use sotto_wire::rtp_ext::AudioLevel;

/// One hop of the signaling network, each way.
const HOP: Duration = Duration::from_millis(3);

struct Member {
    handle: Handle,
    key: SigningKey,
    mls: MlsDevice,
    sid: SessionId,
    session: Option<RoomSession>,
    events: Vec<RoomEvent>,
    /// Deliveries not for the room (kept, never acknowledged).
    kept: Vec<(u64, Stored)>,
    /// Whether it stopped processing anything (a frozen device).
    frozen: bool,
    /// Commits it sent to the delivery service.
    commits_sent: u32,
    /// The service's proposals delivered to this member.
    proposals_seen: u32,
    /// Its media socket's address, once started.
    local: Option<SocketAddr>,
    /// Media offers it sent to the SFU.
    sfu_offers: u32,
    /// Where its datagrams went, and whether each was RTP or RTCP (first byte 128..=191,
    /// RFC 7983) rather than STUN or DTLS.
    sent_to: Vec<(SocketAddr, bool)>,
}

struct World {
    core: Core,
    now: Instant,
    members: Vec<Member>,
    to_core: VecDeque<(Instant, SessionId, ClientMsg)>,
    to_client: VecDeque<(Instant, SessionId, ServerMsg)>,
    next_id: u64,
    room: RoomId,
    /// A server that hands out its own KeyPackage when `handle` is claimed.
    substitute: Option<(Handle, MlsDevice)>,
    /// Datagrams in flight between members' media sockets: (due, from, to, bytes).
    media: VecDeque<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    /// Whether datagrams between members are dropped (no direct path).
    no_direct_path: bool,
}

fn h(s: &str) -> Handle {
    Handle::parse(s).expect("handle")
}

fn seed_key(handle: &str) -> SigningKey {
    use sha2::Digest;
    SigningKey::from_bytes(&sha2::Sha256::digest(handle.as_bytes()).into())
}

impl World {
    /// A signaling core with a registered (silent) SFU, `owner` owning a fresh room whose
    /// group it created, and the others registered and invited.
    fn new(owner: &str, others: &[&str]) -> Self {
        let mut w = Self::unprepared(owner, others);
        let room = w.room;
        let group = w.members[0]
            .mls
            .create_group_with_id(&room.0)
            .expect("group");
        let info = group.group_info(&w.members[0].mls).expect("info");
        let r = w.direct(
            w.members[0].sid,
            Request::CreateGroup {
                group: room.0.to_vec(),
                group_info: info,
            },
        );
        assert!(r.is_ok(), "{r:?}");
        w
    }

    /// Like [`Self::new`], but nobody has created the room's group: the first to join
    /// starts it.
    fn unprepared(owner: &str, others: &[&str]) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_max_level(tracing::Level::WARN)
            .try_init();
        let now = Instant::now();
        let mut n = 0u8;
        let rng: Rng = Box::new(move |b: &mut [u8]| {
            for x in b.iter_mut() {
                n = n.wrapping_add(7);
                *x = n;
            }
        });
        let cfg = CoreConfig {
            sfu_secret: Some("secret".into()),
            ..CoreConfig::default()
        };
        let core = Core::new(
            cfg,
            Box::new(SqliteStorage::in_memory().expect("db")),
            ServiceKeys {
                token: SigningKey::from_bytes(&[9; 32]),
                external_sender: SigningKey::from_bytes(&[10; 32]),
            },
            rng,
            Arc::new(Metrics::default()),
            now,
            1_700_000_000,
        );
        let mut w = Self {
            core,
            now,
            members: Vec::new(),
            to_core: VecDeque::new(),
            to_client: VecDeque::new(),
            next_id: 1_000_000,
            room: RoomId([0; 16]),
            substitute: None,
            media: VecDeque::new(),
            no_direct_path: false,
        };
        let sfu = w.hello();
        let registered = w.direct(
            sfu,
            Request::RegisterSfu {
                node: "sfu-1".into(),
                secret: "secret".into(),
                media_addr: "127.0.0.1:9".into(),
                capacity: 1000,
            },
        );
        assert!(
            matches!(registered, Ok(Response::SfuRegistered { .. })),
            "{registered:?}"
        );
        for name in std::iter::once(&owner).chain(others) {
            w.add_member(name);
        }
        let Ok(Response::RoomCreated { room }) = w.direct(w.members[0].sid, Request::CreateRoom)
        else {
            panic!("room")
        };
        w.room = room;
        let invited: Vec<Handle> = others.iter().map(|o| h(o)).collect();
        if !invited.is_empty() {
            let r = w.direct(
                w.members[0].sid,
                Request::InviteToRoom {
                    room,
                    handles: invited,
                },
            );
            assert!(r.is_ok(), "{r:?}");
        }
        w
    }

    fn hello(&mut self) -> SessionId {
        let sid = self.core.connect(self.now).expect("session");
        self.core.handle(
            sid,
            ClientMsg::Hello {
                version: PROTOCOL_VERSION,
                agent: "test".into(),
            },
            self.now,
        );
        sid
    }

    /// A request answered at once (setup only): other outputs are kept for routing.
    fn direct(&mut self, sid: SessionId, body: Request) -> Result<Response, ErrorBody> {
        let id = self.next_id;
        self.next_id += 1;
        self.core
            .handle(sid, ClientMsg::Request { id, body }, self.now);
        let mut answer = None;
        while let Some(o) = self.core.poll_output() {
            match o {
                CoreOutput::Send(s, ServerMsg::Response { id: i, result })
                    if s == sid && i == id =>
                {
                    answer = Some(result);
                }
                CoreOutput::Send(s, m) => self.to_client.push_back((self.now, s, m)),
                CoreOutput::Close(_) => {}
            }
        }
        answer.expect("answered")
    }

    fn add_member(&mut self, name: &str) {
        let sid = self.hello();
        let key = seed_key(name);
        let handle = h(name);
        let Ok(Response::Challenge { nonce }) = self.direct(
            sid,
            Request::Register {
                handle: handle.clone(),
                identity_key: key.verifying_key().to_bytes().to_vec(),
                device: 1,
            },
        ) else {
            panic!("challenge")
        };
        let sig = key.sign(&login_transcript(&nonce, &handle, 1));
        let r = self.direct(
            sid,
            Request::Prove {
                signature: sig.to_bytes().to_vec(),
            },
        );
        let Ok(Response::LoggedIn { service_key, .. }) = r else {
            panic!("{r:?}")
        };
        let mut mls = MlsDevice::with_identity(name, &key, None).expect("mls");
        mls.set_service_key(&service_key);
        let packages = (0..4).map(|_| mls.key_package().expect("kp")).collect();
        let r = self.direct(
            sid,
            Request::UploadKeyPackages {
                packages,
                last_resort: Some(mls.last_resort_key_package().expect("lr")),
                replace: true,
            },
        );
        assert!(r.is_ok(), "{r:?}");
        self.members.push(Member {
            handle,
            key,
            mls,
            sid,
            session: None,
            events: Vec::new(),
            kept: Vec::new(),
            frozen: false,
            commits_sent: 0,
            proposals_seen: 0,
            local: None,
            sfu_offers: 0,
            sent_to: Vec::new(),
        });
    }

    /// Starts member `i`'s session (the owner brings its group).
    fn start(&mut self, i: usize) {
        self.start_with(i, |_| {});
    }

    /// [`Self::start`] with options changed by `f`.
    fn start_with(&mut self, i: usize, f: impl FnOnce(&mut RoomOptions)) {
        let room = self.room;
        let m = &mut self.members[i];
        let group = CallGroup::load(&m.mls, &room.0).expect("load");
        let me = DeviceAddr {
            handle: m.handle.clone(),
            device: 1,
        };
        let local: SocketAddr = ([127, 0, 0, 1], 40_000 + i as u16).into();
        let mut opts = RoomOptions::new(local);
        f(&mut opts);
        m.local = Some(local);
        m.session = Some(RoomSession::new(
            room,
            me,
            m.key.verifying_key().to_bytes().to_vec(),
            group,
            opts,
        ));
    }

    /// Runs the world for `d` of virtual time.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
            let next = self.next_wake().unwrap_or(end).min(end).max(self.now);
            self.now = if next == self.now {
                self.now + Duration::from_micros(100)
            } else {
                next
            };
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let queues = [
            self.to_core.front().map(|x| x.0),
            self.to_client.front().map(|x| x.0),
            self.media.front().map(|x| x.0),
            self.core.poll_timeout(),
        ];
        let sessions = self
            .members
            .iter()
            .filter(|m| !m.frozen)
            .filter_map(|m| m.session.as_ref()?.poll_timeout());
        queues.into_iter().flatten().chain(sessions).min()
    }

    /// Everything due now, until nothing moves at this instant.
    fn step(&mut self) {
        while self.step_once() {}
    }

    fn step_once(&mut self) -> bool {
        let now = self.now;
        let mut moved = false;
        for m in &mut self.members {
            if m.frozen {
                continue;
            }
            let Some(s) = m.session.as_mut() else {
                continue;
            };
            if s.poll_timeout().is_some_and(|t| t <= now) {
                let mut env = Env {
                    mls: &m.mls,
                    pins: &mut NoPins,
                };
                s.handle_timeout(&mut env, now);
            }
            while let Some(o) = s.poll_output() {
                moved = true;
                match o {
                    Output::Request { id, body } => {
                        m.commits_sent += u32::from(matches!(body, Request::Commit { .. }));
                        m.sfu_offers += u32::from(matches!(
                            body,
                            Request::RelayToSfu {
                                signal: sotto_proto::RtcSignal::JoinSfu { .. },
                                ..
                            }
                        ));
                        self.to_core
                            .push_back((now + HOP, m.sid, ClientMsg::Request { id, body }))
                    }
                    Output::Ack(seq) => {
                        self.to_core
                            .push_back((now + HOP, m.sid, ClientMsg::Ack { seq }))
                    }
                    Output::Transmit { from, to, data } => {
                        let rtp = data.first().is_some_and(|b| (128..=191).contains(b));
                        m.sent_to.push((to, rtp));
                        self.media.push_back((now + HOP, from, to, data));
                    }
                    Output::Event(e) => m.events.push(e),
                }
            }
        }
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
        }
        while self.to_core.front().is_some_and(|x| x.0 <= now) {
            let Some((_, sid, msg)) = self.to_core.pop_front() else {
                break;
            };
            self.core.handle(sid, msg, now);
        }
        while let Some(o) = self.core.poll_output() {
            if let CoreOutput::Send(sid, msg) = o {
                self.to_client.push_back((now + HOP, sid, msg));
            }
        }
        while self.media.front().is_some_and(|x| x.0 <= now) {
            let Some((_, from, to, data)) = self.media.pop_front() else {
                break;
            };
            moved = true;
            if self.no_direct_path {
                continue;
            }
            // Only a member's first address is reachable (its others stand for interfaces
            // no route leads to).
            if let Some(s) = self
                .members
                .iter_mut()
                .find(|m| m.local == Some(to) && !m.frozen)
                .and_then(|m| m.session.as_mut())
            {
                s.handle_datagram(from, to, &data, now);
            }
        }
        while self.to_client.front().is_some_and(|x| x.0 <= now) {
            let Some((_, sid, msg)) = self.to_client.pop_front() else {
                break;
            };
            self.route(sid, msg);
            moved = true;
        }
        moved
    }

    fn route(&mut self, sid: SessionId, msg: ServerMsg) {
        let now = self.now;
        let Some(m) = self.members.iter_mut().find(|m| m.sid == sid) else {
            return;
        };
        if m.frozen {
            return;
        }
        let Some(s) = m.session.as_mut() else {
            if let ServerMsg::Delivery { seq, item } = msg {
                m.kept.push((seq, item));
            }
            return;
        };
        let mut env = Env {
            mls: &m.mls,
            pins: &mut NoPins,
        };
        match msg {
            ServerMsg::Response { id, mut result } => {
                if let (
                    Some((who, fake)),
                    Ok(Response::KeyPackage {
                        device, package, ..
                    }),
                ) = (&self.substitute, &mut result)
                    && &device.handle == who
                {
                    *package = fake.key_package().expect("fake kp");
                }
                let answer = match result {
                    Ok(r) => Answer::Ok(r),
                    Err(e) => Answer::Refused(e),
                };
                s.handle_answer(&mut env, id, answer, now);
            }
            ServerMsg::Event(e) => {
                s.handle_event(&mut env, &e, now);
            }
            ServerMsg::Delivery { seq, item } => {
                m.proposals_seen += u32::from(matches!(
                    item,
                    Stored::Mls {
                        kind: sotto_proto::MlsKind::Proposal,
                        ..
                    }
                ));
                if let Err(item) = s.handle_delivery(&mut env, seq, item, now) {
                    m.kept.push((seq, item));
                }
            }
            _ => {}
        }
    }

    fn status(&self, i: usize) -> RoomStatus {
        self.members[i].session.as_ref().expect("session").status()
    }

    fn epochs(&self) -> Vec<u64> {
        (0..self.members.len())
            .map(|i| self.status(i).epoch)
            .collect()
    }

    /// Every member's view of the group: same epoch, same code, same members.
    fn assert_agree(&self, members: usize) {
        let first = self.status(0);
        for i in 0..self.members.len() {
            let s = self.status(i);
            assert_eq!(s.members.len(), members, "member {i}: {:?}", s.members);
            assert_eq!(
                (s.epoch, &s.code, &s.members),
                (first.epoch, &first.code, &first.members),
                "member {i} disagrees"
            );
        }
    }
}

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("@member{i}")).collect()
}

#[test]
fn joiners_arriving_together_are_added_in_one_commit_and_agree_on_the_epoch() {
    let mut w = World::new("@owner", &["@bob", "@carol"]);
    for i in 0..3 {
        w.start(i);
    }
    w.run(Duration::from_secs(3));
    w.assert_agree(3);
    assert_eq!(w.epochs(), vec![1, 1, 1], "one commit for both joins");
    assert_eq!(w.status(0).commits, 1);
    // Everyone sends under the new epoch once the transition is over.
    for i in 0..3 {
        assert_eq!(w.status(i).send_epoch, Some(1), "member {i}");
    }
}

#[test]
fn a_join_storm_of_twenty_lands_in_a_few_commits_without_a_fork() {
    let others = names(20);
    let refs: Vec<&str> = others.iter().map(String::as_str).collect();
    let mut w = World::new("@owner", &refs);
    w.start(0);
    w.run(Duration::from_millis(200));
    // Twenty join within one second.
    for i in 1..=20 {
        w.start(i);
        w.run(Duration::from_millis(50));
    }
    w.run(Duration::from_secs(3));
    w.assert_agree(21);
    let epoch = w.status(0).epoch;
    assert!(epoch <= 3, "twenty joins took {epoch} commits");
}

#[test]
fn a_leaver_is_removed_by_a_commit_and_the_rest_move_on() {
    let mut w = World::new("@owner", &["@bob", "@carol"]);
    for i in 0..3 {
        w.start(i);
    }
    w.run(Duration::from_secs(2));
    let before = w.status(0).epoch;
    {
        w.members[1].session.as_mut().expect("s").leave();
    }
    w.run(Duration::from_secs(2));
    assert!(
        w.members[1]
            .events
            .contains(&RoomEvent::Left(LeftReason::Left))
    );
    for i in [0, 2] {
        let s = w.status(i);
        assert_eq!(s.epoch, before + 1, "member {i}");
        assert!(
            !s.members.values().any(|h| h == &h_of("@bob")),
            "{:?}",
            s.members
        );
    }
    assert_eq!(w.status(0).code, w.status(2).code);
}

fn h_of(s: &str) -> Handle {
    h(s)
}

/// The service proposes the removal (as the group's external sender) and the first in
/// line commits it.
#[test]
fn a_disconnected_member_is_removed_by_committing_the_services_proposal() {
    let mut w = World::new("@owner", &["@bob", "@carol"]);
    for i in 0..3 {
        w.start(i);
    }
    w.run(Duration::from_secs(2));
    let carol = w.members[2].sid;
    w.members[2].frozen = true;
    w.core.disconnect(carol, w.now);
    w.run(Duration::from_secs(2));
    for i in [0, 1] {
        assert_eq!(w.status(i).members.len(), 2, "member {i}");
        assert_eq!(w.members[i].proposals_seen, 1, "member {i}");
    }
    assert_eq!(w.status(0).epoch, 2);
    assert_eq!(
        (w.members[0].commits_sent, w.members[1].commits_sent),
        (2, 0),
        "the owner (first in line) added both, then committed the removal"
    );
}

#[test]
fn when_the_first_in_line_is_frozen_the_next_member_adds_the_joiner() {
    let mut w = World::new("@owner", &["@bob", "@carol"]);
    w.start(0);
    w.start(1);
    w.run(Duration::from_secs(2));
    assert_eq!(w.status(1).members.len(), 2);
    // The owner (leaf 0, first in line) stops answering anything; carol arrives.
    w.members[0].frozen = true;
    w.start(2);
    w.run(Duration::from_secs(4));
    let bob = w.status(1);
    let carol = w.status(2);
    assert_eq!(
        carol.members.len(),
        3,
        "bob added carol after the owner's turn"
    );
    assert_eq!((bob.epoch, &bob.code), (carol.epoch, &carol.code));
}

#[test]
fn senders_keep_the_old_epoch_for_the_transition_then_switch() {
    let mut w = World::new("@owner", &["@bob", "@carol"]);
    w.start(0);
    w.start(1);
    w.run(Duration::from_secs(2));
    let e = w.status(0).epoch;
    w.start(2);
    // Until the commit lands and for the transition after it, the owner sends in `e`.
    let mut switched_at = None;
    let mut committed_at = None;
    for _ in 0..300 {
        w.run(Duration::from_millis(10));
        let s = w.status(0);
        if committed_at.is_none() && s.epoch > e {
            committed_at = Some(w.now);
            assert_eq!(s.send_epoch, Some(e), "still sending in the old epoch");
        }
        if switched_at.is_none() && s.send_epoch > Some(e) {
            switched_at = Some(w.now);
        }
    }
    let (Some(c), Some(sw)) = (committed_at, switched_at) else {
        panic!("no rotation: committed {committed_at:?} switched {switched_at:?}");
    };
    let took = sw - c;
    let want = RoomOptions::new(([127, 0, 0, 1], 1).into()).send_switch;
    assert!(
        took >= want - Duration::from_millis(20) && took <= want + Duration::from_millis(50),
        "switched {took:?} after the commit, expected about {want:?}"
    );
    assert!(w.members[0].events.contains(&RoomEvent::KeyframeNeeded));
}

#[test]
fn deliveries_for_other_groups_are_handed_back_unacknowledged() {
    let mut w = World::new("@owner", &["@bob"]);
    w.start(0);
    w.run(Duration::from_millis(100));
    let m = &mut w.members[0];
    let mut env = Env {
        mls: &m.mls,
        pins: &mut NoPins,
    };
    let other = Stored::Mls {
        group: vec![1; 16],
        kind: sotto_proto::MlsKind::Welcome,
        epoch: 0,
        from: DeviceAddr {
            handle: h("@xyz"),
            device: 1,
        },
        data: vec![1, 2, 3],
    };
    let s = m.session.as_mut().expect("s");
    assert!(s.handle_delivery(&mut env, 77, other, w.now).is_err());
    while let Some(o) = s.poll_output() {
        assert!(
            !matches!(o, Output::Ack(77)),
            "a delivery not ours was acknowledged"
        );
    }
}

#[test]
fn members_map_names_every_leaf_once() {
    let mut w = World::new("@owner", &["@bob", "@carol"]);
    for i in 0..3 {
        w.start(i);
    }
    w.run(Duration::from_secs(2));
    let m: BTreeMap<u32, Handle> = w.status(0).members;
    let handles: Vec<&Handle> = m.values().collect();
    assert_eq!(handles.len(), 3);
    assert!(handles.contains(&&h("@owner")) && handles.contains(&&h("@carol")));
}

#[test]
fn a_key_package_the_server_substituted_is_never_added() {
    let mut w = World::new("@owner", &["@bob"]);
    // The server answers claims of @bob with a package of its own: same handle, its key.
    let fake = MlsDevice::with_identity("@bob", &seed_key("server-owned"), None).expect("mls");
    w.substitute = Some((h("@bob"), fake));
    w.start(0);
    w.start(1);
    w.run(Duration::from_secs(3));
    let owner = w.status(0);
    assert_eq!(
        owner.members.len(),
        1,
        "the fake @bob got in: {:?}",
        owner.members
    );
    assert_eq!(owner.epoch, 0);
    // Not even offered to the delivery service (ours would refuse a package it did not
    // hand out; a lying one would not).
    assert_eq!(
        w.members[0].commits_sent, 0,
        "a commit was made with the fake package"
    );
    assert!(w.status(1).members.is_empty(), "bob never got a Welcome");
    assert!(
        !w.members[0]
            .events
            .iter()
            .any(|e| matches!(e, RoomEvent::Left(_)))
    );
    // Once the server stops lying, bob is added for real.
    w.substitute = None;
    w.run(Duration::from_secs(8));
    assert_eq!(w.status(0).members.len(), 2);
    w.assert_agree(2);
}

#[test]
fn the_first_to_arrive_starts_the_group_and_lets_the_others_in() {
    // Nobody prepared the group; three arrive at once: one starts it (the server refuses
    // the others' attempts) and adds the other two in one commit.
    let mut w = World::unprepared("@owner", &["@bob", "@carol"]);
    for i in 0..3 {
        w.start(i);
    }
    w.run(Duration::from_secs(3));
    w.assert_agree(3);
    assert_eq!(w.status(0).epoch, 1, "one group, one commit adding two");
    let commits: u32 = w.members.iter().map(|m| m.commits_sent).sum();
    assert_eq!(commits, 1);
}

#[test]
fn a_room_everyone_left_starts_afresh_with_new_keys() {
    let mut w = World::new("@owner", &["@bob"]);
    w.start(0);
    w.start(1);
    w.run(Duration::from_secs(2));
    w.assert_agree(2);
    let first_code = w.status(0).code;
    for i in 0..2 {
        w.members[i].session.as_mut().expect("s").leave();
    }
    w.run(Duration::from_secs(2));
    for i in 0..2 {
        assert!(
            w.members[i]
                .events
                .contains(&RoomEvent::Left(LeftReason::Left))
        );
        assert!(
            CallGroup::load(&w.members[i].mls, &w.room.0)
                .expect("load")
                .is_none(),
            "member {i} forgot the group"
        );
    }
    // Back later: bob first this time. He starts a new group; the owner is let in.
    w.members[1].events.clear();
    w.start(1);
    w.run(Duration::from_millis(500));
    w.start(0);
    w.run(Duration::from_secs(2));
    w.assert_agree(2);
    let again = w.status(0);
    assert_eq!(again.epoch, 1, "a fresh group: created, then one Add");
    assert_ne!(again.code, first_code);
    assert_eq!(w.members[1].session.as_ref().expect("s").leaf(), Some(0));
}

#[test]
fn when_everyone_who_could_let_us_in_is_gone_a_waiting_joiner_starts_afresh() {
    // The owner is in the group and frozen: it answers nothing, and then its connection
    // drops. Bob, waiting to be let in, finds nobody in the room in its group and
    // starts a fresh one; carol, arriving after, is let in by him.
    let mut w = World::new("@owner", &["@bob", "@carol"]);
    w.start(0);
    w.run(Duration::from_millis(500));
    w.members[0].frozen = true;
    w.start(1);
    w.run(Duration::from_secs(1));
    assert_eq!(w.members[1].session.as_ref().expect("s").leaf(), None);
    let owner = w.members[0].sid;
    w.core.disconnect(owner, w.now);
    w.run(Duration::from_secs(1));
    w.start(2);
    w.run(Duration::from_secs(3));
    let bob = w.status(1);
    let carol = w.status(2);
    assert_eq!(bob.members.len(), 2, "{:?}", bob.members);
    assert_eq!((bob.epoch, &bob.code), (carol.epoch, &carol.code));
    assert_eq!(w.members[1].session.as_ref().expect("s").leaf(), Some(0));
}

impl World {
    /// @alice calls @bob and he answers; the call's room is the world's, and both start
    /// its session with a direct link (`also`: more local addresses for member `i`).
    fn direct_call(
        call: CallId,
        relay_after: Option<Duration>,
        also: impl Fn(usize) -> Vec<SocketAddr>,
    ) -> Self {
        let mut w = World::unprepared("@alice", &["@bob"]);
        let (alice, bob) = (w.members[0].sid, w.members[1].sid);
        let invite = Request::Invite {
            call,
            to: h("@bob"),
        };
        assert!(w.direct(alice, invite).is_ok());
        assert!(w.direct(bob, Request::Accept { call }).is_ok());
        // The answered call has its room (roster and group), with the call's id.
        w.room = RoomId(call.0);
        for (i, peer, offerer) in [(0, "@bob", true), (1, "@alice", false)] {
            w.start_with(i, |o| {
                o.only = Some(vec![DeviceAddr {
                    handle: h(peer),
                    device: 1,
                }]);
                o.direct = Some(Direct {
                    call,
                    offerer,
                    relay_after,
                });
                o.link.also = also(i);
            });
        }
        w
    }
}

/// A one-to-one call on the session core with its media peer to peer: the caller offers
/// through the call's relay, the callee answers, and each decrypts the other's frames
/// (keys from the call's group); nothing goes to the SFU.
#[test]
fn a_direct_call_connects_peer_to_peer_and_decrypts_both_ways() {
    // Two more interfaces each, which nothing reaches: ICE finds the pair that does.
    let mut w = World::direct_call(CallId([5; 16]), None, |i| {
        vec![
            ([10, 99, 0, i as u8 + 1], 5000).into(),
            ([192, 0, 2, i as u8 + 1], 5000).into(),
        ]
    });
    w.run(Duration::from_secs(3));
    for i in 0..2 {
        let st = w.status(i);
        assert!(st.connected, "member {i} connected");
        assert_eq!(st.members.len(), 2, "member {i}");
    }
    let leaves = [
        w.members[0].session.as_ref().and_then(RoomSession::leaf),
        w.members[1].session.as_ref().and_then(RoomSession::leaf),
    ];
    for n in 0..20u32 {
        let now = w.now;
        let level = AudioLevel {
            level: 20,
            voice: true,
        };
        for (i, m) in w.members.iter_mut().enumerate() {
            if let Some(s) = m.session.as_mut() {
                s.send_audio(&[i as u8, n as u8], n * 960, level, now);
            }
        }
        w.run(Duration::from_millis(20));
    }
    for (i, other) in [(0usize, 1usize), (1, 0)] {
        let heard: Vec<&Frame> = w.members[i]
            .events
            .iter()
            .filter_map(|e| match e {
                RoomEvent::Audio(f) => Some(f),
                _ => None,
            })
            .collect();
        assert!(heard.len() >= 19, "member {i} heard {} frames", heard.len());
        assert!(
            heard
                .iter()
                .all(|f| Some(f.sender) == leaves[other] && f.payload[0] == other as u8),
            "member {i} heard only the other, by its key"
        );
        // Connectivity checks tried the peer's unreachable candidates too; the media went
        // to the one that answered, and nothing went anywhere but the peer's candidates.
        let peer = w.members[other].local.expect("started");
        let sent = &w.members[i].sent_to;
        let theirs = [
            peer.ip(),
            [10, 99, 0, other as u8 + 1].into(),
            [192, 0, 2, other as u8 + 1].into(),
        ];
        assert!(
            sent.iter().all(|(t, _)| theirs.contains(&t.ip())),
            "member {i} sent only to its peer: {:?}",
            sent.iter().collect::<std::collections::BTreeSet<_>>()
        );
        let media: Vec<_> = sent.iter().filter(|(_, rtp)| *rtp).collect();
        assert!(media.len() >= 20, "member {i} sent media");
        assert!(
            media.iter().all(|(t, _)| *t == peer),
            "member {i}'s media goes to the reachable pair"
        );
    }
}

/// A direct call whose path never connects moves to the relay in the same room: 4 s after
/// its offer the caller asks for it and switches, the callee follows the service's
/// `UseRoom`, and both offer media to the SFU with the group they had (no commit, same
/// epoch).
#[test]
fn a_direct_call_moves_to_the_sfu_without_a_new_group() {
    let call = CallId([8; 16]);
    let mut w = World::direct_call(call, Some(Duration::from_secs(4)), |_| Vec::new());
    w.no_direct_path = true;
    w.run(Duration::from_secs(3));
    let before: Vec<_> = (0..2)
        .map(|i| (w.status(i).epoch, w.status(i).code))
        .collect();
    assert!(
        !w.status(0).connected && !w.status(1).connected,
        "no direct path"
    );
    assert_eq!(before[0], before[1], "one group");
    assert_eq!((w.members[0].sfu_offers, w.members[1].sfu_offers), (0, 0));
    // 4 s after the offer the caller asks for the relay; the service tells the callee.
    w.run(Duration::from_millis(900));
    assert_eq!(
        (w.members[0].sfu_offers, w.members[1].sfu_offers),
        (0, 0),
        "not before its time"
    );
    w.run(Duration::from_millis(1200));
    for (i, had) in before.iter().enumerate() {
        assert_eq!(
            w.members[i].sfu_offers, 1,
            "member {i} offered media to the SFU"
        );
        assert_eq!(
            &(w.status(i).epoch, w.status(i).code),
            had,
            "member {i} kept the call's group"
        );
    }
}
