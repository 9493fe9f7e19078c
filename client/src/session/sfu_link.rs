//! A room member's media connection to the SFU, sans-IO: a str0m `Rtc` (full ICE,
//! DTLS-SRTP, RTP mode) that publishes one audio line and one video line (one layer, or
//! three simulcast layers) and receives others' media on fixed *slots* (receive-only
//! lines the SFU fills with whichever sender it forwards, rewriting sequence numbers so
//! each slot is one continuous stream). Nothing here holds a key: frames come in already
//! SFrame-encrypted and go out still encrypted, reassembled per slot.
//!
//! The same link answers a peer's offer ([`SfuLink::answer`]): two clients connected
//! directly, each sending on the lines the other receives on. That is how a one-to-one
//! call is to run on the session core, peer to peer, with the relayed call's pipeline.
//!
//! str0m is used rather than the async `webrtc` layer of today's 1:1 calls because the
//! session core must be stepped on a virtual clock; it is the stack our SFU runs, so both
//! ends agree on every extension (RFC 9626 frame marking through [`Rfc9626`]).

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use sotto_wire::{
    rtp_ext::{AudioLevel, FrameMarking},
    rtp_sframe::{AssemblerLimits, FrameAssembler, Reassembled, packetize},
    str0m_ext::Rfc9626,
};
use str0m::{
    Candidate, Event, Input, Output, Rtc,
    bwe::{Bitrate, BweKind},
    change::{SdpAnswer, SdpOffer, SdpPendingOffer},
    format::Codec,
    media::{Direction, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer},
    net::{DatagramRecv, Protocol, Receive},
    rtp::{ExtensionMap, ExtensionValues, RtpWrite},
};

/// Largest RTP payload we make (descriptor included).
const MAX_PAYLOAD: usize = 1100;
/// How long a complete video frame waits behind a gap for its repair (NACK, then RTX):
/// two of str0m's NACK rounds (it retries after its 100 ms default RTT while a
/// receive stream has no RTT of its own), so a retransmission lost again is asked for
/// again in time.
const REPAIR_WAIT: Duration = Duration::from_millis(250);
/// Where a direct call's bandwidth estimate starts, bits per second: enough for speech
/// and a small picture, probed upwards from there.
pub const INITIAL_ESTIMATE_BPS: u64 = 300_000;
/// How often str0m reports its figures (the round-trip time among them).
const STATS_EVERY: Duration = Duration::from_secs(1);
/// The simulcast layers' RIDs, lowest first (as the SFU expects them).
pub const RIDS: [&str; 3] = ["l", "m", "h"];

/// What the link is asked to publish and receive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    /// The local address media is sent from (host candidate).
    pub local: SocketAddr,
    /// More host candidates (a direct call offers every usable interface, so two
    /// machines find the pair that reaches); datagrams name which local address they
    /// arrived on and leave from.
    pub also: Vec<SocketAddr>,
    /// Whether a video line is published.
    pub video: bool,
    /// Whether video goes out as three simulcast layers.
    pub simulcast: bool,
    /// Receive slots: audio, video.
    pub slots: (usize, usize),
    /// Estimate our send bandwidth (transport-wide CC), probing up to this many bits per
    /// second: a direct call's encoders follow the estimate ([`LinkEvent::Estimate`]).
    /// `None` towards the SFU, which estimates each subscriber's path itself.
    pub bwe: Option<u64>,
    /// Server-reflexive candidates (our address as a STUN server saw it, and the local
    /// address it maps): a direct call offers them beside the host ones.
    pub srflx: Vec<(SocketAddr, SocketAddr)>,
    /// Test hook: drop inbound video packets with these indices (0-based, in arrival
    /// order) after the transport and before reassembly: a loss no NACK repairs.
    #[doc(hidden)]
    pub test_drop_video: Option<std::ops::Range<u64>>,
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
    /// A peer's SDP offer is malformed or offers no line for us to send on (the peer's
    /// fault).
    #[error("the peer's offer was refused: {0}")]
    BadOffer(String),
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
    /// The send-side bandwidth estimate changed (bits per second).
    Estimate(u64),
    /// A frame on a slot was given up incomplete: whatever depends on it (the video
    /// frames after it) cannot be decoded until the next keyframe.
    FrameLost {
        /// The slot.
        slot: Mid,
    },
    /// A whole encrypted frame arrived on a slot.
    Frame {
        /// The slot it came on (which sender that is, only the decrypted KID says).
        slot: Mid,
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
    /// Whole frames received, audio and video (what the loss figure sets the lost against).
    pub frames_in: u64,
    /// Frames that arrived incomplete and were given up (loss upstream or here).
    pub frames_lost: u64,
    /// Packets that filled a gap behind a later one: retransmissions after our NACK (or,
    /// rarely, packets reordered on the way).
    pub repaired: u64,
    /// The round-trip time as the transport last measured it (transport-wide CC
    /// feedback on a direct call, receiver reports towards the SFU).
    pub rtt: Option<Duration>,
}

impl LinkStats {
    /// These figures and a later link's together (its round-trip time if it has one).
    pub fn plus(self, later: LinkStats) -> LinkStats {
        LinkStats {
            bytes_out: self.bytes_out + later.bytes_out,
            bytes_in: self.bytes_in + later.bytes_in,
            frames_in: self.frames_in + later.frames_in,
            frames_lost: self.frames_lost + later.frames_lost,
            repaired: self.repaired + later.repaired,
            rtt: later.rtt.or(self.rtt),
        }
    }
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
    /// The highest sequence number seen per slot (a lower one filled a gap).
    highest: HashMap<Mid, u64>,
    /// Inbound video packets so far (for [`LinkConfig::test_drop_video`]).
    video_arrivals: u64,
    audio_seq: u64,
    video_seq: [u64; 3],
    connected: bool,
    next_timeout: Instant,
    events: VecDeque<LinkEvent>,
    transmits: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    stats: LinkStats,
    /// The addresses the SFU's answer named: all a relayed call may ever talk to.
    remote_addrs: Vec<IpAddr>,
}

/// The payload types a negotiation settled on for audio and video (Opus and H.264 in the
/// SDP; SFrame packets on the wire, so both ends simply know).
pub fn payload_types(rtc: &Rtc) -> (Option<Pt>, Option<Pt>) {
    let pt = |codec: Codec| {
        rtc.codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
    };
    (pt(Codec::Opus), pt(Codec::H264))
}

/// Runs one step of str0m's SDP negotiation on SDP from the other end. str0m asserts
/// some properties of what it negotiates instead of returning errors (one found: a
/// payload type locked twice); the checks in `crate::sdp` refuse what we know of first,
/// and anything else that panics here is the other end's fault, not a reason for the
/// call's task to die: the link is discarded with an error.
fn negotiating<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    crate::panics::quietly(f).map_err(|_| "str0m could not negotiate it".to_owned())
}

/// The extension map both ends use: str0m's standard one with RFC 9626 frame marking.
fn extensions() -> ExtensionMap {
    let mut exts = ExtensionMap::standard();
    exts.set(5, Rfc9626::extension());
    exts
}

impl SfuLink {
    /// A str0m connection in RTP mode with our host candidate.
    fn rtc(cfg: &LinkConfig, now: Instant) -> Rtc {
        let mut builder = Rtc::builder()
            .set_rtp_mode(true)
            .set_extension_map(extensions())
            .set_stats_interval(Some(STATS_EVERY));
        if cfg.bwe.is_some() {
            builder = builder.enable_bwe(Some(Bitrate::bps(INITIAL_ESTIMATE_BPS)));
        }
        let mut rtc = builder.build(now);
        if let Some(desired) = cfg.bwe {
            rtc.bwe()
                .set_bitrate(Bitrate::kbps(0), Bitrate::bps(desired));
        }
        for addr in std::iter::once(&cfg.local).chain(&cfg.also) {
            if let Ok(c) = Candidate::host(*addr, "udp") {
                rtc.add_local_candidate(c);
            }
        }
        for (mapped, base) in &cfg.srflx {
            match Candidate::server_reflexive(*mapped, *base, "udp") {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => tracing::debug!(error = %e, "a STUN server's answer is no candidate"),
            }
        }
        rtc
    }

    fn new(cfg: LinkConfig, rtc: Rtc, audio: Mid, video: Option<Mid>, now: Instant) -> Self {
        Self {
            rtc,
            cfg,
            audio,
            video,
            pending: None,
            pts: (None, None),
            assemblers: HashMap::new(),
            highest: HashMap::new(),
            video_arrivals: 0,
            audio_seq: 1,
            video_seq: [1; 3],
            connected: false,
            next_timeout: now,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            stats: LinkStats::default(),
            remote_addrs: Vec::new(),
        }
    }

    fn learn_pts(&mut self) {
        self.pts = payload_types(&self.rtc);
    }

    /// A link on `cfg.local`; returns it with the SDP offer for the SFU (or for the peer
    /// of a one-to-one call, who answers with [`Self::answer`]).
    pub fn offer(cfg: LinkConfig, now: Instant) -> Result<(Self, String), LinkError> {
        let mut rtc = Self::rtc(&cfg, now);
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
        let mut link = Self::new(cfg, rtc, audio, video, now);
        link.pending = Some(pending);
        Ok((link, offer.to_sdp_string()))
    }

    /// A link on `cfg.local` answering a peer's [`Self::offer`] (a one-to-one call
    /// without the SFU): we send on the lines the offer receives on, and receive on the
    /// ones it sends on. Returns it with the SDP answer; connectivity checks start when
    /// the peer has the answer. `cfg.simulcast` and `cfg.slots` do not apply: the offer
    /// decides the lines.
    pub fn answer(cfg: LinkConfig, offer: &str, now: Instant) -> Result<(Self, String), LinkError> {
        let bad = |e: &dyn std::fmt::Display| LinkError::BadOffer(e.to_string());
        if !crate::sdp::payload_types_are_consistent(offer) {
            return Err(bad(&"it maps one payload type to two codecs"));
        }
        let remote_addrs = crate::sdp::addresses(offer);
        let parsed = SdpOffer::from_sdp_string(offer).map_err(|e| bad(&e))?;
        let mut rtc = Self::rtc(&cfg, now);
        let answer = negotiating(|| rtc.sdp_api().accept_offer(parsed))
            .map_err(|e| bad(&e))?
            .map_err(|e| bad(&e))?;
        // The lines the offer made, by their mids, as we now hold them.
        let (mut audio, mut video) = (None, None);
        for mid in offer
            .lines()
            .filter_map(|l| l.trim().strip_prefix("a=mid:"))
        {
            let mid = Mid::from(mid);
            let Some(m) = rtc.media(mid) else { continue };
            if m.direction() != Direction::SendOnly {
                continue;
            }
            match m.kind() {
                MediaKind::Audio => audio = audio.or(Some(mid)),
                MediaKind::Video if cfg.video => video = video.or(Some(mid)),
                MediaKind::Video => {}
            }
        }
        let audio = audio.ok_or_else(|| bad(&"it has no line for our audio"))?;
        let mut link = Self::new(cfg, rtc, audio, video, now);
        link.remote_addrs = remote_addrs;
        link.learn_pts();
        link.drain(now);
        Ok((link, answer.to_sdp_string()))
    }

    /// Takes the SFU's answer; connectivity checks start at once (not at the timeout
    /// str0m gave before it had anyone to talk to).
    pub fn accept_answer(&mut self, answer: &str, now: Instant) -> Result<(), LinkError> {
        let pending = self
            .pending
            .take()
            .ok_or_else(|| LinkError::BadAnswer("a second answer".into()))?;
        if !crate::sdp::payload_types_are_consistent(answer) {
            return Err(LinkError::BadAnswer(
                "it maps one payload type to two codecs".into(),
            ));
        }
        self.remote_addrs = crate::sdp::addresses(answer);
        let answer =
            SdpAnswer::from_sdp_string(answer).map_err(|e| LinkError::BadAnswer(e.to_string()))?;
        let rtc = &mut self.rtc;
        negotiating(|| rtc.sdp_api().accept_answer(pending, answer))
            .map_err(LinkError::BadAnswer)?
            .map_err(|e| LinkError::BadAnswer(e.to_string()))?;
        self.learn_pts();
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

    /// A datagram arrived from `from` on our local address `to`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        bytes: &[u8],
    ) {
        self.stats.bytes_in += bytes.len() as u64;
        let Ok(contents) = DatagramRecv::try_from(bytes) else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: to,
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
        let mut due = Vec::new();
        for (mid, a) in &mut self.assemblers {
            if a.poll_timeout().is_some_and(|t| t <= now) {
                let before = a.dropped_frames;
                let frames = a.poll(now);
                due.push((*mid, a.dropped_frames - before, frames));
            }
        }
        for (mid, lost, frames) in due {
            self.frames_out(mid, lost, frames);
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

    /// The next datagram to send: (from which local address, to, bytes).
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
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
                    self.transmits.push_back((t.source, t.destination, bytes));
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
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                self.events
                    .push_back(LinkEvent::Estimate(estimate.as_u64()));
            }
            Event::PeerStats(s) => self.stats.rtt = s.rtt.or(self.stats.rtt),
            Event::MediaEgressStats(s) if s.rtt.is_some() => self.stats.rtt = s.rtt,
            Event::RtpPacket(p) => {
                let Some(mid) = self
                    .rtc
                    .direct_api()
                    .stream_rx(&p.header.ssrc)
                    .map(|s| s.mid())
                else {
                    return;
                };
                if self.test_dropped(mid) {
                    return;
                }
                let seq = *p.seq_no;
                match self.highest.get_mut(&mid) {
                    Some(h) if seq < *h => self.stats.repaired += 1,
                    Some(h) => *h = seq,
                    None => {
                        self.highest.insert(mid, seq);
                    }
                }
                // Audio is never retransmitted (Opus FEC and the jitter buffer cover
                // its loss): a frame behind a lost one must not wait for a repair that
                // will not come, or it reaches the jitter buffer after its slot.
                let video = self.rtc.media(mid).map(|m| m.kind()) == Some(MediaKind::Video);
                let a = self.assemblers.entry(mid).or_insert_with(|| {
                    FrameAssembler::new(AssemblerLimits {
                        repair_wait: if video { REPAIR_WAIT } else { Duration::ZERO },
                        ..AssemblerLimits::default()
                    })
                });
                let before = a.dropped_frames;
                let frames = a.push(seq as u16, p.header.timestamp, &p.payload, now);
                let lost = a.dropped_frames - before;
                self.frames_out(mid, lost, frames);
            }
            _ => {}
        }
    }

    /// Whether the test hook drops this inbound packet of `mid`.
    fn test_dropped(&mut self, mid: Mid) -> bool {
        let Some(range) = self.cfg.test_drop_video.as_ref() else {
            return false;
        };
        if self.rtc.media(mid).map(|m| m.kind()) != Some(MediaKind::Video) {
            return false;
        }
        let i = self.video_arrivals;
        self.video_arrivals += 1;
        range.contains(&i)
    }

    /// What one assembler gave on `mid`: first that it gave `lost` frames up (so what
    /// depends on them waits for a keyframe), then the whole frames after them.
    fn frames_out(&mut self, mid: Mid, lost: u64, frames: Vec<Reassembled>) {
        if lost > 0 {
            self.stats.frames_lost += lost;
            self.events.push_back(LinkEvent::FrameLost { slot: mid });
        }
        self.stats.frames_in += frames.len() as u64;
        for f in frames {
            self.frame_out(mid, f.timestamp, f.frame);
        }
    }

    fn frame_out(&mut self, mid: Mid, timestamp: u32, data: Vec<u8>) {
        let video = self.rtc.media(mid).map(|m| m.kind()) == Some(MediaKind::Video);
        self.events.push_back(LinkEvent::Frame {
            slot: mid,
            video,
            timestamp,
            data,
        });
    }
}

/// Feeds untrusted bytes to the path a peer's offer takes (SDP parsing, the lines matched
/// by mid, the addresses read from it), as a hostile peer would: nothing may panic.
/// Returns whether the offer was taken. For the fuzz target `peer_offer` and tests.
#[doc(hidden)]
pub fn exercise_offer(data: &[u8]) -> bool {
    let offer = String::from_utf8_lossy(data);
    let cfg = LinkConfig {
        local: ([127, 0, 0, 1], 9).into(),
        also: Vec::new(),
        video: true,
        simulcast: false,
        slots: (1, 1),
        bwe: Some(1_000_000),
        srflx: Vec::new(),
        test_drop_video: None,
    };
    let _ = crate::sdp::addresses(&offer);
    SfuLink::answer(cfg, &offer, Instant::now()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(port: u16) -> LinkConfig {
        LinkConfig {
            local: ([127, 0, 0, 1], port).into(),
            also: Vec::new(),
            video: true,
            simulcast: false,
            slots: (1, 1),
            bwe: Some(2_000_000),
            srflx: Vec::new(),
            test_drop_video: None,
        }
    }

    /// Two links wired back to back on a virtual clock; `drop_nth` loses every n-th
    /// datagram (0: none).
    struct Pair {
        a: SfuLink,
        b: SfuLink,
        now: Instant,
        sent: u64,
        drop_nth: u64,
        got: [Vec<(bool, Vec<u8>)>; 2],
        connected: [bool; 2],
        estimates: [Vec<u64>; 2],
        /// When each audio frame came out, by side (its second byte, and the time).
        audio_at: [Vec<(u8, Instant)>; 2],
    }

    impl Pair {
        fn new() -> Self {
            let now = Instant::now();
            let (mut a, offer) = SfuLink::offer(cfg(41_000), now).expect("offer");
            let (b, answer) = SfuLink::answer(cfg(42_000), &offer, now).expect("answer");
            a.accept_answer(&answer, now).expect("accepted");
            Self {
                a,
                b,
                now,
                sent: 0,
                drop_nth: 0,
                got: [Vec::new(), Vec::new()],
                connected: [false; 2],
                estimates: [Vec::new(), Vec::new()],
                audio_at: [Vec::new(), Vec::new()],
            }
        }

        fn run(&mut self, d: Duration) {
            let end = self.now + d;
            while self.now < end {
                let mut moved = true;
                while moved {
                    moved = false;
                    for i in 0..2 {
                        let (from, to) = if i == 0 {
                            (&mut self.a, &mut self.b)
                        } else {
                            (&mut self.b, &mut self.a)
                        };
                        while let Some((src, dest, bytes)) = from.poll_transmit() {
                            moved = true;
                            self.sent += 1;
                            if self.drop_nth > 0 && self.sent.is_multiple_of(self.drop_nth) {
                                continue;
                            }
                            assert_eq!(dest, to.cfg.local, "sent to the peer's candidate");
                            to.handle_datagram(self.now, src, dest, &bytes);
                        }
                    }
                    for (i, l) in [&mut self.a, &mut self.b].into_iter().enumerate() {
                        while let Some(e) = l.poll_event() {
                            moved = true;
                            match e {
                                LinkEvent::Connected => self.connected[i] = true,
                                LinkEvent::Estimate(bps) => self.estimates[i].push(bps),
                                LinkEvent::Frame { video, data, .. } => {
                                    if !video && data.len() > 1 {
                                        self.audio_at[i].push((data[1], self.now));
                                    }
                                    self.got[i].push((video, data))
                                }
                                _ => {}
                            }
                        }
                    }
                }
                self.now = (self.now + Duration::from_millis(1)).min(
                    self.a
                        .poll_timeout()
                        .max(self.now + Duration::from_micros(100)),
                );
                self.a.handle_timeout(self.now);
                self.b.handle_timeout(self.now);
            }
        }
    }

    #[test]
    fn an_answering_peer_connects_and_frames_go_both_ways() {
        let mut p = Pair::new();
        p.run(Duration::from_secs(2));
        assert_eq!(p.connected, [true, true], "ICE and DTLS up on both sides");
        for n in 0..50u32 {
            let now = p.now;
            let level = AudioLevel {
                level: 30,
                voice: true,
            };
            p.a.send_audio(n * 960, &[1, n as u8], level, now);
            p.b.send_audio(n * 960, &[2, n as u8], level, now);
            if n % 10 == 0 {
                p.a.send_video(n * 3000, &vec![3; 3000], 0, n == 0, now);
                p.b.send_video(n * 3000, &vec![4; 3000], 0, n == 0, now);
            }
            p.run(Duration::from_millis(20));
        }
        for (i, me) in [(1usize, 2u8), (0, 1)] {
            let audio: Vec<_> = p.got[i].iter().filter(|(v, _)| !v).collect();
            let video: Vec<_> = p.got[i].iter().filter(|(v, _)| *v).collect();
            assert_eq!(audio.len(), 50, "side {i} got every audio frame");
            assert!(
                audio.iter().all(|(_, d)| d[0] == 3 - me),
                "side {i}: the peer's"
            );
            assert_eq!(video.len(), 5, "side {i} got every video frame");
            assert!(video.iter().all(|(_, d)| d.len() == 3000));
        }
    }

    /// Audio is not retransmitted: a frame after a lost one comes out at once, not after
    /// the repair wait video frames get (it would reach the jitter buffer after its slot).
    #[test]
    fn audio_after_a_loss_is_not_held_for_a_repair() {
        let mut p = Pair::new();
        p.run(Duration::from_secs(2));
        let level = AudioLevel {
            level: 30,
            voice: true,
        };
        let mut sent = Vec::new();
        for n in 0..50u8 {
            let now = p.now;
            sent.push(now);
            p.a.send_audio(u32::from(n) * 960, &[1, n], level, now);
            p.run(Duration::from_millis(20));
            p.drop_nth = 7;
        }
        let got = &p.audio_at[1];
        assert!(
            got.len() < 50 && got.len() > 35,
            "some were lost: {}",
            got.len()
        );
        // The loss figure counts like with like: every frame is either in or given up,
        // but for the last if it was lost (a loss shows once a later frame arrives).
        let st = p.b.stats();
        assert_eq!(st.frames_in, got.len() as u64);
        assert!(
            (49..=50).contains(&(st.frames_in + st.frames_lost)),
            "{st:?}"
        );
        for (n, at) in got {
            let waited = *at - sent[usize::from(*n)];
            assert!(
                waited < Duration::from_millis(5),
                "frame {n} waited {waited:?}"
            );
        }
    }

    #[test]
    fn a_stun_servers_answer_is_offered_as_a_server_reflexive_candidate() {
        let mapped: SocketAddr = "203.0.113.7:40000".parse().expect("addr");
        let cfg = LinkConfig {
            srflx: vec![(mapped, cfg(41_000).local)],
            ..cfg(41_000)
        };
        let (_, offer) = SfuLink::offer(cfg, Instant::now()).expect("offer");
        assert!(
            offer
                .lines()
                .any(|l| l.contains("203.0.113.7 40000 typ srflx")),
            "{offer}"
        );
    }

    #[test]
    fn an_offer_with_nothing_to_send_on_is_the_peers_fault() {
        let now = Instant::now();
        let r = SfuLink::answer(cfg(42_000), "v=0\r\n", now);
        assert!(matches!(r, Err(LinkError::BadOffer(_))));
    }

    #[test]
    fn lost_video_packets_between_peers_are_repaired() {
        let mut p = Pair::new();
        p.run(Duration::from_secs(2));
        assert_eq!(p.connected, [true, true]);
        // The stream's first packets get through (a receiver cannot ask for what it never
        // knew began); from the second frame on, every 9th datagram is lost.
        for n in 0..30u32 {
            let now = p.now;
            p.a.send_video(n * 3000, &vec![n as u8; 5000], 0, n == 0, now);
            p.run(Duration::from_millis(33));
            p.drop_nth = 9;
        }
        p.drop_nth = 0;
        p.run(Duration::from_millis(500));
        let ids: Vec<u8> = p.got[1]
            .iter()
            .filter(|(v, _)| *v)
            .map(|(_, d)| d[0])
            .collect();
        assert_eq!(
            ids,
            (0..30).collect::<Vec<u8>>(),
            "every frame, repaired, in order"
        );
        assert!(p.b.stats().repaired > 0, "repairs counted");
    }

    /// The sender's estimate (str0m's loss-based controller after libWebRTC's
    /// LossBasedBweV2) falls on a path that loses a third of everything, and not on a
    /// clean one: what the encoders follow comes down with it.
    #[test]
    fn a_direct_links_estimate_falls_on_a_lossy_path() {
        let last_estimate = |drop_nth: u64| {
            let mut p = Pair::new();
            p.run(Duration::from_secs(2));
            p.drop_nth = drop_nth;
            for n in 0..300u32 {
                let now = p.now;
                p.a.send_video(n * 3000, &vec![n as u8; 4000], 0, n % 30 == 0, now);
                p.run(Duration::from_millis(33));
            }
            *p.estimates[0].last().expect("estimates")
        };
        let (clean, lossy) = (last_estimate(0), last_estimate(3));
        assert!(clean > INITIAL_ESTIMATE_BPS, "clean: {clean}");
        assert!(lossy < INITIAL_ESTIMATE_BPS / 4, "lossy: {lossy}");
    }

    #[test]
    fn a_direct_link_estimates_what_it_may_send() {
        let mut p = Pair::new();
        p.run(Duration::from_secs(2));
        for n in 0..90u32 {
            let now = p.now;
            p.a.send_video(n * 3000, &vec![n as u8; 4000], 0, n == 0, now);
            p.run(Duration::from_millis(33));
        }
        let est = &p.estimates[0];
        assert!(!est.is_empty(), "the sender got estimates");
        assert!(
            est.iter().all(|b| *b > 0),
            "estimates in bits per second: {est:?}"
        );
    }

    /// Byte flips in the H.264 `fmtp` lines of a real offer make str0m lock one payload
    /// type twice and panic (seen here: `payload_params.rs:41`); `negotiating` turns that
    /// into a refused offer.
    #[test]
    fn a_hostile_offer_is_refused_never_panics() {
        let (_, offer) = SfuLink::offer(cfg(41_000), Instant::now()).expect("offer");
        assert!(exercise_offer(offer.as_bytes()), "a real offer is taken");
        let bytes = offer.as_bytes();
        let mut taken = 0;
        for cut in (0..bytes.len()).step_by(23) {
            taken += usize::from(exercise_offer(&bytes[..cut]));
            let mut flipped = bytes.to_vec();
            flipped[cut] ^= 0x5a;
            taken += usize::from(exercise_offer(&flipped));
        }
        // Lines that name a mid twice, or many, or none.
        let twice = offer.replace("a=mid:1", "a=mid:0");
        let _ = exercise_offer(twice.as_bytes());
        let many = format!("{offer}{}", "a=mid:9\r\n".repeat(5000));
        let _ = exercise_offer(many.as_bytes());
        assert!(taken < 2 * bytes.len(), "not everything is taken");
    }
}
