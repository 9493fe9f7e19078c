//! A room member's media connection to the SFU, sans-IO: a str0m `Rtc` (full ICE,
//! DTLS-SRTP, RTP mode) that publishes one audio line and one video line (one layer, or
//! three simulcast layers) and receives others' media on fixed *slots* (receive-only
//! lines the SFU fills with whichever sender it forwards, rewriting sequence numbers so
//! each slot is one continuous stream). Nothing here holds a key: frames come in already
//! SFrame-encrypted and go out still encrypted, reassembled per slot.
//!
//! str0m is used rather than the async `webrtc` layer of 1:1 calls because the session
//! core must be stepped on a virtual clock; it is the stack our SFU runs, so both ends
//! agree on every extension (RFC 9626 frame marking through [`Rfc9626`]).

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use sotto_wire::{
    rtp_ext::{AudioLevel, FrameMarking},
    rtp_sframe::{AssemblerLimits, FrameAssembler, packetize},
    str0m_ext::Rfc9626,
};
use str0m::{
    Candidate, Event, Input, Output, Rtc,
    change::{SdpAnswer, SdpPendingOffer},
    format::Codec,
    media::{Direction, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer},
    net::{DatagramRecv, Protocol, Receive},
    rtp::{ExtensionMap, ExtensionValues, RtpWrite},
};

/// Largest RTP payload we make (descriptor included).
const MAX_PAYLOAD: usize = 1100;
/// How long a complete frame waits behind a gap for its repair (NACK, then RTX).
const REPAIR_WAIT: Duration = Duration::from_millis(150);
/// The simulcast layers' RIDs, lowest first (as the SFU expects them).
pub const RIDS: [&str; 3] = ["l", "m", "h"];

/// What the link is asked to publish and receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    /// The local address media is sent from (host candidate).
    pub local: SocketAddr,
    /// Whether a video line is published.
    pub video: bool,
    /// Whether video goes out as three simulcast layers.
    pub simulcast: bool,
    /// Receive slots: audio, video.
    pub slots: (usize, usize),
}

/// Why the link could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The SFU's SDP answer is malformed or does not match our offer (the SFU's fault).
    #[error("the SFU's answer was refused: {0}")]
    BadAnswer(String),
    /// str0m refused to build the offer (a bug).
    #[error("could not build the SDP offer: {0}")]
    Offer(String),
}

/// What the link has for the session.
#[derive(Debug)]
pub enum LinkEvent {
    /// ICE and DTLS are up.
    Connected,
    /// The connection failed or was closed.
    Disconnected,
    /// The SFU asked for a keyframe (relaying a subscriber's PLI/FIR).
    KeyframeRequest,
    /// A whole encrypted frame arrived on a slot.
    Frame {
        /// Audio or video.
        video: bool,
        /// Its RTP timestamp.
        timestamp: u32,
        /// The SFrame ciphertext.
        data: Vec<u8>,
    },
}

/// Bytes and packets counted, for the status line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkStats {
    /// Bytes of datagrams sent.
    pub bytes_out: u64,
    /// Bytes of datagrams received.
    pub bytes_in: u64,
    /// Frames that arrived incomplete and were given up (loss upstream or here).
    pub frames_lost: u64,
}

/// The media connection; see the module docs.
pub struct SfuLink {
    rtc: Rtc,
    cfg: LinkConfig,
    audio: Mid,
    video: Option<Mid>,
    pending: Option<SdpPendingOffer>,
    pts: (Option<Pt>, Option<Pt>),
    assemblers: HashMap<Mid, FrameAssembler>,
    audio_seq: u64,
    video_seq: [u64; 3],
    connected: bool,
    next_timeout: Instant,
    events: VecDeque<LinkEvent>,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    stats: LinkStats,
    /// The addresses the SFU's answer named: all a relayed call may ever talk to.
    remote_addrs: Vec<IpAddr>,
}

/// The extension map both ends use: str0m's standard one with RFC 9626 frame marking.
fn extensions() -> ExtensionMap {
    let mut exts = ExtensionMap::standard();
    exts.set(5, Rfc9626::extension());
    exts
}

impl SfuLink {
    /// A link on `cfg.local`; returns it with the SDP offer for the SFU.
    pub fn offer(cfg: LinkConfig, now: Instant) -> Result<(Self, String), LinkError> {
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .set_extension_map(extensions())
            .build(now);
        if let Ok(c) = Candidate::host(cfg.local, "udp") {
            rtc.add_local_candidate(c);
        }
        let mut sdp = rtc.sdp_api();
        let audio = sdp.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let video = cfg.video.then(|| {
            let layers = cfg.simulcast.then(|| {
                let mut s = Simulcast::new();
                for rid in RIDS {
                    s.add_send_layer(SimulcastLayer::new(rid));
                }
                s
            });
            sdp.add_media(MediaKind::Video, Direction::SendOnly, None, None, layers)
        });
        for _ in 0..cfg.slots.0 {
            sdp.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        }
        for _ in 0..cfg.slots.1 {
            sdp.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        }
        let (offer, pending) = sdp
            .apply()
            .ok_or_else(|| LinkError::Offer("no media lines".into()))?;
        let link = Self {
            rtc,
            cfg,
            audio,
            video,
            pending: Some(pending),
            pts: (None, None),
            assemblers: HashMap::new(),
            audio_seq: 1,
            video_seq: [1; 3],
            connected: false,
            next_timeout: now,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            stats: LinkStats::default(),
            remote_addrs: Vec::new(),
        };
        Ok((link, offer.to_sdp_string()))
    }

    /// Takes the SFU's answer; connectivity checks start at once (not at the timeout
    /// str0m gave before it had anyone to talk to).
    pub fn accept_answer(&mut self, answer: &str, now: Instant) -> Result<(), LinkError> {
        let pending = self
            .pending
            .take()
            .ok_or_else(|| LinkError::BadAnswer("a second answer".into()))?;
        self.remote_addrs = crate::sdp::addresses(answer);
        let answer =
            SdpAnswer::from_sdp_string(answer).map_err(|e| LinkError::BadAnswer(e.to_string()))?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| LinkError::BadAnswer(e.to_string()))?;
        let pt = |codec: Codec| {
            self.rtc
                .codec_config()
                .params()
                .iter()
                .find(|p| p.spec().codec == codec)
                .map(|p| p.pt())
        };
        self.pts = (pt(Codec::Opus), pt(Codec::H264));
        let _ = self.rtc.handle_input(Input::Timeout(now));
        self.drain(now);
        Ok(())
    }

    /// The addresses the SFU's answer named (its candidates and connection lines).
    pub fn remote_addrs(&self) -> &[IpAddr] {
        &self.remote_addrs
    }

    /// Whether ICE and DTLS are up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// What was counted so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// A datagram arrived from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.stats.bytes_in += bytes.len() as u64;
        let Ok(contents) = DatagramRecv::try_from(bytes) else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: self.cfg.local,
                contents,
            },
        );
        if self.rtc.handle_input(input).is_ok() {
            self.drain(now);
        }
    }

    /// Time passed: str0m's timers and the assemblers' repair waits.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_timeout {
            let _ = self.rtc.handle_input(Input::Timeout(now));
        }
        let mut frames = Vec::new();
        for (mid, a) in &mut self.assemblers {
            if a.poll_timeout().is_some_and(|t| t <= now) {
                frames.extend(a.poll(now).into_iter().map(|f| (*mid, f)));
            }
        }
        for (mid, f) in frames {
            self.frame_out(mid, f.timestamp, f.frame);
        }
        self.drain(now);
    }

    /// When [`Self::handle_timeout`] has work next.
    pub fn poll_timeout(&self) -> Instant {
        self.assemblers
            .values()
            .filter_map(FrameAssembler::poll_timeout)
            .fold(self.next_timeout, Instant::min)
    }

    /// The next event for the session.
    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    /// The next datagram to send: (to, bytes), from [`LinkConfig::local`].
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// Sends one encrypted audio frame with its RFC 6464 level.
    pub fn send_audio(&mut self, timestamp: u32, frame: &[u8], level: AudioLevel, now: Instant) {
        let (Some(pt), mid) = (self.pts.0, self.audio) else {
            return;
        };
        let ext = ExtensionValues {
            audio_level: Some(-(i8::try_from(level.level.min(127)).unwrap_or(127))),
            voice_activity: Some(level.voice),
            ..Default::default()
        };
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, None) else {
            return;
        };
        for part in packetize(frame, MAX_PAYLOAD) {
            stream.write_rtp(
                RtpWrite::new(pt, self.audio_seq.into(), timestamp, now, part)
                    .marker(true)
                    .ext_vals(ext.clone()),
            );
            self.audio_seq += 1;
        }
        self.drain(now);
    }

    /// Sends one encrypted video frame on `layer` (0 = lowest; ignored without
    /// simulcast), marking start, end and keyframe in RFC 9626 frame marking.
    pub fn send_video(
        &mut self,
        timestamp: u32,
        frame: &[u8],
        layer: u8,
        keyframe: bool,
        now: Instant,
    ) {
        let (Some(pt), Some(mid)) = (self.pts.1, self.video) else {
            return;
        };
        let layer = usize::from(layer).min(2);
        let rid = self.cfg.simulcast.then(|| Rid::from(RIDS[layer]));
        let seq = &mut self.video_seq[if self.cfg.simulcast { layer } else { 0 }];
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, rid) else {
            return;
        };
        let parts = packetize(frame, MAX_PAYLOAD);
        let n = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            let mut ext = ExtensionValues::default();
            let fm = FrameMarking {
                start: i == 0,
                end: i + 1 == n,
                independent: keyframe,
                ..Default::default()
            };
            Rfc9626::write(&mut ext, &fm);
            stream.write_rtp(
                RtpWrite::new(pt, (*seq).into(), timestamp, now, part)
                    .marker(i + 1 == n)
                    .ext_vals(ext)
                    .nackable(true),
            );
            *seq += 1;
        }
        self.drain(now);
    }

    /// Asks the SFU for a keyframe of whatever a video slot carries (after loss).
    pub fn request_keyframe(&mut self, now: Instant) {
        let mids: Vec<Mid> = self
            .assemblers
            .keys()
            .copied()
            .filter(|m| self.rtc.media(*m).map(|x| x.kind()) == Some(MediaKind::Video))
            .collect();
        let mut api = self.rtc.direct_api();
        for mid in mids {
            if let Some(s) = api.stream_rx_by_mid(mid, None) {
                s.request_keyframe(str0m::media::KeyframeRequestKind::Pli);
            }
        }
        self.drain(now);
    }

    fn drain(&mut self, now: Instant) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    let bytes: Vec<u8> = t.contents.into();
                    self.stats.bytes_out += bytes.len() as u64;
                    self.transmits.push_back((t.destination, bytes));
                }
                Ok(Output::Event(e)) => self.event(e, now),
                Err(e) => {
                    tracing::debug!(error = %e, "media connection failed");
                    self.connected = false;
                    self.events.push_back(LinkEvent::Disconnected);
                    return;
                }
            }
        }
    }

    fn event(&mut self, e: Event, now: Instant) {
        match e {
            Event::Connected => {
                self.connected = true;
                self.events.push_back(LinkEvent::Connected);
            }
            Event::IceConnectionStateChange(str0m::IceConnectionState::Disconnected) => {
                self.events.push_back(LinkEvent::Disconnected);
            }
            Event::KeyframeRequest(_) => self.events.push_back(LinkEvent::KeyframeRequest),
            Event::RtpPacket(p) => {
                let Some(mid) = self
                    .rtc
                    .direct_api()
                    .stream_rx(&p.header.ssrc)
                    .map(|s| s.mid())
                else {
                    return;
                };
                let frames = self
                    .assemblers
                    .entry(mid)
                    .or_insert_with(|| {
                        FrameAssembler::new(AssemblerLimits {
                            repair_wait: REPAIR_WAIT,
                            ..AssemblerLimits::default()
                        })
                    })
                    .push(*p.seq_no as u16, p.header.timestamp, &p.payload, now);
                for f in frames {
                    self.frame_out(mid, f.timestamp, f.frame);
                }
            }
            _ => {}
        }
    }

    fn frame_out(&mut self, mid: Mid, timestamp: u32, data: Vec<u8>) {
        let video = self.rtc.media(mid).map(|m| m.kind()) == Some(MediaKind::Video);
        self.stats.frames_lost = self.assemblers.values().map(|a| a.dropped_frames).sum();
        self.events.push_back(LinkEvent::Frame {
            video,
            timestamp,
            data,
        });
    }
}
