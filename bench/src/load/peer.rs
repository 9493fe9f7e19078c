//! The media side of a light participant, sans-IO: a str0m `Rtc` (full ICE, DTLS-SRTP,
//! RTP mode) that publishes one audio and one video line and receives on slots, sending
//! real SFrame frames under its MLS-derived keys and checking a sample of what it gets.
//!
//! Each frame's plaintext says who sent it, which track, its id, layer and keyframe flag
//! ([`FrameInfo`]), then a known filler. The receiver decrypts (which authenticates the
//! sender through the KID's key), then compares the plaintext's claims with what the key
//! said: the ground truth for loss, order and "decodable after a switch". Pre-made payloads
//! stand in for codecs, so a run measures the SFU, not encoders.

use sotto_media::ContextId;
use sotto_media::keys::CallKeys;
use sotto_sfu::frame_marking::Rfc9626;
use sotto_wire::rtp_ext::FrameMarking;
use sotto_wire::rtp_sframe::{AssemblerLimits, FrameAssembler, packetize};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::rtp::{ExtensionMap, ExtensionValues, RtpWrite};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// The filler every frame's plaintext carries after its [`FrameInfo`]: known bytes, so a
/// tap can prove none of them crosses the SFU in the clear.
pub const KNOWN_PLAINTEXT: &[u8] = b"sotto known plaintext: the SFU must never see this. ";
/// Largest RTP payload we make (descriptor included).
const MAX_PAYLOAD: usize = 1100;
/// Audio frames every 20 ms; video at 30 frames per second, a keyframe every 2 s.
pub const AUDIO_EVERY: Duration = Duration::from_millis(20);
/// See [`AUDIO_EVERY`].
pub const VIDEO_EVERY: Duration = Duration::from_millis(33);
const KEYFRAME_EVERY: u64 = 60;
/// How long a complete frame waits behind a gap for its repair (NACK, then RTX).
const REPAIR_WAIT: Duration = Duration::from_millis(250);
/// The simulcast layers' RIDs, lowest first, and each one's frame size (≈ 120 kbit/s,
/// 360 kbit/s and 1.1 Mbit/s at 30 frames per second; keyframes are three times larger).
pub const RIDS: [&str; 3] = ["l", "m", "h"];
/// See [`RIDS`].
pub const LAYER_BYTES: [usize; 3] = [500, 1500, 4500];

/// What every frame's plaintext starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    /// The sender's leaf, as it claims.
    pub sender: u32,
    /// Audio or video.
    pub video: bool,
    /// The frame's id (per sender and track, from 0).
    pub id: u64,
    /// Simulcast layer (0 = lowest).
    pub layer: u8,
    /// A keyframe.
    pub keyframe: bool,
}

const MAGIC: &[u8; 4] = b"STTO";
const INFO_LEN: usize = 4 + 4 + 1 + 8 + 1 + 1;

impl FrameInfo {
    fn encode(&self, size: usize) -> Vec<u8> {
        let mut p = Vec::with_capacity(size.max(INFO_LEN));
        p.extend_from_slice(MAGIC);
        p.extend_from_slice(&self.sender.to_be_bytes());
        p.push(u8::from(self.video));
        p.extend_from_slice(&self.id.to_be_bytes());
        p.push(self.layer);
        p.push(u8::from(self.keyframe));
        while p.len() < size {
            let take = (size - p.len()).min(KNOWN_PLAINTEXT.len());
            p.extend_from_slice(&KNOWN_PLAINTEXT[..take]);
        }
        p
    }

    /// Reads the info at the start of a plaintext.
    pub fn parse(p: &[u8]) -> Option<Self> {
        if p.len() < INFO_LEN || &p[..4] != MAGIC {
            return None;
        }
        let u32_at = |i: usize| p.get(i..i + 4).and_then(|b| b.try_into().ok());
        let u64_at = |i: usize| p.get(i..i + 8).and_then(|b| b.try_into().ok());
        Some(FrameInfo {
            sender: u32::from_be_bytes(u32_at(4)?),
            video: p[8] != 0,
            id: u64::from_be_bytes(u64_at(9)?),
            layer: p[17],
            keyframe: p[18] != 0,
        })
    }
}

/// What a peer counted of one remote sender's track.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackStats {
    /// Frames decrypted and checked.
    pub frames: u64,
    /// The lowest and highest frame ids seen.
    pub first_id: Option<u64>,
    /// See [`Self::first_id`].
    pub last_id: Option<u64>,
    /// Frames that arrived with a lower id than one seen before.
    pub out_of_order: u64,
    /// Keyframes among them.
    pub keyframes: u64,
    /// Frames per simulcast layer.
    pub layers: BTreeMap<u8, u64>,
    /// The first frame's layer and every change of layer since: (when, layer, whether that
    /// frame was a keyframe — or came after missing frames, so its keyframe was lost in
    /// transit rather than skipped by the SFU).
    pub switches: Vec<(Instant, u8, bool)>,
    /// The layer of the last frame.
    pub last_layer: Option<u8>,
    /// Every frame id received.
    pub ids: std::collections::BTreeSet<u64>,
}

/// What a peer counted.
#[derive(Clone, Debug, Default)]
pub struct PeerStats {
    /// By (sender leaf from the key, video?).
    pub tracks: BTreeMap<(u32, bool), TrackStats>,
    /// Frames that failed to decrypt.
    pub undecryptable: u64,
    /// Frames whose plaintext named another sender or track than the key did.
    pub mislabelled: u64,
    /// Per slot: every sequence number and timestamp received, in arrival order.
    pub slot_packets: HashMap<Mid, Vec<(u64, u32)>>,
    /// Frames sent: (audio, video).
    pub sent: (u64, u64),
    /// When its connection came up (ICE and DTLS done on its side).
    pub connected_at: Option<Instant>,
    /// Every set of paused layers the SFU sent it, in order.
    pub pauses: Vec<Vec<u8>>,
    /// Malformed datagrams it sent (garbage mode).
    pub garbage_sent: u64,
    /// Every video RTP packet received, as (SSRC, sequence number): repaired ones included,
    /// so a test can hold it against a proxy's drop log.
    pub video_packets: std::collections::HashSet<(u32, u16)>,
}

/// A light participant's media; see the module docs.
pub struct MediaPeer {
    rtc: Rtc,
    local: SocketAddr,
    leaf: u32,
    keys: CallKeys,
    audio: Mid,
    video: Mid,
    pts: (Option<Pt>, Option<Pt>),
    assemblers: HashMap<Mid, FrameAssembler>,
    next_audio: Instant,
    next_video: Instant,
    audio_id: u64,
    video_id: u64,
    /// Sizes of the pre-made frames' plaintexts.
    pub audio_bytes: usize,
    /// See [`Self::audio_bytes`]; keyframes are three times this.
    pub video_bytes: usize,
    /// Whether this peer sends video.
    pub send_video: bool,
    /// Set to stop sending (the connection stays up and keeps receiving), so a run can
    /// let what is in flight arrive before it stops.
    pub quiet: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The RFC 6464 level its audio packets carry (-dBov: 0 loudest, -127 silent);
    /// shared so a test can change it while the peer runs.
    pub audio_level: std::sync::Arc<std::sync::atomic::AtomicI8>,
    seq: (u64, u64),
    /// Sequence numbers of the simulcast layers' streams.
    layer_seq: [u64; 3],
    /// Whether it sends three simulcast layers (`l`, `m`, `h`) instead of one.
    simulcast: bool,
    /// Layers the SFU told it to pause.
    paused: [bool; 3],
    /// Layers resumed since their last frame: their next frame is a keyframe.
    resumed: [bool; 3],
    /// Keys and leaf it sends under instead of its own (a test of sender binding).
    forged: Option<(CallKeys, u32)>,
    /// Garbage datagrams sent with every frame (a test of the SFU's input handling).
    pub garbage: bool,
    /// A keyframe was asked for (PLI/FIR): the next video frame is one.
    keyframe_asked: bool,
    /// Keyframe requests received.
    pub keyframe_requests: u64,
    connected: bool,
    next_timeout: Instant,
    transmits: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// Where its media goes (the SFU), once it has sent anything.
    remote: Option<SocketAddr>,
    /// What it counted.
    pub stats: PeerStats,
}

/// The extension map both ends use: str0m's standard one with RFC 9626 frame marking.
pub fn extensions() -> ExtensionMap {
    let mut exts = ExtensionMap::standard();
    exts.set(5, Rfc9626::extension());
    exts
}

impl MediaPeer {
    /// A peer on `local` that will publish as `leaf` and receive on `audio_slots` +
    /// `video_slots` lines; returns it with its SDP offer and the pending state for
    /// [`Self::accept_answer`].
    pub fn offer(
        local: SocketAddr,
        leaf: u32,
        keys: CallKeys,
        audio_slots: usize,
        video_slots: usize,
        now: Instant,
    ) -> (Self, String, SdpPendingOffer) {
        Self::offer_with(local, leaf, keys, (audio_slots, video_slots), false, now)
    }

    /// [`Self::offer`], publishing video as three simulcast layers when `simulcast`.
    pub fn offer_with(
        local: SocketAddr,
        leaf: u32,
        keys: CallKeys,
        (audio_slots, video_slots): (usize, usize),
        simulcast: bool,
        now: Instant,
    ) -> (Self, String, SdpPendingOffer) {
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .set_extension_map(extensions())
            .build(now);
        if let Ok(c) = Candidate::host(local, "udp") {
            rtc.add_local_candidate(c);
        }
        let mut sdp = rtc.sdp_api();
        let audio = sdp.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let layers = simulcast.then(|| {
            let mut s = Simulcast::new();
            for rid in RIDS {
                s.add_send_layer(SimulcastLayer::new(rid));
            }
            s
        });
        let video = sdp.add_media(MediaKind::Video, Direction::SendOnly, None, None, layers);
        for _ in 0..audio_slots {
            sdp.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        }
        for _ in 0..video_slots {
            sdp.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        }
        let (offer, pending) = sdp.apply().expect("an offer with media lines");
        let peer = MediaPeer {
            rtc,
            local,
            leaf,
            keys,
            audio,
            video,
            pts: (None, None),
            assemblers: HashMap::new(),
            next_audio: now,
            next_video: now,
            audio_id: 0,
            video_id: 0,
            audio_bytes: 80,
            video_bytes: 1200,
            send_video: true,
            quiet: Default::default(),
            audio_level: std::sync::Arc::new(std::sync::atomic::AtomicI8::new(-30)),
            seq: (1, 1),
            layer_seq: [1; 3],
            simulcast,
            paused: [false; 3],
            resumed: [false; 3],
            forged: None,
            garbage: false,
            keyframe_asked: false,
            keyframe_requests: 0,
            connected: false,
            next_timeout: now,
            transmits: Vec::new(),
            remote: None,
            stats: PeerStats::default(),
        };
        (peer, offer.to_sdp_string(), pending)
    }

    /// Takes the SFU's answer.
    pub fn accept_answer(&mut self, pending: SdpPendingOffer, answer: &str) -> Result<(), String> {
        let answer = SdpAnswer::from_sdp_string(answer).map_err(|e| e.to_string())?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| e.to_string())?;
        self.pts = sotto_client::session::sfu_link::payload_types(&self.rtc);
        Ok(())
    }

    /// Sends every frame from now on under `leaf`'s keys (which any member can derive)
    /// and claims to be `leaf` inside it: an impersonation the SFU must drop.
    pub fn impersonate(&mut self, keys: CallKeys, leaf: u32) {
        self.forged = Some((keys, leaf));
    }

    /// Whether ICE and DTLS are up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The address it sends from.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// A datagram arrived.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let Ok(contents) = DatagramRecv::try_from(bytes) else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: self.local,
                contents,
            },
        );
        if self.rtc.handle_input(input).is_ok() {
            self.drain(now);
        }
    }

    /// Time passed: timers, and the frames that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_timeout {
            let _ = self.rtc.handle_input(Input::Timeout(now));
        }
        if self.quiet.load(std::sync::atomic::Ordering::Relaxed) {
            self.next_audio = now + AUDIO_EVERY;
            self.next_video = now + VIDEO_EVERY;
        } else if self.connected {
            while now >= self.next_audio {
                self.send_frame(false, self.next_audio);
                self.next_audio += AUDIO_EVERY;
            }
            while self.send_video && now >= self.next_video {
                self.send_frame(true, self.next_video);
                self.next_video += VIDEO_EVERY;
            }
        }
        self.drain(now);
    }

    /// When [`Self::handle_timeout`] has work next.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.next_timeout;
        if self.connected {
            t = t.min(self.next_audio);
            if self.send_video {
                t = t.min(self.next_video);
            }
        }
        t
    }

    /// Datagrams to send: (from, to, bytes).
    pub fn take_transmits(&mut self) -> std::vec::Drain<'_, (SocketAddr, SocketAddr, Vec<u8>)> {
        self.transmits.drain(..)
    }

    fn send_frame(&mut self, video: bool, at: Instant) {
        let id = if video { self.video_id } else { self.audio_id };
        let keyframe = video && (id % KEYFRAME_EVERY == 0 || self.keyframe_asked);
        if keyframe {
            self.keyframe_asked = false;
        }
        if !video {
            self.send_layer(false, None, id, false, at);
            self.audio_id += 1;
            self.stats.sent.0 += 1;
        } else if self.simulcast {
            for layer in 0..3u8 {
                let l = usize::from(layer);
                if self.paused[l] {
                    continue;
                }
                let kf = keyframe || std::mem::take(&mut self.resumed[l]);
                self.send_layer(true, Some(layer), id, kf, at);
            }
            self.video_id += 1;
            self.stats.sent.1 += 1;
        } else {
            self.send_layer(true, None, id, keyframe, at);
            self.video_id += 1;
            self.stats.sent.1 += 1;
        }
        if self.garbage {
            self.send_garbage(id);
        }
    }

    /// Pauses the layers the SFU named; a layer that comes back starts with a keyframe.
    pub fn set_paused(&mut self, paused: &[u8]) {
        self.stats.pauses.push(paused.to_vec());
        for l in 0..3u8 {
            let now_paused = paused.contains(&l);
            let i = usize::from(l);
            if self.paused[i] && !now_paused {
                self.resumed[i] = true;
            }
            self.paused[i] = now_paused;
        }
    }

    /// Sends one frame: audio, single-layer video (`layer` None) or one simulcast layer.
    fn send_layer(&mut self, video: bool, layer: Option<u8>, id: u64, keyframe: bool, at: Instant) {
        let (pt, mid) = if video {
            (self.pts.1, self.video)
        } else {
            (self.pts.0, self.audio)
        };
        let Some(pt) = pt else { return };
        let sender = self.forged.as_ref().map_or(self.leaf, |(_, l)| *l);
        let info = FrameInfo {
            sender,
            video,
            id,
            layer: layer.unwrap_or(0),
            keyframe,
        };
        let base = match layer {
            Some(l) => LAYER_BYTES[usize::from(l).min(2)],
            None if video => self.video_bytes,
            None => self.audio_bytes,
        };
        let size = if keyframe { base * 3 } else { base };
        let context = if video {
            ContextId::Video
        } else {
            ContextId::Audio
        };
        let mut frame = Vec::new();
        let keys = match &mut self.forged {
            Some((keys, _)) => keys,
            None => &mut self.keys,
        };
        if keys
            .encrypt(context, b"", &info.encode(size), &mut frame)
            .is_err()
        {
            return;
        }
        let parts = packetize(&frame, MAX_PAYLOAD);
        let n = parts.len();
        let ts = if video {
            (id as u32).wrapping_mul(3000)
        } else {
            (id as u32).wrapping_mul(960)
        };
        let level = self.audio_level.load(std::sync::atomic::Ordering::Relaxed);
        let rid = layer.map(|l| Rid::from(RIDS[usize::from(l).min(2)]));
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, rid) else {
            return;
        };
        let seq = match (video, layer) {
            (false, _) => &mut self.seq.0,
            (true, None) => &mut self.seq.1,
            (true, Some(l)) => &mut self.layer_seq[usize::from(l).min(2)],
        };
        for (i, part) in parts.into_iter().enumerate() {
            let mut ext = ExtensionValues {
                audio_level: Some(if video { -127 } else { level }),
                voice_activity: Some(!video),
                ..Default::default()
            };
            if video {
                let fm = FrameMarking {
                    start: i == 0,
                    end: i + 1 == n,
                    independent: keyframe,
                    ..Default::default()
                };
                Rfc9626::write(&mut ext, &fm);
            }
            stream.write_rtp(
                RtpWrite::new(pt, (*seq).into(), ts, at, part)
                    .marker(i + 1 == n)
                    .ext_vals(ext)
                    .nackable(video),
            );
            *seq += 1;
        }
    }

    /// Malformed datagrams to wherever our media goes: truncated and oversized RTP, RTCP
    /// and STUN, and noise.
    fn send_garbage(&mut self, n: u64) {
        let Some(to) = self.transmits.last().map(|t| t.1).or(self.remote) else {
            return;
        };
        let noise = |len: usize| -> Vec<u8> {
            (0..len)
                .map(|i| (i as u64).wrapping_mul(n | 1).wrapping_add(n) as u8)
                .collect()
        };
        let mut stun = vec![0x00, 0x01, 0x00, 0x40, 0x21, 0x12, 0xa4, 0x42];
        stun.extend_from_slice(&noise(12));
        let junk: [Vec<u8>; 8] = [
            vec![0x80],
            vec![0x80, 0x60, 0x00],
            [
                &[0x90u8, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9][..],
                &noise(40),
            ]
            .concat(),
            [&[0x81u8, 200, 0, 40][..], &noise(8)].concat(),
            [&[0x80u8, 205, 0xff, 0xff][..], &noise(30)].concat(),
            stun,
            noise(1500),
            [&[22u8, 254, 253][..], &noise(60)].concat(),
        ];
        for j in junk {
            self.transmits.push((self.local, to, j));
            self.stats.garbage_sent += 1;
        }
    }

    fn drain(&mut self, now: Instant) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    self.remote = Some(t.destination);
                    self.transmits
                        .push((t.source, t.destination, t.contents.into()));
                }
                Ok(Output::Event(Event::Connected)) => {
                    self.connected = true;
                    self.stats.connected_at = Some(now);
                    self.next_audio = now;
                    self.next_video = now;
                }
                Ok(Output::Event(Event::KeyframeRequest(_))) => {
                    self.keyframe_asked = true;
                    self.keyframe_requests += 1;
                }
                Ok(Output::Event(Event::RtpPacket(p))) => {
                    let mid = self
                        .rtc
                        .direct_api()
                        .stream_rx(&p.header.ssrc)
                        .map(|s| s.mid());
                    if let Some(mid) = mid {
                        let video = self.rtc.media(mid).map(|m| m.kind()) == Some(MediaKind::Video);
                        if video {
                            self.stats
                                .video_packets
                                .insert((*p.header.ssrc, p.header.sequence_number));
                        }
                        self.receive(mid, *p.seq_no, p.header.timestamp, &p.payload, now);
                    }
                }
                Ok(Output::Event(_)) => {}
                Err(_) => return,
            }
        }
    }

    fn receive(&mut self, mid: Mid, seq: u64, ts: u32, payload: &[u8], now: Instant) {
        self.stats
            .slot_packets
            .entry(mid)
            .or_default()
            .push((seq, ts));
        let frames = self
            .assemblers
            .entry(mid)
            .or_insert_with(|| {
                FrameAssembler::new(AssemblerLimits {
                    repair_wait: REPAIR_WAIT,
                    ..AssemblerLimits::default()
                })
            })
            .push(seq as u16, ts, payload, now);
        for f in frames {
            self.check_frame(&f.frame, now);
        }
    }

    fn check_frame(&mut self, frame: &[u8], now: Instant) {
        let mut plain = Vec::new();
        let Ok(got) = self.keys.decrypt(frame, b"", &mut plain, now) else {
            self.stats.undecryptable += 1;
            return;
        };
        let video = got.context == ContextId::Video;
        match FrameInfo::parse(&plain) {
            Some(info) if info.sender == got.sender && info.video == video => {
                let t = self.stats.tracks.entry((got.sender, video)).or_default();
                t.frames += 1;
                t.ids.insert(info.id);
                t.keyframes += u64::from(info.keyframe);
                *t.layers.entry(info.layer).or_default() += 1;
                let late = t.last_id.is_some_and(|l| info.id < l);
                if late {
                    t.out_of_order += 1;
                } else {
                    // A late (repaired) frame of the layer before is not a switch.
                    if t.last_layer != Some(info.layer) {
                        let gap = t.last_id.is_some_and(|l| info.id > l + 1);
                        t.switches.push((now, info.layer, info.keyframe || gap));
                    }
                    t.last_layer = Some(info.layer);
                }
                t.last_id = Some(t.last_id.map_or(info.id, |l| l.max(info.id)));
                t.first_id = Some(t.first_id.map_or(info.id, |f| f.min(info.id)));
            }
            _ => self.stats.mislabelled += 1,
        }
    }
}
