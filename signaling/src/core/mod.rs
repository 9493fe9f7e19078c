//! The signaling service as a sans-IO state machine: messages and time in, messages out.
//!
//! The quinn shell ([`crate::server`]) turns each connection into a [`SessionId`], feeds
//! decoded frames to [`Core::handle`], calls [`Core::handle_timeout`] when
//! [`Core::poll_timeout`] says, and writes what [`Core::poll_output`] returns. The core never
//! reads a clock or touches a socket, so every path (login, ringing, timeouts, fencing) is
//! tested deterministically with a virtual clock.
//!
//! - `auth`: version handshake, registration and challenge–response login, presence.
//! - `calls`: one-to-one call negotiation and relay.
//! - `delivery`: the MLS delivery service (KeyPackages, fan-out, epoch fencing) and
//!   stored-message delivery.
//! - `public_groups`: each group's public MLS state, against which every handshake is
//!   validated before fan-out.
//! - `rooms`: rooms, SFU registration and placement, join tokens.

mod auth;
mod calls;
mod delivery;
pub mod limits;
pub mod metrics;
mod public_groups;
mod rooms;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use ed25519_dalek::SigningKey;
use sotto_proto::{
    CallId, ClientMsg, DeviceAddr, DeviceId, ErrorBody, ErrorCode, Handle, PROTOCOL_VERSION,
    Request, Response, RoomId, ServerMsg,
};

use crate::storage::{Storage, StorageError};
use limits::{Limits, TokenBucket};
use metrics::Metrics;

/// A connection, as the core knows it.
pub type SessionId = u64;

/// What the shell must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Send this message on the session's stream.
    Send(SessionId, ServerMsg),
    /// Close the session (after sending anything queued before this).
    Close(SessionId),
}

/// Settings of the core.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// Name and version reported in the handshake.
    pub server_name: String,
    /// How long a call rings before it ends with `Timeout`.
    pub ring_timeout: Duration,
    /// Shared secret SFU nodes register with; `None` refuses all SFUs.
    pub sfu_secret: Option<String>,
    /// How long a join token is valid.
    pub token_ttl: Duration,
    /// Caps and rates.
    pub limits: Limits,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            server_name: format!("sotto-signaling/{}", env!("CARGO_PKG_VERSION")),
            ring_timeout: Duration::from_secs(45),
            sfu_secret: None,
            token_ttl: Duration::from_secs(300),
            limits: Limits::default(),
        }
    }
}

/// Where a session stands.
#[derive(Clone, Debug)]
enum SessionState {
    /// Connected; no Hello yet.
    New,
    /// Greeted; not logged in.
    Greeted,
    /// A challenge is out.
    Challenged {
        nonce: [u8; 32],
        device: DeviceAddr,
        /// `Some(key)` when registering a new account.
        register: Option<Vec<u8>>,
    },
    /// Logged in as a user's device.
    User(DeviceAddr),
    /// Registered as an SFU node.
    Sfu,
}

struct Session {
    state: SessionState,
    bucket: TokenBucket,
    watching: Vec<Handle>,
    /// Highest stored-message sequence already sent on this session.
    delivered: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Login(SessionId),
    Ring(CallId),
    /// Resend an unacknowledged [`Event::SfuParticipantGone`] (by its pending id).
    SfuGone(u64),
}

/// Randomness, passed in so tests are deterministic.
pub type Rng = Box<dyn FnMut(&mut [u8]) + Send>;

/// Which per-account rate a request counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum AccountRate {
    /// Call invites ([`Limits::account_rate`]).
    Invites,
    /// KeyPackage claims ([`Limits::claim_rate`]).
    Claims,
}

/// The signaling service's state machine.
pub struct Core {
    cfg: CoreConfig,
    storage: Box<dyn Storage>,
    rng: Rng,
    metrics: Arc<Metrics>,
    started: Instant,
    started_unix: u64,
    token_key: SigningKey,
    /// Signs the service's Remove proposals as each room group's external sender.
    sender: openmls_basic_credential::SignatureKeyPair,
    next_session: SessionId,
    sessions: HashMap<SessionId, Session>,
    /// Online devices per handle.
    online: HashMap<Handle, BTreeMap<DeviceId, SessionId>>,
    /// Sessions watching a handle's presence.
    watchers: HashMap<Handle, BTreeSet<SessionId>>,
    account_buckets: HashMap<(Handle, AccountRate), TokenBucket>,
    calls: calls::Calls,
    rooms: rooms::LiveRooms,
    timers: BTreeSet<(Instant, Timer)>,
    outputs: VecDeque<Output>,
    /// Verifies MLS signatures and hashes for the delivery service (public operations
    /// only: the server holds no group secrets).
    crypto: openmls_rust_crypto::RustCrypto,
    /// Devices told their KeyPackages run low and that have not uploaded since: a burst of
    /// claims sends one `KeyPackagesLow`, not one per claim.
    low_notified: std::collections::HashSet<DeviceAddr>,
}

/// The service's own signing keys, kept across restarts.
pub struct ServiceKeys {
    /// Signs the join tokens SFUs verify.
    pub token: SigningKey,
    /// Signs the Remove proposals the service makes as each room group's MLS external
    /// sender (RFC 9420 §12.1.8.1); clients name its public half in every group they start.
    pub external_sender: SigningKey,
}

/// An error answer.
pub(crate) fn err(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, message)
}

impl From<StorageError> for ErrorBody {
    fn from(e: StorageError) -> Self {
        tracing::error!(error = %e, "storage failure");
        err(ErrorCode::Internal, "storage failure")
    }
}

/// Result of a request handler.
pub(crate) type Reply = Result<Response, ErrorBody>;

impl Core {
    /// A core over `storage`. `keys` sign SFU join tokens and the service's MLS
    /// proposals; `now`/`now_unix` anchor the monotonic clock to wall time for token
    /// expiry.
    pub fn new(
        cfg: CoreConfig,
        storage: Box<dyn Storage>,
        keys: ServiceKeys,
        rng: Rng,
        metrics: Arc<Metrics>,
        now: Instant,
        now_unix: u64,
    ) -> Self {
        Self {
            cfg,
            storage,
            rng,
            metrics,
            started: now,
            started_unix: now_unix,
            token_key: keys.token,
            sender: openmls_basic_credential::SignatureKeyPair::from_raw(
                openmls::prelude::SignatureScheme::ED25519,
                keys.external_sender.to_bytes().to_vec(),
                keys.external_sender.verifying_key().to_bytes().to_vec(),
            ),
            next_session: 1,
            sessions: HashMap::new(),
            online: HashMap::new(),
            watchers: HashMap::new(),
            account_buckets: HashMap::new(),
            calls: calls::Calls::default(),
            rooms: rooms::LiveRooms::default(),
            timers: BTreeSet::new(),
            outputs: VecDeque::new(),
            crypto: openmls_rust_crypto::RustCrypto::default(),
            low_notified: std::collections::HashSet::new(),
        }
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Sessions open.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// A new connection. `None` when the session cap is reached (the shell refuses it).
    pub fn connect(&mut self, now: Instant) -> Option<SessionId> {
        if self.sessions.len() >= self.cfg.limits.max_sessions {
            tracing::warn!(
                limit = self.cfg.limits.max_sessions,
                "session cap reached, refusing connection"
            );
            self.metrics.error(&ErrorCode::LimitReached {
                what: String::new(),
            });
            return None;
        }
        let id = self.next_session;
        self.next_session += 1;
        self.sessions.insert(
            id,
            Session {
                state: SessionState::New,
                bucket: TokenBucket::new(self.cfg.limits.session_rate, now),
                watching: Vec::new(),
                delivered: 0,
            },
        );
        self.timers
            .insert((now + self.cfg.limits.login_timeout, Timer::Login(id)));
        self.metrics
            .sessions_open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.metrics
            .sessions_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(id)
    }

    /// The connection is gone (closed, lost, or we closed it).
    pub fn disconnect(&mut self, sid: SessionId, now: Instant) {
        let Some(session) = self.sessions.remove(&sid) else {
            return;
        };
        self.metrics
            .sessions_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        for h in &session.watching {
            if let Some(w) = self.watchers.get_mut(h) {
                w.remove(&sid);
                if w.is_empty() {
                    self.watchers.remove(h);
                }
            }
        }
        match session.state {
            SessionState::User(addr) => {
                self.calls_on_disconnect(&addr, sid, now);
                self.rooms_on_disconnect(&addr, sid, now);
                self.set_offline(&addr, sid);
            }
            SessionState::Sfu => self.sfu_gone(sid),
            _ => {}
        }
    }

    /// A frame from a session.
    pub fn handle(&mut self, sid: SessionId, msg: ClientMsg, now: Instant) {
        self.metrics
            .messages_in
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        match (msg, &session.state) {
            (ClientMsg::Hello { version, .. }, SessionState::New) => {
                if version != PROTOCOL_VERSION {
                    self.goodbye(
                        sid,
                        err(
                            ErrorCode::UnsupportedVersion {
                                supported: PROTOCOL_VERSION,
                            },
                            format!("this server speaks version {PROTOCOL_VERSION}, not {version}"),
                        ),
                    );
                    return;
                }
                session.state = SessionState::Greeted;
                let hello = ServerMsg::Hello {
                    version: PROTOCOL_VERSION,
                    server: self.cfg.server_name.clone(),
                };
                self.send(sid, hello);
            }
            (ClientMsg::Hello { .. }, _) => {
                self.goodbye(
                    sid,
                    err(ErrorCode::InvalidState, "Hello may only open a connection"),
                );
            }
            (_, SessionState::New) => {
                self.goodbye(sid, err(ErrorCode::InvalidState, "send Hello first"));
            }
            (ClientMsg::Ack { seq }, SessionState::User(addr)) => {
                let addr = addr.clone();
                if let Err(e) = self.storage.ack(&addr, seq) {
                    tracing::error!(error = %e, "ack failed");
                }
            }
            (ClientMsg::Ack { .. }, _) => {}
            (ClientMsg::Request { id, body }, _) => {
                if let Err(wait) = session.bucket.take(now) {
                    tracing::info!(session = sid, "session rate limit hit");
                    let e = err(
                        ErrorCode::RateLimited {
                            retry_after_ms: wait.as_millis().try_into().unwrap_or(u64::MAX),
                        },
                        "too many requests on this connection",
                    );
                    self.respond(sid, id, Err(e));
                    return;
                }
                let result = self.request(sid, body, now);
                let logged_in = matches!(result, Ok(Response::LoggedIn { .. }));
                self.respond(sid, id, result);
                if logged_in {
                    self.deliver_pending(sid);
                }
            }
        }
    }

    /// The session failed to send a well-formed frame (bad length, undecodable): tell it
    /// why and close it. Other sessions are untouched.
    pub fn malformed(&mut self, sid: SessionId, error: ErrorBody) {
        tracing::info!(session = sid, code = ?error.code, "malformed input, closing session");
        self.goodbye(sid, error);
    }

    /// When [`Self::handle_timeout`] has work next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Runs timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Login(sid) => {
                    let pending = self.sessions.get(&sid).is_some_and(|s| {
                        !matches!(s.state, SessionState::User(_) | SessionState::Sfu)
                    });
                    if pending {
                        self.goodbye(sid, err(ErrorCode::Unauthenticated, "login timed out"));
                    }
                }
                Timer::Ring(call) => self.ring_timeout(call, now),
                Timer::SfuGone(id) => self.resend_gone(id, now),
            }
        }
    }

    /// The next thing for the shell to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    fn request(&mut self, sid: SessionId, body: Request, now: Instant) -> Reply {
        let state = self.sessions.get(&sid).map(|s| s.state.clone());
        let Some(state) = state else {
            return Err(err(ErrorCode::Internal, "no session"));
        };
        match body {
            Request::Register {
                handle,
                identity_key,
                device,
            } => self.register(sid, &state, handle, identity_key, device),
            Request::Login { handle, device } => self.login(sid, &state, handle, device),
            Request::Prove { signature } => self.prove(sid, state, &signature, now),
            Request::RegisterSfu {
                node,
                secret,
                media_addr,
                capacity,
            } => self.register_sfu(sid, &state, node, &secret, media_addr, capacity),
            Request::SfuRelay { room, to, signal } => {
                if !matches!(state, SessionState::Sfu) {
                    return Err(err(
                        ErrorCode::Forbidden,
                        "only SFU nodes relay to participants",
                    ));
                }
                self.sfu_relay(sid, room, &to, signal)
            }
            Request::SfuRemovalApplied { room, device } => {
                if !matches!(state, SessionState::Sfu) {
                    return Err(err(
                        ErrorCode::Forbidden,
                        "only SFU nodes acknowledge removals",
                    ));
                }
                self.removal_applied(sid, &room, &device);
                Ok(Response::Ok)
            }
            Request::SfuSpeaker { room, device } => {
                if !matches!(state, SessionState::Sfu) {
                    return Err(err(
                        ErrorCode::Forbidden,
                        "only SFU nodes announce speakers",
                    ));
                }
                self.announce_speaker(sid, room, device)
            }
            other => {
                let SessionState::User(me) = state else {
                    return Err(err(ErrorCode::Unauthenticated, "log in first"));
                };
                self.user_request(sid, &me, other, now)
            }
        }
    }

    fn user_request(
        &mut self,
        sid: SessionId,
        me: &DeviceAddr,
        body: Request,
        now: Instant,
    ) -> Reply {
        match body {
            Request::Lookup { handle } => self.lookup(&handle),
            Request::WatchPresence { handles } => self.watch(sid, handles),
            Request::Invite { call, to } => self.invite(sid, me, call, to, now),
            Request::Accept { call } => self.accept(sid, me, call),
            Request::Decline { call } => self.decline(me, call, now),
            Request::Cancel { call } => self.cancel(me, call, now),
            Request::Hangup { call } => self.hangup(me, call, now),
            Request::Relay { call, signal } => self.relay(me, call, signal),
            Request::RelayCall { call } => self.relay_call(me, call),
            Request::UploadKeyPackages {
                packages,
                last_resort,
                replace,
            } => self.upload_key_packages(me, packages, last_resort, replace),
            Request::ClaimKeyPackage { handle, device } => {
                self.claim_key_package(me, &handle, device, now)
            }
            Request::CreateGroup { group, group_info } => {
                self.create_group(me, &group, &group_info)
            }
            Request::Commit {
                group,
                epoch,
                commit,
                welcome,
                group_info,
                added,
                removed,
            } => self.commit(
                me, group, epoch, commit, welcome, group_info, added, removed,
            ),
            Request::ReportCommit {
                group,
                epoch,
                reason,
            } => self.report_commit(me, &group, epoch, &reason),
            Request::GroupInfo { group } => self.group_info(me, &group),
            Request::KeyMismatch { call } => self.key_mismatch(me, call, now),
            Request::Proposal {
                group,
                epoch,
                proposal,
            } => self.proposal(me, group, epoch, proposal),
            Request::CreateRoom => self.create_room(me),
            Request::InviteToRoom { room, handles } => self.invite_to_room(me, room, handles),
            Request::JoinRoom { room } => self.join_room(sid, me, room),
            Request::LeaveRoom { room } => self.leave_room(me, room, now),
            Request::RemoveFromRoom { room, handle } => {
                self.remove_from_room(me, room, &handle, now)
            }
            Request::SfuToken { room } => self.sfu_token(me, room, now),
            Request::RelayToSfu { room, signal } => self.relay_to_sfu(me, room, signal),
            Request::Register { .. }
            | Request::Login { .. }
            | Request::Prove { .. }
            | Request::RegisterSfu { .. }
            | Request::SfuRelay { .. }
            | Request::SfuRemovalApplied { .. }
            | Request::SfuSpeaker { .. } => Err(err(ErrorCode::InvalidState, "already logged in")),
        }
    }

    /// Takes a per-account token (claims and invites), or answers RateLimited.
    fn account_rate(
        &mut self,
        who: &Handle,
        kind: AccountRate,
        now: Instant,
    ) -> Result<(), ErrorBody> {
        let rate = match kind {
            AccountRate::Invites => self.cfg.limits.account_rate,
            AccountRate::Claims => self.cfg.limits.claim_rate,
        };
        let bucket = self
            .account_buckets
            .entry((who.clone(), kind))
            .or_insert_with(|| TokenBucket::new(rate, now));
        bucket.take(now).map_err(|wait| {
            tracing::info!("account rate limit hit");
            err(
                ErrorCode::RateLimited {
                    retry_after_ms: wait.as_millis().try_into().unwrap_or(u64::MAX),
                },
                "too many requests for this account",
            )
        })
    }

    fn random<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        (self.rng)(&mut b);
        b
    }

    fn unix(&self, now: Instant) -> u64 {
        self.started_unix + now.saturating_duration_since(self.started).as_secs()
    }

    fn send(&mut self, sid: SessionId, msg: ServerMsg) {
        self.metrics
            .messages_out
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.outputs.push_back(Output::Send(sid, msg));
    }

    fn event(&mut self, sid: SessionId, e: sotto_proto::Event) {
        self.send(sid, ServerMsg::Event(e));
    }

    fn respond(&mut self, sid: SessionId, id: u64, result: Reply) {
        if let Err(e) = &result {
            self.metrics.error(&e.code);
        }
        self.send(sid, ServerMsg::Response { id, result });
    }

    fn goodbye(&mut self, sid: SessionId, e: ErrorBody) {
        self.metrics.error(&e.code);
        self.send(sid, ServerMsg::Goodbye(e));
        self.outputs.push_back(Output::Close(sid));
    }

    /// Sessions of a handle's online devices.
    fn sessions_of(&self, h: &Handle) -> Vec<(DeviceAddr, SessionId)> {
        self.online
            .get(h)
            .map(|m| {
                m.iter()
                    .map(|(d, s)| {
                        (
                            DeviceAddr {
                                handle: h.clone(),
                                device: *d,
                            },
                            *s,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn session_of(&self, d: &DeviceAddr) -> Option<SessionId> {
        self.online
            .get(&d.handle)
            .and_then(|m| m.get(&d.device))
            .copied()
    }
}

#[cfg(test)]
mod tests;

/// Room ids are random; exposed for the rooms module.
pub(crate) fn room_id(bytes: [u8; 16]) -> RoomId {
    RoomId(bytes)
}

#[doc(hidden)]
pub use public_groups::exercise_parsers;
