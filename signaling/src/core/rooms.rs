//! Rooms for group calls, SFU nodes, and join tokens.
//!
//! Who may join a room (owner, invitations) is stored; who is in the call right now is
//! session state. Each live room is placed on the least-loaded registered SFU. A
//! participant presents a join token signed with the service's Ed25519 token key (the SFU
//! gets the public key when it registers) naming its MLS leaf, which the SFU enforces as
//! the sender index of its frames. The leaf comes from the delivery service's record of the
//! commit that added the device to the room's group (group id = room id).

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use ed25519_dalek::Signer;
use sotto_proto::{
    DeviceAddr, DeviceId, ErrorBody, ErrorCode, Event, Handle, JOIN_TOKEN_LABEL, JoinToken,
    MlsKind, Response, RoomId, RosterEntry, RtcSignal, SignedJoinToken, Stored,
};

use super::{Core, Reply, SessionId, SessionState, Timer, err, room_id};

struct SfuNode {
    media_addr: String,
    capacity: u32,
}

struct LiveRoom {
    owner: Handle,
    participants: BTreeMap<DeviceAddr, SessionId>,
    sfu: Option<SessionId>,
}

/// A removal an SFU has not acknowledged yet ([`Request::SfuRemovalApplied`]).
struct PendingGone {
    sfu: SessionId,
    room: RoomId,
    device: DeviceAddr,
    sent: u32,
}

/// How often an unacknowledged removal is sent again, and how many times in all.
const GONE_RESEND: Duration = Duration::from_secs(1);
const GONE_TRIES: u32 = 60;

/// Rooms with someone in them, and the SFU nodes.
#[derive(Default)]
pub(super) struct LiveRooms {
    rooms: HashMap<RoomId, LiveRoom>,
    sfus: BTreeMap<SessionId, SfuNode>,
    gone: BTreeMap<u64, PendingGone>,
    next_gone: u64,
}

impl Core {
    pub(super) fn create_room(&mut self, me: &DeviceAddr) -> Reply {
        let room = room_id(self.random::<16>());
        self.storage.create_room(&room, &me.handle)?;
        Ok(Response::RoomCreated { room })
    }

    pub(super) fn invite_to_room(
        &mut self,
        me: &DeviceAddr,
        room: RoomId,
        handles: Vec<Handle>,
    ) -> Reply {
        let r = self.stored_room(&room)?;
        if r.owner != me.handle {
            return Err(err(ErrorCode::Forbidden, "only the owner invites"));
        }
        if handles.len() > self.cfg.limits.max_invite {
            return Err(err(
                ErrorCode::LimitReached {
                    what: "invitees".into(),
                },
                format!(
                    "invite at most {} handles at once",
                    self.cfg.limits.max_invite
                ),
            ));
        }
        // An invitation is delivered once per handle: inviting again (or the same handle
        // twice in one list) stores nothing more, so nobody can fill a device's queue with
        // invitations.
        let mut fresh: Vec<Handle> = Vec::new();
        for h in handles {
            if h != r.owner && !r.invited.contains(&h) && !fresh.contains(&h) {
                fresh.push(h);
            }
        }
        let handles = fresh;
        let mut devices = Vec::new();
        for h in &handles {
            let acc = self
                .storage
                .account(h)?
                .ok_or_else(|| err(ErrorCode::NotFound, format!("no account {h}")))?;
            devices.extend(acc.devices.into_iter().map(|device| DeviceAddr {
                handle: h.clone(),
                device,
            }));
        }
        self.check_queues(devices.iter())?;
        self.storage.invite(&room, &handles)?;
        self.store_and_deliver(
            &devices,
            &Stored::RoomInvite {
                room,
                from: me.handle.clone(),
            },
        )?;
        Ok(Response::Ok)
    }

    pub(super) fn join_room(&mut self, sid: SessionId, me: &DeviceAddr, room: RoomId) -> Reply {
        let r = self
            .room_record(&room)?
            .ok_or_else(|| err(ErrorCode::NotFound, "no such room"))?;
        if r.owner != me.handle && !r.invited.contains(&me.handle) {
            return Err(err(
                ErrorCode::Forbidden,
                "not invited to that room: ask its owner for an invitation",
            ));
        }
        if self
            .relay_devices(&room)
            .is_some_and(|devices| !devices.contains(&me))
        {
            return Err(err(
                ErrorCode::Forbidden,
                "only the two devices in the call join its room",
            ));
        }
        let live = self.rooms.rooms.entry(room).or_insert_with(|| LiveRoom {
            owner: r.owner.clone(),
            participants: BTreeMap::new(),
            sfu: None,
        });
        live.participants.insert(me.clone(), sid);
        if !self.is_direct_call_room(&room) {
            self.place_sfu(&room);
        }
        let roster = self.roster(&room);
        self.broadcast_roster(&room, Some(me));
        Ok(Response::RoomJoined { room, roster })
    }

    pub(super) fn leave_room(&mut self, me: &DeviceAddr, room: RoomId, now: Instant) -> Reply {
        if !self.drop_participant(&room, me, now) {
            return Err(err(ErrorCode::NotFound, "not in that room"));
        }
        Ok(Response::Ok)
    }

    pub(super) fn remove_from_room(
        &mut self,
        me: &DeviceAddr,
        room: RoomId,
        who: &Handle,
        now: Instant,
    ) -> Reply {
        let r = self.stored_room(&room)?;
        if r.owner != me.handle {
            return Err(err(
                ErrorCode::Forbidden,
                "only the owner removes participants",
            ));
        }
        if who == &r.owner {
            return Err(err(ErrorCode::Forbidden, "the owner cannot be removed"));
        }
        self.storage.uninvite(&room, who)?;
        self.take_out(room, now, |d| &d.handle == who);
        Ok(Response::Ok)
    }

    pub(super) fn sfu_token(&mut self, me: &DeviceAddr, room: RoomId, now: Instant) -> Reply {
        let sfu = self.participant_sfu(me, &room)?;
        let leaf = self.leaf_of(me, &room)?;
        let token = JoinToken {
            room,
            device: me.clone(),
            leaf,
            expires_unix: self.unix(now) + self.cfg.token_ttl.as_secs(),
        };
        let token =
            sotto_proto::encode(&token).map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
        let mut signed = JOIN_TOKEN_LABEL.to_vec();
        signed.extend_from_slice(&token);
        let signature = self.token_key.sign(&signed).to_bytes().to_vec();
        let media_addr = self
            .rooms
            .sfus
            .get(&sfu)
            .map(|n| n.media_addr.clone())
            .unwrap_or_default();
        Ok(Response::SfuToken {
            token: SignedJoinToken { token, signature },
            media_addr,
        })
    }

    pub(super) fn relay_to_sfu(
        &mut self,
        me: &DeviceAddr,
        room: RoomId,
        signal: RtcSignal,
    ) -> Reply {
        super::calls::check_signal_size(&signal)?;
        let sfu = self.participant_sfu(me, &room)?;
        let leaf = self.leaf_of(me, &room)?;
        self.event(
            sfu,
            Event::ToSfu {
                room,
                from: me.clone(),
                leaf,
                signal,
            },
        );
        Ok(Response::Ok)
    }

    pub(super) fn register_sfu(
        &mut self,
        sid: SessionId,
        state: &SessionState,
        node: String,
        secret: &str,
        media_addr: String,
        capacity: u32,
    ) -> Reply {
        if !matches!(state, SessionState::Greeted) {
            return Err(err(
                ErrorCode::InvalidState,
                "register an SFU on a fresh connection",
            ));
        }
        let ok = self
            .cfg
            .sfu_secret
            .as_deref()
            .is_some_and(|s| constant_time_eq(s.as_bytes(), secret.as_bytes()));
        if !ok {
            tracing::warn!(node = %node, "SFU registration refused: bad secret");
            return Err(err(ErrorCode::Forbidden, "SFU credential refused"));
        }
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.state = SessionState::Sfu;
        }
        tracing::info!(node = %node, media_addr = %media_addr, capacity, "SFU registered");
        self.rooms.sfus.insert(
            sid,
            SfuNode {
                media_addr,
                capacity,
            },
        );
        Ok(Response::SfuRegistered {
            token_key: self.token_key.verifying_key().to_bytes().to_vec(),
        })
    }

    pub(super) fn sfu_relay(
        &mut self,
        sid: SessionId,
        room: RoomId,
        to: &DeviceAddr,
        signal: RtcSignal,
    ) -> Reply {
        let target = self
            .rooms
            .rooms
            .get(&room)
            .filter(|l| l.sfu == Some(sid))
            .and_then(|l| l.participants.get(to).copied())
            .ok_or_else(|| {
                err(
                    ErrorCode::NotFound,
                    "no such participant in a room of this SFU",
                )
            })?;
        self.event(target, Event::FromSfu { room, signal });
        Ok(Response::Ok)
    }

    /// The room's SFU names its dominant speaker: tell the room's participants (only the
    /// SFU the room is placed on may, and only about someone in the room).
    pub(super) fn announce_speaker(
        &mut self,
        sfu: SessionId,
        room: RoomId,
        device: DeviceAddr,
    ) -> Reply {
        let Some(live) = self.rooms.rooms.get(&room).filter(|l| l.sfu == Some(sfu)) else {
            return Err(err(ErrorCode::NotFound, "no such room on this SFU"));
        };
        if !live.participants.contains_key(&device) {
            return Err(err(ErrorCode::NotFound, "not a participant of that room"));
        }
        let sessions: Vec<SessionId> = live.participants.values().copied().collect();
        for s in sessions {
            self.event(
                s,
                Event::ActiveSpeaker {
                    room,
                    device: device.clone(),
                },
            );
        }
        Ok(Response::Ok)
    }

    /// An SFU acknowledged a removal: stop resending it.
    pub(super) fn removal_applied(&mut self, sfu: SessionId, room: &RoomId, device: &DeviceAddr) {
        self.rooms
            .gone
            .retain(|_, g| !(g.sfu == sfu && &g.room == room && &g.device == device));
    }

    /// Sends an unacknowledged removal again, up to [`GONE_TRIES`] times.
    pub(super) fn resend_gone(&mut self, id: u64, now: Instant) {
        let Some(g) = self.rooms.gone.get_mut(&id) else {
            return;
        };
        if g.sent >= GONE_TRIES || !self.rooms.sfus.contains_key(&g.sfu) {
            tracing::warn!(room = %g.room, "SFU never acknowledged a removal");
            self.rooms.gone.remove(&id);
            return;
        }
        g.sent += 1;
        let (sfu, event) = (
            g.sfu,
            Event::SfuParticipantGone {
                room: g.room,
                device: g.device.clone(),
            },
        );
        self.event(sfu, event);
        self.timers.insert((now + GONE_RESEND, Timer::SfuGone(id)));
    }

    pub(super) fn sfu_gone(&mut self, sid: SessionId) {
        self.rooms.sfus.remove(&sid);
        self.rooms.gone.retain(|_, g| g.sfu != sid);
        let next = self.least_loaded_sfu();
        for live in self.rooms.rooms.values_mut() {
            if live.sfu == Some(sid) {
                live.sfu = next;
            }
        }
    }

    pub(super) fn rooms_on_disconnect(&mut self, me: &DeviceAddr, sid: SessionId, now: Instant) {
        let rooms: Vec<RoomId> = self
            .rooms
            .rooms
            .iter()
            .filter(|(_, l)| l.participants.get(me) == Some(&sid))
            .map(|(r, _)| *r)
            .collect();
        for r in rooms {
            self.drop_participant(&r, me, now);
        }
    }

    /// Gives a live room without an SFU the least loaded one (if any is registered).
    pub(super) fn place_sfu(&mut self, room: &RoomId) {
        let least_loaded = self.least_loaded_sfu();
        if let Some(live) = self.rooms.rooms.get_mut(room)
            && live.sfu.is_none()
        {
            live.sfu = least_loaded;
        }
    }

    /// Removes a participant from a live room, tells the rest and the SFU.
    fn drop_participant(&mut self, room: &RoomId, who: &DeviceAddr, now: Instant) -> bool {
        let Some(live) = self.rooms.rooms.get_mut(room) else {
            return false;
        };
        if live.participants.remove(who).is_none() {
            return false;
        }
        let sfu = live.sfu;
        let empty = live.participants.is_empty();
        if let Some(sfu) = sfu {
            self.event(
                sfu,
                Event::SfuParticipantGone {
                    room: *room,
                    device: who.clone(),
                },
            );
            let id = self.rooms.next_gone;
            self.rooms.next_gone += 1;
            self.rooms.gone.insert(
                id,
                PendingGone {
                    sfu,
                    room: *room,
                    device: who.clone(),
                    sent: 1,
                },
            );
            self.timers.insert((now + GONE_RESEND, Timer::SfuGone(id)));
        }
        if empty {
            // The last one left: the room's group ends with its call.
            self.rooms.rooms.remove(room);
            self.delete_group(&room.0);
        } else {
            self.propose_removals(room);
            self.broadcast_roster(room, None);
        }
        true
    }

    /// As the room group's external sender, proposes removing every member whose device
    /// is no longer in the room's call (it left, was removed or disconnected); the member
    /// whose turn it is commits the proposals. A proposal is good for one epoch, so this
    /// runs again after every accepted commit. A call's room has no removals: its two
    /// parties are the call's, and the call (and its room) ends when one goes.
    fn propose_removals(&mut self, room: &RoomId) {
        if let Err(e) = self.try_propose_removals(room) {
            tracing::warn!(error = %e.message, "could not propose removals");
        }
    }

    fn try_propose_removals(&mut self, room: &RoomId) -> Result<(), ErrorBody> {
        let Some(live) = self.rooms.rooms.get(room) else {
            return Ok(());
        };
        if self.relay_devices(room).is_some() {
            return Ok(());
        }
        let Some(stored) = self.storage.group(&room.0)? else {
            return Ok(());
        };
        let (present, absent): (Vec<_>, Vec<_>) = stored
            .members
            .iter()
            .partition(|(d, _)| live.participants.contains_key(d));
        if absent.is_empty() || present.is_empty() {
            return Ok(());
        }
        let mut tracked = self.tracked(&room.0)?;
        let mut made = Vec::new();
        for (gone, leaf) in absent {
            if let Some(data) = tracked.propose_remove(&self.crypto, &self.sender, *leaf)? {
                made.push((gone.clone(), data));
            }
        }
        if made.is_empty() {
            return Ok(());
        }
        self.check_queues(stored.members.iter().map(|(d, _)| d))?;
        self.storage
            .put_group_state(&room.0, &tracked.to_bytes()?)?;
        for (gone, data) in made {
            tracing::debug!(device = %gone.handle, "proposing a removal");
            // To every member but the one removed (a commit covering it is theirs to
            // process too, whenever they are back).
            let to: Vec<DeviceAddr> = stored
                .members
                .iter()
                .map(|(d, _)| d.clone())
                .filter(|d| *d != gone)
                .collect();
            self.store_and_deliver(
                &to,
                &Stored::Mls {
                    group: room.0.to_vec(),
                    kind: MlsKind::Proposal,
                    epoch: stored.epoch,
                    from: gone,
                    data,
                },
            )?;
        }
        Ok(())
    }

    /// Whether the room whose id is `group` has people in its call, none of whom is in its
    /// stored group: a group left over (from before a restart, or from members who all
    /// vanished) that nobody present can let anyone into.
    pub(super) fn orphaned_room_group(&self, group: &[u8]) -> bool {
        let Ok(id) = <[u8; 16]>::try_from(group) else {
            return false;
        };
        let room = RoomId(id);
        self.rooms.rooms.contains_key(&room) && self.roster(&room).iter().all(|e| e.leaf.is_none())
    }

    /// Whether `me` is in the room's call right now.
    pub(super) fn is_present(&self, me: &DeviceAddr, room: &RoomId) -> bool {
        self.rooms
            .rooms
            .get(room)
            .is_some_and(|l| l.participants.contains_key(me))
    }

    /// A device of `handle` (`device` if named) present in a live room, a call's room
    /// included, where `me` is present too: the only devices whose KeyPackages `me` may
    /// claim. (One pass over the live rooms, as a disconnect makes.)
    pub(super) fn device_beside(
        &self,
        me: &DeviceAddr,
        handle: &Handle,
        device: Option<DeviceId>,
    ) -> Option<DeviceId> {
        self.rooms
            .rooms
            .values()
            .filter(|l| l.participants.contains_key(me))
            .flat_map(|l| l.participants.keys())
            .find(|d| &d.handle == handle && device.is_none_or(|want| d.device == want))
            .map(|d| d.device)
    }

    fn roster(&self, room: &RoomId) -> Vec<RosterEntry> {
        let leaves: HashMap<DeviceAddr, u32> = match self.storage.group(&room.0) {
            Ok(Some(g)) => g.members.into_iter().collect(),
            _ => HashMap::new(),
        };
        self.rooms
            .rooms
            .get(room)
            .map(|l| {
                l.participants
                    .keys()
                    .map(|d| RosterEntry {
                        device: d.clone(),
                        owner: d.handle == l.owner,
                        leaf: leaves.get(d).copied(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A commit changed who sits at which leaf of `group`: if it is a live room's, every
    /// participant gets the new roster.
    pub(super) fn group_changed(&mut self, group: &[u8]) {
        if let Ok(id) = <[u8; 16]>::try_from(group) {
            let room = RoomId(id);
            if self.rooms.rooms.contains_key(&room) {
                self.propose_removals(&room);
                self.broadcast_roster(&room, None);
            }
        }
    }

    fn broadcast_roster(&mut self, room: &RoomId, except: Option<&DeviceAddr>) {
        let roster = self.roster(room);
        let targets: Vec<SessionId> = self
            .rooms
            .rooms
            .get(room)
            .map(|l| {
                l.participants
                    .iter()
                    .filter(|(d, _)| Some(*d) != except)
                    .map(|(_, s)| *s)
                    .collect()
            })
            .unwrap_or_default();
        for s in targets {
            self.event(
                s,
                Event::Roster {
                    room: *room,
                    roster: roster.clone(),
                },
            );
        }
    }

    fn participant_sfu(&self, me: &DeviceAddr, room: &RoomId) -> Result<SessionId, ErrorBody> {
        let live = self
            .rooms
            .rooms
            .get(room)
            .filter(|l| l.participants.contains_key(me))
            .ok_or_else(|| err(ErrorCode::Forbidden, "join the room first"))?;
        live.sfu.ok_or_else(|| {
            err(
                ErrorCode::LimitReached { what: "sfu".into() },
                "no SFU is available",
            )
        })
    }

    fn leaf_of(&mut self, me: &DeviceAddr, room: &RoomId) -> Result<u32, ErrorBody> {
        let group = self
            .storage
            .group(&room.0)?
            .ok_or_else(|| err(ErrorCode::NotFound, "the room has no MLS group yet"))?;
        group
            .members
            .iter()
            .find(|(d, _)| d == me)
            .map(|(_, leaf)| *leaf)
            .ok_or_else(|| {
                err(
                    ErrorCode::Forbidden,
                    "not a member of the room's MLS group yet",
                )
            })
    }

    /// Who may join `room`: a relayed call's room (in memory, the call's two parties), or
    /// a stored one.
    pub(super) fn room_record(
        &self,
        room: &RoomId,
    ) -> Result<Option<crate::storage::Room>, ErrorBody> {
        match self.relay_room(room) {
            Some(r) => Ok(Some(r)),
            None => Ok(self.storage.room(room)?),
        }
    }

    /// A stored room, for what only stored rooms allow (invitations, removals): a relayed
    /// call's room is the two parties' and nobody else's.
    fn stored_room(&self, room: &RoomId) -> Result<crate::storage::Room, ErrorBody> {
        if self.relay_room(room).is_some() {
            return Err(err(
                ErrorCode::Forbidden,
                "a relayed call's room is the two parties' only: nobody is invited or removed",
            ));
        }
        self.storage
            .room(room)?
            .ok_or_else(|| err(ErrorCode::NotFound, "no such room"))
    }

    /// Takes everyone out of `room`'s call (each is told it was removed).
    pub(super) fn close_room(&mut self, room: RoomId, now: Instant) {
        self.take_out(room, now, |_| true);
    }

    /// Takes the devices `which` picks out of `room`'s call, telling each it was removed.
    fn take_out(&mut self, room: RoomId, now: Instant, which: impl Fn(&DeviceAddr) -> bool) {
        let out: Vec<(DeviceAddr, SessionId)> = self
            .rooms
            .rooms
            .get(&room)
            .map(|l| {
                l.participants
                    .iter()
                    .filter(|(d, _)| which(d))
                    .map(|(d, s)| (d.clone(), *s))
                    .collect()
            })
            .unwrap_or_default();
        for (d, s) in out {
            self.event(s, Event::RemovedFromRoom { room });
            self.drop_participant(&room, &d, now);
        }
    }

    /// Whether any SFU node is registered.
    pub(super) fn has_sfu(&self) -> bool {
        !self.rooms.sfus.is_empty()
    }

    fn least_loaded_sfu(&self) -> Option<SessionId> {
        let load = |sid: &SessionId| {
            self.rooms
                .rooms
                .values()
                .filter(|l| l.sfu == Some(*sid))
                .map(|l| l.participants.len())
                .sum::<usize>()
        };
        self.rooms
            .sfus
            .iter()
            .map(|(sid, n)| (load(sid) as f64 / f64::from(n.capacity.max(1)), *sid))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, sid)| sid)
    }
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
