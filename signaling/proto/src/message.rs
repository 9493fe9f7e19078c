//! Every message of the protocol.
//!
//! One bidirectional QUIC stream per connection carries frames both ways. The client opens
//! with [`ClientMsg::Hello`]; the server answers [`ServerMsg::Hello`] or an error and closes.
//! Then every [`Request`] carries an id, and gets exactly one [`ServerMsg::Response`] with
//! that id: a typed [`Response`] or a typed [`ErrorBody`]. The server pushes [`Event`]s at
//! any time. Messages stored for a device (MLS handshakes, room invitations) arrive as
//! [`ServerMsg::Delivery`] with a sequence number the device acknowledges; until then they
//! are redelivered at every login, in order.

use serde::{Deserialize, Serialize};

use crate::Handle;

/// A device of an account, chosen by the device (random) and unique within the account.
pub type DeviceId = u32;

/// One device of one account: where messages are addressed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceAddr {
    /// The account.
    pub handle: Handle,
    /// The device.
    pub device: DeviceId,
}

impl std::fmt::Display for DeviceAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{:08x}", self.handle, self.device)
    }
}

/// A call's id, chosen at random by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CallId(pub [u8; 16]);

/// A room's id, chosen at random by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RoomId(pub [u8; 16]);

macro_rules! hex_display {
    ($t:ty) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    };
}
hex_display!(CallId);
hex_display!(RoomId);

/// What a client sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// First message on a connection: the protocol version spoken.
    Hello {
        /// [`crate::PROTOCOL_VERSION`] of the client.
        version: u16,
        /// Free-form client name and version, for logs.
        agent: String,
    },
    /// A request; answered by a [`ServerMsg::Response`] with the same `id`.
    Request {
        /// Chosen by the client, echoed in the response.
        id: u64,
        /// What is asked.
        body: Request,
    },
    /// The [`ServerMsg::Delivery`] with this `seq` was handled by the part of the client
    /// that owns it: drop it. Acknowledgements are per message, not cumulative, so a
    /// delivery kept for a later owner (a Welcome for another group, a room invite during
    /// a call) stays stored while later ones are acknowledged.
    Ack {
        /// The sequence number handled.
        seq: u64,
    },
}

/// What the server sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ServerMsg {
    /// Answer to [`ClientMsg::Hello`].
    Hello {
        /// The server's protocol version.
        version: u16,
        /// Server name and version, for logs.
        server: String,
    },
    /// Answer to the request with the same id.
    Response {
        /// The request's id.
        id: u64,
        /// What happened.
        result: Result<Response, ErrorBody>,
    },
    /// Something happened that this session should know now.
    Event(Event),
    /// A stored message for this device; acknowledge with [`ClientMsg::Ack`].
    Delivery {
        /// Per-device sequence number, increasing.
        seq: u64,
        /// The message.
        item: Stored,
    },
    /// The server is closing the connection, and why.
    Goodbye(ErrorBody),
}

/// WebRTC negotiation payload relayed between two endpoints; opaque to the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RtcSignal {
    /// An SDP offer.
    Offer(String),
    /// An SDP answer.
    Answer(String),
    /// A trickled ICE candidate (the SDP `candidate:` line, with its mid).
    Candidate {
        /// The candidate line.
        candidate: String,
        /// The media section it belongs to.
        mid: Option<String>,
    },
    /// No more candidates.
    EndOfCandidates,
    /// A participant's first offer to a room's SFU, with the join token the SFU checks
    /// (room, device and MLS leaf, signed by the signaling service) before answering.
    JoinSfu {
        /// The token from [`Request::SfuToken`].
        token: SignedJoinToken,
        /// The SDP offer: the lines it publishes on (sendonly) and the slots it receives
        /// others' media on (recvonly).
        offer: String,
    },
    /// From the SFU to a publisher: the simulcast layers nobody watches (lowest 0); stop
    /// sending them, and send the others, each resuming with a keyframe.
    PauseLayers {
        /// The layers to pause.
        paused: Vec<u8>,
    },
    /// From a subscriber to the SFU: send me at most this simulcast layer of anyone.
    MaxLayer {
        /// The highest layer wanted (0 = lowest).
        layer: u8,
    },
    /// From the signaling service to a party of a call the other party asked to relay
    /// ([`Request::RelayCall`]): the call goes on through an SFU in this room of two, so
    /// neither side learns the other's address. Only the service sends it; a party
    /// relaying it is refused.
    UseRoom {
        /// The call's room, which exists while the call lasts.
        room: RoomId,
    },
}

/// An MLS handshake message kind, as the delivery service routes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MlsKind {
    /// A Commit for the group's members.
    Commit,
    /// A Welcome for joining devices.
    Welcome,
    /// A standalone Proposal.
    Proposal,
}

/// A member added by a commit, with the MLS leaf it occupies.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AddedMember {
    /// The device added.
    pub device: DeviceAddr,
    /// Its leaf index in the group.
    pub leaf: u32,
}

/// Every request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Claim `handle` for the Ed25519 `identity_key`, as `device`. Answered by a
    /// [`Response::Challenge`]; the account exists once [`Request::Prove`] succeeds.
    Register {
        /// The handle to claim.
        handle: Handle,
        /// The account's Ed25519 public key (32 bytes).
        identity_key: Vec<u8>,
        /// This device's id.
        device: DeviceId,
    },
    /// Log in to `handle` as `device` (new devices are added on first login). Answered by
    /// a [`Response::Challenge`].
    Login {
        /// The account.
        handle: Handle,
        /// This device.
        device: DeviceId,
    },
    /// Proof of the identity key: an Ed25519 signature over [`login_transcript`].
    Prove {
        /// 64-byte signature.
        signature: Vec<u8>,
    },
    /// Look a handle up: its identity key and devices.
    Lookup {
        /// Who.
        handle: Handle,
    },
    /// Be told when these handles come online or go offline (replaces earlier lists).
    WatchPresence {
        /// Whom to watch.
        handles: Vec<Handle>,
    },

    /// Call `to`: rings every online device of theirs.
    Invite {
        /// Fresh random call id.
        call: CallId,
        /// The callee.
        to: Handle,
    },
    /// Answer a ringing call on this device; the first device to accept wins.
    Accept {
        /// Which call.
        call: CallId,
    },
    /// Refuse a ringing call (stops it ringing on every device).
    Decline {
        /// Which call.
        call: CallId,
    },
    /// The caller gives up before an answer.
    Cancel {
        /// Which call.
        call: CallId,
    },
    /// End an answered call.
    Hangup {
        /// Which call.
        call: CallId,
    },
    /// Relay WebRTC negotiation to the other party of the call.
    Relay {
        /// Which call.
        call: CallId,
        /// The payload.
        signal: RtcSignal,
    },
    /// Carry an answered call through an SFU instead of peer to peer: the service makes a
    /// room that only the two parties may join, for as long as the call lasts, answers
    /// [`Response::RoomCreated`], and tells the other party with [`RtcSignal::UseRoom`].
    /// Asking again gives the same room.
    RelayCall {
        /// Which call.
        call: CallId,
    },

    /// Store KeyPackages for this device; `last_resort` replaces the previous one. Each
    /// must be a valid MLS KeyPackage whose credential names this account's handle and
    /// carries its identity key. Answered by [`Response::KeyPackagesStored`].
    UploadKeyPackages {
        /// One-use KeyPackages (serialized MLS messages).
        packages: Vec<Vec<u8>>,
        /// The package handed out when no one-use package is left; never consumed. It must
        /// carry the MLS `last_resort` extension.
        last_resort: Option<Vec<u8>>,
        /// Drop this device's stored one-use packages first (a restarted device whose
        /// private keys are gone replaces rather than adds).
        replace: bool,
    },
    /// Take one KeyPackage of `handle` (of `device` if given): consumed exactly once.
    ClaimKeyPackage {
        /// Whose.
        handle: Handle,
        /// Which device, or any.
        device: Option<DeviceId>,
    },
    /// Register a new MLS group at epoch 0 with this device as its only member. Only a
    /// party of the call whose id is the group id, or the owner of the room whose id it
    /// is, may create it.
    CreateGroup {
        /// The MLS group id (at most 64 bytes).
        group: Vec<u8>,
        /// The group's epoch-0 GroupInfo (an MLS message, signed by the creator, with the
        /// ratchet tree extension): the delivery service follows the group's public state
        /// from it.
        group_info: Vec<u8>,
    },
    /// Send a Commit made in `epoch`, as an MLS PublicMessage. The delivery service
    /// validates it against the group's public state (signature, sender a member, the
    /// proposals it covers) and computes added and removed members itself. The first
    /// valid commit for the group's current epoch wins; others get
    /// [`ErrorCode::StaleEpoch`] with the current epoch.
    Commit {
        /// The group.
        group: Vec<u8>,
        /// The epoch the commit was made in.
        epoch: u64,
        /// The Commit, for the other members.
        commit: Vec<u8>,
        /// The Welcome for the added devices, if any.
        welcome: Option<Vec<u8>>,
        /// The new epoch's GroupInfo signed by the committer (with the ratchet tree), kept
        /// for members that must rejoin by external commit. Required: a commit without it
        /// is refused.
        group_info: Option<Vec<u8>>,
        /// What the committer believes it adds. Optional: empty means "compute it"; when
        /// given, it must equal what the server computed from the commit, or the commit is
        /// refused with [`ErrorCode::ClaimMismatch`].
        added: Vec<AddedMember>,
        /// Leaves the committer believes it removes; same rule as `added`.
        removed: Vec<u32>,
    },
    /// Send a standalone Proposal (an MLS PublicMessage) to the group's members.
    Proposal {
        /// The group.
        group: Vec<u8>,
        /// The epoch it was made in.
        epoch: u64,
        /// The Proposal.
        proposal: Vec<u8>,
    },

    /// Create a room for a group call; the creator owns it.
    CreateRoom,
    /// Invite handles to a room (owner only).
    InviteToRoom {
        /// Which room.
        room: RoomId,
        /// Whom.
        handles: Vec<Handle>,
    },
    /// Join a room one is invited to (or owns).
    JoinRoom {
        /// Which room.
        room: RoomId,
    },
    /// Leave a room.
    LeaveRoom {
        /// Which room.
        room: RoomId,
    },
    /// Remove a participant from a room (owner only).
    RemoveFromRoom {
        /// Which room.
        room: RoomId,
        /// Whom.
        handle: Handle,
    },
    /// A signed token to present to the room's SFU.
    SfuToken {
        /// Which room.
        room: RoomId,
    },
    /// Relay WebRTC negotiation to the room's SFU.
    RelayToSfu {
        /// Which room.
        room: RoomId,
        /// The payload.
        signal: RtcSignal,
    },

    /// An SFU node registers (instead of logging in as a user).
    RegisterSfu {
        /// Its name.
        node: String,
        /// The shared secret configured for SFU nodes.
        secret: String,
        /// Where participants reach its media port.
        media_addr: String,
        /// How many participants it takes.
        capacity: u32,
    },
    /// An SFU relays WebRTC negotiation to a participant of one of its rooms.
    SfuRelay {
        /// Which room.
        room: RoomId,
        /// To whom.
        to: DeviceAddr,
        /// The payload.
        signal: RtcSignal,
    },
    /// End a call (ringing or answered) because a member's MLS credential did not match
    /// the account it names: both parties see [`EndReason::KeyMismatch`].
    KeyMismatch {
        /// Which call.
        call: CallId,
    },
    /// A member could not process a commit the delivery service accepted (the server
    /// cannot check everything a member can: confirmation and membership tags). The
    /// member reports it, then recovers by rejoining from the stored GroupInfo.
    ReportCommit {
        /// The group.
        group: Vec<u8>,
        /// The epoch of the commit it rejected.
        epoch: u64,
        /// What the member's MLS stack said, for the operator's logs.
        reason: String,
    },
    /// The latest member-signed GroupInfo of a group (to rejoin by external commit).
    GroupInfo {
        /// The group.
        group: Vec<u8>,
    },
    /// An SFU acknowledges [`Event::SfuParticipantGone`]: it forwards nothing more to or
    /// from the participant. Until it does, the service sends the event again.
    SfuRemovalApplied {
        /// The room.
        room: RoomId,
        /// Who.
        device: DeviceAddr,
    },
    /// An SFU announces a room's dominant speaker (from audio levels); the service tells
    /// the room's participants with [`Event::ActiveSpeaker`].
    SfuSpeaker {
        /// The room.
        room: RoomId,
        /// Who speaks now.
        device: DeviceAddr,
    },
}

/// The bytes an identity key signs to log in: domain label, the server's nonce, the
/// handle and the device, so a signature is good for one login attempt only.
pub fn login_transcript(nonce: &[u8], handle: &Handle, device: DeviceId) -> Vec<u8> {
    let mut t = b"sotto/1 login\0".to_vec();
    t.extend_from_slice(nonce);
    t.extend_from_slice(handle.as_str().as_bytes());
    t.push(0);
    t.extend_from_slice(&device.to_be_bytes());
    t
}

/// A signed permission to join one room's media at one SFU, verified by the SFU with the
/// signaling service's token key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// The room.
    pub room: RoomId,
    /// The participant.
    pub device: DeviceAddr,
    /// The participant's MLS leaf index: its SFrame sender index, enforced by the SFU.
    pub leaf: u32,
    /// Unix time (seconds) after which the token is void.
    pub expires_unix: u64,
}

/// A [`JoinToken`] with the signaling service's Ed25519 signature over its encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedJoinToken {
    /// The postcard encoding of the [`JoinToken`].
    pub token: Vec<u8>,
    /// Ed25519 signature over `b"sotto/1 join token\0" || token`.
    pub signature: Vec<u8>,
}

/// Domain label for join token signatures.
pub const JOIN_TOKEN_LABEL: &[u8] = b"sotto/1 join token\0";

/// The identity of the service's basic credential as a room group's MLS external sender
/// (with `LoggedIn::service_key` as its signature key).
pub const SERVICE_SENDER_IDENTITY: &[u8] = b"sotto delivery service";

/// A participant as the room roster shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterEntry {
    /// The participant.
    pub device: DeviceAddr,
    /// Whether this is the room's owner.
    pub owner: bool,
    /// Its leaf in the room's MLS group, as the delivery service computed it from the
    /// group's public state (`None`: not in the group yet). A hint for whom to add or
    /// remove, never a reason to trust a key.
    pub leaf: Option<u32>,
}

/// Successful answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Done, nothing to report.
    Ok,
    /// Sign this nonce (see [`login_transcript`]) and send [`Request::Prove`].
    Challenge {
        /// 32 random bytes, good for one attempt.
        nonce: Vec<u8>,
    },
    /// Logged in.
    LoggedIn {
        /// The account.
        handle: Handle,
        /// This device.
        device: DeviceId,
        /// Whether the account was created by this login.
        created: bool,
        /// Stored messages about to be delivered.
        pending: u32,
        /// One-use KeyPackages this device has stored, so it can top up at login.
        key_packages: u32,
        /// The service's MLS signature key (Ed25519): a room's group names it as its
        /// external sender, which proposes removing members who left or disconnected.
        service_key: Vec<u8>,
    },
    /// A handle's identity.
    Identity {
        /// The account.
        handle: Handle,
        /// Its Ed25519 identity key.
        identity_key: Vec<u8>,
        /// Its devices.
        devices: Vec<DeviceId>,
        /// Whether any device is online now.
        online: bool,
    },
    /// The callee's devices are ringing.
    Ringing {
        /// The call.
        call: CallId,
        /// How many devices ring.
        devices: u32,
    },
    /// A claimed KeyPackage.
    KeyPackage {
        /// The device it belongs to.
        device: DeviceAddr,
        /// The serialized KeyPackage.
        package: Vec<u8>,
        /// Whether it is the (reusable) last-resort package.
        last_resort: bool,
    },
    /// The commit won its epoch; the group is now in `epoch`.
    CommitAccepted {
        /// The new epoch.
        epoch: u64,
        /// The devices it added and their leaves, as the server computed them.
        added: Vec<AddedMember>,
        /// The leaves it removed.
        removed: Vec<u32>,
    },
    /// A room was created.
    RoomCreated {
        /// Its id.
        room: RoomId,
    },
    /// Joined a room.
    RoomJoined {
        /// The room.
        room: RoomId,
        /// Who is in it now.
        roster: Vec<RosterEntry>,
    },
    /// A join token and where to use it.
    SfuToken {
        /// The token.
        token: SignedJoinToken,
        /// The SFU's media address.
        media_addr: String,
    },
    /// An SFU node is registered.
    SfuRegistered {
        /// The Ed25519 key join tokens are signed with.
        token_key: Vec<u8>,
    },
    /// KeyPackages stored.
    KeyPackagesStored {
        /// One-use KeyPackages the device now has.
        one_time: u32,
        /// Hash references of the packages this upload replaced that nobody claimed: no
        /// Welcome can name them, so the device deletes their private keys.
        forgotten: Vec<Vec<u8>>,
    },
    /// A group's latest member-signed GroupInfo.
    GroupInfo {
        /// The epoch it describes.
        epoch: u64,
        /// The GroupInfo (an MLS message).
        group_info: Vec<u8>,
    },
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ErrorBody {
    /// Machine-readable.
    pub code: ErrorCode,
    /// For people and logs.
    pub message: String,
}

/// Machine-readable error codes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The peer speaks another protocol version.
    UnsupportedVersion {
        /// The version this server speaks.
        supported: u16,
    },
    /// The frame did not decode, or a field is invalid (bad key length, bad group id...).
    Malformed,
    /// The frame exceeded the size limit.
    TooLarge,
    /// Log in first.
    Unauthenticated,
    /// The login signature did not verify (or its nonce was already used).
    BadSignature,
    /// The handle belongs to someone else.
    HandleTaken,
    /// The handle is not valid.
    InvalidHandle,
    /// No such account, device, call, group or room.
    NotFound,
    /// The callee is in another call.
    Busy,
    /// The callee has no device online.
    Offline,
    /// Not permitted for this session (not a member, not the owner, wrong party...).
    Forbidden,
    /// Another device answered first.
    AlreadyAnswered,
    /// The request does not fit the call's or session's state.
    InvalidState,
    /// The commit's epoch is not the group's current epoch.
    StaleEpoch {
        /// The group's current epoch.
        current: u64,
    },
    /// Too many requests: try again later.
    RateLimited {
        /// Milliseconds until a request is likely to pass.
        retry_after_ms: u64,
    },
    /// A hard cap was reached (devices, KeyPackages, pending messages, sessions...).
    LimitReached {
        /// Which limit.
        what: String,
    },
    /// Something failed on the server; nothing was changed.
    Internal,
    /// A KeyPackage is not valid, or its credential does not name the uploader's account
    /// and identity key.
    InvalidKeyPackage,
    /// A handshake message does not validate against the group's public state (bad
    /// signature, not a PublicMessage, wrong group, unknown proposal...).
    InvalidCommit,
    /// The sender is not a member of the group.
    NotAMember,
    /// The group id belongs to a call or room this device may not create a group for.
    GroupIdNotYours,
    /// The committer's `added`/`removed` claims differ from what the commit does.
    ClaimMismatch,
    /// A commit adds a KeyPackage the delivery service never handed out.
    UnknownKeyPackage,
    /// A recipient's stored-message queue is full: nothing was sent to anyone.
    QueueFull,
}

impl ErrorBody {
    /// An error with a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Why a call ended, as both sides see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndReason {
    /// A party hung up after the call was answered.
    HungUp,
    /// The callee declined.
    Declined,
    /// The caller cancelled before an answer.
    Cancelled,
    /// Nobody answered before the ring timeout.
    Timeout,
    /// Another device of the callee answered (sent to the other ringing devices).
    AnsweredElsewhere,
    /// A party's connection was lost.
    PeerDisconnected,
    /// A party refused: a member's MLS credential did not carry the identity key of the
    /// account it names (the directory's, or the one pinned). Someone may be substituting
    /// keys.
    KeyMismatch,
}

impl std::fmt::Display for EndReason {
    /// How a call ended, in words for people.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::HungUp => "hung up",
            Self::Declined => "declined",
            Self::Cancelled => "cancelled",
            Self::Timeout => "no answer",
            Self::AnsweredElsewhere => "answered on another device",
            Self::PeerDisconnected => "the other side's connection was lost",
            Self::KeyMismatch => "refused because a key did not match its account",
        })
    }
}

/// Pushed by the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// Someone is calling this device.
    IncomingCall {
        /// The call.
        call: CallId,
        /// The caller's device.
        from: DeviceAddr,
    },
    /// The callee answered (sent to the caller).
    CallAccepted {
        /// The call.
        call: CallId,
        /// The device that answered.
        by: DeviceAddr,
    },
    /// The call is over.
    CallEnded {
        /// The call.
        call: CallId,
        /// Why.
        reason: EndReason,
    },
    /// WebRTC negotiation from the other party.
    Relayed {
        /// The call.
        call: CallId,
        /// From whom.
        from: DeviceAddr,
        /// The payload.
        signal: RtcSignal,
    },
    /// A watched handle came online or went offline.
    Presence {
        /// Who.
        handle: Handle,
        /// Whether any of their devices is online.
        online: bool,
    },
    /// The roster of a room changed.
    Roster {
        /// The room.
        room: RoomId,
        /// Who is in it now.
        roster: Vec<RosterEntry>,
    },
    /// This device was removed from a room (by the owner).
    RemovedFromRoom {
        /// The room.
        room: RoomId,
    },
    /// WebRTC negotiation from the room's SFU.
    FromSfu {
        /// The room.
        room: RoomId,
        /// The payload.
        signal: RtcSignal,
    },
    /// For an SFU: a participant's negotiation.
    ToSfu {
        /// The room.
        room: RoomId,
        /// From whom.
        from: DeviceAddr,
        /// The participant's MLS leaf (the sender index its frames must carry).
        leaf: u32,
        /// The payload.
        signal: RtcSignal,
    },
    /// For an SFU: a participant left or was removed; stop forwarding to and from it.
    SfuParticipantGone {
        /// The room.
        room: RoomId,
        /// Who.
        device: DeviceAddr,
    },
    /// The room's SFU says this participant speaks now. A hint for the UI: the SFU sees
    /// only audio levels, and is not trusted for content.
    ActiveSpeaker {
        /// The room.
        room: RoomId,
        /// Who.
        device: DeviceAddr,
    },
    /// A claim left this device with few one-use KeyPackages: upload more.
    KeyPackagesLow {
        /// How many are left.
        remaining: u32,
    },
}

/// Messages stored for a device until it acknowledges them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Stored {
    /// An MLS handshake message from the delivery service.
    Mls {
        /// The group.
        group: Vec<u8>,
        /// Commit, Welcome or Proposal.
        kind: MlsKind,
        /// The epoch it was made in.
        epoch: u64,
        /// Who sent it (for the service's own Remove proposals: the device removed).
        from: DeviceAddr,
        /// The MLS message.
        data: Vec<u8>,
    },
    /// An invitation to a room.
    RoomInvite {
        /// The room.
        room: RoomId,
        /// Who invited.
        from: Handle,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode};

    #[test]
    fn messages_roundtrip() {
        let h = Handle::parse("@alice").expect("handle");
        let msgs = vec![
            ClientMsg::Hello {
                version: 1,
                agent: "test".into(),
            },
            ClientMsg::Request {
                id: 7,
                body: Request::Commit {
                    group: vec![1; 16],
                    epoch: 3,
                    commit: vec![9; 300],
                    welcome: Some(vec![8; 500]),
                    group_info: None,
                    added: vec![AddedMember {
                        device: DeviceAddr {
                            handle: h.clone(),
                            device: 5,
                        },
                        leaf: 2,
                    }],
                    removed: vec![1],
                },
            },
            ClientMsg::Ack { seq: 99 },
        ];
        for m in msgs {
            let bytes = encode(&m).expect("encode");
            assert_eq!(decode::<ClientMsg>(&bytes).expect("decode"), m);
        }
        let s = ServerMsg::Response {
            id: 1,
            result: Err(ErrorBody::new(
                ErrorCode::StaleEpoch { current: 4 },
                "stale",
            )),
        };
        assert_eq!(
            decode::<ServerMsg>(&encode(&s).expect("encode")).expect("decode"),
            s
        );
    }

    #[test]
    fn an_invalid_handle_does_not_decode() {
        // A Lookup whose handle string was tampered with into an invalid one.
        let good = encode(&Request::Lookup {
            handle: Handle::parse("@abc").expect("handle"),
        })
        .expect("encode");
        let mut bad = good.clone();
        let at = bad.iter().position(|b| *b == b'a').expect("a");
        bad[at] = b'-';
        assert!(decode::<Request>(&bad).is_err());
    }
}
