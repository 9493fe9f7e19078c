//! The session core of a room (DESIGN §3): a sans-IO state machine that owns the room's
//! MLS group, the epoch transition and the SFrame keys, and the media connection to the
//! SFU. Inputs: answers to the signaling requests it asked for, events and deliveries
//! from signaling, datagrams, encoded frames to send, and time; outputs: requests,
//! acknowledgements, datagrams and [`RoomEvent`]s. It never awaits, never reads a clock,
//! and never acknowledges a delivery it did not handle.
//!
//! - `trust`: every member's credential against the directory and the pins.
//! - `membership`: joining (Welcome), who adds and removes whom (one commit per burst),
//!   falling out of step and rejoining by external commit.
//! - `epoch`: new keys on every commit; senders switch after the transition time while
//!   receivers read both epochs; frames of an epoch not reached yet are held briefly.
//! - `sfu_link`: the str0m connection to the SFU.
//! - `media`: frames in and out through the link and the keys.

mod epoch;
mod media;
mod membership;
pub mod sfu_link;
pub mod trust;

#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::SocketAddr,
    time::{Duration, Instant},
};

use sotto_media::keys::{CallKeys, KeyConfig};
use sotto_proto::{
    CallId, DeviceAddr, ErrorBody, Event, Handle, Request, Response, RoomId, RosterEntry,
};

use crate::mls::{CallGroup, MlsDevice};
pub use sfu_link::{LinkConfig, LinkStats};
pub use trust::{NoPins, Pins};

/// What the core needs from outside for MLS work: the device's MLS state and its pins.
pub struct Env<'a> {
    /// This device's MLS identity and group storage.
    pub mls: &'a MlsDevice,
    /// Where contact keys are pinned.
    pub pins: &'a mut dyn Pins,
}

/// How a signaling request ended, as the shell reports it.
#[derive(Debug, Clone)]
pub enum Answer {
    /// The server answered.
    Ok(Response),
    /// The server refused.
    Refused(ErrorBody),
    /// No answer (the connection failed or the request timed out).
    Failed(String),
}

impl Answer {
    /// The answer in words, for a reason shown to a person.
    fn describe(&self) -> String {
        match self {
            Answer::Ok(_) => "the server answered with something else".into(),
            Answer::Refused(e) => e.message.clone(),
            Answer::Failed(e) => e.clone(),
        }
    }
}

/// Timing of membership and epochs.
#[derive(Debug, Clone)]
pub struct RoomOptions {
    /// Joins and leaves seen within this long land in one commit.
    pub batch: Duration,
    /// How long each member in line gets to commit a needed change before the next one
    /// does it instead (so one slow member never stalls the room).
    pub commit_turn: Duration,
    /// After a commit, how long senders keep using the previous epoch (everyone can
    /// already read the new one) so members that are a little behind lose nothing.
    pub send_switch: Duration,
    /// How long a frame of an epoch we have not reached yet is held.
    pub hold: Duration,
    /// SFrame suite and grace period.
    pub keys: KeyConfig,
    /// What the media connection publishes and receives.
    pub link: LinkConfig,
    /// The only devices (besides ours) that may be members: a relayed one-to-one call's
    /// group is its two devices. Nobody else is added, whatever the roster says, and a
    /// credential of another account ends the call. `None`: anyone the room admits.
    pub only: Option<Vec<DeviceAddr>>,
    /// The highest simulcast layer we want of anyone (0 = lowest), told to the SFU once
    /// media is set up; `None`: whatever our bandwidth allows.
    pub max_layer: Option<u8>,
    /// A one-to-one call's media straight to the peer instead of through the SFU.
    pub direct: Option<Direct>,
    /// Whether we start the group when nobody present is in it. A call's callee does not:
    /// the caller's group is the call's, and two parties starting one each would race.
    pub starts_group: bool,
    /// Commit an MLS self-update this long after the last epoch change while others
    /// are in the group (post-compromise security for long calls); `None`: never.
    pub self_update_every: Option<Duration>,
    /// Test hook: media keys from a secret of our own instead of the group's, to prove
    /// that a member with the wrong keys decodes nothing.
    #[doc(hidden)]
    pub test_wrong_keys: bool,
    /// Test hook: add claimed KeyPackages without checking their credentials, as a
    /// careless or malicious member would (so tests see honest members catch it).
    #[doc(hidden)]
    pub test_add_unchecked: bool,
}

/// Media of a one-to-one call peer to peer: the offerer's link offers through the call's
/// relay (`Request::Relay`) and the other party's answers; no SFU, no join token. The
/// group, keys and pipeline are the room's, so a relayed call differs only in its link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Direct {
    /// The call whose relay carries the offer and answer.
    pub call: CallId,
    /// Whether we offer (the caller) or answer.
    pub offerer: bool,
    /// The offerer asks the service to relay the call when the direct link has not
    /// connected this long after its offer (`None`: never); the other party follows.
    pub relay_after: Option<Duration>,
}

impl RoomOptions {
    /// Defaults for a link on `local`.
    pub fn new(local: SocketAddr) -> Self {
        Self {
            batch: Duration::from_millis(100),
            commit_turn: Duration::from_secs(2),
            send_switch: Duration::from_millis(300),
            hold: Duration::from_secs(1),
            keys: KeyConfig::default(),
            link: LinkConfig {
                local,
                also: Vec::new(),
                video: false,
                simulcast: false,
                // Every audio stream of a room up to the SFU's "big room" size (20) has a
                // slot; above it the SFU forwards the loudest few only. Video: last N = 9.
                slots: (20, 9),
                bwe: None,
                srflx: Vec::new(),
                test_drop_video: None,
            },
            only: None,
            max_layer: None,
            direct: None,
            starts_group: true,
            self_update_every: None,
            test_wrong_keys: false,
            test_add_unchecked: false,
        }
    }
}

/// What the core asks the shell to do.
#[derive(Debug)]
pub enum Output {
    /// Send this request; report its answer with [`RoomSession::handle_answer`].
    Request {
        /// Echo this id.
        id: u64,
        /// The request.
        body: Request,
    },
    /// The delivery `seq` was handled: acknowledge it to the server.
    Ack(u64),
    /// Send a datagram.
    Transmit {
        /// From which of our addresses ([`LinkConfig::local`] or one of
        /// [`LinkConfig::also`]).
        from: SocketAddr,
        /// Where.
        to: SocketAddr,
        /// What.
        data: Vec<u8>,
    },
    /// Something for the UI or the media pipeline.
    Event(RoomEvent),
}

/// A decrypted frame: the sender is the leaf its key proved, never what the SFU said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The sender's MLS leaf.
    pub sender: u32,
    /// Its RTP timestamp.
    pub timestamp: u32,
    /// The plaintext (a `sotto_media::payload`).
    pub payload: Vec<u8>,
    /// The epoch it was encrypted in.
    pub epoch: u64,
}

/// Why the session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeftReason {
    /// We left.
    Left,
    /// The room's owner removed us.
    Removed,
    /// A member's credential did not check out: someone may be substituting keys.
    KeyMismatch {
        /// Who it claimed to be.
        handle: String,
        /// What did not match.
        reason: String,
    },
    /// The server refused or failed something the session cannot do without.
    Failed(String),
}

/// What happened, for the UI and the media pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomEvent {
    /// We are in the room's group, at this leaf.
    InGroup {
        /// Our leaf (our SFrame sender index).
        leaf: u32,
    },
    /// Media to the SFU is up.
    Connected,
    /// The group's members changed (credentials checked): leaf → handle.
    Members(BTreeMap<u32, Handle>),
    /// A new epoch: its verification code (the same for every member).
    Epoch {
        /// The epoch.
        epoch: u64,
        /// The group verification code.
        code: String,
    },
    /// An audio frame.
    Audio(Frame),
    /// A video frame, and whether it is a keyframe as far as the sender said (not known
    /// here: the decoder finds out).
    Video(Frame),
    /// Send a keyframe next: our frames moved to a new epoch, or a subscriber asked.
    KeyframeNeeded,
    /// A video frame of this sender was lost on the way: its decoder must wait for a
    /// keyframe, and one should be asked for.
    VideoLost {
        /// The sender (the leaf its last frame on that slot proved).
        sender: u32,
    },
    /// What our media may send in all, bits per second (a direct call's bandwidth
    /// estimate): the encoders follow it.
    SendEstimate(u64),
    /// The SFU paused these of our simulcast layers (nobody watches them).
    PausedLayers(Vec<u8>),
    /// The SFU says this device speaks (a UI hint; the SFU is not trusted).
    Speaker(DeviceAddr),
    /// A commit brought in a member whose key does not check out (someone substituted
    /// keys): nothing is encrypted to it or decrypted from it, and its removal is being
    /// committed.
    MemberRefused {
        /// Who it claims to be (not validated).
        shown: String,
        /// What did not match.
        reason: String,
    },
    /// The session is over.
    Left(LeftReason),
}

/// Figures for the status line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomStatus {
    /// The current epoch (0 before joining).
    pub epoch: u64,
    /// The epoch our frames go out in.
    pub send_epoch: Option<u64>,
    /// The group verification code.
    pub code: String,
    /// Members by leaf.
    pub members: BTreeMap<u32, Handle>,
    /// Whether media is up.
    pub connected: bool,
    /// Frames that failed to decrypt, by the sender their KID claimed (`u32::MAX`: none).
    pub decrypt_failures: BTreeMap<u32, u64>,
    /// Frames of a future epoch that were held and then decrypted.
    pub held_recovered: u64,
    /// Held frames that arrived around our join (before it, or within the hold time
    /// after it) whose epoch's keys never came: the sender was still on the epoch before
    /// our Add. Not decrypt failures: nothing was wrong with them but their timing. Held
    /// frames that arrive later and never decrypt (an epoch we should have reached, a
    /// fork, a forged KID) are decrypt failures.
    pub held_expired: u64,
    /// Commits we made that the server accepted.
    pub commits: u64,
    /// Times we rejoined by external commit.
    pub rejoins: u64,
    /// Keyframe requests (PLI/FIR) for our video that reached us.
    pub keyframe_requests_received: u64,
    /// Epoch changes that kept the members (self-updates, ours or others', and
    /// rejoins): new keys for the same call.
    pub rekeys: u64,
    /// Keyframes asked of our video encoder because our frames moved to such a rekeyed
    /// epoch.
    pub epoch_keyframes: u64,
    /// MLS self-updates we committed (post-compromise security for long calls).
    pub self_updates: u64,
    /// Members someone else's commit brought in whose keys did not check out (reported,
    /// and removed before any media key of their epoch was used).
    pub refused_members: u64,
    /// Bytes and losses on the media connection.
    pub link: LinkStats,
    /// The addresses the SFU's answer named (where our media goes).
    pub sfu_addrs: Vec<std::net::IpAddr>,
}

/// What a request we sent was for.
#[derive(Debug)]
enum Asked {
    JoinRoom,
    Lookup(Handle),
    Claim(DeviceAddr),
    Commit(CommitKind),
    Token,
    Relay,
    /// A direct call's move to the SFU.
    RelayCall,
    GroupInfo,
    CreateGroup,
    Leave,
    Other,
}

/// Why we committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CommitKind {
    Add,
    Remove,
    Rejoin,
    /// A self-update (new keys for our leaf).
    Update,
}

/// Where the session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// `JoinRoom` sent.
    Entering,
    /// In the room, not in the group: waiting for a member to add us.
    AwaitingWelcome,
    /// In the room and its group.
    Member,
    /// `LeaveRoom` sent.
    Leaving,
    /// Over.
    Left,
}

/// The room's session core; see the module docs.
pub struct RoomSession {
    room: RoomId,
    me: DeviceAddr,
    opts: RoomOptions,
    stage: Stage,
    group: Option<CallGroup>,
    keys: Option<CallKeys>,
    /// When we last came into the group (a Welcome, our own group, a rejoin).
    entered_at: Option<Instant>,
    /// When our frames move to the current epoch.
    switch_at: Option<Instant>,
    members: BTreeMap<u32, Handle>,
    roster: Vec<RosterEntry>,
    /// A commit of someone else was applied and the roster that follows it has not come.
    roster_stale_until: Option<Instant>,
    dir: trust::Directory,
    /// Handles being looked up.
    asking: Vec<Handle>,
    /// Deliveries for our group, in order, not yet handled.
    handshakes: VecDeque<(u64, sotto_proto::Stored)>,
    plan: membership::Plan,
    requests: HashMap<u64, Asked>,
    next_id: u64,
    link: Option<sfu_link::SfuLink>,
    link_asked: bool,
    /// The figures of links dropped before this one.
    retired: LinkStats,
    /// The sender whose video each slot last carried (for a frame lost on it).
    slot_senders: HashMap<str0m::media::Mid, u32>,
    /// When a direct call moves to the relay unless its link has connected.
    relay_due: Option<Instant>,
    /// When we commit our next self-update ([`RoomOptions::self_update_every`]).
    self_update_due: Option<Instant>,
    /// Whether the send switch pending follows a rekey (same members) rather than a
    /// change of members.
    switch_is_rekey: bool,
    held: VecDeque<(Instant, bool, u32, Vec<u8>)>,
    /// Members whose keys did not check out, brought in by someone else's commit: no
    /// media key of an epoch they are in is derived until a commit removes them.
    quarantine: Option<membership::Quarantine>,
    out: VecDeque<Output>,
    status: RoomStatus,
}

impl RoomSession {
    /// A session for `room` as `me` (whose identity key is `my_key`), with our copy of
    /// the room's group if we have one; it starts by joining the room.
    pub fn new(
        room: RoomId,
        me: DeviceAddr,
        my_key: Vec<u8>,
        group: Option<CallGroup>,
        opts: RoomOptions,
    ) -> Self {
        let mut s = Self {
            room,
            dir: match &opts.only {
                Some(only) => trust::Directory::new(me.handle.clone(), my_key)
                    .only(only.iter().map(|d| d.handle.clone()).collect()),
                None => trust::Directory::new(me.handle.clone(), my_key),
            },
            me,
            opts,
            stage: Stage::Entering,
            group,
            keys: None,
            entered_at: None,
            switch_at: None,
            members: BTreeMap::new(),
            roster: Vec::new(),
            roster_stale_until: None,
            asking: Vec::new(),
            handshakes: VecDeque::new(),
            plan: membership::Plan::default(),
            requests: HashMap::new(),
            next_id: 1,
            link: None,
            link_asked: false,
            retired: LinkStats::default(),
            slot_senders: HashMap::new(),
            relay_due: None,
            self_update_due: None,
            switch_is_rekey: false,
            held: VecDeque::new(),
            quarantine: None,
            out: VecDeque::new(),
            status: RoomStatus::default(),
        };
        s.ask(Asked::JoinRoom, Request::JoinRoom { room });
        s
    }

    /// The room.
    pub fn room(&self) -> RoomId {
        self.room
    }

    /// Whether the session is over.
    pub fn is_over(&self) -> bool {
        self.stage == Stage::Left
    }

    /// Figures for the status line.
    pub fn status(&self) -> RoomStatus {
        let mut s = self.status.clone();
        s.epoch = self.keys.as_ref().map_or(0, CallKeys::epoch);
        s.send_epoch = self.keys.as_ref().and_then(CallKeys::send_epoch);
        s.members = self.members.clone();
        s.connected = self
            .link
            .as_ref()
            .is_some_and(sfu_link::SfuLink::is_connected);
        s.link = match self.link.as_ref() {
            Some(l) => self.retired.plus(l.stats()),
            None => self.retired,
        };
        s.sfu_addrs = self
            .link
            .as_ref()
            .map(|l| l.remote_addrs().to_vec())
            .unwrap_or_default();
        s
    }

    /// The roster as signaling last said it.
    pub fn roster(&self) -> &[RosterEntry] {
        &self.roster
    }

    /// Our leaf, once in the group.
    pub fn leaf(&self) -> Option<u32> {
        self.group.as_ref().map(CallGroup::own_index)
    }

    /// The group, once in it (for tests and reports).
    pub fn group(&self) -> Option<&CallGroup> {
        self.group.as_ref()
    }

    /// The next thing for the shell to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(o) = self.out.pop_front() {
            return Some(o);
        }
        let (from, to, data) = self.link.as_mut()?.poll_transmit()?;
        Some(Output::Transmit { from, to, data })
    }

    /// When [`Self::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let link = self.link.as_ref().map(sfu_link::SfuLink::poll_timeout);
        let keys = self.keys.as_ref().and_then(CallKeys::poll_timeout);
        let held = self.held.front().map(|h| h.0 + self.opts.hold);
        let retry = self
            .plan
            .not_before()
            .filter(|_| self.stage == Stage::AwaitingWelcome);
        let plan = match self.stage {
            Stage::Member => self.plan.due(),
            Stage::AwaitingWelcome => self.plan.admission_check(),
            _ => None,
        };
        [
            link,
            keys,
            held,
            self.switch_at,
            plan,
            retry,
            self.relay_due,
            self.self_update_timer(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, env: &mut Env<'_>, now: Instant) {
        if let Some(l) = self.link.as_mut() {
            l.handle_timeout(now);
        }
        self.media_events(now);
        if let Some(k) = self.keys.as_mut() {
            k.handle_timeout(now);
        }
        self.epoch_timeout(now);
        self.direct_timeout(now);
        while self
            .held
            .front()
            .is_some_and(|h| h.0 + self.opts.hold <= now)
        {
            if let Some((at, ..)) = self.held.pop_front() {
                self.held_gave_up(at);
            }
        }
        self.progress(env, now);
    }

    /// A signaling event arrived; returns whether it was this room's.
    pub fn handle_event(&mut self, env: &mut Env<'_>, event: &Event, now: Instant) -> bool {
        match event {
            Event::Roster { room, roster } if *room == self.room => {
                self.roster = roster.clone();
                self.roster_stale_until = None;
            }
            Event::RemovedFromRoom { room } if *room == self.room => {
                self.end(env, LeftReason::Removed);
            }
            Event::FromSfu { room, signal } if *room == self.room => {
                self.handle_sfu_signal(env, signal, now)
            }
            Event::Relayed { call, signal, .. }
                if self.opts.direct.is_some_and(|d| d.call == *call) =>
            {
                self.handle_peer_signal(env, signal, now)
            }
            Event::ActiveSpeaker { room, device } if *room == self.room => {
                self.emit(RoomEvent::Speaker(device.clone()));
            }
            _ => return false,
        }
        self.progress(env, now);
        true
    }

    /// A stored delivery arrived; it is handed back if it is not this room's (so the
    /// shell keeps it for its owner, unacknowledged).
    pub fn handle_delivery(
        &mut self,
        env: &mut Env<'_>,
        seq: u64,
        item: sotto_proto::Stored,
        now: Instant,
    ) -> Result<(), sotto_proto::Stored> {
        match &item {
            sotto_proto::Stored::Mls { group, .. } if group[..] == self.room.0 => {
                self.handshakes.push_back((seq, item));
                self.progress(env, now);
                Ok(())
            }
            sotto_proto::Stored::RoomInvite { room, .. } if *room == self.room => {
                // An invitation to the room we are in: nothing more to do with it.
                self.out.push_back(Output::Ack(seq));
                Ok(())
            }
            _ => Err(item),
        }
    }

    /// A signaling request we asked for was answered.
    pub fn handle_answer(&mut self, env: &mut Env<'_>, id: u64, answer: Answer, now: Instant) {
        let Some(asked) = self.requests.remove(&id) else {
            return;
        };
        match asked {
            Asked::JoinRoom => self.joined_room(env, answer, now),
            Asked::Lookup(h) => self.looked_up(h, answer),
            Asked::Claim(d) => self.claimed(env, d, answer, now),
            Asked::Commit(kind) => self.commit_answered(env, kind, answer, now),
            Asked::Token => self.token_answered(env, answer, now),
            Asked::GroupInfo => self.group_info_answered(env, answer, now),
            Asked::CreateGroup => self.create_answered(env, answer, now),
            Asked::Leave => self.end(env, LeftReason::Left),
            Asked::RelayCall => self.relay_answered(env, answer, now),
            Asked::Relay | Asked::Other => {
                if let Answer::Refused(e) = &answer {
                    tracing::debug!(error = %e.message, "a room request was refused");
                }
            }
        }
        self.progress(env, now);
    }

    /// Leaves the room (Ctrl-C): the remaining members remove us from the group.
    pub fn leave(&mut self) {
        if matches!(self.stage, Stage::Leaving | Stage::Left) {
            return;
        }
        self.stage = Stage::Leaving;
        self.ask(Asked::Leave, Request::LeaveRoom { room: self.room });
    }

    /// Sends a request and remembers what it was for; returns its id.
    fn ask(&mut self, asked: Asked, body: Request) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.requests.insert(id, asked);
        self.out.push_back(Output::Request { id, body });
        id
    }

    fn emit(&mut self, e: RoomEvent) {
        self.out.push_back(Output::Event(e));
    }

    fn joined_room(&mut self, env: &mut Env<'_>, answer: Answer, now: Instant) {
        match answer {
            Answer::Ok(Response::RoomJoined { roster, .. }) => {
                self.roster = roster;
                // Our copy of the group counts only if the delivery service has us at its
                // leaf; otherwise it is left over from an earlier call.
                let mine = self
                    .roster
                    .iter()
                    .find(|e| e.device == self.me)
                    .and_then(|e| e.leaf);
                let kept = self
                    .group
                    .as_ref()
                    .is_some_and(|g| Some(g.own_index()) == mine);
                if kept {
                    self.stage = Stage::Member;
                    self.entered_group(env, now);
                    return;
                }
                if let Some(mut g) = self.group.take() {
                    let _ = g.delete(env.mls);
                }
                self.stage = Stage::AwaitingWelcome;
                if mine.is_some() {
                    // The server has us in the group but we lost our copy: rejoin.
                    self.start_rejoin(env, 0, "our copy of the group is gone".into());
                }
            }
            Answer::Refused(e) => self.end(env, LeftReason::Failed(e.message)),
            Answer::Failed(e) => self.end(env, LeftReason::Failed(e)),
            Answer::Ok(other) => {
                tracing::warn!(answer = ?other, "joining the room was answered oddly");
                self.end(
                    env,
                    LeftReason::Failed("the server answered the join oddly".into()),
                );
            }
        }
    }

    fn looked_up(&mut self, h: Handle, answer: Answer) {
        self.asking.retain(|x| x != &h);
        match answer {
            Answer::Ok(Response::Identity { identity_key, .. }) => self.dir.learn(h, identity_key),
            // No such account: a credential naming it cannot be its account's.
            Answer::Refused(e) if e.code == sotto_proto::ErrorCode::NotFound => {
                self.dir.learn_missing(h);
            }
            other => tracing::warn!(handle = %h, answer = ?other, "a directory lookup failed"),
        }
    }

    /// Asks the directory for every handle in `handles` not already being asked.
    fn lookup(&mut self, handles: Vec<Handle>) {
        for h in handles {
            if !self.asking.contains(&h) {
                self.asking.push(h.clone());
                self.ask(Asked::Lookup(h.clone()), Request::Lookup { handle: h });
            }
        }
    }

    /// Ends the session: what is ours in MLS storage goes.
    fn end(&mut self, env: &mut Env<'_>, why: LeftReason) {
        if self.stage == Stage::Left {
            return;
        }
        self.stage = Stage::Left;
        if let Some(mut g) = self.group.take()
            && let Err(e) = g.delete(env.mls)
        {
            tracing::warn!(error = %e, "could not delete the room's group");
        }
        self.keys = None;
        self.retire_link();
        self.emit(RoomEvent::Left(why));
    }

    /// Drops the media link, keeping its figures (a call's counters outlive a move to
    /// the SFU, a rejoin and the end).
    fn retire_link(&mut self) {
        if let Some(l) = self.link.take() {
            self.retired = self.retired.plus(l.stats());
        }
    }

    /// Moves whatever can move: queued handshakes, our own commits, the media link.
    fn progress(&mut self, env: &mut Env<'_>, now: Instant) {
        if matches!(self.stage, Stage::Left) {
            return;
        }
        self.process_handshakes(env, now);
        if self.stage == Stage::AwaitingWelcome {
            self.maybe_create(env, now);
        }
        if self.stage == Stage::Member {
            self.maybe_commit(env, now);
            self.maybe_connect(env, now);
        }
    }
}
