//! One-to-one calls: ringing, answering and declining by handle, the account and
//! device checks before a call rings, the endpoint's signaling connection and its inbox.
//! Once answered, a call runs in its room of two on the session core ([`crate::room`]):
//! the MLS group of two (group id = call id) whose epoch keys SFrame, media peer to peer
//! or through the SFU, and the same media pipeline as group calls.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use ed25519_dalek::SigningKey;
use sotto_media::synth::{ArrivalLog, AudioSignal};
use sotto_proto::{
    CallId, DeviceAddr, DeviceId, EndReason, ErrorCode, Event, Handle, Request, Response, Stored,
};
use tokio::sync::mpsc;

use crate::{
    codec::CodecError,
    devices::{
        DeviceError,
        audio::{Microphone, Speaker},
        camera::Camera,
    },
    inbox::{Inbox, Owner, owner},
    mls::{MlsDevice, MlsError},
    profile::{Profile, ProfileError},
    signaling::{ClientError, Incoming, Pin, SignalingClient},
    transport::TransportConfig,
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

/// Most replaced KeyPackages one upload's answer may make us look up and delete (the
/// server keeps at most a hundred per device).
const MAX_FORGOTTEN: usize = 1024;

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
        let stored = self
            .signaling
            .request(Request::UploadKeyPackages {
                packages,
                last_resort: Some(self.mls.last_resort_key_package()?),
                replace: true,
            })
            .await?;
        if let Response::KeyPackagesStored { forgotten, .. } = stored {
            let forgotten = &forgotten[..forgotten.len().min(MAX_FORGOTTEN)];
            // The new packages are stored: a failure here only leaves old keys behind.
            match self.mls.forget_key_packages(forgotten) {
                Ok(deleted) => {
                    tracing::debug!(deleted, "private keys of replaced KeyPackages deleted")
                }
                Err(e) => tracing::warn!(error = %e, "could not delete replaced KeyPackages' keys"),
            }
        }
        Ok(())
    }

    /// Claims took our one-use KeyPackages below the server's low-water mark: top them up.
    async fn top_up_key_packages(&mut self, remaining: u32) -> Result<(), CallError> {
        if let Some(upload) = top_up_request(&self.mls, remaining)? {
            tracing::debug!(remaining, "topping up KeyPackages");
            self.signaling.request(upload).await?;
        }
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

    /// A call is over: whatever is still held for its group (arrived after the session
    /// ended) is acknowledged, since the server deleted the group too.
    pub(crate) async fn forget_held(&mut self, id: &[u8]) {
        for (seq, _) in self
            .inbox
            .take_all(|s| matches!(owner(s), Owner::Group(g, _) if g == id))
        {
            let _ = self.signaling.ack(seq).await;
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
        check_devices(opts)?;
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
        self.run_call(call, peer, true, opts, report, started).await
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
        let report = CallReport {
            call: Some(call),
            peer: Some(from.clone()),
            ..CallReport::default()
        };
        if let Err(e) = self.check_peer(&from.handle).await {
            // Refuse to take a call from a changed identity; the caller hears Declined.
            let _ = self.signaling.request(Request::Decline { call }).await;
            return Err(e);
        }
        if let Err(e) = check_devices(opts) {
            // Cannot take the call without the devices asked for: say no rather than
            // answer into silence.
            let _ = self.signaling.request(Request::Decline { call }).await;
            return Err(e);
        }
        self.signaling.request(Request::Accept { call }).await?;
        self.run_call(call, from, false, opts, report, started)
            .await
    }
}

/// The upload that takes our one-use KeyPackages from `remaining` back to
/// [`KEY_PACKAGE_TARGET`]; `None` if none is missing.
pub(crate) fn top_up_request(mls: &MlsDevice, remaining: u32) -> Result<Option<Request>, MlsError> {
    let missing = KEY_PACKAGE_TARGET.saturating_sub(remaining as usize);
    if missing == 0 {
        return Ok(None);
    }
    let packages = (0..missing)
        .map(|_| mls.key_package())
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Request::UploadKeyPackages {
        packages,
        last_resort: None,
        replace: false,
    }))
}

/// Opens and closes the devices `opts` asks for: a listener finds out at start, not when
/// a call comes in, that one is missing.
pub fn check_devices(opts: &CallOptions) -> Result<(), CallError> {
    open_devices(opts)
}

/// Opens and closes the devices a call was asked to use, before it rings, so that a
/// missing one is an error up front, not silence later.
fn open_devices(opts: &CallOptions) -> Result<(), CallError> {
    if let (Some(name), Some(v)) = (&opts.camera, opts.video) {
        drop(Camera::open(name, v.width, v.height, v.fps)?);
    }
    if let Some(m) = opts.microphone.as_deref() {
        drop(Microphone::open(m, opts.frame_ms)?);
    }
    if let Some(sp) = opts.speaker.as_deref() {
        drop(Speaker::open(sp)?);
    }
    Ok(())
}
