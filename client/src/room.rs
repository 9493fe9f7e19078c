//! Rooms from an [`Endpoint`]: creating one, inviting and removing people, and joining
//! one. Joining runs the thin tokio shell around the sans-IO [`RoomSession`] (DESIGN §3):
//! the shell only moves inputs into the core and its outputs out. Signaling requests are
//! spawned and their answers fed back, so no request (a commit, a claim) ever holds up
//! media; datagrams go to and from one UDP socket; the microphone or a synthetic source is
//! encoded and handed in; decrypted audio goes to one receive chain per sender, summed by
//! the mixer that the speaker's callback pulls (with no speaker, a virtual device clock
//! pulls it every 10 ms instead).

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sotto_media::{
    payload::{self, Stamp, WallClock},
    synth::{AudioSignal, AudioSource, SAMPLE_RATE},
};
use sotto_proto::{
    CallId, DeviceAddr, EndReason, Event, Handle, Request, Response, RoomId, Stored,
};
use sotto_wire::rtp_ext::AudioLevel;
use tokio::sync::{mpsc, watch};

use crate::{
    call::{Arrival, CallError, Endpoint},
    codec::audio::AudioEncoder,
    devices::audio::{CapturedFrame, Microphone, PulledSpeaker},
    inbox::{Inbox, Owner, owner},
    media_sockets::MediaSockets,
    mls::{CallGroup, MlsDevice},
    pipeline::{
        mixer::{Mixer, PULL_SAMPLES},
        recv::ChainStats,
    },
    session::{
        Answer, Direct, Env, LeftReason, NoPins, Output, Pins, RoomEvent, RoomOptions, RoomSession,
    },
    signaling::{ClientError, Incoming, Requester, SignalingClient},
    video::{DecodedVideo, LayerFrame, VideoReceiver, VideoSend, VideoSender, VideoStats},
};

/// How a room call is run.
#[derive(Debug)]
pub struct JoinOptions {
    /// Leave after this long; `None`: until told to leave.
    pub duration: Option<Duration>,
    /// What the synthetic microphone plays (when `microphone` is `None`).
    pub audio: AudioSignal,
    /// Microphone device, or `None` for the synthetic signal.
    pub microphone: Option<String>,
    /// Speaker device, or `None` to play nowhere (a virtual device clock still pulls).
    pub speaker: Option<String>,
    /// Audio frame length in ms (10 or 20).
    pub frame_ms: u32,
    /// The local addresses media is sent from; empty: the one that routes to the server
    /// (through the SFU), or every usable interface (a direct call).
    pub media_ips: Vec<IpAddr>,
    /// How long to wait to be let into the room's group before giving up.
    pub admission_timeout: Duration,
    /// Status lines, about once a second.
    pub status: Option<mpsc::UnboundedSender<RoomLine>>,
    /// Becomes `true` to leave (Ctrl-C).
    pub leave: Option<watch::Receiver<bool>>,
    /// Requests made during the call (the owner inviting or removing people): each is
    /// sent on the call's own connection (a second login of this device would end it) and
    /// answered on its channel.
    pub controls: Option<mpsc::UnboundedReceiver<RoomControl>>,
    /// Send and receive video: what to send (one layer, or three for simulcast).
    pub video: Option<VideoSend>,
    /// Put a capture stamp (frame id and capture time) in every audio frame, for tests and
    /// the bench to measure loss and mouth-to-ear latency. Off in production: it costs
    /// bytes and shows the sender's clock to the room.
    pub stamps: bool,
    /// This room carries a relayed one-to-one call: only its two parties may be in the
    /// group, and the room is left when the other party leaves or the call ends.
    pub pair: Option<PairCall>,
    /// Receive at most this simulcast layer of anyone's video (0 = lowest): less
    /// bandwidth and decoding; `None`: what the bandwidth allows.
    pub max_layer: Option<u8>,
    /// STUN servers (`stun:host:port`) a direct call asks for our public address.
    pub stun: Vec<String>,
    /// Commit an MLS self-update this long after each epoch change (new keys for
    /// everyone: post-compromise security for long calls); `None`: never.
    pub self_update_every: Option<Duration>,
    /// Test hook: drop inbound video packets with these indices (0-based, in arrival
    /// order) before reassembly, a loss no NACK repairs.
    #[doc(hidden)]
    pub test_drop_video: Option<std::ops::Range<u64>>,
    /// Test hook: once media is up, drop this share of inbound datagrams before the
    /// transport sees them (a path that turned lossy mid-call: this kernel has no netem,
    /// and a handshake under heavy loss takes its retransmission timers' seconds).
    #[doc(hidden)]
    pub test_inbound_loss: f64,
    /// Test hook: media keys from a secret of our own, not the group's.
    #[doc(hidden)]
    pub test_wrong_keys: bool,
    /// Test hook: add joiners' KeyPackages unchecked (a careless member).
    #[doc(hidden)]
    pub test_add_unchecked: bool,
}

/// A one-to-one call carried by a room of two (`sotto call --relay`, or the fallback when
/// the direct path fails).
#[derive(Debug, Clone)]
pub struct PairCall {
    /// The call.
    pub call: CallId,
    /// The other party's device.
    pub peer: DeviceAddr,
    /// How long the other party has to come into the group once we are in it.
    pub arrive_within: Duration,
    /// Whether we placed the call: only the caller starts the call's group.
    pub caller: bool,
    /// Media straight to the peer (the caller offers through the call's relay), from
    /// every usable interface unless [`JoinOptions::media_ip`] names one; else through the
    /// room's SFU.
    pub direct: bool,
    /// On a direct call, the caller moves it to the relay when the direct path has not
    /// connected this long after its offer.
    pub relay_after: Option<Duration>,
}

impl Default for JoinOptions {
    fn default() -> Self {
        Self {
            duration: None,
            audio: AudioSignal::Tone { hz: 440.0 },
            microphone: None,
            speaker: None,
            frame_ms: 20,
            media_ips: Vec::new(),
            admission_timeout: Duration::from_secs(30),
            status: None,
            leave: None,
            controls: None,
            video: None,
            stamps: false,
            pair: None,
            max_layer: None,
            stun: Vec::new(),
            self_update_every: None,
            test_drop_video: None,
            test_inbound_loss: 0.0,
            test_wrong_keys: false,
            test_add_unchecked: false,
        }
    }
}

/// Something the user asks of the room during the call.
#[derive(Debug)]
pub struct RoomControl {
    /// What.
    pub ask: RoomAsk,
    /// Where the outcome goes.
    pub answer: tokio::sync::oneshot::Sender<Result<(), CallError>>,
}

/// What can be asked during a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomAsk {
    /// Invite these (owner only).
    Invite(Vec<Handle>),
    /// Remove this person (owner only).
    Remove(Handle),
}

/// Where a room call stands, for the status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomPhase {
    /// Waiting for a member to add us to the room's group.
    WaitingToBeLetIn,
    /// In the group; media to the SFU is not up yet.
    Connecting,
    /// In the call.
    InCall,
    /// Leaving.
    Leaving,
}

/// One status line.
#[derive(Debug, Clone)]
pub struct RoomLine {
    /// Where the call stands.
    pub phase: RoomPhase,
    /// The group's members (credentials checked), ourselves included, by leaf.
    pub members: Vec<Handle>,
    /// Members whose decrypted audio is playing now (our own measure, not the SFU's).
    pub speaking: Vec<Handle>,
    /// Whom the SFU calls the dominant speaker (a hint: the SFU is not trusted).
    pub dominant: Option<Handle>,
    /// The current epoch and its verification code (every member sees the same).
    pub epoch: u64,
    /// The group verification code.
    pub code: String,
    /// Bits per second sent and received on the media connection, over the last second.
    pub send_bps: u64,
    /// See `send_bps`.
    pub recv_bps: u64,
    /// Share of incoming frames lost over the last second (0..1).
    pub loss: f32,
    /// Frames that failed to decrypt, in all.
    pub rejected: u64,
    /// The id of the last audio frame captured (sent, once connected).
    pub last_frame_id: Option<u64>,
    /// The id of the last video frame captured.
    pub last_video_id: Option<u64>,
    /// Video frames decoded in all.
    pub video_decoded: u64,
    /// Audio frames played, from everyone.
    pub played: u64,
    /// Audio slots concealed, everyone's.
    pub concealed: u64,
    /// The media connection's round-trip time, as last measured.
    pub rtt: Option<Duration>,
    /// A direct call's send-side bandwidth estimate, bits per second.
    pub estimate_bps: Option<u64>,
    /// Whether media goes through an SFU (else straight to a direct call's peer).
    pub via_sfu: bool,
}

/// What one remote sender's audio came to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SenderReport {
    /// Who (the credential's handle).
    pub handle: Option<Handle>,
    /// Its receive chain's counters.
    pub stats: ChainStats,
    /// The dominant frequency of what was played from it, over the last 2 s heard.
    pub received_hz: Option<f64>,
    /// From the start of the join to its first decrypted audio frame.
    pub first_audio: Option<Duration>,
    /// With [`JoinOptions::stamps`]: each played frame's id and its capture-to-playout
    /// latency (mouth to ear, less the devices' own delays).
    pub played: Vec<(u64, Duration)>,
    /// Video frames decoded.
    pub video_decoded: u64,
    /// The ids of the decoded video frames (capture stamp, else the synthetic
    /// pattern's), in decoding order.
    pub video_ids: Vec<u64>,
    /// Decoded frames whose picture carries another id than their stamp.
    pub video_mismatches: u64,
    /// The picture widths decoded (which simulcast layers arrived).
    pub video_widths: BTreeSet<usize>,
    /// With stamps: capture-to-decode latency of each decoded video frame.
    pub video_latency: Vec<Duration>,
    /// Its video receive figures (skipped while waiting for a keyframe, overruns).
    pub video: VideoStats,
}

/// What a room call did.
#[derive(Debug, Clone, Default)]
pub struct RoomReport {
    /// The room.
    pub room: Option<RoomId>,
    /// How it ended.
    pub ended: Option<LeftReason>,
    /// Our leaf at the end.
    pub leaf: Option<u32>,
    /// Verification codes of the epochs we saw, in order.
    pub codes: Vec<(u64, String)>,
    /// From the start of the join to being in the group.
    pub admitted: Option<Duration>,
    /// From the start of the join to media to the SFU being up.
    pub connected: Option<Duration>,
    /// From the start of the join to the first decrypted audio frame from anyone.
    pub first_audio: Option<Duration>,
    /// Audio frames sent.
    pub audio_sent: u64,
    /// Video frames sent (every layer counted).
    pub video_sent: u64,
    /// Keyframes asked of the SFU for others' video.
    pub keyframe_requests_sent: u64,
    /// Per remote sender, by leaf (a sender that rejoined at another leaf appears twice).
    pub senders: BTreeMap<u32, SenderReport>,
    /// Frames that failed to decrypt, by the sender their KID claimed.
    pub decrypt_failures: BTreeMap<u32, u64>,
    /// Frames of a future epoch held and then decrypted.
    pub held_recovered: u64,
    /// Frames of an epoch whose keys never came (sent before we joined), given up.
    pub held_expired: u64,
    /// Commits of ours the server accepted.
    pub commits: u64,
    /// Times we rejoined by external commit.
    pub rejoins: u64,
    /// Members a commit brought in whose keys did not check out (who they claimed to be,
    /// and why): kept out of every media key and removed.
    pub refused_members: Vec<String>,
    /// Frames the media connection gave up as incomplete.
    pub frames_lost: u64,
    /// Datagrams that could not be sent (socket full).
    pub send_drops: u64,
    /// A direct call's send-side bandwidth estimate: the last, bits per second, and how
    /// many times it changed.
    pub estimate_bps: Option<u64>,
    /// See [`Self::estimate_bps`].
    pub estimate_updates: u64,
    /// The Opus target at the end, and the lowest it went (a direct call's follow the
    /// estimate; 0: never set).
    pub audio_bitrate: u32,
    /// See [`Self::audio_bitrate`].
    pub audio_bitrate_min: u32,
    /// A direct call's video target at the end (0: never set).
    pub video_bitrate: u32,
    /// For a room carrying a one-to-one call: how the call ended, as the server said.
    pub call_ended: Option<EndReason>,
    /// The addresses the SFU's answer named.
    pub sfu_addrs: Vec<IpAddr>,
    /// The addresses media datagrams came from.
    pub media_from: BTreeSet<IpAddr>,
    /// For a room carrying a one-to-one call: the other party's identity key, from its
    /// credential in the group (checked against the directory and the pins).
    pub peer_key: Option<Vec<u8>>,
    /// Whether media went through an SFU at the end (a direct call may have moved).
    pub via_sfu: bool,
    /// Epoch changes that kept the members (self-updates, rejoins).
    pub rekeys: u64,
    /// Keyframes our video sent as its first under a rekeyed epoch.
    pub epoch_keyframes: u64,
    /// Keyframe requests for our video that reached us.
    pub keyframe_requests_received: u64,
    /// Keyframes our encoder was asked for (requests, new epochs, reconnections).
    pub video_keyframes_forced: u64,
    /// Keyframes our video sent.
    pub video_keyframes: u64,
    /// Packets that filled a gap (retransmissions after our NACKs).
    pub retransmissions_received: u64,
    /// The media connection's round-trip time at the end.
    pub rtt: Option<Duration>,
}

/// Someone wants us: a call rings, or an invitation to a room came.
#[derive(Debug, Clone, PartialEq)]
pub enum Knock {
    /// A call is ringing.
    Call {
        /// The call.
        call: CallId,
        /// Who calls.
        from: DeviceAddr,
    },
    /// An invitation to a room; acknowledge `seq` once recorded.
    Invite {
        /// The delivery to acknowledge.
        seq: u64,
        /// The room.
        room: RoomId,
        /// Its owner, who invited us.
        from: Handle,
    },
}

/// Keyframes are asked for others' video at most this often.
const PLI_EVERY: Duration = Duration::from_millis(200);

/// After asking to leave, the session is given this long to finish.
const LEAVE_GRACE: Duration = Duration::from_secs(3);

impl Endpoint {
    /// Creates a room we own; people we invite may join it. Its group is started by the
    /// first to join.
    pub async fn create_room(&mut self) -> Result<RoomId, CallError> {
        match self.signaling.request(Request::CreateRoom).await? {
            Response::RoomCreated { room } => Ok(room),
            other => Err(CallError::Room(format!(
                "the server answered a room creation with {other:?}: report this with the log"
            ))),
        }
    }

    /// Invites `handles` to a room we own; each of their devices gets the invitation.
    pub async fn invite_to_room(
        &mut self,
        room: RoomId,
        handles: Vec<Handle>,
    ) -> Result<(), CallError> {
        self.signaling
            .request(Request::InviteToRoom { room, handles })
            .await?;
        Ok(())
    }

    /// Removes `handle` from a room we own: its devices leave the call at once (the
    /// remaining members commit its removal, so it can decrypt nothing after) and it may
    /// not join again unless invited again.
    pub async fn remove_from_room(
        &mut self,
        room: RoomId,
        handle: Handle,
    ) -> Result<(), CallError> {
        self.signaling
            .request(Request::RemoveFromRoom { room, handle })
            .await?;
        Ok(())
    }

    /// Room invitations received and not yet handled (they stay stored on the server
    /// until [`Endpoint::handled`] is called for each).
    pub async fn room_invites(&mut self) -> Result<Vec<(u64, RoomId, Handle)>, CallError> {
        Ok(self
            .take_deliveries(|s| matches!(s, Stored::RoomInvite { .. }))
            .await?
            .into_iter()
            .filter_map(|(seq, s)| match s {
                Stored::RoomInvite { room, from } => Some((seq, room, from)),
                _ => None,
            })
            .collect())
    }

    /// Waits for the next incoming call or room invitation. An invitation stays stored
    /// until [`Endpoint::handled`] is called with its `seq`.
    pub async fn next_knock(&mut self, wait: Duration) -> Result<Knock, CallError> {
        let deadline = tokio::time::Instant::now() + wait;
        let is_invite = |s: &Stored| matches!(s, Stored::RoomInvite { .. });
        loop {
            match self.next_arrival(deadline, "a call", is_invite).await? {
                Arrival::Delivery(seq, Stored::RoomInvite { room, from }) => {
                    return Ok(Knock::Invite { seq, room, from });
                }
                Arrival::Delivery(seq, other) => self.inbox.hold(seq, other),
                Arrival::Event(Event::IncomingCall { call, from }) => {
                    if self.still_ringing(call).await? {
                        return Ok(Knock::Call { call, from });
                    }
                }
                Arrival::Event(_) => {}
            }
        }
    }

    /// Joins `room` and runs the call until told to leave, the duration passes, or the
    /// session ends; returns what happened.
    pub async fn join_room(
        &mut self,
        room: RoomId,
        opts: &mut JoinOptions,
    ) -> Result<RoomReport, CallError> {
        self.drain_arrived().await?;
        let server = self.signaling.connection().remote_address();
        let direct = opts.pair.as_ref().filter(|p| p.direct);
        let ips = match (opts.media_ips.is_empty(), direct) {
            (false, _) => opts.media_ips.clone(),
            (true, Some(_)) => crate::transport::host_addrs(&crate::transport::Bind::AllInterfaces),
            (true, None) => vec![route_to(server)?],
        };
        let sockets = MediaSockets::bind(&ips).await?;
        let mut locals = sockets.locals().into_iter();
        let local = locals
            .next()
            .ok_or_else(|| CallError::Room("no media socket".into()))?;
        let group = CallGroup::load(&self.mls, &room.0)?;
        let me = DeviceAddr {
            handle: self.handle.clone(),
            device: self.device,
        };
        let key = self.identity.verifying_key().to_bytes().to_vec();
        let mut room_opts = RoomOptions::new(local);
        room_opts.link.also = locals.collect();
        if direct.is_some() {
            room_opts.link.srflx = reflexive(&sockets, &opts.stun).await?;
        }
        room_opts.direct = direct.map(|p| Direct {
            call: p.call,
            offerer: p.caller,
            relay_after: p.relay_after,
        });
        room_opts.only = opts.pair.as_ref().map(|p| vec![p.peer.clone()]);
        room_opts.starts_group = opts.pair.as_ref().is_none_or(|p| p.caller);
        room_opts.max_layer = opts.max_layer;
        room_opts.self_update_every = opts.self_update_every;
        room_opts.test_wrong_keys = opts.test_wrong_keys;
        room_opts.test_add_unchecked = opts.test_add_unchecked;
        room_opts.link.test_drop_video = opts.test_drop_video.clone();
        if let Some(v) = opts.video.as_ref() {
            if !matches!(v.layers.len(), 1 | 3) {
                return Err(CallError::Room(
                    "video goes out in one layer or three (simulcast)".into(),
                ));
            }
            room_opts.link.video = true;
            room_opts.link.simulcast = v.layers.len() == 3;
        }
        let session = RoomSession::new(room, me, key, group, room_opts);
        let media = MediaIo::open(opts)?;
        let mut no_pins = NoPins;
        let Endpoint {
            signaling,
            mls,
            profile,
            inbox,
            later,
            backlog,
            ..
        } = self;
        // Events read ahead (a direct call's offer may be among them) go to the session
        // first; what is not the room's is kept for later.
        let ahead: Vec<Event> = backlog.drain(..).collect();
        let pins: &mut (dyn Pins + Send) = match profile.as_mut() {
            Some(p) => p,
            None => &mut no_pins,
        };
        let (answers_tx, answers) = mpsc::unbounded_channel();
        let mut shell = Shell {
            requester: signaling.requester(),
            signaling,
            mls,
            pins,
            inbox,
            later,
            session,
            sockets,
            answers_tx,
            answers,
            media,
            report: RoomReport {
                room: Some(room),
                ..RoomReport::default()
            },
            started: Instant::now(),
            members: BTreeMap::new(),
            leaf: None,
            connected: false,
            dominant: None,
            last: LastSecond::default(),
            leaving_since: None,
            pair: opts.pair.clone().map(|call| Pair {
                call,
                seen: false,
                due: None,
            }),
            last_from: None,
            video_layers: opts
                .video
                .as_ref()
                .map(|v| v.layers.clone())
                .unwrap_or_default(),
            inbound_loss: opts.test_inbound_loss,
        };
        for e in ahead {
            if let Some(why) = shell.incoming(Some(Incoming::Event(e))) {
                let report = shell.finish(Some(why));
                backlog.extend(later.drain(..));
                return Ok(report);
            }
        }
        let result = shell.run(opts).await;
        backlog.extend(later.drain(..));
        match result {
            // Never in: the room refused us (not invited, no such room), so it is an error.
            Ok(RoomReport {
                admitted: None,
                ended: Some(LeftReason::Failed(why)),
                ..
            }) => Err(CallError::Room(format!(
                "could not join room {room}: {why}"
            ))),
            other => other,
        }
    }
}

/// Our addresses as the STUN servers in `urls` see them (none without servers).
async fn reflexive(
    sockets: &MediaSockets,
    urls: &[String],
) -> Result<Vec<(SocketAddr, SocketAddr)>, CallError> {
    if urls.is_empty() {
        return Ok(Vec::new());
    }
    let mut servers = Vec::new();
    for url in urls {
        servers.extend(crate::stun::resolve(url).await.map_err(CallError::Setup)?);
    }
    let found = crate::stun::gather(sockets, &servers).await;
    if found.is_empty() {
        tracing::warn!(
            "no STUN server answered within {} ms: offering host candidates only",
            crate::stun::GATHER_WAIT.as_millis()
        );
    }
    Ok(found)
}

/// The local address that routes to `server` (no packet is sent: a UDP socket's
/// `connect` only picks the route).
fn route_to(server: SocketAddr) -> Result<IpAddr, CallError> {
    let any: IpAddr = if server.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let probe = std::net::UdpSocket::bind((any, 0))
        .and_then(|s| s.connect(server).map(|()| s))
        .and_then(|s| s.local_addr());
    match probe {
        Ok(a) => Ok(a.ip()),
        Err(e) => Err(CallError::Room(format!(
            "no route to the server {server} for media ({e}): check the network"
        ))),
    }
}

/// The microphone (or synthetic source), the encoder and the mixer's playout.
struct MediaIo {
    microphone: Option<Microphone>,
    /// No microphone was asked for: the synthetic source captures on a virtual clock.
    synthetic_capture: bool,
    source: AudioSource,
    encoder: AudioEncoder,
    frame_samples: usize,
    rtp_ts: u32,
    mixer: Arc<Mutex<Mixer<u32>>>,
    /// Pulls the mixer from the device's callback; `None`: the virtual clock does.
    _speaker: Option<PulledSpeaker>,
    pbuf: Vec<u8>,
    pull_buf: Vec<i16>,
    mic_frames: u64,
    last_id: Option<u64>,
    video_out: Option<VideoSender>,
    video_in: VideoReceiver,
    last_video_id: Option<u64>,
    /// Origin of the video RTP clock (90 kHz), and its random start.
    video_t0: Instant,
    video_ts0: u32,
    vbuf: Vec<u8>,
    last_pli: Option<Instant>,
    /// Maps capture and playout instants to stamps (with [`JoinOptions::stamps`]).
    clock: Option<WallClock>,
}

impl MediaIo {
    fn open(opts: &JoinOptions) -> Result<Self, CallError> {
        let mixer = Arc::new(Mutex::new(Mixer::new()));
        let speaker = match opts.speaker.as_deref() {
            Some(name) => {
                let m = mixer.clone();
                Some(PulledSpeaker::open(
                    name,
                    Box::new(move |out: &mut [i16]| match m.lock() {
                        Ok(mut mixer) => mixer.pull(Instant::now(), out),
                        Err(_) => out.fill(0),
                    }),
                )?)
            }
            None => None,
        };
        let mut ts = [0u8; 4];
        getrandom::fill(&mut ts).map_err(|e| CallError::Room(e.to_string()))?;
        Ok(Self {
            synthetic_capture: opts.microphone.is_none(),
            microphone: opts
                .microphone
                .as_deref()
                .map(|m| Microphone::open(m, opts.frame_ms))
                .transpose()?,
            source: AudioSource::new(opts.audio, opts.frame_ms),
            encoder: AudioEncoder::new()?,
            frame_samples: (SAMPLE_RATE / 1000 * opts.frame_ms) as usize,
            rtp_ts: u32::from_be_bytes(ts),
            mixer,
            _speaker: speaker,
            pbuf: Vec::new(),
            pull_buf: vec![0; PULL_SAMPLES],
            mic_frames: 0,
            last_id: None,
            video_out: opts
                .video
                .as_ref()
                .map(VideoSender::start)
                .transpose()
                .map_err(|e| CallError::Room(format!("video: {e}")))?,
            video_in: VideoReceiver::new(),
            last_video_id: None,
            video_t0: Instant::now(),
            video_ts0: u32::from_be_bytes(ts).rotate_left(16),
            vbuf: Vec::new(),
            last_pli: None,
            clock: opts.stamps.then(WallClock::new),
        })
    }

    /// The synthetic source's next frame, with its id and capture time (the virtual
    /// device's tick).
    fn synthetic(&mut self, now: Instant) -> (u64, Instant, Vec<i16>) {
        let f = self.source.next_frame(now);
        (f.id, f.captured, f.samples)
    }

    /// A frame the microphone filled, with its id and capture time.
    fn mic_frame(&mut self, f: CapturedFrame) -> (u64, Instant, Vec<i16>) {
        self.mic_frames += 1;
        (self.mic_frames, f.captured, f.samples)
    }

    fn lock_mixer(&self) -> std::sync::MutexGuard<'_, Mixer<u32>> {
        // A poisoned lock means the speaker's callback panicked; the mixer's state is
        // still consistent (each pull is self-contained), so carry on with it.
        self.mixer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Counters at the last status line, for rates.
#[derive(Default)]
struct LastSecond {
    at: Option<Instant>,
    bytes_out: u64,
    bytes_in: u64,
    frames: u64,
    lost: u64,
}

/// The running room call: the core, and what it is wired to.
struct Shell<'a> {
    signaling: &'a mut SignalingClient,
    requester: Requester,
    // Held mutably (though only read) so the shell's future is `Send`: the device's
    // storage is not `Sync`.
    mls: &'a mut MlsDevice,
    pins: &'a mut (dyn Pins + Send),
    inbox: &'a mut Inbox,
    later: &'a mut VecDeque<Event>,
    session: RoomSession,
    sockets: MediaSockets,
    answers_tx: mpsc::UnboundedSender<(u64, Answer)>,
    answers: mpsc::UnboundedReceiver<(u64, Answer)>,
    media: MediaIo,
    report: RoomReport,
    started: Instant,
    members: BTreeMap<u32, Handle>,
    leaf: Option<u32>,
    connected: bool,
    dominant: Option<Handle>,
    last: LastSecond,
    leaving_since: Option<Instant>,
    pair: Option<Pair>,
    /// Where the last datagram came from (so the set of sources is touched only when it
    /// changes).
    last_from: Option<SocketAddr>,
    /// The layers our video goes out in (one on a direct call).
    video_layers: Vec<crate::video::Layer>,
    /// [`JoinOptions::test_inbound_loss`].
    inbound_loss: f64,
}

/// Whether a datagram is lost on the test hook's lossy path (a `share` of them, at
/// random).
fn lost_on_test_path(share: f64) -> bool {
    share > 0.0 && getrandom::u32().is_ok_and(|x| f64::from(x) < share * f64::from(u32::MAX))
}

/// A one-to-one call the room carries, as it goes.
struct Pair {
    call: PairCall,
    /// The other party has been in the group.
    seen: bool,
    /// When it must have come by (set once we are in).
    due: Option<tokio::time::Instant>,
}

/// An [`Env`] from the shell's fields (a macro, so the borrow stays per field).
macro_rules! env {
    ($s:expr) => {
        &mut Env {
            mls: &*$s.mls,
            pins: &mut *$s.pins,
        }
    };
}

impl Shell<'_> {
    async fn run(&mut self, opts: &mut JoinOptions) -> Result<RoomReport, CallError> {
        let room = self.session.room();
        // Handshakes of this room's group held from before.
        for (seq, item) in self.inbox.take_all(|s| for_room(s, room)) {
            if let Err(item) = self
                .session
                .handle_delivery(env!(self), seq, item, Instant::now())
            {
                self.inbox.hold(seq, item);
            }
        }
        let frame = Duration::from_millis(u64::from(opts.frame_ms));
        let mut capture = tokio::time::interval(frame);
        capture.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut clock = tokio::time::interval(Duration::from_millis(10));
        clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut status = tokio::time::interval(Duration::from_secs(1));
        status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leave = opts.leave.clone();
        let mut controls = opts.controls.take();
        let later = |d: Duration| {
            let now = tokio::time::Instant::now();
            // A duration too long to add is as good as for ever.
            now.checked_add(d)
                .unwrap_or(now + Duration::from_secs(100 * 365 * 86_400))
        };
        let end_at = opts.duration.map(later);
        let admit_by = later(opts.admission_timeout);
        let mut buf = vec![0u8; 2048];
        let virtual_clock = opts.speaker.is_none();
        loop {
            if let Some(done) = self.drain().await {
                return Ok(done);
            }
            let wake = self
                .session
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            let leave_by = self
                .leaving_since
                .map(|t| tokio::time::Instant::from_std(t + LEAVE_GRACE));
            tokio::select! {
                _ = sleep_until(wake) => {
                    self.session.handle_timeout(env!(self), Instant::now());
                }
                Some((id, answer)) = self.answers.recv() => {
                    self.session.handle_answer(env!(self), id, answer, Instant::now());
                }
                incoming = self.signaling.next() => {
                    if let Some(why) = self.incoming(incoming) {
                        return Ok(self.finish(Some(why)));
                    }
                }
                r = self.sockets.recv(&mut buf) => match r {
                    Ok(_) if self.connected && lost_on_test_path(self.inbound_loss) => {}
                    Ok((n, from, on)) => {
                        // Bounded: anyone can send datagrams from any address.
                        if self.last_from != Some(from) && self.report.media_from.len() < 16 {
                            self.last_from = Some(from);
                            self.report.media_from.insert(from.ip());
                        }
                        self.session.handle_datagram(from, on, &buf[..n], Instant::now());
                    }
                    Err(e) => tracing::debug!(error = %e, "media socket"),
                },
                // The virtual device's clock, or the microphone's callback, drives capture.
                _ = capture.tick(), if self.media.synthetic_capture => {
                    let frame = self.media.synthetic(Instant::now());
                    self.send_audio(frame);
                }
                Some(f) = next_mic(&mut self.media.microphone) => {
                    let frame = self.media.mic_frame(f);
                    self.send_audio(frame);
                }
                Some(f) = next_video(&mut self.media.video_out) => self.send_video(f),
                Some(d) = self.media.video_in.decoded.recv() => self.decoded(d),
                _ = clock.tick(), if virtual_clock => {
                    let now = Instant::now();
                    let media = &mut self.media;
                    let mut mixer = media.mixer.lock().unwrap_or_else(|p| p.into_inner());
                    mixer.pull(now, &mut media.pull_buf);
                }
                _ = status.tick() => self.status_line(opts),
                Some(c) = next_control(&mut controls) => self.control(c),
                _ = changed(&mut leave) => {
                    leave = None;
                    self.leave();
                }
                _ = sleep_until(end_at), if self.leaving_since.is_none() => self.leave(),
                _ = tokio::time::sleep_until(admit_by), if self.leaf.is_none() && self.leaving_since.is_none() => {
                    // Say we are gone, so nobody adds a device that is not there.
                    let bye = self.requester.request(Request::LeaveRoom { room });
                    let _ = tokio::time::timeout(Duration::from_secs(2), bye).await;
                    return Err(CallError::Room(format!(
                        "nobody in the room let us in within {} s: the members' devices may be frozen or offline; try again",
                        opts.admission_timeout.as_secs()
                    )));
                }
                _ = sleep_until(self.pair.as_ref().and_then(|p| p.due)), if self.leaving_since.is_none() => {
                    let peer = self.pair.as_ref().map(|p| p.call.peer.clone());
                    if let Some(p) = self.pair.as_mut() {
                        p.due = None;
                    }
                    self.report.ended = Some(LeftReason::Failed(format!(
                        "{} did not come into the relayed call",
                        peer.map_or_else(String::new, |p| p.to_string())
                    )));
                    self.leave();
                }
                _ = sleep_until(leave_by) => {
                    // The server did not answer the leave in time: we are gone anyway.
                    return Ok(self.finish(Some(LeftReason::Left)));
                }
            }
        }
    }

    /// Carries out what the core asked for; `Some` once the session is over.
    async fn drain(&mut self) -> Option<RoomReport> {
        while let Some(o) = self.session.poll_output() {
            match o {
                Output::Request { id, body } => {
                    let (r, tx) = (self.requester.clone(), self.answers_tx.clone());
                    tokio::spawn(async move {
                        let answer = match r.request(body).await {
                            Ok(resp) => Answer::Ok(resp),
                            Err(ClientError::Server(e)) => Answer::Refused(e),
                            Err(e) => Answer::Failed(e.to_string()),
                        };
                        let _ = tx.send((id, answer));
                    });
                }
                Output::Ack(seq) => {
                    if let Err(e) = self.signaling.ack(seq).await {
                        tracing::debug!(error = %e, "could not acknowledge a delivery");
                    }
                }
                Output::Transmit { from, to, data } => {
                    if !self.sockets.try_send(from, to, &data) {
                        self.report.send_drops += 1;
                    }
                }
                Output::Event(RoomEvent::Left(why)) => return Some(self.finish(Some(why))),
                Output::Event(e) => self.event(e),
            }
        }
        None
    }

    fn event(&mut self, e: RoomEvent) {
        let since = self.started.elapsed();
        match e {
            RoomEvent::InGroup { leaf } => {
                self.leaf = Some(leaf);
                self.connected = false;
                self.report.admitted.get_or_insert(since);
                if let Some(p) = self.pair.as_mut().filter(|p| !p.seen) {
                    p.due = Some(tokio::time::Instant::now() + p.call.arrive_within);
                }
            }
            RoomEvent::Connected => {
                self.connected = true;
                self.report.connected.get_or_insert(since);
                self.note_sfu_addrs();
            }
            RoomEvent::Members(m) => self.members_changed(m),
            RoomEvent::Epoch { epoch, code } => self.report.codes.push((epoch, code)),
            RoomEvent::Audio(f) => {
                if Some(f.sender) == self.leaf {
                    return; // Our own frames, echoed: nothing to play.
                }
                self.report.first_audio.get_or_insert(since);
                self.report
                    .senders
                    .entry(f.sender)
                    .or_default()
                    .first_audio
                    .get_or_insert(since);
                let mut mixer = self.media.lock_mixer();
                match mixer.chain_mut(f.sender) {
                    Ok(chain) => chain.push(f.timestamp, f.payload, Instant::now()),
                    Err(e) => tracing::warn!(error = %e, "no decoder for a sender"),
                }
            }
            RoomEvent::Speaker(d) => self.dominant = Some(d.handle),
            RoomEvent::MemberRefused { shown, reason } => {
                self.report
                    .refused_members
                    .push(format!("{shown}: {reason}"));
            }
            RoomEvent::Video(f) => self.video_in(f),
            RoomEvent::KeyframeNeeded => {
                if let Some(v) = self.media.video_out.as_ref() {
                    v.request_keyframe();
                    self.report.video_keyframes_forced += 1;
                }
            }
            RoomEvent::VideoLost { sender } => {
                self.media.video_in.lost(sender);
                self.ask_keyframe();
            }
            RoomEvent::SendEstimate(bps) => self.follow_estimate(bps),
            RoomEvent::PausedLayers(layers) => {
                if let Some(v) = self.media.video_out.as_ref() {
                    v.pause(&layers);
                }
            }
            RoomEvent::Left(_) => {}
        }
    }

    /// Sends one encoded layer frame (once media is up), stamped for tests and the bench.
    fn send_video(&mut self, f: LayerFrame) {
        let now = Instant::now();
        let m = &mut self.media;
        m.last_video_id = Some(f.id);
        if !self.connected || self.members.len() < 2 {
            // Nobody to see it (we are alone in the group, or media is not up).
            return;
        }
        let stamp = m.clock.map(|c| Stamp {
            id: f.id,
            captured_us: c.micros(f.captured),
        });
        payload::encode(stamp, &f.data, &mut m.vbuf);
        let since = f.captured.saturating_duration_since(m.video_t0);
        let ts = m
            .video_ts0
            .wrapping_add((since.as_micros() * 90 / 1000) as u32);
        self.session
            .send_video(&m.vbuf, ts, f.layer, f.keyframe, now);
        self.report.video_sent += 1;
        self.report.video_keyframes += u64::from(f.keyframe);
    }

    /// A decrypted video frame of another member: to its decoder, or (until its next
    /// keyframe) skipped, with a keyframe asked for at most every 200 ms.
    fn video_in(&mut self, f: crate::session::Frame) {
        if Some(f.sender) == self.leaf {
            return;
        }
        let Ok((stamp, h264)) = payload::decode(&f.payload) else {
            return;
        };
        if self.media.video_in.push(f.sender, h264, stamp) {
            self.ask_keyframe();
        }
    }

    /// Asks for a keyframe of what we receive, at most every [`PLI_EVERY`].
    fn ask_keyframe(&mut self) {
        let now = Instant::now();
        let m = &mut self.media;
        if m.last_pli
            .is_none_or(|t| now.duration_since(t) >= PLI_EVERY)
        {
            m.last_pli = Some(now);
            self.report.keyframe_requests_sent += 1;
            self.session.request_keyframe(now);
        }
    }

    fn decoded(&mut self, d: DecodedVideo) {
        let r = self.report.senders.entry(d.sender).or_default();
        r.video_decoded += 1;
        r.video_widths.insert(d.width);
        // The frame's id: its capture stamp's (exact), else the one drawn in the picture
        // (unreadable in a picture coded too coarsely).
        if let Some(id) = d.stamp.map(|s| s.id).or(d.pattern_id) {
            r.video_ids.push(id);
        }
        if let (Some(s), Some(p)) = (d.stamp, d.pattern_id)
            && s.id != p
        {
            // The picture is not the frame it says it is.
            r.video_mismatches += 1;
        }
        if let (Some(c), Some(s)) = (self.media.clock, d.stamp) {
            r.video_latency.push(c.since(s.captured_us, d.decoded_at));
        }
    }

    /// The group's members changed: chains of senders who left are closed (their figures
    /// kept for the report).
    fn members_changed(&mut self, members: BTreeMap<u32, Handle>) {
        self.collect_stamps();
        let mut mixer = self.media.mixer.lock().unwrap_or_else(|p| p.into_inner());
        for (leaf, handle) in &self.members {
            if members.get(leaf) != Some(handle)
                && let Some(v) = self.media.video_in.remove(*leaf)
            {
                self.report.senders.entry(*leaf).or_default().video = v;
            }
            if members.get(leaf) != Some(handle)
                && let Some(chain) = mixer.remove(*leaf)
            {
                let r = self.report.senders.entry(*leaf).or_default();
                r.handle = Some(handle.clone());
                r.stats = chain.stats();
                r.received_hz = chain.received_hz();
            }
        }
        drop(mixer);
        self.members = members;
        self.pair_members();
    }

    /// A relayed one-to-one call ends when the other party, once there, is gone.
    fn pair_members(&mut self) {
        let Some(p) = self.pair.as_mut() else {
            return;
        };
        if self.members.len() > 2 {
            // Only the two devices are ever added; a group that holds more came from
            // someone else's commit.
            let n = self.members.len();
            self.report.ended = Some(LeftReason::KeyMismatch {
                handle: p.call.peer.handle.to_string(),
                reason: format!("the relayed call's group holds {n} members, not 2"),
            });
            self.leave();
            return;
        }
        let present = self.members.values().any(|h| *h == p.call.peer.handle);
        if present {
            p.seen = true;
            p.due = None;
            let peer = p.call.peer.handle.as_str().as_bytes();
            self.report.peer_key = self.session.group().and_then(|g| {
                g.members()
                    .into_iter()
                    .find(|m| m.identity == peer)
                    .map(|m| m.signature_key)
            });
        } else if p.seen {
            tracing::info!(peer = %p.call.peer, "the other party left the relayed call");
            self.leave();
        }
    }

    /// Hands an arrival to the core; `Some` if signaling is gone, which ends the session
    /// (no commits, no roster).
    fn incoming(&mut self, incoming: Option<Incoming>) -> Option<LeftReason> {
        let now = Instant::now();
        match incoming {
            Some(Incoming::Event(Event::KeyPackagesLow { remaining })) => {
                self.top_up(remaining);
            }
            Some(Incoming::Event(Event::CallEnded { call, reason }))
                if self.pair.as_ref().is_some_and(|p| p.call.call == call) =>
            {
                self.report.call_ended = Some(reason);
                self.leave();
            }
            // A relayed call's own negotiation has no use here (and must not pile up); a
            // direct call's is the session's.
            Some(Incoming::Event(Event::Relayed { call, .. }))
                if self
                    .pair
                    .as_ref()
                    .is_some_and(|p| p.call.call == call && !p.call.direct) => {}
            Some(Incoming::Event(e)) => {
                if !self.session.handle_event(env!(self), &e, now) {
                    self.later.push_back(e);
                }
            }
            Some(Incoming::Delivery {
                seq,
                item: item @ Stored::RoomInvite { .. },
            }) => {
                // Kept for whoever records invitations (`sotto rooms`, `sotto listen`).
                self.inbox.hold(seq, item);
            }
            Some(Incoming::Delivery { seq, item }) => {
                if let Err(item) = self.session.handle_delivery(env!(self), seq, item, now) {
                    self.inbox.hold(seq, item);
                }
            }
            Some(Incoming::Goodbye(e)) => {
                return Some(LeftReason::Failed(format!(
                    "the server closed the session: {}",
                    e.message
                )));
            }
            None => {
                return Some(LeftReason::Failed(
                    "the connection to the server was lost".into(),
                ));
            }
        }
        None
    }

    /// Sends the user's request on the call's connection; its answer goes back to them.
    fn control(&mut self, c: RoomControl) {
        let room = self.session.room();
        let body = match c.ask {
            RoomAsk::Invite(handles) => Request::InviteToRoom { room, handles },
            RoomAsk::Remove(handle) => Request::RemoveFromRoom { room, handle },
        };
        let r = self.requester.clone();
        tokio::spawn(async move {
            let outcome = r.request(body).await.map(|_| ()).map_err(CallError::from);
            let _ = c.answer.send(outcome);
        });
    }

    /// Claims took our KeyPackages low: new ones go up without holding anything up.
    fn top_up(&mut self, remaining: u32) {
        let upload = match crate::call::top_up_request(self.mls, remaining) {
            Ok(Some(u)) => u,
            Ok(None) => return,
            Err(e) => return tracing::warn!(error = %e, "could not make KeyPackages"),
        };
        let r = self.requester.clone();
        tokio::spawn(async move {
            if let Err(e) = r.request(upload).await {
                tracing::warn!(error = %e, "could not top up KeyPackages");
            }
        });
    }

    /// Spends a direct call's estimate: audio first, video what is left up to its one
    /// layer's configured rate (`bitrate::split`). Simulcast is the SFU's to choose.
    fn follow_estimate(&mut self, bps: u64) {
        self.report.estimate_updates += u64::from(self.report.estimate_bps != Some(bps));
        self.report.estimate_bps = Some(bps);
        let video_max = match self.video_layers.as_slice() {
            [one] => Some(one.bitrate),
            _ => None,
        };
        let split = crate::bitrate::split(bps, video_max);
        if let Err(e) = self
            .media
            .encoder
            .set_bitrate(i32::try_from(split.audio).unwrap_or(i32::MAX))
        {
            tracing::warn!(error = %e, "the audio encoder refused a bitrate");
        }
        self.report.audio_bitrate = split.audio;
        self.report.audio_bitrate_min = match self.report.audio_bitrate_min {
            0 => split.audio,
            m => m.min(split.audio),
        };
        if let (Some(v), Some(_)) = (self.media.video_out.as_ref(), video_max) {
            v.set_bitrate(split.video);
            self.report.video_bitrate = split.video;
        }
    }

    /// Encodes a captured frame and sends it (once media is up and anyone else is in the
    /// group). A frame the encoder refuses is logged and skipped: one bad frame does not
    /// end the call.
    fn send_audio(&mut self, (id, captured, pcm): (u64, Instant, Vec<i16>)) {
        let now = Instant::now();
        let m = &mut self.media;
        m.last_id = Some(id);
        let encoded = match m.encoder.encode(&pcm) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "the audio encoder refused a frame");
                None
            }
        };
        if let Some(frame) = encoded {
            let level = AudioLevel::of_samples(&pcm, frame.voice);
            let stamp = m.clock.map(|c| Stamp {
                id,
                captured_us: c.micros(captured),
            });
            payload::encode(stamp, frame.data, &mut m.pbuf);
            if self.connected && self.members.len() > 1 {
                self.session.send_audio(&m.pbuf, m.rtp_ts, level, now);
                self.report.audio_sent += 1;
            }
        }
        m.rtp_ts = m.rtp_ts.wrapping_add(m.frame_samples as u32);
    }

    fn leave(&mut self) {
        if self.leaving_since.is_none() {
            self.leaving_since = Some(Instant::now());
            self.session.leave();
        }
    }

    /// Moves the chains' played stamps into the report (a chain keeps a bounded number).
    fn collect_stamps(&mut self) {
        let Some(clock) = self.media.clock else {
            return;
        };
        let mut mixer = self.media.mixer.lock().unwrap_or_else(|p| p.into_inner());
        let leaves: Vec<u32> = mixer.chains().map(|(l, _)| l).collect();
        for leaf in leaves {
            let Ok(chain) = mixer.chain_mut(leaf) else {
                continue;
            };
            let played = chain.take_played_stamps();
            let r = self.report.senders.entry(leaf).or_default();
            r.played.extend(
                played
                    .iter()
                    .map(|p| (p.stamp.id, clock.since(p.stamp.captured_us, p.played_at))),
            );
        }
    }

    fn status_line(&mut self, opts: &JoinOptions) {
        self.collect_stamps();
        let Some(tx) = opts.status.as_ref() else {
            return;
        };
        let now = Instant::now();
        let st = self.session.status();
        let (speaking, played, concealed) = {
            let mixer = self.media.lock_mixer();
            let speaking: Vec<Handle> = mixer
                .active(now)
                .filter_map(|l| self.members.get(&l).cloned())
                .collect();
            let (mut played, mut concealed) = (0, 0);
            for (_, chain) in mixer.chains() {
                let st = chain.stats();
                played += st.played;
                concealed += st.concealed;
            }
            (speaking, played, concealed)
        };
        let secs = self
            .last
            .at
            .map_or(1.0, |t| now.duration_since(t).as_secs_f64().max(0.001));
        let rate = |now: u64, then: u64| ((now.saturating_sub(then)) as f64 * 8.0 / secs) as u64;
        let lost = st.link.frames_lost.saturating_sub(self.last.lost);
        let got = st.link.frames_in.saturating_sub(self.last.frames);
        let line = RoomLine {
            phase: if self.leaving_since.is_some() {
                RoomPhase::Leaving
            } else if self.leaf.is_none() {
                RoomPhase::WaitingToBeLetIn
            } else if !self.connected {
                RoomPhase::Connecting
            } else {
                RoomPhase::InCall
            },
            members: self.members.values().cloned().collect(),
            speaking,
            dominant: self.dominant.clone(),
            epoch: st.epoch,
            code: st.code.clone(),
            send_bps: rate(st.link.bytes_out, self.last.bytes_out),
            recv_bps: rate(st.link.bytes_in, self.last.bytes_in),
            loss: if lost + got == 0 {
                0.0
            } else {
                lost as f32 / (lost + got) as f32
            },
            rejected: st.decrypt_failures.values().sum(),
            last_frame_id: self.media.last_id,
            last_video_id: self.media.last_video_id,
            video_decoded: self.report.senders.values().map(|s| s.video_decoded).sum(),
            played,
            concealed,
            rtt: st.link.rtt,
            estimate_bps: self.report.estimate_bps,
            via_sfu: self.session.via_sfu(),
        };
        self.last = LastSecond {
            at: Some(now),
            bytes_out: st.link.bytes_out,
            bytes_in: st.link.bytes_in,
            frames: st.link.frames_in,
            lost: st.link.frames_lost,
        };
        let _ = tx.send(line);
    }

    /// The report, with the figures of every chain still open.
    fn finish(&mut self, ended: Option<LeftReason>) -> RoomReport {
        self.collect_stamps();
        let st = self.session.status();
        let mixer = self.media.lock_mixer();
        for (leaf, chain) in mixer.chains() {
            let r = self.report.senders.entry(leaf).or_default();
            r.handle = self.members.get(&leaf).cloned().or(r.handle.take());
            r.stats = chain.stats();
            r.received_hz = chain.received_hz();
        }
        drop(mixer);
        for (leaf, v) in self.media.video_in.stats() {
            self.report.senders.entry(*leaf).or_default().video = *v;
        }
        let mut report = std::mem::take(&mut self.report);
        report.ended = report.ended.or(ended);
        report.leaf = self.leaf;
        report.decrypt_failures = st.decrypt_failures;
        report.held_recovered = st.held_recovered;
        report.held_expired = st.held_expired;
        report.commits = st.commits;
        report.rejoins = st.rejoins;
        report.frames_lost = st.link.frames_lost;
        report.via_sfu = self.session.via_sfu();
        report.rekeys = st.rekeys;
        report.epoch_keyframes = st.epoch_keyframes;
        report.keyframe_requests_received = st.keyframe_requests_received;
        report.retransmissions_received = st.link.repaired;
        report.rtt = st.link.rtt;
        report
    }

    /// Where the SFU's answer says our media goes (kept across reconnections).
    fn note_sfu_addrs(&mut self) {
        for ip in self.session.status().sfu_addrs {
            if !self.report.sfu_addrs.contains(&ip) {
                self.report.sfu_addrs.push(ip);
            }
        }
    }
}

/// Whether a delivery is a handshake of the room `room`'s group.
fn for_room(s: &Stored, room: RoomId) -> bool {
    matches!(owner(s), Owner::Group(g, _) if g == room.0)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The microphone's next frame; pending for ever without one (or once it stopped, with a
/// warning: the call goes on silent rather than ending, and no synthetic sound stands in).
async fn next_mic(m: &mut Option<Microphone>) -> Option<CapturedFrame> {
    match m {
        Some(mic) => match mic.next_frame().await {
            Some(f) => Some(f),
            None => {
                tracing::warn!("the microphone stopped delivering audio");
                *m = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

/// The next encoded video frame; never, without video (or once the encoder stopped).
async fn next_video(v: &mut Option<VideoSender>) -> Option<LayerFrame> {
    match v {
        Some(s) => match s.next().await {
            Some(f) => Some(f),
            None => {
                *v = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

/// The next control; never, without a channel (or once it closed).
async fn next_control(
    rx: &mut Option<mpsc::UnboundedReceiver<RoomControl>>,
) -> Option<RoomControl> {
    match rx {
        Some(r) => match r.recv().await {
            Some(c) => Some(c),
            None => {
                *rx = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

/// Resolves when the flag becomes `true`; never, without a flag.
async fn changed(flag: &mut Option<watch::Receiver<bool>>) {
    match flag {
        Some(rx) => {
            if rx.wait_for(|v| *v).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}
