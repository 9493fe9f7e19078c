//! The media transport of a call: one WebRTC peer connection (the `webrtc` crate: ICE,
//! DTLS-SRTP, RTCP reports, NACK, transport-wide CC feeding Google Congestion Control)
//! carrying our SFrame packets. What the peer reports back (estimate, PLI/FIR, loss) is
//! read by [`crate::feedback`].
//!
//! Both sides register Opus (PT 111) and H.264 (PT 102) so the SDP is ordinary, but every
//! payload is the SFrame packetization of an encrypted frame (`sotto_wire::rtp_sframe`);
//! the crate never looks inside payloads. (draft-ietf-avtcore-rtp-sframe signals this with
//! `a=sframe`; the crate cannot emit custom attributes, so both ends simply know.) The
//! audio level (RFC 6464) and frame marking (RFC 9626) extensions ride in the clear for an
//! SFU to read, authenticated by SRTP. ICE candidates trickle out as [`RtcSignal`]s for the
//! signaling service to relay.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use rtc::{
    media_stream::MediaStreamTrack,
    peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS},
    rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication,
    rtp_transceiver::rtp_sender::{
        RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
        RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RTCRtpRtxParameters,
        RtpCodecKind,
    },
};
use sotto_proto::RtcSignal;
use sotto_wire::rtp_ext::{AUDIO_LEVEL_URI, AudioLevel, FRAME_MARKING_URI, FrameMarking};
use tokio::sync::{Mutex, mpsc};
use webrtc::{
    media_stream::{
        track_local::{TrackLocal, static_rtp::TrackLocalStaticRTP},
        track_remote::{TrackRemote, TrackRemoteEvent},
    },
    peer_connection::{
        MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
        RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceServer, RTCPeerConnectionIceEvent,
        RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
    },
};

use crate::feedback::{SendFeedback, feedback_tap, inbound_loss};
use rtc::{
    interceptor::{
        CongestionControlBuilder, Gcc, NackGeneratorBuilder, NackResponderBuilder, Slot,
    },
    peer_connection::configuration::interceptor_registry::{
        configure_rtcp_reports, configure_twcc,
    },
};

/// Payload type of the audio stream (Opus in the SDP, SFrame on the wire).
pub const AUDIO_PT: u8 = 111;
/// Payload type of the video stream (H.264 in the SDP, SFrame on the wire).
pub const VIDEO_PT: u8 = 102;
/// Payload type of video retransmissions (RTX, RFC 4588).
pub const VIDEO_RTX_PT: u8 = 103;
/// Largest RTP payload we send: keeps packets under a 1200-byte path MTU with headers.
pub const MAX_RTP_PAYLOAD: usize = 1100;

/// Which local addresses host candidates are gathered on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Bind {
    /// Every address of every interface that is up, as browsers do, except loopback and
    /// link-local ones (IPv4 and IPv6). When there is none, loopback, with a warning: the
    /// call can then only reach this machine.
    #[default]
    AllInterfaces,
    /// Exactly these addresses (tests pin loopback; people pin an interface).
    Addrs(Vec<IpAddr>),
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Local addresses to gather host candidates on; every usable interface by default.
    pub bind: Bind,
    /// STUN servers (`stun:host:port`), none by default.
    pub stun: Vec<String>,
    /// Where the send-side bandwidth estimate starts, bits per second.
    pub initial_bitrate: u32,
    /// Test hook: drop this fraction of inbound RTP before the transport sees it (a lossy
    /// path, since this kernel has no netem).
    #[doc(hidden)]
    pub test_inbound_loss: f64,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            bind: Bind::AllInterfaces,
            stun: Vec::new(),
            initial_bitrate: 1_000_000,
            test_inbound_loss: 0.0,
        }
    }
}

impl TransportConfig {
    /// Media on 127.0.0.1 only: for tests, the demo and the bench, which must not send to
    /// this machine's other addresses.
    pub fn loopback() -> Self {
        Self {
            bind: Bind::Addrs(vec![IpAddr::from([127, 0, 0, 1])]),
            ..Self::default()
        }
    }
}

/// The addresses [`Bind`] stands for on this machine now (see [`usable_host_addrs`]).
pub fn host_addrs(bind: &Bind) -> Vec<IpAddr> {
    match bind {
        Bind::Addrs(addrs) => addrs.clone(),
        Bind::AllInterfaces => {
            let found = match if_addrs::get_if_addrs() {
                Ok(interfaces) => usable_host_addrs(
                    interfaces
                        .iter()
                        .map(|i| (i.ip(), i.is_oper_up() && !i.is_loopback())),
                ),
                Err(e) => {
                    tracing::warn!("cannot list the network interfaces: {e}");
                    Vec::new()
                }
            };
            if found.is_empty() {
                tracing::warn!(
                    "no network interface is up: media is bound to loopback and can reach only this machine"
                );
                vec![IpAddr::from([127, 0, 0, 1])]
            } else {
                found
            }
        }
    }
}

/// Of `(address, interface is up)` pairs, the addresses a peer elsewhere could send to:
/// those of interfaces that are up, without loopback, unspecified, link-local
/// (169.254/16, fe80::/10: an IPv6 link-local needs a scope id no candidate carries) or
/// multicast addresses, and without duplicates.
pub fn usable_host_addrs(interfaces: impl IntoIterator<Item = (IpAddr, bool)>) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for (ip, up) in interfaces {
        let link_local = match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => v6.is_unicast_link_local(),
        };
        if up
            && !ip.is_loopback()
            && !ip.is_unspecified()
            && !ip.is_multicast()
            && !link_local
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    out
}

/// Why the transport failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The WebRTC stack refused an operation.
    #[error("the media connection failed ({0})")]
    Webrtc(String),
    /// The remote sent something that is not valid SDP or a valid candidate.
    #[error("the other side sent a media description this client cannot use ({0})")]
    BadRemote(String),
}

fn w(e: impl std::fmt::Display) -> TransportError {
    TransportError::Webrtc(e.to_string())
}

/// A media packet that arrived.
#[derive(Clone, Debug)]
pub struct Received {
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Marker bit.
    pub marker: bool,
    /// The payload (SFrame descriptor + encrypted fragment).
    pub payload: Bytes,
    /// RFC 6464 audio level, if carried.
    pub audio_level: Option<AudioLevel>,
    /// RFC 9626 frame marking, if carried.
    pub frame_marking: Option<FrameMarking>,
}

/// What the transport reports.
#[derive(Clone, Debug)]
pub enum TransportEvent {
    /// Send this to the peer through signaling.
    Signal(RtcSignal),
    /// The connection state changed.
    State(RTCPeerConnectionState),
    /// An audio packet.
    Audio(Received),
    /// A video packet.
    Video(Received),
}

struct Handler {
    events: mpsc::Sender<TransportEvent>,
    ext: Arc<Mutex<ExtIds>>,
}

#[derive(Clone, Copy, Debug, Default)]
struct ExtIds {
    audio_level: Option<u8>,
    frame_marking: Option<u8>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self
                .events
                .try_send(TransportEvent::Signal(RtcSignal::Candidate {
                    candidate: init.candidate,
                    mid: init.sdp_mid,
                }));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.events.try_send(TransportEvent::State(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let events = self.events.clone();
        let ext = self.ext.clone();
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                match ev {
                    TrackRemoteEvent::OnRtpPacket(p) => {
                        let ids = *ext.lock().await;
                        let audio_level = ids
                            .audio_level
                            .and_then(|id| p.header.get_extension(id))
                            .and_then(|b| AudioLevel::parse(&b));
                        let frame_marking = ids
                            .frame_marking
                            .and_then(|id| p.header.get_extension(id))
                            .and_then(|b| FrameMarking::parse(&b));
                        let r = Received {
                            seq: p.header.sequence_number,
                            timestamp: p.header.timestamp,
                            marker: p.header.marker,
                            payload: p.payload,
                            audio_level,
                            frame_marking,
                        };
                        let e = if p.header.payload_type == VIDEO_PT {
                            TransportEvent::Video(r)
                        } else {
                            TransportEvent::Audio(r)
                        };
                        // A full queue means the application is not keeping up: drop, as
                        // the network would, rather than stall the transport.
                        let _ = events.try_send(e);
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

/// A snapshot of the transport's own measurements.
#[derive(Clone, Copy, Debug, Default)]
pub struct TransportStats {
    /// Round-trip time of the selected ICE candidate pair, if known.
    pub rtt: Option<Duration>,
    /// Packets the peer retransmitted to us (NACKs answered, RTX or not), all streams.
    pub retransmissions_received: u64,
}

/// One peer connection with an audio and (optionally) a video track.
pub struct Transport {
    pc: Arc<dyn PeerConnection>,
    audio: Arc<TrackLocalStaticRTP>,
    video: Option<Arc<TrackLocalStaticRTP>>,
    audio_ssrc: u32,
    video_ssrc: u32,
    ext: Arc<Mutex<ExtIds>>,
    pending_candidates: Mutex<Vec<RTCIceCandidateInit>>,
    remote_set: Mutex<bool>,
    seq: Mutex<(u16, u16)>,
    feedback: Arc<SendFeedback>,
}

/// How often missing packets are NACKed (each at most 10 times).
const NACK_INTERVAL: Duration = Duration::from_millis(20);

/// The congestion controller's floor and ceiling, bits per second.
pub const MIN_BITRATE: u32 = 24_000;
/// See [`MIN_BITRATE`].
pub const MAX_BITRATE: u32 = 4_000_000;
/// Application-most: after every interceptor the crate places (the jitter buffer slot is
/// the last, at 13,000).
const FEEDBACK_TAP_SLOT: usize = 14_000;

fn codec(kind: RtpCodecKind) -> RTCRtpCodec {
    match kind {
        RtpCodecKind::Video => RTCRtpCodec {
            mime_type: MIME_TYPE_H264.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
                .to_owned(),
            rtcp_feedback: vec![],
        },
        _ => RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
    }
}

impl Transport {
    /// A new peer connection; events (local candidates, state, media) arrive on the
    /// returned channel. `ssrc_seed` picks the SSRCs (random per call in practice).
    pub async fn new(
        cfg: &TransportConfig,
        video: bool,
        ssrc_seed: u32,
    ) -> Result<(Self, mpsc::Receiver<TransportEvent>), TransportError> {
        let mut me = MediaEngine::default();
        me.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: codec(RtpCodecKind::Audio),
                payload_type: AUDIO_PT,
            },
            RtpCodecKind::Audio,
        )
        .map_err(w)?;
        me.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: codec(RtpCodecKind::Video),
                payload_type: VIDEO_PT,
            },
            RtpCodecKind::Video,
        )
        .map_err(w)?;
        // RFC 4588: video retransmissions travel on their own SSRC and payload type, so
        // they do not disturb the primary stream's sequence or loss statistics.
        me.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: "video/rtx".to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: format!("apt={VIDEO_PT}"),
                    rtcp_feedback: vec![],
                },
                payload_type: VIDEO_RTX_PT,
            },
            RtpCodecKind::Video,
        )
        .map_err(w)?;
        me.register_feedback(
            RTCPFeedback {
                typ: "nack".into(),
                parameter: String::new(),
            },
            RtpCodecKind::Audio,
        );
        for (uri, kind) in [
            (AUDIO_LEVEL_URI, RtpCodecKind::Audio),
            (FRAME_MARKING_URI, RtpCodecKind::Video),
        ] {
            me.register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: uri.to_owned(),
                },
                kind,
                None,
            )
            .map_err(w)?;
        }
        let audio_ssrc = ssrc_seed | 1;
        let video_ssrc = ssrc_seed.wrapping_add(0x100) | 1;
        let feedback = Arc::new(SendFeedback::new(audio_ssrc, video_ssrc));
        // The crate's defaults (NACK both ways, SR/RR) plus transport-wide CC in both
        // directions, Google Congestion Control on its feedback, and our tap reading the
        // estimate and keyframe requests out of the chain.
        for parameter in ["", "pli"] {
            me.register_feedback(
                RTCPFeedback {
                    typ: "nack".into(),
                    parameter: parameter.into(),
                },
                RtpCodecKind::Video,
            );
        }
        // NACK as the crate's defaults have it, but asking every 20 ms instead of 100: a
        // repair must arrive before the next video frame completes (67 ms at 15 fps), or
        // the reassembler gives the frame up and the receiver has to ask for a keyframe.
        let registry = Registry::new()
            .with(Slot::NackResponder, NackResponderBuilder::new().build())
            .with(
                Slot::NackGenerator,
                NackGeneratorBuilder::new()
                    .with_interval(NACK_INTERVAL)
                    .with_max_nacks_per_packet(10)
                    .build(),
            );
        let registry = configure_rtcp_reports(registry);
        let mut registry = configure_twcc(registry, &mut me)
            .map_err(w)?
            .with(
                Slot::CongestionControl,
                CongestionControlBuilder::new(Gcc::new(
                    f64::from(cfg.initial_bitrate),
                    f64::from(MIN_BITRATE),
                    f64::from(MAX_BITRATE),
                ))
                .build(),
            )
            .with(
                Slot::from(FEEDBACK_TAP_SLOT),
                feedback_tap(feedback.clone()),
            );
        if cfg.test_inbound_loss > 0.0 {
            registry = registry.with(Slot::from(1), inbound_loss(cfg.test_inbound_loss));
        }
        let setting = SettingEngineBuilder::new()
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .build();
        let ice_servers = if cfg.stun.is_empty() {
            vec![]
        } else {
            vec![RTCIceServer {
                urls: cfg.stun.clone(),
                ..Default::default()
            }]
        };
        let (tx, rx) = mpsc::channel(4096);
        let ext = Arc::new(Mutex::new(ExtIds::default()));
        let pc = PeerConnectionBuilder::new()
            .with_configuration(
                RTCConfigurationBuilder::new()
                    .with_ice_servers(ice_servers)
                    .build(),
            )
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .with_setting_engine(setting)
            .with_handler(Arc::new(Handler {
                events: tx,
                ext: ext.clone(),
            }))
            .with_udp_addrs(
                host_addrs(&cfg.bind)
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, 0))
                    .collect(),
            )
            .build()
            .await
            .map_err(w)?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let track = |kind: RtpCodecKind, ssrc: u32, id: &str, rtx: Option<u32>| {
            Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                "sotto".to_owned(),
                id.to_owned(),
                id.to_owned(),
                kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        rtx: rtx.map(|ssrc| RTCRtpRtxParameters { ssrc }),
                        ..Default::default()
                    },
                    codec: codec(kind),
                    ..Default::default()
                }],
            )))
        };
        let audio = track(RtpCodecKind::Audio, audio_ssrc, "audio", None);
        pc.add_track(audio.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(w)?;
        let video = if video {
            let v = track(
                RtpCodecKind::Video,
                video_ssrc,
                "video",
                Some(video_ssrc.wrapping_add(2)),
            );
            pc.add_track(v.clone() as Arc<dyn TrackLocal>)
                .await
                .map_err(w)?;
            Some(v)
        } else {
            None
        };
        Ok((
            Self {
                pc,
                audio,
                video,
                audio_ssrc,
                video_ssrc,
                ext,
                pending_candidates: Mutex::new(Vec::new()),
                remote_set: Mutex::new(false),
                seq: Mutex::new((0, 0)),
                feedback,
            },
            rx,
        ))
    }

    /// Creates the offer (caller side) and sets it locally; returns the SDP to relay.
    pub async fn create_offer(&self) -> Result<String, TransportError> {
        let offer = self.pc.create_offer(None).await.map_err(w)?;
        let sdp = offer.sdp.clone();
        self.pc.set_local_description(offer).await.map_err(w)?;
        Ok(sdp)
    }

    /// Takes the peer's offer and returns our answer (callee side).
    pub async fn accept_offer(&self, sdp: String) -> Result<String, TransportError> {
        let offer = RTCSessionDescription::offer(sdp)
            .map_err(|e| TransportError::BadRemote(e.to_string()))?;
        self.pc.set_remote_description(offer).await.map_err(w)?;
        self.remote_ready().await?;
        let answer = self.pc.create_answer(None).await.map_err(w)?;
        let sdp = answer.sdp.clone();
        self.pc.set_local_description(answer).await.map_err(w)?;
        self.learn_extension_ids().await;
        Ok(sdp)
    }

    /// Takes the peer's answer (caller side).
    pub async fn accept_answer(&self, sdp: String) -> Result<(), TransportError> {
        let answer = RTCSessionDescription::answer(sdp)
            .map_err(|e| TransportError::BadRemote(e.to_string()))?;
        self.pc.set_remote_description(answer).await.map_err(w)?;
        self.remote_ready().await?;
        self.learn_extension_ids().await;
        Ok(())
    }

    /// Adds a candidate the peer trickled (buffered until the remote description is set).
    pub async fn add_remote_candidate(
        &self,
        candidate: String,
        mid: Option<String>,
    ) -> Result<(), TransportError> {
        let init = RTCIceCandidateInit {
            candidate,
            sdp_mid: mid,
            sdp_mline_index: None,
            username_fragment: None,
            ..Default::default()
        };
        if *self.remote_set.lock().await {
            self.pc.add_ice_candidate(init).await.map_err(w)
        } else {
            self.pending_candidates.lock().await.push(init);
            Ok(())
        }
    }

    async fn remote_ready(&self) -> Result<(), TransportError> {
        *self.remote_set.lock().await = true;
        let pending = std::mem::take(&mut *self.pending_candidates.lock().await);
        for c in pending {
            self.pc.add_ice_candidate(c).await.map_err(w)?;
        }
        Ok(())
    }

    /// Reads the negotiated extension ids from the remote description's `a=extmap` lines.
    async fn learn_extension_ids(&self) {
        let Some(remote) = self.pc.remote_description().await else {
            return;
        };
        let mut ids = ExtIds::default();
        for line in remote.sdp.lines() {
            let Some(rest) = line.strip_prefix("a=extmap:") else {
                continue;
            };
            let mut parts = rest.split_whitespace();
            let (Some(id), Some(uri)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Ok(id) = id.split('/').next().unwrap_or(id).parse::<u8>() else {
                continue;
            };
            if uri == AUDIO_LEVEL_URI {
                ids.audio_level = Some(id);
            } else if uri == FRAME_MARKING_URI {
                ids.frame_marking = Some(id);
            }
        }
        *self.ext.lock().await = ids;
    }

    /// Sends one encrypted audio frame (one packet) with its audio level.
    pub async fn send_audio(
        &self,
        timestamp: u32,
        frame: &[u8],
        level: AudioLevel,
    ) -> Result<(), TransportError> {
        let seq = {
            let mut s = self.seq.lock().await;
            s.0 = s.0.wrapping_add(1);
            s.0
        };
        let mut payload = Vec::with_capacity(1 + frame.len());
        payload.push(sotto_wire::rtp_sframe::START | sotto_wire::rtp_sframe::END);
        payload.extend_from_slice(frame);
        let mut pkt = packet(AUDIO_PT, seq, timestamp, self.audio_ssrc, true, payload);
        if let Some(id) = self.ext.lock().await.audio_level {
            pkt.header
                .set_extension(id, Bytes::copy_from_slice(&level.encode()))
                .map_err(w)?;
        }
        self.audio.write_rtp(pkt).await.map_err(w)
    }

    /// Sends one encrypted video frame, packetized, each packet with its frame marking.
    pub async fn send_video(
        &self,
        timestamp: u32,
        frame: &[u8],
        keyframe: bool,
    ) -> Result<(), TransportError> {
        let Some(track) = &self.video else {
            return Err(TransportError::Webrtc("no video track".into()));
        };
        let parts = sotto_wire::rtp_sframe::packetize(frame, MAX_RTP_PAYLOAD);
        let fm_id = self.ext.lock().await.frame_marking;
        let n = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            let seq = {
                let mut s = self.seq.lock().await;
                s.1 = s.1.wrapping_add(1);
                s.1
            };
            let mut pkt = packet(VIDEO_PT, seq, timestamp, self.video_ssrc, i == n - 1, part);
            if let Some(id) = fm_id {
                let fm = FrameMarking {
                    start: i == 0,
                    end: i == n - 1,
                    independent: keyframe,
                    ..Default::default()
                };
                pkt.header
                    .set_extension(id, Bytes::from(fm.encode()))
                    .map_err(w)?;
            }
            track.write_rtp(pkt).await.map_err(w)?;
        }
        Ok(())
    }

    /// Asks the peer for a keyframe (PLI) on the video it sends us.
    pub async fn request_keyframe(&self) -> Result<(), TransportError> {
        for r in self.pc.get_receivers().await {
            let track = r.track();
            for ssrc in track.ssrcs().await {
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc: ssrc,
                };
                let _ = track.write_rtcp(vec![Box::new(pli)]).await;
            }
        }
        Ok(())
    }

    /// What the peer reports about the media we send: bandwidth estimate, keyframe
    /// requests, loss.
    pub fn feedback(&self) -> &SendFeedback {
        &self.feedback
    }

    /// What the WebRTC stack measured so far (one stats snapshot).
    pub async fn stats(&self) -> TransportStats {
        let report = self
            .pc
            .get_stats(
                std::time::Instant::now(),
                webrtc::peer_connection::StatsSelector::None,
            )
            .await;
        TransportStats {
            rtt: report
                .candidate_pairs()
                .filter(|p| p.current_round_trip_time > 0.0)
                .map(|p| Duration::from_secs_f64(p.current_round_trip_time))
                .next(),
            retransmissions_received: report
                .inbound_rtp_streams()
                .map(|s| s.retransmitted_packets_received)
                .sum(),
        }
    }

    /// Closes the connection (idempotent).
    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

fn packet(
    pt: u8,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    marker: bool,
    payload: Vec<u8>,
) -> rtc::rtp::Packet {
    rtc::rtp::Packet {
        header: rtc::rtp::Header {
            version: 2,
            payload_type: pt,
            sequence_number: seq,
            timestamp,
            ssrc,
            marker,
            ..Default::default()
        },
        payload: Bytes::from(payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn all_interfaces_keeps_routable_addresses_of_interfaces_that_are_up() {
        let found = usable_host_addrs([
            (ip("127.0.0.1"), true),
            (ip("::1"), true),
            (ip("10.0.0.5"), true),
            (ip("10.0.0.5"), true),
            (ip("192.168.1.9"), false),
            (ip("169.254.3.4"), true),
            (ip("fe80::1"), true),
            (ip("2001:db8::7"), true),
            (ip("fd00::2"), true),
            (ip("0.0.0.0"), true),
            (ip("224.0.0.251"), true),
        ]);
        assert_eq!(found, [ip("10.0.0.5"), ip("2001:db8::7"), ip("fd00::2")]);
    }

    #[test]
    fn pinned_addresses_are_used_as_given_and_loopback_is_loopback() {
        let pinned = Bind::Addrs(vec![ip("10.1.2.3"), ip("::1")]);
        assert_eq!(host_addrs(&pinned), [ip("10.1.2.3"), ip("::1")]);
        assert_eq!(
            host_addrs(&TransportConfig::loopback().bind),
            [ip("127.0.0.1")]
        );
        assert_eq!(TransportConfig::default().bind, Bind::AllInterfaces);
    }
}
