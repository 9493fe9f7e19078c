//! One publisher fanned out to subscribers through the webrtc project's sans-IO `rtc` 0.21.
//!
//! Every peer is an `rtc` `RTCPeerConnection` in this process, connected over made-up
//! addresses by moving datagrams by hand on a virtual clock (full SDP, ICE, DTLS-SRTP; VP8
//! with NACK, RTCP reports and transport-wide CC). What is timed and counted is the SFU
//! side only: its publisher connection handling each SRTP datagram (`handle_read`, decrypt,
//! interceptors, `poll_read`), writing the packet to each subscriber connection
//! (`RTCRtpSender::write_rtp`, interceptors, encrypt, `poll_write`), and the timers of all
//! its connections. The publisher's datagrams are made before the timed part; what the SFU
//! sends to subscribers is dropped.
#[path = "fanout/mod.rs"]
mod common;
#[global_allocator]
static ALLOC: common::CountingAlloc = common::CountingAlloc;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::{FANOUT, PACKETS, PAYLOADS, SPACING, Tally};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_nack, configure_rtcp_reports, configure_twcc,
};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_VP8, MediaEngine};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

/// The publisher's SSRC; subscriber `i` is sent `SUBSCRIBER_SSRC + i`.
const PUBLISHER_SSRC: u32 = 0x1000_0000;
const SUBSCRIBER_SSRC: u32 = 0x2000_0000;
/// Far beyond the benchmark's virtual duration: subscribers never answer during the
/// measured runs (their datagrams are dropped), which must not fail their ICE.
const ICE_PATIENCE: Duration = Duration::from_secs(3600);
/// Virtual time the handshakes may take before the benchmark gives up.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(30);
/// VP8 runs at 90 kHz.
const TICKS_PER_PACKET: u32 = 90 * SPACING.as_millis() as u32;

/// One side of a connection: the peer connection and the address it pretends to own.
struct Endpoint {
    pc: RTCPeerConnection,
    addr: SocketAddr,
    connected: bool,
}

/// A connection between the SFU side and one remote peer.
struct Link {
    sfu: Endpoint,
    remote: Endpoint,
}

/// The SFU side's sending half towards one subscriber.
struct Subscriber {
    link: Link,
    sender: RTCRtpSenderId,
    ssrc: u32,
}

/// Everything in the benchmark, plus the publisher's running RTP state.
struct World {
    now: Instant,
    publisher: Link,
    publisher_sender: RTCRtpSenderId,
    payload_type: u8,
    subscribers: Vec<Subscriber>,
    sequence: u16,
    timestamp: u32,
    /// What the SFU's publisher connection sent back (STUN, RTCP), delivered untimed.
    back_channel: Vec<TaggedBytesMut>,
}

/// What one timed section produced.
#[derive(Default)]
struct Counts {
    received: u64,
    rtp: u64,
    rtcp: u64,
    other: u64,
}

impl Counts {
    fn add(&mut self, other: &Self) {
        self.received += other.received;
        self.rtp += other.rtp;
        self.rtcp += other.rtcp;
        self.other += other.other;
    }
}

fn addr(host: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, host], port))
}

fn vp8() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90_000,
            ..Default::default()
        },
        payload_type: 96,
    }
}

/// A peer connection with VP8, NACK, RTCP reports and TWCC, and one host candidate.
fn peer(now: Instant, addr: SocketAddr) -> Endpoint {
    let mut media_engine = MediaEngine::default();
    media_engine
        .register_codec(vp8(), RtpCodecKind::Video)
        .expect("register VP8");
    let registry = configure_rtcp_reports(configure_nack(Registry::new(), &mut media_engine));
    let registry = configure_twcc(registry, &mut media_engine).expect("register TWCC");
    let setting_engine = SettingEngineBuilder::new()
        .with_ice_timeouts(Some(ICE_PATIENCE), Some(ICE_PATIENCE), None)
        .build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_media_engine(media_engine)
        .with_setting_engine(setting_engine)
        .with_interceptor_registry(registry)
        .build(now)
        .expect("build peer connection");
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .expect("host candidate");
    let init = RTCIceCandidate::from(&candidate)
        .to_json()
        .expect("candidate json");
    pc.add_local_candidate(init).expect("add local candidate");
    Endpoint {
        pc,
        addr,
        connected: false,
    }
}

/// Adds a VP8 track sent with `ssrc`, returning its sender.
fn add_video_track(pc: &mut RTCPeerConnection, ssrc: u32) -> RTCRtpSenderId {
    let track = MediaStreamTrack::new(
        format!("stream-{ssrc:x}"),
        format!("video-{ssrc:x}"),
        "video".to_owned(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: vp8().rtp_codec,
            ..Default::default()
        }],
    );
    pc.add_track(track).expect("add track")
}

/// Offer/answer between two peer connections (candidates ride in the SDP).
fn negotiate(now: Instant, offerer: &mut RTCPeerConnection, answerer: &mut RTCPeerConnection) {
    let offer = offerer.create_offer(None).expect("create offer");
    offerer
        .set_local_description(now, offer.clone())
        .expect("set local offer");
    answerer
        .set_remote_description(now, offer)
        .expect("set remote offer");
    let answer = answerer.create_answer(None).expect("create answer");
    answerer
        .set_local_description(now, answer.clone())
        .expect("set local answer");
    offerer
        .set_remote_description(now, answer)
        .expect("set remote answer");
}

/// Hands one datagram sent by `from` to `to`'s connection.
fn deliver(now: Instant, to: &mut Endpoint, from: SocketAddr, message: BytesMut) {
    to.pc
        .handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: to.addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message,
        })
        .expect("handle datagram");
}

/// Drains events (noting a connected state) and inbound messages, which are not needed.
fn drain_untimed(endpoint: &mut Endpoint) {
    while let Some(event) = endpoint.pc.poll_event() {
        if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
            assert_ne!(state, RTCPeerConnectionState::Failed, "connection failed");
            endpoint.connected |= state == RTCPeerConnectionState::Connected;
        }
    }
    while endpoint.pc.poll_read().is_some() {}
}

/// Moves every pending datagram from `from` to `to`; true if there was any.
fn transfer(now: Instant, from: &mut Endpoint, to: &mut Endpoint) -> bool {
    let mut moved = false;
    while let Some(datagram) = from.pc.poll_write() {
        deliver(now, to, from.addr, datagram.message);
        moved = true;
    }
    moved
}

/// Exchanges datagrams both ways until neither side has more to say.
fn pump(now: Instant, link: &mut Link) {
    loop {
        let there = transfer(now, &mut link.sfu, &mut link.remote);
        let back = transfer(now, &mut link.remote, &mut link.sfu);
        drain_untimed(&mut link.sfu);
        drain_untimed(&mut link.remote);
        if !there && !back {
            return;
        }
    }
}

/// Fires every timer of `pc` that is due at `now`.
fn fire_due(now: Instant, pc: &mut RTCPeerConnection) {
    if pc.poll_timeout().is_some_and(|due| due <= now) {
        pc.handle_timeout(now).expect("handle timeout");
    }
}

/// The earliest timer of either side of `link`.
fn next_timeout(link: &mut Link) -> Option<Instant> {
    match (link.sfu.pc.poll_timeout(), link.remote.pc.poll_timeout()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Drives all links on the virtual clock until every connection is connected.
fn connect(now: &mut Instant, links: &mut [&mut Link]) {
    let deadline = *now + HANDSHAKE_LIMIT;
    for _ in 0..1_000_000 {
        if links.iter().all(|l| l.sfu.connected && l.remote.connected) {
            return;
        }
        assert!(*now < deadline, "handshakes did not finish in virtual time");
        for link in links.iter_mut() {
            pump(*now, link);
        }
        let next = links.iter_mut().filter_map(|l| next_timeout(l)).min();
        *now = next.unwrap_or(*now + SPACING).clamp(*now, *now + SPACING);
        for link in links.iter_mut() {
            fire_due(*now, &mut link.sfu.pc);
            fire_due(*now, &mut link.remote.pc);
        }
    }
    panic!("handshakes made no progress");
}

/// The payload type a sender was negotiated to use.
fn sender_payload_type(pc: &mut RTCPeerConnection, sender: RTCRtpSenderId) -> u8 {
    pc.rtp_sender(sender)
        .expect("sender exists")
        .get_parameters()
        .rtp_parameters
        .codecs
        .first()
        .expect("a negotiated codec")
        .payload_type
}

/// Builds and connects the publisher link and `FANOUT` subscriber links.
fn world() -> World {
    let mut now = Instant::now();
    let mut publisher = Link {
        sfu: peer(now, addr(1, 10_000)),
        remote: peer(now, addr(2, 5_000)),
    };
    let publisher_sender = add_video_track(&mut publisher.remote.pc, PUBLISHER_SSRC);
    negotiate(now, &mut publisher.remote.pc, &mut publisher.sfu.pc);
    let mut subscribers: Vec<Subscriber> = (0..FANOUT).map(|i| subscriber(now, i)).collect();
    let mut links: Vec<&mut Link> = vec![&mut publisher];
    links.extend(subscribers.iter_mut().map(|s| &mut s.link));
    connect(&mut now, &mut links);
    let payload_type = sender_payload_type(&mut publisher.remote.pc, publisher_sender);
    World {
        now,
        publisher,
        publisher_sender,
        payload_type,
        subscribers,
        sequence: 1,
        timestamp: 90_000,
        back_channel: Vec::with_capacity(64),
    }
}

/// The SFU side offers subscriber `i` one video track, which it answers receive-only.
fn subscriber(now: Instant, i: usize) -> Subscriber {
    let port = 10_001 + u16::try_from(i).expect("few subscribers");
    let host = 3 + u8::try_from(i).expect("few subscribers");
    let mut link = Link {
        sfu: peer(now, addr(1, port)),
        remote: peer(now, addr(host, 5_000)),
    };
    let ssrc = SUBSCRIBER_SSRC + u32::try_from(i).expect("few subscribers");
    let sender = add_video_track(&mut link.sfu.pc, ssrc);
    negotiate(now, &mut link.sfu.pc, &mut link.remote.pc);
    Subscriber { link, sender, ssrc }
}

/// Untimed: the publisher peer catches up on what the SFU sent it, then sends packet
/// `index`; returns the datagrams it produced, RTP and anything else (RTCP, STUN).
fn publish(world: &mut World, index: usize, len: usize) -> Vec<TaggedBytesMut> {
    world.now += SPACING;
    let now = world.now;
    let from = world.publisher.sfu.addr;
    for datagram in world.back_channel.drain(..) {
        deliver(now, &mut world.publisher.remote, from, datagram.message);
    }
    drain_untimed(&mut world.publisher.remote);
    fire_due(now, &mut world.publisher.remote.pc);
    let packet = Packet {
        header: Header {
            version: 2,
            marker: true,
            payload_type: world.payload_type,
            sequence_number: world.sequence,
            timestamp: world.timestamp,
            ssrc: PUBLISHER_SSRC,
            ..Default::default()
        },
        payload: Bytes::from(common::payload(index, len)),
    };
    world.sequence = world.sequence.wrapping_add(1);
    world.timestamp = world.timestamp.wrapping_add(TICKS_PER_PACKET);
    world
        .publisher
        .remote
        .pc
        .rtp_sender(world.publisher_sender)
        .expect("publisher sender")
        .write_rtp(now, packet)
        .expect("publisher writes RTP");
    std::iter::from_fn(|| world.publisher.remote.pc.poll_write()).collect()
}

/// RTP or RTCP by RFC 5761/7983 demultiplexing of an SRTP/SRTCP datagram.
fn count_output(counts: &mut Counts, datagram: &[u8]) {
    match datagram {
        [0x80..=0xbf, second, ..] if (64..=95).contains(&(second & 0x7f)) => counts.rtcp += 1,
        [0x80..=0xbf, _, ..] => counts.rtp += 1,
        _ => counts.other += 1,
    }
}

/// Timed: drains one SFU-side connection's output; subscriber datagrams are dropped.
fn drain_subscriber(counts: &mut Counts, pc: &mut RTCPeerConnection) {
    while let Some(datagram) = pc.poll_write() {
        count_output(counts, &datagram.message);
    }
    while pc.poll_event().is_some() {}
}

/// Timed: writes the publisher's packet, header copied, to every subscriber.
fn fan_out(now: Instant, subscribers: &mut [Subscriber], packet: &Packet, counts: &mut Counts) {
    for sub in subscribers.iter_mut() {
        let header = Header {
            ssrc: sub.ssrc,
            extension: false,
            extension_profile: 0,
            extensions: Vec::new(),
            extensions_padding: 0,
            csrc: packet.header.csrc.clone(),
            ..packet.header
        };
        let copy = Packet {
            header,
            payload: packet.payload.clone(),
        };
        let pc = &mut sub.link.sfu.pc;
        pc.rtp_sender(sub.sender)
            .expect("subscriber sender")
            .write_rtp(now, copy)
            .expect("SFU writes RTP");
        drain_subscriber(counts, pc);
    }
}

/// Timed: the SFU side's whole share of one publisher send.
fn sfu_step(world: &mut World, datagrams: Vec<TaggedBytesMut>) -> Counts {
    let mut counts = Counts::default();
    let now = world.now;
    let from = world.publisher.remote.addr;
    for datagram in datagrams {
        deliver(now, &mut world.publisher.sfu, from, datagram.message);
        while let Some(TaggedRTCMessage { message, .. }) = world.publisher.sfu.pc.poll_read() {
            if let RTCMessage::RtpPacket(_track, packet) = message {
                counts.received += 1;
                fan_out(now, &mut world.subscribers, &packet, &mut counts);
            }
        }
    }
    let publisher = &mut world.publisher.sfu.pc;
    fire_due(now, publisher);
    world
        .back_channel
        .extend(std::iter::from_fn(|| publisher.poll_write()));
    while publisher.poll_event().is_some() {}
    for sub in &mut world.subscribers {
        fire_due(now, &mut sub.link.sfu.pc);
        drain_subscriber(&mut counts, &mut sub.link.sfu.pc);
    }
    counts
}

/// Sends `PACKETS` packets of `len` bytes through the SFU side.
fn run(world: &mut World, len: usize) -> (Tally, Counts) {
    let mut tally = Tally::default();
    let mut total = Counts::default();
    for index in 0..PACKETS {
        let datagrams = publish(world, index, len);
        let counts = tally.measure(|| sfu_step(world, datagrams));
        total.add(&counts);
    }
    tally.received = total.received;
    tally.forwarded = total.rtp;
    (tally, total)
}

fn main() {
    let mut world = world();
    for len in PAYLOADS {
        let _warm_up = run(&mut world, len);
        let (tally, counts) = run(&mut world, len);
        tally.report("rtc", len);
        if counts.rtp != counts.received * FANOUT as u64 || counts.rtcp + counts.other > 0 {
            println!(
                "rtc    payload {len:>5} B  also sent to subscribers: {} RTCP, {} other \
                 datagrams (counted in the time and allocations, not as forwarded)",
                counts.rtcp, counts.other
            );
        }
    }
}
