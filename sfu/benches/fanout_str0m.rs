//! One publisher fanned out to subscribers through str0m 0.25 in RTP mode (issue 9: the
//! forwarding-core candidates, measured side by side with `fanout_rtc`).
//!
//! The SFU side is `1 + FANOUT` ICE-lite `Rtc`s in RTP mode; the publisher and the
//! subscribers are full `Rtc`s. Every pair is connected through str0m's direct API (ICE,
//! DTLS-SRTP; no SDP), in memory, on a virtual clock. Timed, per publisher datagram: the
//! SFU's publisher connection takes it in (SRTP unprotect, parse), and each subscriber
//! connection gets the packet written with its own SSRC and sequence numbers and is polled
//! until it has sent it (RTP serialise, SRTP protect), timers included when due. The
//! payload is shared (`Arc<[u8]>`) between subscribers, as a real SFU would do.
//! What subscribers receive is delivered to them untimed, so their RTCP and STUN come back
//! to the SFU side as in a real call, and that is timed.
//!
//! `cargo bench -p sotto-sfu --bench fanout_str0m`

#[path = "fanout/mod.rs"]
mod common;

#[global_allocator]
static ALLOC: common::CountingAlloc = common::CountingAlloc;

use common::{FANOUT, PACKETS, PAYLOADS, SPACING, Tally};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, SeqNo, Ssrc};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// One end of a connection, with what it has to send and when it next wants a timeout.
struct End {
    rtc: Rtc,
    addr: SocketAddr,
    next: Instant,
    inbox: Vec<Vec<u8>>,
    /// RTP packets it received, kept until the caller took them (capacity reused).
    received: Vec<RtpPacket>,
}

/// A connection: the SFU's end and the remote participant's.
struct Link {
    sfu: End,
    remote: End,
}

/// What one poll of an end produced.
#[derive(Default)]
struct Polled {
    rtp_out: u64,
    other_out: u64,
    connected: bool,
}

const SFU_SSRC_BASE: u32 = 1000;
const PUBLISHER_SSRC: u32 = 1;

fn end(addr: SocketAddr, lite: bool, now: Instant) -> End {
    let rtc = Rtc::builder()
        .set_rtp_mode(true)
        .set_ice_lite(lite)
        .build(now);
    End {
        rtc,
        addr,
        next: now,
        inbox: Vec::new(),
        received: Vec::new(),
    }
}

/// Connects an SFU-side end to a remote one through the direct API and pumps both until
/// DTLS is up.
fn connect(index: u16, now: &mut Instant) -> Link {
    let sfu_addr: SocketAddr = ([10, 0, 0, 1], 5000 + index).into();
    let remote_addr: SocketAddr = ([10, 0, 1, index as u8], 6000).into();
    let mut sfu = end(sfu_addr, true, *now);
    let mut remote = end(remote_addr, false, *now);
    let sfu_cand = Candidate::host(sfu_addr, "udp").expect("candidate");
    let remote_cand = Candidate::host(remote_addr, "udp").expect("candidate");
    sfu.rtc.add_local_candidate(sfu_cand.clone());
    sfu.rtc.add_remote_candidate(remote_cand.clone());
    remote.rtc.add_local_candidate(remote_cand);
    remote.rtc.add_remote_candidate(sfu_cand);
    let sfu_finger = sfu.rtc.direct_api().local_dtls_fingerprint().clone();
    let remote_finger = remote.rtc.direct_api().local_dtls_fingerprint().clone();
    sfu.rtc.direct_api().set_remote_fingerprint(remote_finger);
    remote.rtc.direct_api().set_remote_fingerprint(sfu_finger);
    let sfu_creds = sfu.rtc.direct_api().local_ice_credentials();
    let remote_creds = remote.rtc.direct_api().local_ice_credentials();
    sfu.rtc
        .direct_api()
        .set_remote_ice_credentials(remote_creds);
    remote
        .rtc
        .direct_api()
        .set_remote_ice_credentials(sfu_creds);
    sfu.rtc.direct_api().set_ice_controlling(false);
    remote.rtc.direct_api().set_ice_controlling(true);
    sfu.rtc.direct_api().start_dtls(false).expect("dtls");
    remote.rtc.direct_api().start_dtls(true).expect("dtls");
    let mut link = Link { sfu, remote };
    let (mut up_sfu, mut up_remote) = (false, false);
    for _ in 0..5000 {
        up_sfu |= pump(&mut link.sfu, &mut link.remote, *now).connected;
        up_remote |= pump(&mut link.remote, &mut link.sfu, *now).connected;
        if up_sfu && up_remote {
            return link;
        }
        *now += Duration::from_millis(1);
    }
    panic!("connection {index} did not come up");
}

/// Feeds `this` its inbox and due timeout at `now`, then polls it until it wants a timeout;
/// what it transmits lands in `peer`'s inbox.
fn pump(this: &mut End, peer: &mut End, now: Instant) -> Polled {
    let mut polled = Polled::default();
    // Keep the inbox's capacity: the harness's own buffers must not allocate per packet.
    let mut inbox = std::mem::take(&mut this.inbox);
    for datagram in inbox.drain(..) {
        let receive = Receive {
            proto: Protocol::Udp,
            source: peer.addr,
            destination: this.addr,
            contents: datagram.as_slice().try_into().expect("datagram"),
        };
        this.rtc
            .handle_input(Input::Receive(now, receive))
            .expect("receive");
        drain(this, peer, &mut polled);
    }
    this.inbox = inbox;
    if now >= this.next {
        this.rtc.handle_input(Input::Timeout(now)).expect("timeout");
    }
    drain(this, peer, &mut polled);
    polled
}

fn drain(this: &mut End, peer: &mut End, polled: &mut Polled) {
    loop {
        match this.rtc.poll_output().expect("poll") {
            Output::Timeout(at) => {
                this.next = at;
                return;
            }
            Output::Transmit(t) => {
                let bytes: Vec<u8> = t.contents.into();
                if is_rtp(&bytes) {
                    polled.rtp_out += 1;
                } else {
                    polled.other_out += 1;
                }
                peer.inbox.push(bytes);
            }
            Output::Event(Event::RtpPacket(p)) => this.received.push(p),
            Output::Event(Event::Connected) => polled.connected = true,
            Output::Event(_) => {}
        }
    }
}

/// RFC 7983/5761 demultiplexing: RTP and RTCP start with 128..=191; RTCP's packet types
/// 200..=207 sit where RTP has marker + payload type.
fn is_rtp(datagram: &[u8]) -> bool {
    matches!(datagram, [128..=191, second, ..] if !(200..=207).contains(second))
}

/// The room: the publisher's link and one link per subscriber, with the media declared.
struct Room {
    publisher: Link,
    subscribers: Vec<Link>,
    pt: Pt,
    video: bool,
    now: Instant,
}

impl Room {
    fn new(video: bool) -> Self {
        let mut now = Instant::now();
        let mid: Mid = if video { "v" } else { "a" }.into();
        let kind = if video {
            MediaKind::Video
        } else {
            MediaKind::Audio
        };
        let mut publisher = connect(0, &mut now);
        publisher.remote.rtc.direct_api().declare_media(mid, kind);
        publisher
            .remote
            .rtc
            .direct_api()
            .declare_stream_tx(PUBLISHER_SSRC.into(), None, mid, None);
        publisher.sfu.rtc.direct_api().declare_media(mid, kind);
        publisher
            .sfu
            .rtc
            .direct_api()
            .expect_stream_rx(PUBLISHER_SSRC.into(), None, mid, None);
        let mut subscribers = Vec::new();
        for i in 0..FANOUT as u16 {
            let mut link = connect(i + 1, &mut now);
            let ssrc: Ssrc = (SFU_SSRC_BASE + u32::from(i)).into();
            link.sfu.rtc.direct_api().declare_media(mid, kind);
            link.sfu
                .rtc
                .direct_api()
                .declare_stream_tx(ssrc, None, mid, None);
            link.remote.rtc.direct_api().declare_media(mid, kind);
            link.remote
                .rtc
                .direct_api()
                .expect_stream_rx(ssrc, None, mid, None);
            subscribers.push(link);
        }
        let codec = if video { Codec::Vp8 } else { Codec::Opus };
        let pt = publisher
            .remote
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == codec)
            .expect("codec configured")
            .pt();
        Room {
            publisher,
            subscribers,
            pt,
            video,
            now,
        }
    }

    /// Runs `packets` publisher packets through the SFU side; returns its tally.
    fn run(&mut self, packets: usize, len: usize, first: usize) -> Tally {
        let mut tally = Tally::default();
        for i in first..first + packets {
            self.now += SPACING;
            self.publish(i, len);
            let now = self.now;
            let (video, pt) = (self.video, self.pt);
            let (publisher, subscribers) = (&mut self.publisher, &mut self.subscribers);
            let (received, forwarded) = tally.measure(|| {
                pump(&mut publisher.sfu, &mut publisher.remote, now);
                let received = publisher.sfu.received.len() as u64;
                for packet in publisher.sfu.received.drain(..) {
                    forward(&packet, subscribers, pt, video, now);
                }
                let mut forwarded = 0;
                for sub in subscribers.iter_mut() {
                    forwarded += pump(&mut sub.sfu, &mut sub.remote, now).rtp_out;
                }
                (received, forwarded)
            });
            tally.received += received;
            tally.forwarded += forwarded;
            for sub in subscribers.iter_mut() {
                pump(&mut sub.remote, &mut sub.sfu, now);
            }
        }
        tally
    }

    /// The publisher writes packet `i` (untimed); its datagrams land in the SFU's inbox.
    fn publish(&mut self, i: usize, len: usize) {
        let remote = &mut self.publisher.remote;
        let ssrc: Ssrc = PUBLISHER_SSRC.into();
        let mut api = remote.rtc.direct_api();
        let stream = api.stream_tx(&ssrc).expect("publisher stream");
        let exts = ExtensionValues {
            audio_level: Some(-30),
            voice_activity: Some(true),
            ..Default::default()
        };
        let seq: SeqNo = (i as u64).into();
        let time = (i as u32).wrapping_mul(if self.video { 3000 } else { 960 });
        stream.write_rtp(
            RtpWrite::new(self.pt, seq, time, self.now, common::payload(i, len))
                .ext_vals(exts)
                .marker(true)
                .nackable(self.video),
        );
        pump(remote, &mut self.publisher.sfu, self.now);
    }
}

/// Writes `packet` to every subscriber's send stream, rewritten to that stream's SSRC (the
/// stream's own) and the publisher's sequence numbers (a single publisher needs no offset).
fn forward(packet: &RtpPacket, subscribers: &mut [Link], pt: Pt, video: bool, now: Instant) {
    for (i, sub) in subscribers.iter_mut().enumerate() {
        let ssrc: Ssrc = (SFU_SSRC_BASE + i as u32).into();
        let mut api = sub.sfu.rtc.direct_api();
        let Some(stream) = api.stream_tx(&ssrc) else {
            continue;
        };
        stream.write_rtp(
            RtpWrite::new(
                pt,
                packet.seq_no,
                packet.header.timestamp,
                now,
                packet.payload.clone(),
            )
            .ext_vals(packet.header.ext_vals.clone())
            .marker(packet.header.marker)
            .nackable(video),
        );
    }
}

fn main() {
    str0m::crypto::from_feature_flags().install_process_default();
    for len in PAYLOADS {
        let mut room = Room::new(len > 200);
        room.run(PACKETS, len, 0);
        let tally = room.run(PACKETS, len, PACKETS);
        tally.report("str0m", len);
    }
}
