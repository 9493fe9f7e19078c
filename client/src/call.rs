//! A one-to-one call, end to end: signaling (invite, accept, relay), an MLS group of two
//! (group id = call id) whose epoch keys SFrame, the WebRTC transport, and the media:
//! audio (microphone or synthetic source → Opus → stamp → SFrame → RTP; RTP → SFrame →
//! jitter buffer → Opus or FEC/PLC → speaker or nowhere) and video (camera or synthetic
//! pattern → H.264 → SFrame → per-frame RTP; reassembly → SFrame → H.264, held back after
//! loss until a keyframe). While it runs, the call follows the send-side bandwidth
//! estimate, answers keyframe requests, and can move to new MLS epochs (new keys).
//!
//! A frame that fails to decrypt never reaches the decoder; it is counted per sender.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use ed25519_dalek::SigningKey;
use sotto_media::{
    ContextId,
    jitter::{JitterBuffer, JitterConfig, Playout},
    keys::{CallKeys, KeyConfig},
    payload::{self, Stamp, WallClock},
    synth::{ArrivalLog, AudioSignal, AudioSource, PatternSource, SAMPLE_RATE, estimate_frequency},
};
use sotto_proto::{
    CallId, DeviceAddr, DeviceId, EndReason, ErrorCode, Event, Handle, MlsKind, Request, Response,
    RoomId, RtcSignal, Stored,
};
use sotto_wire::{
    rtp_ext::AudioLevel,
    rtp_sframe::{AssemblerLimits, Descriptor, FrameAssembler},
};
use tokio::sync::mpsc;
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::relayed::Parties;
use crate::{
    bitrate,
    codec::{
        CodecError,
        audio::{AudioDecoder, AudioEncoder},
        video::{VideoDecoder, VideoEncoder, is_keyframe},
    },
    devices::{
        DeviceError,
        audio::{Microphone, Speaker},
        camera::Camera,
    },
    inbox::{Inbox, Owner, owner},
    mls::{CallGroup, GroupEvent, MemberCredential, MlsDevice, MlsError},
    pipeline::recv::TimestampUnwrap,
    profile::{Profile, ProfileError},
    signaling::{ClientError, Incoming, Pin, SignalingClient},
    transport::{Transport, TransportConfig, TransportError, TransportEvent},
    verify,
};

/// Why a call could not be placed or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// Signaling failed or refused (busy, offline, not found...).
    #[error(transparent)]
    Signaling(#[from] ClientError),
    /// MLS setup failed.
    #[error(transparent)]
    Mls(#[from] MlsError),
    /// Keys could not be derived.
    #[error(
        "the media keys could not be derived ({0}): this is a bug, please report it with the log"
    )]
    Keys(String),
    /// The media transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A codec failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The peer's identity key is not the one pinned (or the profile failed).
    #[error(transparent)]
    Contact(#[from] ProfileError),
    /// A requested microphone, speaker or camera cannot be used.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A room call could not go on; the text says what happened and what to do.
    #[error("{0}")]
    Room(String),
    /// The peer or server broke the call protocol, or a step timed out.
    #[error(
        "the call could not be set up ({0}): check that both sides are online and can reach each other (behind a NAT, pass --stun), then try again"
    )]
    Setup(String),
    /// A member's MLS credential does not carry the identity key of the account it names
    /// (the directory's key for the handle): someone, perhaps the server, is substituting
    /// keys. The call was refused before any media key was derived.
    #[error(
        "the key presented for {handle} is not {handle}'s identity key ({reason}); someone may be \
         substituting keys, so the call was refused"
    )]
    KeyMismatch {
        /// Whose credential did not check out.
        handle: String,
        /// What did not match.
        reason: String,
    },
    /// The peer refused the call because a credential it was shown did not check out.
    #[error(
        "{peer} refused the call because the keys it was given did not match the accounts they \
         name; someone may be substituting keys"
    )]
    PeerSawKeyMismatch {
        /// Who refused.
        peer: DeviceAddr,
    },
}

fn keys_err(e: impl std::fmt::Display) -> CallError {
    CallError::Keys(e.to_string())
}

/// How to run a call.
#[derive(Clone, Debug)]
pub struct CallOptions {
    /// Hang up after this long (from media start); `None` waits for the peer.
    pub duration: Option<Duration>,
    /// What the synthetic microphone plays (when `microphone` is `None`).
    pub audio: AudioSignal,
    /// Capture from this microphone (a cpal device name, or `default`) instead of the
    /// synthetic signal.
    pub microphone: Option<String>,
    /// Play what the peer says on this speaker (a cpal device name, or `default`);
    /// `None` decodes and measures without playing (headless).
    pub speaker: Option<String>,
    /// Send this camera's picture (`default`, `N`, `/dev/videoN` or its name) instead of
    /// the synthetic pattern, when video is on.
    pub camera: Option<String>,
    /// Audio frame length in ms (20, or 10).
    pub frame_ms: u32,
    /// Media transport settings.
    pub transport: TransportConfig,
    /// How long setup may take before giving up.
    pub setup_timeout: Duration,
    /// Where to send a status snapshot about once a second (for a live status line).
    pub status: Option<mpsc::UnboundedSender<CallStatus>>,
    /// Hang up when this turns `true` (Ctrl-C in the CLI).
    pub hangup: Option<tokio::sync::watch::Receiver<bool>>,
    /// Send and receive video (synthetic moving pattern) too.
    pub video: Option<VideoOptions>,
    /// Commit an MLS self-update this often during the call (new epoch, new media keys:
    /// post-compromise security for long calls); `None` never.
    pub rekey_every: Option<Duration>,
    /// Test hook: drop inbound video packets with these indices (0-based, in arrival
    /// order) before reassembly, as a burst of loss NACK could not repair.
    #[doc(hidden)]
    pub test_drop_video: Option<std::ops::Range<u64>>,
    /// Test hook: derive media keys from a group of our own instead of the call's, to
    /// prove that a client with the wrong MLS state decodes nothing.
    #[doc(hidden)]
    pub test_wrong_keys: bool,
    /// Put a capture stamp (frame id and capture time) inside each encrypted frame, so
    /// the receiver can measure capture-to-playout latency. For benches and tests only:
    /// it costs 17 bytes a frame and shows the peer our clock, so calls go without it.
    pub stamps: bool,
    /// When the call goes through the SFU instead of peer to peer.
    pub relay: RelayPolicy,
}

/// When a one-to-one call goes through the SFU (a room of its two parties) instead of peer
/// to peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayPolicy {
    /// Peer to peer only: a call whose direct path fails ends.
    Never,
    /// Peer to peer first; if media has not connected this long after the answer, the
    /// caller moves the call to the SFU (the callee follows).
    Fallback(Duration),
    /// Through the SFU from the start: neither side learns the other's address. A callee
    /// with this policy asks for the relay as it answers.
    Always,
}

/// How long a direct path may take to connect before the call falls back to the relay.
pub const RELAY_FALLBACK_AFTER: Duration = Duration::from_secs(4);

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            duration: Some(Duration::from_secs(5)),
            audio: AudioSignal::Tone { hz: 440.0 },
            microphone: None,
            speaker: None,
            camera: None,
            frame_ms: 20,
            transport: TransportConfig::default(),
            setup_timeout: Duration::from_secs(20),
            test_wrong_keys: false,
            video: None,
            rekey_every: None,
            test_drop_video: None,
            status: None,
            hangup: None,
            stamps: false,
            relay: RelayPolicy::Fallback(RELAY_FALLBACK_AFTER),
        }
    }
}

/// How the peer-to-peer media phase of a call ended.
enum Media {
    /// The call is over.
    Done(CallReport),
    /// The call moves to this relay room: the direct path did not connect.
    Relay(RoomId, CallReport),
}

/// A live snapshot of a call.
#[derive(Clone, Debug, Default)]
pub struct CallStatus {
    /// Whether media is connected.
    pub connected: bool,
    /// The peer device.
    pub peer: Option<DeviceAddr>,
    /// The MLS verification code (changes with every epoch).
    pub verification_code: String,
    /// The 1:1 safety number (both identity keys; stable across calls).
    pub safety_number: String,
    /// Bits per second sent over the last second (SFrame payloads).
    pub send_bps: u64,
    /// Bits per second received over the last second.
    pub recv_bps: u64,
    /// ICE round-trip time.
    pub rtt: Option<Duration>,
    /// Audio frames played so far.
    pub audio_played: u64,
    /// Audio slots concealed so far.
    pub concealed: u64,
    /// Frames rejected by decryption so far.
    pub decrypt_failures: u64,
    /// Video frames decoded so far.
    pub video_decoded: u64,
    /// The fraction of our packets the peer reports lost (0.0–1.0).
    pub loss: f32,
    /// The send-side bandwidth estimate, bits per second.
    pub estimate_bps: Option<u64>,
    /// The MLS epoch whose keys protect the media.
    pub epoch: u64,
    /// The call goes through the SFU (neither side sees the other's address).
    pub relayed: bool,
}

/// Video settings of a call.
#[derive(Clone, Copy, Debug)]
pub struct VideoOptions {
    /// Picture width (even, at least 384 for the pattern id).
    pub width: usize,
    /// Picture height (even).
    pub height: usize,
    /// Frames per second.
    pub fps: u32,
    /// Encoder bitrate, bits per second.
    pub bitrate: u32,
}

impl Default for VideoOptions {
    fn default() -> Self {
        Self {
            width: 640,
            height: 360,
            fps: 30,
            bitrate: 800_000,
        }
    }
}

/// What happened in a call, for status lines, tests and the bench.
#[derive(Clone, Debug, Default)]
pub struct CallReport {
    /// The call id.
    pub call: Option<CallId>,
    /// The peer device.
    pub peer: Option<DeviceAddr>,
    /// How it ended (as the server reported it).
    pub ended: Option<EndReason>,
    /// The 1:1 safety number (both identity keys).
    pub safety_number: String,
    /// The MLS epoch verification code.
    pub verification_code: String,
    /// Audio frames we encoded and sent (DTX-suppressed frames excluded).
    pub audio_sent: u64,
    /// Audio frames we received, decrypted and played.
    pub audio_played: u64,
    /// Slots concealed (FEC or PLC).
    pub audio_concealed: u64,
    /// Slots recovered from FEC data.
    pub audio_fec: u64,
    /// Frames that failed to decrypt, by claimed sender leaf (never decoded).
    pub decrypt_failures: BTreeMap<u32, u64>,
    /// Capture-to-playout latency of played frames (same machine clock).
    pub latency: ArrivalLog,
    /// Video frames we encoded and sent.
    pub video_sent: u64,
    /// Video frames we received, decrypted and decoded.
    pub video_decoded: u64,
    /// Keyframes we sent.
    pub video_keyframes: u64,
    /// Decoded frame ids (from the pattern) and capture-to-decode latency.
    pub video: ArrivalLog,
    /// Decoded frames whose pattern id disagreed with their stamp (corruption).
    pub video_mismatches: u64,
    /// Dominant frequency of what we played (after the first half second).
    pub received_hz: Option<f64>,
    /// ICE round-trip time at the end.
    pub rtt: Option<Duration>,
    /// Time from invite (or incoming call) to the first played frame.
    pub setup_time: Option<Duration>,
    /// MLS epoch changes during the call (self-updates, ours or the peer's).
    pub epoch_changes: u64,
    /// Keyframes sent as the first video after an epoch change.
    pub epoch_keyframes: u64,
    /// Keyframe requests (PLI/FIR) the peer sent us.
    pub keyframe_requests_received: u64,
    /// Keyframes our encoder was told to make (on requests and epoch changes).
    pub video_keyframes_forced: u64,
    /// Keyframe requests (PLI) we sent the peer.
    pub keyframe_requests_sent: u64,
    /// Received video frames not decoded while waiting for a keyframe after loss.
    pub video_skipped: u64,
    /// The last send-side bandwidth estimate, bits per second.
    pub estimate_bps: Option<u64>,
    /// How many times the estimate changed.
    pub estimate_updates: u64,
    /// The Opus target bitrate at the end (it follows the estimate).
    pub audio_bitrate: u32,
    /// Packets the peer retransmitted to us after a NACK (RTX for video).
    pub retransmissions_received: u64,
    /// Lowest Opus target bitrate used during the call.
    pub audio_bitrate_min: u32,
    /// Times we rejoined the call's group by external commit after a commit we could not
    /// process.
    pub rejoins: u64,
    /// The video encoder's target bitrate at the end.
    pub video_bitrate: u32,
    /// The call went through the SFU (`--relay`, or the fallback when the direct path
    /// did not connect).
    pub relayed: bool,
    /// Relayed: the addresses the SFU's answer named, the only ones media went to.
    pub remote_addrs: Vec<std::net::IpAddr>,
    /// Relayed: the addresses media came from.
    pub media_from: Vec<std::net::IpAddr>,
}

/// A logged-in device able to place and take calls.
pub struct Endpoint {
    /// The account.
    pub handle: Handle,
    /// This device.
    pub device: DeviceId,
    pub(crate) identity: SigningKey,
    pub(crate) signaling: SignalingClient,
    pub(crate) mls: MlsDevice,
    /// Events read ahead (while checking a call was still ringing), handled first.
    pub(crate) backlog: std::collections::VecDeque<Event>,
    /// Events that arrived during a call but are not the call's (a roster change, a
    /// presence update): they go back into the backlog when the call ends.
    pub(crate) later: std::collections::VecDeque<Event>,
    /// Deliveries that arrived for a part of the client that has not handled them yet.
    pub(crate) inbox: Inbox,
    /// Pinned contacts (and persistent MLS state); `None` for ephemeral endpoints.
    pub(crate) profile: Option<Profile>,
}

/// One-use KeyPackages a device keeps on the server; the server says when claims have
/// taken it below its low-water mark, and the device tops it up to this again.
pub const KEY_PACKAGE_TARGET: usize = 16;

/// What handling one of the call group's handshake messages did.
enum Handshake {
    /// It was applied to the group.
    Applied(GroupEvent),
    /// It did not apply (stale, or not for this epoch) and changed nothing.
    Ignored,
    /// It could not be processed, so we rejoined the group: a new epoch, maybe a new leaf.
    Rejoined,
}

/// What a wait in the endpoint produced.
pub(crate) enum Arrival {
    /// An event.
    Event(Event),
    /// A delivery the waiter asked for; acknowledge `seq` once handled.
    Delivery(u64, Stored),
}

impl Endpoint {
    /// An ephemeral endpoint (state in memory, no pinned contacts): connects to the
    /// signaling server, registers `handle` if new (else logs in), and publishes
    /// KeyPackages so others can add this device to calls.
    pub async fn connect(
        server: SocketAddr,
        pin: &Pin,
        handle: Handle,
        identity: SigningKey,
        device: DeviceId,
    ) -> Result<Self, CallError> {
        let mls = MlsDevice::with_identity(handle.as_str(), &identity, None)?;
        Self::start(server, pin, handle, identity, device, mls, None).await
    }

    /// An endpoint on a profile: its identity key and device id, MLS state in its
    /// database, and contacts pinned on first use (a changed key is refused).
    pub async fn open(
        server: SocketAddr,
        pin: &Pin,
        handle: Handle,
        profile: Profile,
    ) -> Result<Self, CallError> {
        let identity = profile.identity().clone();
        let mls = MlsDevice::with_identity(handle.as_str(), &identity, Some(&profile.mls_db()))?;
        let device = profile.device();
        Self::start(server, pin, handle, identity, device, mls, Some(profile)).await
    }

    async fn start(
        server: SocketAddr,
        pin: &Pin,
        handle: Handle,
        identity: SigningKey,
        device: DeviceId,
        mls: MlsDevice,
        profile: Option<Profile>,
    ) -> Result<Self, CallError> {
        let signaling = SignalingClient::connect(server, pin).await?;
        let logged_in = match signaling.register(&handle, &identity, device).await {
            Ok(r) => r,
            Err(ClientError::Server(e)) if e.code == ErrorCode::HandleTaken => {
                signaling.login(&handle, &identity, device).await?
            }
            Err(e) => return Err(e.into()),
        };
        let mut mls = mls;
        if let Response::LoggedIn { service_key, .. } = &logged_in {
            mls.set_service_key(service_key);
        }
        let mut endpoint = Self {
            handle,
            device,
            identity,
            signaling,
            mls,
            backlog: std::collections::VecDeque::new(),
            later: std::collections::VecDeque::new(),
            inbox: Inbox::default(),
            profile,
        };
        endpoint.replace_key_packages().await?;
        Ok(endpoint)
    }

    /// Replaces this device's KeyPackages on the server with fresh ones (a full set and a
    /// new last-resort package): whatever was stored before may belong to private keys a
    /// restarted device no longer has.
    async fn replace_key_packages(&mut self) -> Result<(), CallError> {
        let packages = (0..KEY_PACKAGE_TARGET)
            .map(|_| self.mls.key_package())
            .collect::<Result<Vec<_>, _>>()?;
        self.signaling
            .request(Request::UploadKeyPackages {
                packages,
                last_resort: Some(self.mls.last_resort_key_package()?),
                replace: true,
            })
            .await?;
        Ok(())
    }

    /// Claims took our one-use KeyPackages below the server's low-water mark: top them up.
    async fn top_up_key_packages(&mut self, remaining: u32) -> Result<(), CallError> {
        let missing = KEY_PACKAGE_TARGET.saturating_sub(remaining as usize);
        if missing == 0 {
            return Ok(());
        }
        let packages = (0..missing)
            .map(|_| self.mls.key_package())
            .collect::<Result<Vec<_>, _>>()?;
        tracing::debug!(missing, "topping up KeyPackages");
        self.signaling
            .request(Request::UploadKeyPackages {
                packages,
                last_resort: None,
                replace: false,
            })
            .await?;
        Ok(())
    }

    /// Deliveries received and kept for a part of the client that has not handled them
    /// (a Welcome for another group, a room invitation...).
    pub fn inbox(&self) -> &Inbox {
        &self.inbox
    }

    /// Takes the held deliveries that `want` accepts (after moving everything already
    /// received into the inbox), oldest first, for their owner. Nothing is acknowledged
    /// yet: the owner calls [`Self::handled`] for each once it has handled it, so a crash
    /// in between loses nothing (the server delivers it again at the next login).
    pub async fn take_deliveries(
        &mut self,
        want: impl FnMut(&Stored) -> bool,
    ) -> Result<Vec<(u64, Stored)>, CallError> {
        self.drain_arrived().await?;
        Ok(self.inbox.take_all(want))
    }

    /// The owner of delivery `seq` has handled it: the server may drop it.
    pub async fn handled(&mut self, seq: u64) -> Result<(), CallError> {
        Ok(self.signaling.ack(seq).await?)
    }

    /// Moves what has already arrived on the signaling connection into the inbox (and
    /// events into the backlog), without waiting.
    pub(crate) async fn drain_arrived(&mut self) -> Result<(), CallError> {
        while let Some(i) = self.signaling.try_next() {
            match i {
                Incoming::Event(e) => {
                    if let Some(e) = self.housekeeping(e).await {
                        self.backlog.push_back(e);
                    }
                }
                Incoming::Delivery { seq, item } => self.inbox.hold(seq, item),
                Incoming::Goodbye(e) => return Err(CallError::Signaling(ClientError::Server(e))),
            }
        }
        Ok(())
    }

    /// Handles the events no call owns (KeyPackage top-up); returns the others. A failed
    /// top-up is logged, never allowed to end a call (the last-resort package covers).
    async fn housekeeping(&mut self, e: Event) -> Option<Event> {
        match e {
            Event::KeyPackagesLow { remaining } => {
                if let Err(e) = self.top_up_key_packages(remaining).await {
                    tracing::warn!(error = %e, "could not top up KeyPackages");
                }
                None
            }
            other => Some(other),
        }
    }

    /// A call's group is over: acknowledge whatever is still held for it (the server
    /// deleted it too) and forget the group and its secrets.
    async fn forget_group(&mut self, group: Option<CallGroup>, id: &[u8]) {
        self.backlog.extend(self.later.drain(..));
        for (seq, _) in self
            .inbox
            .take_all(|s| matches!(owner(s), Owner::Group(g, _) if g == id))
        {
            let _ = self.signaling.ack(seq).await;
        }
        if let Some(mut g) = group
            && let Err(e) = g.delete(&self.mls)
        {
            tracing::warn!(error = %e, "could not delete a finished call's group");
        }
    }

    /// The user compared safety numbers with `handle` out of band: pin its current key as
    /// verified (replacing a changed one).
    pub async fn verify_contact(&mut self, handle: &Handle) -> Result<(), CallError> {
        let key = self.peer_key(handle).await?;
        match self.profile.as_mut() {
            Some(p) => Ok(p.verify_contact(handle.as_str(), &key)?),
            None => Err(CallError::Setup(
                "this endpoint has no profile to pin contacts in".into(),
            )),
        }
    }

    /// The profile, if this endpoint has one.
    pub fn profile(&self) -> Option<&Profile> {
        self.profile.as_ref()
    }

    /// The profile, to record what it should remember (rooms, contacts).
    pub fn profile_mut(&mut self) -> Option<&mut Profile> {
        self.profile.as_mut()
    }

    /// Trust on first use: looks the peer's identity key up and checks it against the
    /// pinned one (pinning it if new). Ephemeral endpoints pin nothing.
    async fn check_peer(&mut self, handle: &Handle) -> Result<(), CallError> {
        if self.profile.is_none() {
            return Ok(());
        }
        let key = self.peer_key(handle).await?;
        if let Some(p) = self.profile.as_mut() {
            p.check_contact(handle.as_str(), &key)?;
        }
        Ok(())
    }

    /// The signaling connection (for presence, lookups...).
    pub fn signaling(&self) -> &SignalingClient {
        &self.signaling
    }

    async fn peer_key(&mut self, handle: &Handle) -> Result<Vec<u8>, CallError> {
        match self
            .signaling
            .request(Request::Lookup {
                handle: handle.clone(),
            })
            .await?
        {
            Response::Identity { identity_key, .. } => Ok(identity_key),
            _ => Err(CallError::Setup(
                "the server answered a directory lookup oddly".into(),
            )),
        }
    }

    /// Waits for the next event, or for a delivery that `want` accepts (held ones first).
    /// Deliveries it does not want are kept in the inbox for their owner.
    pub(crate) async fn next_arrival(
        &mut self,
        deadline: tokio::time::Instant,
        what: &str,
        mut want: impl FnMut(&Stored) -> bool,
    ) -> Result<Arrival, CallError> {
        if let Some((seq, item)) = self.inbox.take(&mut want) {
            return Ok(Arrival::Delivery(seq, item));
        }
        if let Some(e) = self.backlog.pop_front() {
            return Ok(Arrival::Event(e));
        }
        loop {
            let incoming = match tokio::time::timeout_at(deadline, self.signaling.next()).await {
                Ok(Some(i)) => i,
                Ok(None) => return Err(CallError::Setup("signaling connection closed".into())),
                Err(_) => return Err(CallError::Setup(format!("timed out waiting for {what}"))),
            };
            match incoming {
                Incoming::Event(e) => {
                    if let Some(e) = self.housekeeping(e).await {
                        return Ok(Arrival::Event(e));
                    }
                }
                Incoming::Delivery { seq, item } if want(&item) => {
                    return Ok(Arrival::Delivery(seq, item));
                }
                Incoming::Delivery { seq, item } => self.inbox.hold(seq, item),
                Incoming::Goodbye(e) => return Err(CallError::Signaling(ClientError::Server(e))),
            }
        }
    }

    /// Checks a member's credential before anything is decrypted under its keys: its
    /// identity must be a handle whose account key (from the directory) is the credential's
    /// signature key, and, on a profile, the key pinned for that contact (trust on first
    /// use). Our own handle must carry our own key.
    async fn check_member(&mut self, m: &MemberCredential) -> Result<Handle, CallError> {
        let shown = String::from_utf8_lossy(&m.identity).into_owned();
        let handle = std::str::from_utf8(&m.identity)
            .ok()
            .and_then(|s| Handle::parse(s).ok())
            .ok_or_else(|| CallError::KeyMismatch {
                handle: shown.clone(),
                reason: "the credential does not name a valid handle".into(),
            })?;
        if handle == self.handle {
            if m.signature_key != self.identity.verifying_key().to_bytes() {
                return Err(CallError::KeyMismatch {
                    handle: shown,
                    reason: "a member claims to be us with another key".into(),
                });
            }
            return Ok(handle);
        }
        let directory = self.peer_key(&handle).await?;
        if m.signature_key != directory {
            return Err(CallError::KeyMismatch {
                handle: shown,
                reason: format!(
                    "its credential carries key {}, the directory says {}",
                    crate::profile::key_fingerprint(&m.signature_key),
                    crate::profile::key_fingerprint(&directory)
                ),
            });
        }
        if let Some(p) = self.profile.as_mut() {
            p.check_contact(handle.as_str(), &m.signature_key)?;
        }
        Ok(handle)
    }

    /// Relays WebRTC negotiation to the peer. A call that has just ended makes the server
    /// answer `NotFound`: nothing is lost by dropping the signal, and the `CallEnded`
    /// event (already on its way, in order before that answer) says how it ended.
    async fn relay(&mut self, call: CallId, signal: RtcSignal) -> Result<(), CallError> {
        match self
            .signaling
            .request(Request::Relay { call, signal })
            .await
        {
            Err(ClientError::Server(e)) if e.code == ErrorCode::NotFound => {
                tracing::debug!(%call, "not relaying for a call that ended");
                Ok(())
            }
            r => r.map(|_| ()).map_err(CallError::from),
        }
    }

    /// Refuses a call whose keys did not check out: the peer hears
    /// [`EndReason::KeyMismatch`], and `e` is returned.
    async fn refuse_keys(&mut self, call: CallId, e: CallError) -> CallError {
        tracing::warn!(%call, error = %e, "refusing a call: a credential did not check out");
        let _ = self.signaling.request(Request::KeyMismatch { call }).await;
        e
    }

    /// Calls `to`, runs the call, and returns its report.
    pub async fn call(&mut self, to: &Handle, opts: &CallOptions) -> Result<CallReport, CallError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + opts.setup_timeout;
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| CallError::Setup(e.to_string()))?;
        let call = CallId(id);
        let mut report = CallReport {
            call: Some(call),
            ..CallReport::default()
        };
        self.check_peer(to).await?;
        let devices = MediaDevices::open(opts)?;
        self.signaling
            .request(Request::Invite {
                call,
                to: to.clone(),
            })
            .await?;
        tracing::info!(%call, "ringing");
        let peer = loop {
            match self.next_arrival(deadline, "an answer", |_| false).await? {
                Arrival::Event(Event::CallAccepted { call: c, by }) if c == call => break by,
                Arrival::Event(Event::CallEnded { call: c, reason }) if c == call => {
                    report.ended = Some(reason);
                    return Ok(report);
                }
                Arrival::Event(other) => self.later.push_back(other),
                Arrival::Delivery(..) => {}
            }
        };
        report.peer = Some(peer.clone());
        if opts.relay == RelayPolicy::Always {
            drop(devices);
            return self
                .relay_from_start(call, peer, true, opts, report, started)
                .await;
        }
        // Start the transport now so ICE runs while MLS is set up.
        let (transport, mut events) = Transport::new(
            &opts.transport,
            opts.video.is_some(),
            u32::from_be_bytes([id[0], id[1], id[2], id[3]]),
        )
        .await?;
        let offer = transport.create_offer().await?;
        self.relay(call, RtcSignal::Offer(offer)).await?;

        let package = match self
            .signaling
            .request(Request::ClaimKeyPackage {
                handle: peer.handle.clone(),
                device: Some(peer.device),
            })
            .await?
        {
            Response::KeyPackage { package, .. } => package,
            _ => return Err(CallError::Setup("the server answered a claim oddly".into())),
        };
        // The KeyPackage must be the callee's own: its credential names the callee and
        // carries the identity key the directory and our pins know. A server handing out a
        // package of its own is caught here, before anything is encrypted to it.
        let checked = match self.mls.key_package_credential(&package) {
            Ok(c) => self.check_member(&c).await.and_then(|h| {
                if h == peer.handle {
                    Ok(())
                } else {
                    Err(CallError::KeyMismatch {
                        handle: peer.handle.to_string(),
                        reason: format!("the KeyPackage handed out for it names {h}"),
                    })
                }
            }),
            Err(e) => Err(e.into()),
        };
        match checked {
            Ok(()) => {}
            Err(
                e @ (CallError::KeyMismatch { .. } | CallError::Contact(_) | CallError::Mls(_)),
            ) => {
                transport.close().await;
                return Err(self.refuse_keys(call, e).await);
            }
            Err(e) => {
                transport.close().await;
                let _ = self.signaling.request(Request::Hangup { call }).await;
                return Err(e);
            }
        }
        let mut group = self.mls.create_group_with_id(&call.0)?;
        self.signaling
            .request(Request::CreateGroup {
                group: call.0.to_vec(),
                group_info: group.group_info(&self.mls)?,
            })
            .await?;
        let commit = group.add(&self.mls, &[package])?;
        match self
            .signaling
            .request(commit.into_request(call.0.to_vec()))
            .await
        {
            Ok(_) => {
                group.merge_pending(&self.mls)?;
            }
            Err(e) => {
                group.discard_pending(&self.mls)?;
                self.forget_group(Some(group), &call.0).await;
                return Err(e.into());
            }
        }
        let fallback = match opts.relay {
            RelayPolicy::Fallback(after) => Some(after),
            RelayPolicy::Never | RelayPolicy::Always => None,
        };
        let media = self
            .run(
                call,
                group,
                transport,
                &mut events,
                peer.clone(),
                opts,
                devices,
                report,
                started,
                fallback,
            )
            .await?;
        self.after_media(call, peer, true, media, opts, started)
            .await
    }

    /// A call's peer-to-peer phase is over: done, or on to the relay.
    async fn after_media(
        &mut self,
        call: CallId,
        peer: DeviceAddr,
        caller: bool,
        media: Media,
        opts: &CallOptions,
        started: Instant,
    ) -> Result<CallReport, CallError> {
        match media {
            Media::Done(r) => Ok(r),
            Media::Relay(room, r) => {
                let pair = Parties { call, peer, caller };
                self.relayed(pair, room, opts, r, started).await
            }
        }
    }

    /// Waits up to `wait` for an incoming call that is still ringing; returns it without
    /// answering. Calls that already ended (their `CallEnded` queued behind them) are
    /// skipped.
    pub async fn next_call(&mut self, wait: Duration) -> Result<(CallId, DeviceAddr), CallError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Arrival::Event(Event::IncomingCall { call, from }) =
                self.next_arrival(deadline, "a call", |_| false).await?
                && self.still_ringing(call).await?
            {
                return Ok((call, from));
            }
        }
    }

    /// Whether `call`, just offered, still rings: its `CallEnded` may already be queued
    /// behind it (read ahead; it is dropped with the answer).
    pub(crate) async fn still_ringing(&mut self, call: CallId) -> Result<bool, CallError> {
        self.drain_arrived().await?;
        let before = self.backlog.len();
        self.backlog
            .retain(|e| !matches!(e, Event::CallEnded { call: c, .. } if *c == call));
        Ok(self.backlog.len() == before)
    }

    /// Declines a ringing call (it stops ringing on every device of ours).
    pub async fn decline(&mut self, call: CallId) -> Result<(), CallError> {
        self.signaling.request(Request::Decline { call }).await?;
        Ok(())
    }

    /// Waits for an incoming call, answers it, runs it, and returns its report.
    pub async fn answer(
        &mut self,
        opts: &CallOptions,
        wait: Duration,
    ) -> Result<CallReport, CallError> {
        let (call, from) = self.next_call(wait).await?;
        self.answer_call(call, from, opts).await
    }

    /// Answers a ringing call, runs it, and returns its report.
    pub async fn answer_call(
        &mut self,
        call: CallId,
        from: DeviceAddr,
        opts: &CallOptions,
    ) -> Result<CallReport, CallError> {
        let started = Instant::now();
        let mut report = CallReport {
            call: Some(call),
            peer: Some(from.clone()),
            ..CallReport::default()
        };
        if let Err(e) = self.check_peer(&from.handle).await {
            // Refuse to take a call from a changed identity; the caller hears Declined.
            let _ = self.signaling.request(Request::Decline { call }).await;
            return Err(e);
        }
        let devices = match MediaDevices::open(opts) {
            Ok(d) => d,
            Err(e) => {
                // Cannot take the call without the devices asked for: say no rather than
                // answer into silence.
                let _ = self.signaling.request(Request::Decline { call }).await;
                return Err(e);
            }
        };
        self.signaling.request(Request::Accept { call }).await?;
        if opts.relay == RelayPolicy::Always {
            // We show nobody our address: the call goes through the SFU from the start.
            drop(devices);
            return self
                .relay_from_start(call, from, false, opts, report, started)
                .await;
        }
        let (transport, mut events) = Transport::new(
            &opts.transport,
            opts.video.is_some(),
            u32::from_be_bytes([call.0[4], call.0[5], call.0[6], call.0[7]]),
        )
        .await?;
        let deadline = tokio::time::Instant::now() + opts.setup_timeout;
        let mut group = None;
        let mut answered = false;
        let welcome_for_call = |s: &Stored| owner(s) == Owner::Group(&call.0, MlsKind::Welcome);
        while group.is_none() || !answered {
            match self
                .next_arrival(deadline, "the call's Welcome and offer", welcome_for_call)
                .await?
            {
                Arrival::Delivery(seq, Stored::Mls { data, .. }) => {
                    match self.join_checked(&data, &from).await {
                        Ok(g) => group = Some(g),
                        Err(e @ (CallError::KeyMismatch { .. } | CallError::Contact(_))) => {
                            self.signaling.ack(seq).await?;
                            transport.close().await;
                            return Err(self.refuse_keys(call, e).await);
                        }
                        Err(e) => return Err(e),
                    }
                    self.signaling.ack(seq).await?;
                }
                Arrival::Delivery(..) => {}
                Arrival::Event(Event::Relayed {
                    call: c, signal, ..
                }) if c == call => match signal {
                    RtcSignal::Offer(sdp) => {
                        let answer = transport.accept_offer(sdp).await?;
                        self.relay(call, RtcSignal::Answer(answer)).await?;
                        answered = true;
                    }
                    RtcSignal::Candidate { candidate, mid } => {
                        transport.add_remote_candidate(candidate, mid).await?
                    }
                    RtcSignal::UseRoom { room } => {
                        // The caller carries the call through the SFU from the start.
                        transport.close().await;
                        self.forget_group(group, &call.0).await;
                        drop(devices);
                        let pair = Parties {
                            call,
                            peer: from,
                            caller: false,
                        };
                        return self.relayed(pair, room, opts, report, started).await;
                    }
                    _ => {}
                },
                Arrival::Event(Event::CallEnded { call: c, reason }) if c == call => {
                    transport.close().await;
                    self.forget_group(group, &call.0).await;
                    if reason == EndReason::KeyMismatch {
                        return Err(CallError::PeerSawKeyMismatch { peer: from });
                    }
                    report.ended = Some(reason);
                    return Ok(report);
                }
                Arrival::Event(other) => self.later.push_back(other),
            }
        }
        let group = group.ok_or_else(|| CallError::Setup("no Welcome".into()))?;
        // The caller decides on a fallback to the relay; we follow when told.
        let media = self
            .run(
                call,
                group,
                transport,
                &mut events,
                from.clone(),
                opts,
                devices,
                report,
                started,
                None,
            )
            .await?;
        self.after_media(call, from, false, media, opts, started)
            .await
    }

    /// Joins a call's group from its Welcome only if the group is exactly the two of us:
    /// the caller `from`, whose credential checks out against the directory and our pins,
    /// and this device with its own key. Nothing is stored or decrypted otherwise.
    async fn join_checked(
        &mut self,
        welcome: &[u8],
        from: &DeviceAddr,
    ) -> Result<CallGroup, CallError> {
        let staged = self.mls.stage_join(welcome)?;
        let members = staged.members();
        if members.len() != 2 {
            return Err(CallError::KeyMismatch {
                handle: from.handle.to_string(),
                reason: format!("the call's group has {} members, not 2", members.len()),
            });
        }
        let mut caller_seen = false;
        for m in &members {
            let handle = self.check_member(m).await?;
            caller_seen |= handle == from.handle;
        }
        if !caller_seen {
            return Err(CallError::KeyMismatch {
                handle: from.handle.to_string(),
                reason: "the call's group does not contain the caller".into(),
            });
        }
        Ok(staged.join(&self.mls)?)
    }

    /// The media phase, shared by both sides; the call's group is forgotten when it ends.
    /// With `fallback`, a direct path that has not connected that long after the answer
    /// moves the call to the relay.
    #[allow(clippy::too_many_arguments)]
    async fn run(
        &mut self,
        call: CallId,
        mut group: CallGroup,
        transport: Transport,
        events: &mut mpsc::Receiver<TransportEvent>,
        peer: DeviceAddr,
        opts: &CallOptions,
        devices: MediaDevices,
        report: CallReport,
        started: Instant,
        fallback: Option<Duration>,
    ) -> Result<Media, CallError> {
        let result = self
            .run_media(
                call, &mut group, transport, events, peer, opts, devices, report, started, fallback,
            )
            .await;
        if matches!(result, Ok(Media::Relay(..))) {
            // The call goes on in its room with the same group (the room's id is the
            // call's): it is kept, and so is whatever is queued for it.
            self.backlog.extend(self.later.drain(..));
        } else {
            self.forget_group(Some(group), &call.0).await;
        }
        result
    }

    /// The 1:1 safety number, from the two credentials inside the call's group (which
    /// were checked against the directory and the pins when they entered it), not from a
    /// directory lookup: a server that swapped KeyPackages cannot make it match.
    fn safety_number(&self, group: &CallGroup, peer: &DeviceAddr) -> Result<String, CallError> {
        let own = group.own_index();
        let members = group.members();
        let ours = members.iter().find(|m| m.leaf == own);
        let theirs = members
            .iter()
            .find(|m| m.leaf != own && m.identity == peer.handle.as_str().as_bytes());
        match (ours, theirs) {
            (Some(o), Some(t)) => Ok(verify::safety_number(
                self.handle.as_str(),
                &o.signature_key,
                peer.handle.as_str(),
                &t.signature_key,
            )),
            _ => Err(CallError::Setup(
                "the call's group does not hold both parties".into(),
            )),
        }
    }

    /// Stages a commit or proposal of the call's group from the peer and applies it only
    /// if every credential it brings in checks out; a bad one refuses the call.
    ///
    /// A commit of our current epoch that the delivery service accepted but we cannot
    /// process (it checked what it could; the tags it cannot check failed for us) means
    /// our copy of the group is behind for good: we report it and rejoin by external
    /// commit ([`Self::resync`]). Anything else that does not stage leaves the group as
    /// it was.
    async fn process_handshake(
        &mut self,
        call: CallId,
        group: &mut CallGroup,
        message: (MlsKind, u64, &[u8]),
    ) -> Result<Handshake, CallError> {
        let (kind, epoch, data) = message;
        let staged = match group.stage(&self.mls, data) {
            Ok(s) => s,
            Err(e) if kind == MlsKind::Commit && epoch == group.epoch() => {
                tracing::warn!(%call, error = %e, "an accepted commit does not process: rejoining");
                self.resync(call, group, epoch, e.to_string()).await?;
                return Ok(Handshake::Rejoined);
            }
            Err(e) => {
                tracing::warn!(%call, error = %e, "ignoring a handshake message");
                return Ok(Handshake::Ignored);
            }
        };
        if matches!(staged, crate::mls::StagedMessage::Proposal(_)) {
            // A one-to-one call has no use for standalone proposals; storing one would make
            // our next commit cover it.
            tracing::warn!(%call, "ignoring a proposal in a one-to-one call");
            return Ok(Handshake::Ignored);
        }
        let known = group.members();
        for c in staged.new_credentials() {
            let same_as_member = known
                .iter()
                .any(|m| m.identity == c.identity && m.signature_key == c.signature_key);
            if !same_as_member {
                let e = match self.check_member(&c).await {
                    Ok(h) => CallError::KeyMismatch {
                        handle: h.to_string(),
                        reason: "a commit tried to bring a new member into a one-to-one call"
                            .into(),
                    },
                    Err(e) => e,
                };
                return Err(self.refuse_keys(call, e).await);
            }
        }
        Ok(Handshake::Applied(group.apply(&self.mls, staged)?))
    }

    /// The group we are about to rejoin (from a GroupInfo that came through the server)
    /// must be this call's and hold exactly our old leaf and the very peer we had, with the
    /// key we had checked for it, and that peer must still check out.
    async fn check_rejoined(
        &mut self,
        fresh: &CallGroup,
        id: &[u8],
        peer: &MemberCredential,
    ) -> Result<(), CallError> {
        let mismatch = |reason: &str| CallError::KeyMismatch {
            handle: String::from_utf8_lossy(&peer.identity).into_owned(),
            reason: reason.into(),
        };
        if fresh.group_id() != id {
            return Err(mismatch(
                "the GroupInfo offered to rejoin is another group's",
            ));
        }
        let members = fresh.members();
        let ours = self.identity.verifying_key().to_bytes();
        let same_peer = members
            .iter()
            .filter(|m| m.identity == peer.identity && m.signature_key == peer.signature_key)
            .count();
        let us = members
            .iter()
            .filter(|m| m.identity == self.handle.as_str().as_bytes() && m.signature_key == ours)
            .count();
        if members.len() != 2 || same_peer != 1 || us != 1 {
            return Err(mismatch(
                "the group offered to rejoin is not the two of us with the keys we checked",
            ));
        }
        for m in &members {
            self.check_member(m).await?;
        }
        Ok(())
    }

    /// The defined recovery when our copy of the group cannot follow an accepted commit:
    /// report it, fetch the latest member-signed GroupInfo the delivery service keeps,
    /// check that it holds exactly the two of us with keys that check out (it came through
    /// the server), and rejoin by external commit, replacing our own leaf.
    async fn resync(
        &mut self,
        call: CallId,
        group: &mut CallGroup,
        epoch: u64,
        reason: String,
    ) -> Result<(), CallError> {
        let id = call.0.to_vec();
        // Who the peer is, as our checked copy of the group knew it: the rejoined group
        // must hold exactly that member again, with that key.
        let own = group.own_index();
        let peer = group
            .members()
            .into_iter()
            .find(|m| m.leaf != own)
            .ok_or_else(|| CallError::Setup("the call's group has no peer".into()))?;
        let _ = self
            .signaling
            .request(Request::ReportCommit {
                group: id.clone(),
                epoch,
                reason,
            })
            .await;
        group.delete(&self.mls)?;
        // Another commit may win the epoch we rejoin in: then rejoin from the newer one.
        for _ in 0..3 {
            let Response::GroupInfo { group_info, .. } = self
                .signaling
                .request(Request::GroupInfo { group: id.clone() })
                .await?
            else {
                return Err(CallError::Setup(
                    "the server answered a GroupInfo request oddly".into(),
                ));
            };
            let (mut fresh, commit) = self.mls.rejoin(&group_info)?;
            if let Err(e) = self.check_rejoined(&fresh, &id, &peer).await {
                fresh.delete(&self.mls)?;
                return Err(self.refuse_keys(call, e).await);
            }
            match self
                .signaling
                .request(commit.into_request(id.clone()))
                .await
            {
                Ok(_) => {
                    fresh.merge_pending(&self.mls)?;
                    *group = fresh;
                    tracing::info!(%call, epoch = group.epoch(), "rejoined the call's group");
                    return Ok(());
                }
                Err(ClientError::Server(e)) if matches!(e.code, ErrorCode::StaleEpoch { .. }) => {
                    fresh.delete(&self.mls)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(CallError::Setup(
            "could not rejoin the call's group: its epoch kept moving".into(),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_media(
        &mut self,
        call: CallId,
        group: &mut CallGroup,
        transport: Transport,
        events: &mut mpsc::Receiver<TransportEvent>,
        peer: DeviceAddr,
        opts: &CallOptions,
        mut devices: MediaDevices,
        mut report: CallReport,
        started: Instant,
        fallback: Option<Duration>,
    ) -> Result<Media, CallError> {
        report.safety_number = self.safety_number(group, &peer)?;
        report.verification_code = verify::group_code(&group.epoch_authenticator());
        let mut keys =
            CallKeys::new(group.own_index(), self.media_keys(group, opts)?).map_err(keys_err)?;

        let frame = Duration::from_millis(u64::from(opts.frame_ms));
        let samples = (SAMPLE_RATE / 1000 * opts.frame_ms) as usize;
        let mut source = AudioSource::new(opts.audio, opts.frame_ms);
        let mut encoder = AudioEncoder::new()?;
        let mut decoder = AudioDecoder::new(samples)?;
        let jitter_for = |samples: usize| {
            let frame = Duration::from_micros(samples as u64 * 1_000_000 / u64::from(SAMPLE_RATE));
            JitterBuffer::new(JitterConfig {
                frame,
                min_delay: frame,
                ..JitterConfig::default()
            })
        };
        let mut jitter = jitter_for(samples);
        // The peer's frame length (10 or 20 ms, its choice), learned from its first packet.
        let mut rx_samples: Option<usize> = None;
        let clock = WallClock::new();
        let mut ts_unwrap = TimestampUnwrap::default();
        let mut rtp_ts: u32 = u32::from_be_bytes([call.0[8], call.0[9], call.0[10], call.0[11]]);
        let mut connected = false;
        let mut played_pcm: Vec<i16> = Vec::new();
        let (mut plain, mut wire, mut pbuf, mut pcm) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut tick = tokio::time::interval(frame);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let (mut video, mut decoded_rx) = match opts.video {
            Some(o) => {
                let (v, rx) = VideoState::new(o)?;
                (Some(v), Some(rx))
            }
            None => (None, None),
        };
        let mut encoded_rx: Option<mpsc::Receiver<EncodedFrame>> = None;
        let fps = opts.video.map_or(1, |v| v.fps.max(1));
        let mut hangup_at: Option<tokio::time::Instant> = None;
        let mut status_tick = tokio::time::interval(Duration::from_secs(1));
        let (mut sent_bytes, mut recv_bytes) = (0u64, 0u64);
        let mut external_hangup = opts.hangup.clone();
        let setup_deadline = tokio::time::Instant::now() + opts.setup_timeout;
        let mut fallback_at = fallback.map(|d| tokio::time::Instant::now() + d);
        let mut hung_up = false;
        let mut rekey_at: Option<tokio::time::Instant> = None;
        let mut video_packets = 0u64;
        let mut keyframe_requests_seen = 0u64;
        let mut estimate_applied = None;
        let mut mic_frames = 0u64;
        report.audio_bitrate = crate::codec::audio::DEFAULT_BITRATE.unsigned_abs();
        report.audio_bitrate_min = report.audio_bitrate;
        report.video_bitrate = opts.video.map_or(0, |v| v.bitrate);

        loop {
            let jitter_due = jitter.poll_timeout().map(tokio::time::Instant::from_std);
            let video_due = video
                .as_ref()
                .and_then(|v| v.assembler.poll_timeout())
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                _ = tick.tick() => {
                    if !connected {
                        if tokio::time::Instant::now() > setup_deadline {
                            let _ = self.signaling.request(Request::Hangup { call }).await;
                            transport.close().await;
                            return Err(CallError::Setup("media did not connect in time".into()));
                        }
                        if fallback_at.is_some_and(|t| tokio::time::Instant::now() >= t) {
                            fallback_at = None;
                            match self.request_relay(call).await {
                                Ok(room) => {
                                    tracing::info!(%call, "the direct path did not connect: falling back to the relay");
                                    transport.close().await;
                                    return Ok(Media::Relay(room, report));
                                }
                                Err(e) => tracing::warn!(%call, error = %e, "the direct path is slow and the relay is not available"),
                            }
                        }
                        continue;
                    }
                    let now = Instant::now();
                    keys.handle_timeout(now);
                    // What the peer said about our media: keyframe requests and the estimate.
                    let fb = transport.feedback();
                    let requests = fb.keyframe_requests();
                    if requests > keyframe_requests_seen {
                        report.keyframe_requests_received += requests - keyframe_requests_seen;
                        keyframe_requests_seen = requests;
                        if let Some(v) = video.as_ref() {
                            v.control.force_keyframe.store(true, Ordering::Relaxed);
                        }
                    }
                    if let Some(est) = fb.target_bitrate() && estimate_applied != Some(est) {
                        estimate_applied = Some(est);
                        let split = bitrate::split(est, opts.video.map(|v| v.bitrate));
                        encoder.set_bitrate(i32::try_from(split.audio).unwrap_or(i32::MAX))?;
                        report.audio_bitrate = split.audio;
                        report.audio_bitrate_min = report.audio_bitrate_min.min(split.audio);
                        if let Some(v) = video.as_ref() {
                            v.control.bitrate.store(split.video, Ordering::Relaxed);
                            report.video_bitrate = split.video;
                        }
                    }
                    // A microphone delivers on its own clock: take whatever frames it has
                    // (usually one); the synthetic source makes exactly one per tick.
                    let frames: Vec<(u64, Instant, Vec<i16>)> = match devices.microphone.as_ref() {
                        Some(mic) => mic.take_frames().into_iter().map(|f| {
                            mic_frames += 1;
                            (mic_frames, f.captured, f.samples)
                        }).collect(),
                        None => {
                            let f = source.next_frame(now);
                            vec![(f.id, f.captured, f.samples)]
                        }
                    };
                    for (id, captured, pcm_in) in frames {
                        if let Some(frame) = encoder.encode(&pcm_in)? {
                            // RFC 6464: the level of what was captured, and the encoder's own
                            // speech decision (so an SFU's speaker detection is not blind).
                            let level = AudioLevel::of_samples(&pcm_in, frame.voice);
                            let stamp = opts.stamps.then(|| Stamp { id, captured_us: clock.micros(captured) });
                            payload::encode(stamp, frame.data, &mut pbuf);
                            keys.encrypt(ContextId::Audio, b"", &pbuf, &mut wire).map_err(keys_err)?;
                            transport.send_audio(rtp_ts, &wire, level).await?;
                            sent_bytes += wire.len() as u64;
                            report.audio_sent += 1;
                        }
                        rtp_ts = rtp_ts.wrapping_add(samples as u32);
                    }
                }
                encoded = async {
                    match encoded_rx.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let (Some(v), Some((e, id, captured))) = (video.as_mut(), encoded) {
                        let stamp = opts.stamps.then(|| Stamp { id, captured_us: clock.micros(captured) });
                        payload::encode(stamp, &e.data, &mut v.pbuf);
                        keys.encrypt(ContextId::Video, b"", &v.pbuf, &mut v.wire).map_err(keys_err)?;
                        transport.send_video(v.ts, &v.wire, e.keyframe).await?;
                        sent_bytes += v.wire.len() as u64;
                        report.video_sent += 1;
                        report.video_keyframes += u64::from(e.keyframe);
                        if v.epoch_keyframe_pending && e.keyframe {
                            v.epoch_keyframe_pending = false;
                            report.epoch_keyframes += 1;
                        }
                        v.ts = v.ts.wrapping_add(90_000 / fps);
                    }
                }
                decoded = async {
                    match decoded_rx.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Some(d) = decoded {
                        let Some(d) = d else {
                            // The decoder refused a frame: decode nothing more until a keyframe.
                            if let Some(v) = video.as_mut() {
                                v.need_keyframe = true;
                            }
                            continue;
                        };
                        report.video_decoded += 1;
                        if let Some(s) = d.stamp {
                            let at = d.decoded_at;
                            report.video.record(s.id, at - clock.since(s.captured_us, at), at);
                            if d.pattern_id != Some(s.id & 0xff_ffff) {
                                report.video_mismatches += 1;
                            }
                        }
                    }
                }
                ev = events.recv() => {
                    let Some(ev) = ev else { break };
                    match ev {
                        TransportEvent::Signal(signal) => {
                            self.relay(call, signal).await?;
                        }
                        TransportEvent::State(RTCPeerConnectionState::Connected) if !connected => {
                            connected = true;
                            tracing::info!(%call, "media connected");
                            if let Some(v) = video.as_ref() {
                                encoded_rx = Some(v.start_encoder(devices.camera.take())?);
                            }
                            if let Some(d) = opts.duration {
                                hangup_at = Some(tokio::time::Instant::now() + d);
                            }
                            rekey_at = opts.rekey_every.map(|d| tokio::time::Instant::now() + d);
                        }
                        TransportEvent::State(RTCPeerConnectionState::Failed) => {
                            let _ = self.signaling.request(Request::Hangup { call }).await;
                            break;
                        }
                        TransportEvent::Video(r) => {
                            recv_bytes += r.payload.len() as u64;
                            let index = video_packets;
                            video_packets += 1;
                            if opts.test_drop_video.as_ref().is_some_and(|d| d.contains(&index)) {
                                continue;
                            }
                            let Some(v) = video.as_mut() else { continue };
                            let now = Instant::now();
                            let frames = v.assembler.push(r.seq, r.timestamp, &r.payload, now);
                            if v.receive(frames, &mut keys, &mut report, now) {
                                transport.request_keyframe().await?;
                            }
                        }
                        TransportEvent::Audio(r) => {
                            recv_bytes += r.payload.len() as u64;
                            let Some((d, body)) = Descriptor::parse(&r.payload) else { continue };
                            if !(d.start && d.end) {
                                continue;
                            }
                            let now = Instant::now();
                            match keys.decrypt(body, b"", &mut plain, now) {
                                Ok(_) => {
                                    let Some(n) = payload::decode(&plain).ok().and_then(|(_, opus)| decoder.samples_in(opus)) else {
                                        continue;
                                    };
                                    let want = *rx_samples.get_or_insert_with(|| {
                                        if n != samples {
                                            jitter = jitter_for(n);
                                            decoder.set_frame_samples(n);
                                        }
                                        n
                                    });
                                    if n != want {
                                        // The peer changed its framing mid-call: drop rather
                                        // than misplace (we never do that ourselves).
                                        continue;
                                    }
                                    let index = ts_unwrap.unwrap(r.timestamp) / want as u64;
                                    jitter.push(index, now, std::mem::take(&mut plain));
                                }
                                Err(e) => {
                                    *report.decrypt_failures.entry(e.sender.unwrap_or(u32::MAX)).or_default() += 1;
                                }
                            }
                        }
                        _ => {}
                    }
                }
                () = sleep_until(video_due) => {
                    // A frame waited behind a gap long enough: the gap is given up.
                    if let Some(v) = video.as_mut() {
                        let now = Instant::now();
                        let frames = v.assembler.poll(now);
                        if v.receive(frames, &mut keys, &mut report, now) {
                            transport.request_keyframe().await?;
                        }
                    }
                }
                () = sleep_until(jitter_due) => {
                    let now = Instant::now();
                    while let Some(p) = jitter.poll(now) {
                        match p {
                            Playout::Frame { payload: data, .. } => {
                                let Ok((stamp, opus)) = payload::decode(&data) else { continue };
                                decoder.decode(opus, &mut pcm)?;
                                if let Some(s) = stamp {
                                    report.latency.record(s.id, now - clock.since(s.captured_us, now), now);
                                }
                                report.setup_time.get_or_insert(started.elapsed());
                                report.audio_played += 1;
                            }
                            Playout::Conceal { next, .. } => {
                                let next_opus = next.as_deref().and_then(|n| payload::decode(n).ok()).map(|(_, o)| o);
                                decoder.conceal(next_opus, &mut pcm)?;
                            }
                        }
                        if let Some(s) = devices.speaker.as_ref() {
                            s.play(&pcm);
                        }
                        if report.audio_played > 25 {
                            played_pcm.extend_from_slice(&pcm);
                        }
                    }
                }
                incoming = async {
                    if let Some(e) = self.backlog.pop_front() {
                        return Some(Incoming::Event(e));
                    }
                    // A commit of this call that arrived before the media phase waits in
                    // the inbox.
                    if let Some((seq, item)) = self.inbox.take(|s| matches!(owner(s), Owner::Group(g, MlsKind::Commit | MlsKind::Proposal) if g == call.0)) {
                        return Some(Incoming::Delivery { seq, item });
                    }
                    self.signaling.next().await
                } => {
                    match incoming {
                        Some(Incoming::Event(Event::Relayed { call: c, signal, .. })) if c == call => match signal {
                            RtcSignal::Answer(sdp) => transport.accept_answer(sdp).await?,
                            RtcSignal::Candidate { candidate, mid } => transport.add_remote_candidate(candidate, mid).await?,
                            RtcSignal::UseRoom { room } => {
                                tracing::info!(%call, "the caller moved the call to the relay");
                                transport.close().await;
                                return Ok(Media::Relay(room, report));
                            }
                            _ => {}
                        },
                        Some(Incoming::Event(Event::CallEnded { call: c, reason })) if c == call => {
                            if reason == EndReason::KeyMismatch {
                                transport.close().await;
                                return Err(CallError::PeerSawKeyMismatch { peer });
                            }
                            report.ended = Some(reason);
                            break;
                        }
                        Some(Incoming::Event(e)) => {
                            if let Some(e) = self.housekeeping(e).await {
                                self.later.push_back(e);
                            }
                        }
                        Some(Incoming::Delivery {
                            seq,
                            item: Stored::Mls { group: g, kind: kind @ (MlsKind::Commit | MlsKind::Proposal), epoch, data, .. },
                        }) if g == call.0 => {
                            let processed = self.process_handshake(call, group, (kind, epoch, &data)).await;
                            self.signaling.ack(seq).await?;
                            match processed {
                                Ok(Handshake::Applied(GroupEvent::EpochAdvanced { .. })) => {
                                    self.new_epoch(group, &mut keys, &mut report, video.as_mut(), opts)?;
                                }
                                Ok(Handshake::Rejoined) => {
                                    keys.rejoined(group.own_index(), self.media_keys(group, opts)?, Instant::now())
                                        .map_err(keys_err)?;
                                    report.rejoins += 1;
                                    self.new_epoch_shown(group, &mut report, video.as_mut());
                                }
                                Ok(_) => {}
                                Err(e) => {
                                    transport.close().await;
                                    return Err(e);
                                }
                            }
                        }
                        // A Welcome into the group we are in has no use: drop it.
                        Some(Incoming::Delivery { seq, item: Stored::Mls { group: g, .. } }) if g == call.0 => {
                            tracing::debug!(%call, "dropping a stray message for the call's group");
                            self.signaling.ack(seq).await?;
                        }
                        // Not this call's: kept for its owner, acknowledged only when handled.
                        Some(Incoming::Delivery { seq, item }) => self.inbox.hold(seq, item),
                        Some(Incoming::Goodbye(e)) => return Err(CallError::Signaling(ClientError::Server(e))),
                        None => break,
                    }
                }
                _ = status_tick.tick(), if opts.status.is_some() => {
                    if let Some(tx) = &opts.status {
                        let _ = tx.send(CallStatus {
                            connected,
                            peer: report.peer.clone(),
                            verification_code: report.verification_code.clone(),
                            safety_number: report.safety_number.clone(),
                            send_bps: std::mem::take(&mut sent_bytes) * 8,
                            recv_bps: std::mem::take(&mut recv_bytes) * 8,
                            rtt: transport.stats().await.rtt,
                            audio_played: report.audio_played,
                            concealed: decoder.concealed + decoder.fec_recovered,
                            decrypt_failures: report.decrypt_failures.values().sum(),
                            video_decoded: report.video_decoded,
                            loss: transport.feedback().remote_loss(),
                            estimate_bps: transport.feedback().target_bitrate(),
                            epoch: keys.epoch(),
                            relayed: false,
                        });
                    }
                }
                _ = async {
                    match external_hangup.as_mut() {
                        Some(rx) => {
                            // A dropped sender means nobody will ask: never fire.
                            if rx.wait_for(|v| *v).await.is_err() {
                                std::future::pending::<()>().await;
                            }
                        }
                        None => std::future::pending::<()>().await,
                    }
                }, if !hung_up => {
                    hung_up = true;
                    external_hangup = None;
                    tracing::info!(%call, "hanging up on request");
                    self.signaling.request(Request::Hangup { call }).await?;
                }
                () = sleep_until(rekey_at), if !hung_up => {
                    rekey_at = opts.rekey_every.map(|d| tokio::time::Instant::now() + d);
                    let commit = group.update(&self.mls)?;
                    let sent = self.signaling.request(commit.into_request(call.0.to_vec())).await;
                    match sent {
                        Ok(_) => {
                            group.merge_pending(&self.mls)?;
                            self.new_epoch(group, &mut keys, &mut report, video.as_mut(), opts)?;
                        }
                        Err(ClientError::Server(e)) if matches!(e.code, ErrorCode::StaleEpoch { .. }) => {
                            // The peer committed first; its commit is on the way to us.
                            group.discard_pending(&self.mls)?;
                        }
                        Err(e) => {
                            group.discard_pending(&self.mls)?;
                            return Err(e.into());
                        }
                    }
                }
                () = sleep_until(hangup_at), if !hung_up => {
                    hung_up = true;
                    tracing::info!(%call, "hanging up");
                    self.signaling.request(Request::Hangup { call }).await?;
                }
            }
        }
        report.audio_concealed = decoder.concealed + decoder.fec_recovered;
        report.audio_fec = decoder.fec_recovered;
        report.received_hz = estimate_frequency(&played_pcm);
        let stats = transport.stats().await;
        report.rtt = stats.rtt;
        report.retransmissions_received = stats.retransmissions_received;
        report.estimate_bps = transport.feedback().target_bitrate();
        report.estimate_updates = transport.feedback().estimate_updates();
        if let Some(v) = video.as_ref() {
            report.video_keyframes_forced = v.control.forced.load(Ordering::Relaxed);
        }
        transport.close().await;
        Ok(Media::Done(report))
    }

    /// The SFrame keys of the group's current epoch.
    fn media_keys(
        &self,
        group: &CallGroup,
        opts: &CallOptions,
    ) -> Result<sotto_media::keys::EpochKeys, CallError> {
        let epoch = if opts.test_wrong_keys {
            // Same epoch, same members, a secret the peer does not share.
            sotto_media::keys::EpochKeys::derive(
                &RandomExporter,
                group.epoch(),
                group.member_indices(),
                &KeyConfig::default(),
            )
        } else {
            group.epoch_keys(&self.mls, &KeyConfig::default())
        };
        epoch.map_err(keys_err)
    }

    /// The group moved to a new epoch: derive its media keys (the previous epoch stays
    /// decryptable for the grace period), show the new verification code, and send a
    /// keyframe so the first video under the new keys decodes on its own.
    fn new_epoch(
        &self,
        group: &CallGroup,
        keys: &mut CallKeys,
        report: &mut CallReport,
        video: Option<&mut VideoState>,
        opts: &CallOptions,
    ) -> Result<(), CallError> {
        keys.advance(self.media_keys(group, opts)?, Instant::now())
            .map_err(keys_err)?;
        self.new_epoch_shown(group, report, video);
        Ok(())
    }

    /// What follows new media keys: the new verification code, and a keyframe so the
    /// first video under the new keys decodes on its own.
    fn new_epoch_shown(
        &self,
        group: &CallGroup,
        report: &mut CallReport,
        video: Option<&mut VideoState>,
    ) {
        report.epoch_changes += 1;
        report.verification_code = verify::group_code(&group.epoch_authenticator());
        tracing::info!(epoch = group.epoch(), code = %report.verification_code, "new epoch");
        if let Some(v) = video {
            v.control.force_keyframe.store(true, Ordering::Relaxed);
            v.epoch_keyframe_pending = true;
        }
    }
}

/// Keyframe requests are repeated at most this often while we wait for one.
const PLI_INTERVAL: Duration = Duration::from_millis(250);

/// The video half of a call's media. Encoding and decoding run on their own threads so
/// that video work never delays the audio path.
struct VideoState {
    opts: VideoOptions,
    assembler: FrameAssembler,
    ts: u32,
    pbuf: Vec<u8>,
    wire: Vec<u8>,
    decode_tx: std::sync::mpsc::SyncSender<(Vec<u8>, Option<Stamp>)>,
    control: Arc<VideoControl>,
    /// Where the next frame should start if none was lost.
    next_seq: Option<u64>,
    /// A frame was lost or refused: decode nothing until a keyframe.
    need_keyframe: bool,
    last_pli: Option<Instant>,
    /// An epoch changed and its keyframe has not gone out yet.
    epoch_keyframe_pending: bool,
}

/// What the call loop tells the encoder thread.
#[derive(Default)]
struct VideoControl {
    stop: AtomicBool,
    force_keyframe: AtomicBool,
    /// New target bitrate (0: unchanged).
    bitrate: AtomicU32,
    /// Keyframes forced on request (PLI/FIR or epoch change).
    forced: AtomicU64,
}

/// An encoded frame from the encoder thread: the frame, its id and capture instant.
type EncodedFrame = (crate::codec::video::EncodedVideo, u64, Instant);

/// A decoded frame from the decoder thread.
struct Decoded {
    pattern_id: Option<u64>,
    stamp: Option<Stamp>,
    decoded_at: Instant,
}

impl VideoState {
    /// Starts the decoder thread; the encoder starts when media connects.
    fn new(opts: VideoOptions) -> Result<(Self, mpsc::Receiver<Option<Decoded>>), CallError> {
        let (decode_tx, decode_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, Option<Stamp>)>(64);
        let (out_tx, out_rx) = mpsc::channel(64);
        let mut decoder = VideoDecoder::new()?;
        std::thread::Builder::new()
            .name("sotto-video-decode".into())
            .spawn(move || {
                while let Ok((h264, stamp)) = decode_rx.recv() {
                    // A corrupt frame is the decoder's to refuse (`None` out); it never panics.
                    let out = match decoder.decode(&h264) {
                        Ok(Some(pic)) => Some(Decoded {
                            pattern_id: pic.pattern_id,
                            stamp,
                            decoded_at: Instant::now(),
                        }),
                        Ok(None) => continue,
                        Err(_) => None,
                    };
                    if out_tx.blocking_send(out).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| CallError::Setup(format!("starting the video decoder: {e}")))?;
        Ok((
            Self {
                opts,
                assembler: FrameAssembler::new(AssemblerLimits::default()),
                ts: 0,
                pbuf: Vec::new(),
                wire: Vec::new(),
                decode_tx,
                control: Arc::new(VideoControl::default()),
                next_seq: None,
                // Nothing decodes before the first keyframe (the sender starts with one;
                // if it is lost, a PLI goes out at once).
                need_keyframe: true,
                last_pli: None,
                epoch_keyframe_pending: false,
            },
            out_rx,
        ))
    }

    /// Takes reassembled frames: decrypts them and queues them for decoding, or holds
    /// video back after a loss until a keyframe. Returns whether to send a PLI now.
    fn receive(
        &mut self,
        frames: Vec<sotto_wire::rtp_sframe::Reassembled>,
        keys: &mut CallKeys,
        report: &mut CallReport,
        now: Instant,
    ) -> bool {
        let mut pli = false;
        for mut frame in frames {
            // A frame lost in between breaks the prediction chain.
            if self.next_seq.is_some_and(|n| frame.first_seq != n) {
                self.need_keyframe = true;
            }
            self.next_seq = Some(frame.last_seq + 1);
            // The reassembled frame is ours: decrypt it where it lies (no copy).
            let h264 = match keys.decrypt_in_place(&mut frame.frame, b"", now) {
                Ok((_, range)) => payload::decode(&frame.frame[range]).ok(),
                Err(e) => {
                    *report
                        .decrypt_failures
                        .entry(e.sender.unwrap_or(u32::MAX))
                        .or_default() += 1;
                    None
                }
            };
            let Some((stamp, h264)) = h264 else {
                self.need_keyframe = true;
                continue;
            };
            if self.need_keyframe && !is_keyframe(h264) {
                report.video_skipped += 1;
                if self.last_pli.is_none_or(|t| now - t >= PLI_INTERVAL) {
                    self.last_pli = Some(now);
                    report.keyframe_requests_sent += 1;
                    pli = true;
                }
                continue;
            }
            self.need_keyframe = false;
            // A full decoder queue drops the frame, as loss would.
            if self.decode_tx.try_send((h264.to_vec(), stamp)).is_err() {
                self.need_keyframe = true;
            }
        }
        pli
    }

    /// Starts capturing (from `camera`, else the synthetic pattern) and encoding; encoded
    /// frames arrive on the receiver.
    fn start_encoder(
        &self,
        camera: Option<Camera>,
    ) -> Result<mpsc::Receiver<EncodedFrame>, CallError> {
        let o = self.opts;
        let control = self.control.clone();
        let (tx, rx) = mpsc::channel(8);
        let mut encoder = VideoEncoder::new(o.fps as f32, o.bitrate)?;
        std::thread::Builder::new()
            .name("sotto-video-encode".into())
            .spawn(move || {
                let mut source = PatternSource::new(o.width, o.height);
                let period = Duration::from_secs_f64(1.0 / f64::from(o.fps.max(1)));
                let mut next = Instant::now();
                while !control.stop.load(Ordering::Relaxed) {
                    if control.force_keyframe.swap(false, Ordering::Relaxed) {
                        encoder.request_keyframe();
                        control.forced.fetch_add(1, Ordering::Relaxed);
                    }
                    let bps = control.bitrate.swap(0, Ordering::Relaxed);
                    if bps != 0
                        && let Err(e) = encoder.set_bitrate(bps)
                    {
                        tracing::warn!(error = %e, "video bitrate change failed");
                    }
                    let f = match camera.as_ref() {
                        // The camera paces itself; wake now and then to notice a stop.
                        Some(cam) => match cam.next_frame(Duration::from_millis(200)) {
                            Some(f) => f,
                            None => continue,
                        },
                        None => source.next_frame(Instant::now()),
                    };
                    match encoder.encode(&f) {
                        Ok(Some(e)) => {
                            if tx.blocking_send((e, f.id, f.captured)).is_err() {
                                break;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %e, "video encode failed"),
                    }
                    if camera.is_none() {
                        next += period;
                        std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    }
                }
            })
            .map_err(|e| CallError::Setup(format!("starting the video encoder: {e}")))?;
        Ok(rx)
    }
}

impl Drop for VideoState {
    fn drop(&mut self) {
        self.control.stop.store(true, Ordering::Relaxed);
    }
}

/// Opens and closes the devices `opts` asks for: a listener finds out at start, not when
/// a call comes in, that one is missing.
pub fn check_devices(opts: &CallOptions) -> Result<(), CallError> {
    MediaDevices::open(opts).map(drop)
}

/// The real devices a call was asked to use, opened before it rings so that a missing one
/// is an error up front, not silence later.
#[derive(Default)]
struct MediaDevices {
    microphone: Option<Microphone>,
    speaker: Option<Speaker>,
    camera: Option<Camera>,
}

impl MediaDevices {
    fn open(opts: &CallOptions) -> Result<Self, CallError> {
        let camera = match (&opts.camera, opts.video) {
            (Some(name), Some(v)) => Some(Camera::open(name, v.width, v.height, v.fps)?),
            _ => None,
        };
        Ok(Self {
            microphone: opts
                .microphone
                .as_deref()
                .map(|m| Microphone::open(m, opts.frame_ms))
                .transpose()?,
            speaker: opts.speaker.as_deref().map(Speaker::open).transpose()?,
            camera,
        })
    }
}

/// Test hook: an MLS exporter that knows nothing (random secrets).
struct RandomExporter;

impl sotto_media::keys::MlsExporter for RandomExporter {
    type Error = std::io::Error;
    fn export_secret(&self, _: &str, _: &[u8], len: usize) -> Result<Vec<u8>, Self::Error> {
        let mut v = vec![0u8; len];
        getrandom::fill(&mut v).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(v)
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
