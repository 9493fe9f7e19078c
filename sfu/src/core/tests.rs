//! The core on a virtual clock: real str0m peers (full ICE, DTLS-SRTP, SDP offers with
//! published lines and slots) joined to one core, datagrams moved in memory with a fixed
//! delay, every ordering decided by the clock alone.

use super::*;
use sotto_proto::Handle;
use sotto_wire::rtp_ext::FrameMarking;
use sotto_wire::{ContextId, SframeHeader};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, Mid};

const DELAY: Duration = Duration::from_millis(1);
const TICK: Duration = Duration::from_millis(1);

/// A light participant: a str0m peer with one audio and one video line it publishes on,
/// and slots it receives on.
struct Peer {
    rtc: Rtc,
    addr: SocketAddr,
    leaf: u32,
    device: DeviceAddr,
    audio: Mid,
    video: Mid,
    next: Instant,
    /// (slot mid, sender leaf from the KID, outgoing seq, timestamp) of every received
    /// frame start.
    got: Vec<(Mid, u32, u64, u32)>,
    /// Every received packet's destination slot and sequence number.
    seqs: Vec<(Mid, u64)>,
    sent: u64,
    connected: bool,
    /// Keyframe requests it got for its own streams.
    keyframe_requests: u32,
    /// The RFC 6464 level its audio carries.
    level: i8,
}

struct Sim {
    core: Core,
    sfu: SocketAddr,
    peers: Vec<Peer>,
    now: Instant,
    /// (deliver at, from, to, bytes)
    wire: VecDeque<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    room: RoomId,
}

fn peer_exts() -> ExtensionMap {
    let mut exts = ExtensionMap::standard();
    exts.set(5, Rfc9626::extension());
    exts
}

impl Sim {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(tweak: impl FnOnce(&mut Config)) -> Self {
        let sfu: SocketAddr = ([127, 0, 0, 1], 3478).into();
        let mut cfg = Config::new(sfu);
        tweak(&mut cfg);
        Sim {
            core: Core::new(cfg),
            sfu,
            peers: Vec::new(),
            now: Instant::now(),
            wire: VecDeque::new(),
            room: RoomId([7; 16]),
        }
    }

    /// Joins a peer with `audio_slots` + `video_slots` receiving lines.
    fn join(&mut self, leaf: u32, audio_slots: usize, video_slots: usize) -> usize {
        let addr: SocketAddr = ([127, 0, 0, 2 + leaf as u8], 4000).into();
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .set_extension_map(peer_exts())
            .build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        let mut sdp = rtc.sdp_api();
        let audio = sdp.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let video = sdp.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        for _ in 0..audio_slots {
            sdp.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        }
        for _ in 0..video_slots {
            sdp.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        }
        let (offer, pending) = sdp.apply().expect("offer");
        let device = DeviceAddr {
            handle: Handle::parse(&format!("@peer{leaf}")).expect("handle"),
            device: 1,
        };
        let answer = self
            .core
            .join(
                self.now,
                self.room,
                device.clone(),
                leaf,
                &offer.to_sdp_string(),
            )
            .expect("join");
        let answer = SdpAnswer::from_sdp_string(&answer).expect("answer parses");
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .expect("answer accepted");
        self.peers.push(Peer {
            rtc,
            addr,
            leaf,
            device,
            audio,
            video,
            next: self.now,
            got: Vec::new(),
            seqs: Vec::new(),
            sent: 0,
            connected: false,
            keyframe_requests: 0,
            level: -20,
        });
        self.peers.len() - 1
    }

    /// Advances the clock by one tick, delivering and polling everything due.
    fn step(&mut self) {
        self.now += TICK;
        let now = self.now;
        self.core.handle_timeout(now);
        for i in 0..self.peers.len() {
            if self.peers[i].next <= now {
                let _ = self.peers[i].rtc.handle_input(Input::Timeout(now));
            }
            self.poll_peer(i);
        }
        self.collect_core();
        while self.wire.front().is_some_and(|(at, ..)| *at <= now) {
            let Some((_, from, to, bytes)) = self.wire.pop_front() else {
                break;
            };
            if to == self.sfu {
                self.core.handle_receive(now, from, to, &bytes);
                self.collect_core();
            } else if let Some(i) = self.peers.iter().position(|p| p.addr == to) {
                let Ok(contents) = DatagramRecv::try_from(bytes.as_slice()) else {
                    continue;
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
                let _ = self.peers[i].rtc.handle_input(input);
                self.poll_peer(i);
            }
        }
    }

    fn collect_core(&mut self) {
        while let Some(t) = self.core.poll_transmit() {
            self.wire
                .push_back((self.now + DELAY, t.source, t.destination, t.contents));
        }
    }

    fn poll_peer(&mut self, i: usize) {
        let now = self.now;
        let peer = &mut self.peers[i];
        loop {
            match peer.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    peer.next = at;
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    self.wire
                        .push_back((now + DELAY, t.source, t.destination, t.contents.into()));
                }
                Ok(Output::Event(RtcEvent::Connected)) => peer.connected = true,
                Ok(Output::Event(RtcEvent::KeyframeRequest(_))) => peer.keyframe_requests += 1,
                Ok(Output::Event(RtcEvent::RtpPacket(p))) => {
                    let mid = peer
                        .rtc
                        .direct_api()
                        .stream_rx(&p.header.ssrc)
                        .map(|s| s.mid());
                    let Some(mid) = mid else { continue };
                    peer.seqs.push((mid, *p.seq_no));
                    if let Some(leaf) = kid_leaf(&p.payload) {
                        peer.got.push((mid, leaf, *p.seq_no, p.header.timestamp));
                    }
                }
                Ok(Output::Event(_)) => {}
                Err(e) => panic!("peer {i}: {e}"),
            }
        }
    }

    /// Peer `sub` sends a PLI for the slot that carries `leaf`'s video.
    fn ask_keyframe(&mut self, sub: usize, leaf: u32) {
        let peer = &mut self.peers[sub];
        let video = |mid: &Mid| {
            peer.rtc
                .media(*mid)
                .is_some_and(|m| m.kind() == MediaKind::Video)
        };
        let slot = peer
            .got
            .iter()
            .find(|g| g.1 == leaf && video(&g.0))
            .map(|g| g.0)
            .expect("a video slot carrying that leaf");
        let mut api = peer.rtc.direct_api();
        let rx = api.stream_rx_by_mid(slot, None).expect("slot stream");
        rx.request_keyframe(KeyframeRequestKind::Pli);
        self.poll_peer(sub);
    }

    fn run(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.step();
        }
    }

    fn connect_all(&mut self) {
        for _ in 0..400 {
            if self.peers.iter().all(|p| p.connected) {
                return;
            }
            self.step();
        }
        panic!("peers did not connect");
    }

    /// Peer `i` sends one audio frame and, every third call, one video keyframe packet,
    /// each an SFrame packetization whose KID names `kid_leaf`.
    fn send(&mut self, i: usize, kid_leaf: u32) {
        let now = self.now;
        let peer = &mut self.peers[i];
        let n = peer.sent;
        peer.sent += 1;
        for (mid, context, ts_step) in [
            (peer.audio, ContextId::Audio, 960u32),
            (peer.video, ContextId::Video, 3000u32),
        ] {
            if context == ContextId::Video && !n.is_multiple_of(3) {
                continue;
            }
            let video = context == ContextId::Video;
            let pt = peer
                .rtc
                .codec_config()
                .params()
                .iter()
                .find(|p| p.spec().codec == if video { Codec::H264 } else { Codec::Opus })
                .map(|p| p.pt())
                .expect("codec");
            let mut ext = ExtensionValues {
                audio_level: Some(peer.level),
                voice_activity: Some(true),
                ..Default::default()
            };
            if video {
                let fm = FrameMarking {
                    start: true,
                    end: true,
                    independent: true,
                    ..Default::default()
                };
                Rfc9626::write(&mut ext, &fm);
            }
            let payload = frame(context, kid_leaf, n);
            let seq = if video { n / 3 } else { n };
            let mut api = peer.rtc.direct_api();
            let stream = api.stream_tx_by_mid(mid, None).expect("publishing stream");
            stream.write_rtp(
                RtpWrite::new(pt, (seq + 1).into(), (seq as u32) * ts_step, now, payload)
                    .marker(true)
                    .ext_vals(ext),
            );
        }
        self.poll_peer(i);
    }
}

use str0m::format::Codec;

/// One whole frame as the SFrame packetization carries it: descriptor, SFrame header,
/// then stand-in ciphertext.
fn frame(context: ContextId, leaf: u32, n: u64) -> Vec<u8> {
    let kid = KidLayout::default().kid(context, leaf, 0).expect("kid");
    let mut out = vec![sotto_wire::rtp_sframe::START | sotto_wire::rtp_sframe::END];
    let mut header = [0u8; 17];
    let len = SframeHeader { kid, ctr: n }
        .encode(&mut header)
        .expect("header");
    out.extend_from_slice(&header[..len]);
    out.extend_from_slice(&[0xc3; 60]);
    out
}

fn kid_leaf(payload: &[u8]) -> Option<u32> {
    let (d, rest) = Descriptor::parse(payload)?;
    if !d.start {
        return None;
    }
    let (h, _) = SframeHeader::parse(rest).ok()?;
    KidLayout::default()
        .parse(h.kid)
        .ok()
        .map(|k| k.sender_index)
}

/// Sends 20 ms of media from every peer `rounds` times.
fn talk(sim: &mut Sim, rounds: usize) {
    for _ in 0..rounds {
        for i in 0..sim.peers.len() {
            let leaf = sim.peers[i].leaf;
            sim.send(i, leaf);
        }
        sim.run(Duration::from_millis(20));
    }
    sim.run(Duration::from_millis(50));
}

#[test]
fn everyone_receives_everyone_else_on_continuous_slots() {
    let mut sim = Sim::new();
    for leaf in 0..3 {
        sim.join(leaf, 2, 2);
    }
    sim.connect_all();
    talk(&mut sim, 60);
    for peer in &sim.peers {
        for other in sim.peers.iter().filter(|o| o.leaf != peer.leaf) {
            let frames = peer.got.iter().filter(|g| g.1 == other.leaf).count();
            // 60 audio frames and 20 video frames from each other peer.
            assert_eq!(frames, 80, "peer {} from {}", peer.leaf, other.leaf);
        }
        assert_no_gaps(peer);
        assert!(
            peer.got.iter().all(|g| g.1 != peer.leaf),
            "own media echoed"
        );
    }
    assert_eq!(sim.core.counters().drops, Drops::default());
}

/// Within each slot the sequence numbers the subscriber saw are consecutive.
fn assert_no_gaps(peer: &Peer) {
    let mut by_mid: HashMap<Mid, Vec<u64>> = HashMap::new();
    for (mid, seq) in &peer.seqs {
        by_mid.entry(*mid).or_default().push(*seq);
    }
    for (mid, mut seqs) in by_mid {
        seqs.sort_unstable();
        for w in seqs.windows(2) {
            assert_eq!(w[1], w[0] + 1, "peer {} slot {mid}: gap", peer.leaf);
        }
    }
}

#[test]
fn a_frame_under_another_senders_kid_is_dropped_and_counted() {
    let mut sim = Sim::new();
    for leaf in 0..3 {
        sim.join(leaf, 2, 2);
    }
    sim.connect_all();
    for _ in 0..30 {
        sim.send(0, 0);
        sim.send(1, 1);
        // Peer 2 impersonates peer 0.
        sim.send(2, 0);
        sim.run(Duration::from_millis(20));
    }
    sim.run(Duration::from_millis(50));
    let drops = sim.core.counters().drops;
    assert_eq!(drops.wrong_sender, 40, "30 audio + 10 video frames");
    for peer in &sim.peers {
        // Honest media is untouched: 30 audio + 10 video from each honest other.
        for honest in [0, 1].into_iter().filter(|l| *l != peer.leaf) {
            let n = peer.got.iter().filter(|g| g.1 == honest).count();
            assert_eq!(n, 40, "peer {} from {honest}", peer.leaf);
        }
        assert!(peer.got.iter().all(|g| g.1 != 2), "nothing under leaf 2");
    }
}

#[test]
fn a_removed_participant_receives_nothing_more() {
    let mut sim = Sim::new();
    for leaf in 0..3 {
        sim.join(leaf, 2, 2);
    }
    sim.connect_all();
    talk(&mut sim, 10);
    let gone = sim.peers[2].device.clone();
    let gone_addr = sim.peers[2].addr;
    assert!(sim.core.remove(&sim.room.clone(), &gone));
    let events: Vec<Event> = std::iter::from_fn(|| sim.core.poll_event()).collect();
    assert_eq!(
        events.last(),
        Some(&Event::RemovalApplied {
            room: sim.room,
            device: gone.clone()
        })
    );
    // Nothing already on the wire counts: from now on, not one datagram to it.
    sim.wire.retain(|(_, _, to, _)| *to != gone_addr);
    let before = sim.peers[2].seqs.len();
    let from_two_before = sim.peers[0].got.iter().filter(|g| g.1 == 2).count();
    talk(&mut sim, 20);
    assert!(
        sim.wire.iter().all(|(_, _, to, _)| *to != gone_addr),
        "queued for the removed participant"
    );
    assert_eq!(sim.peers[2].seqs.len(), before);
    // Its own packets are no longer forwarded either.
    let from_two_after = sim.peers[0].got.iter().filter(|g| g.1 == 2).count();
    assert_eq!(from_two_after, from_two_before);
    assert!(sim.core.counters().drops.unknown_source > 0);
    // The others still hear each other.
    let from_one = sim.peers[0].got.iter().filter(|g| g.1 == 1).count();
    assert_eq!(from_one, 40, "10+20 audio, 4+7 video");
}

#[test]
fn garbage_from_one_participant_leaves_the_others_alone() {
    let mut sim = Sim::new();
    for leaf in 0..3 {
        sim.join(leaf, 2, 2);
    }
    sim.connect_all();
    let attacker = sim.peers[2].addr;
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x80],
        vec![0x80, 96, 0, 1],
        vec![0x90; 12],
        vec![0x81, 200, 0, 1, 0, 0, 0, 1],
        vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42],
        vec![22, 254, 253, 0, 0],
        vec![0xff; 1500],
        vec![0x80; 70_000],
    ];
    for _ in 0..20 {
        for g in &garbage {
            sim.core.handle_receive(sim.now, attacker, sim.sfu, g);
        }
        sim.send(0, 0);
        sim.send(1, 1);
        sim.run(Duration::from_millis(20));
    }
    sim.run(Duration::from_millis(50));
    let n = sim.peers[0].got.iter().filter(|g| g.1 == 1).count();
    assert_eq!(n, 27, "20 audio + 7 video frames");
    let n = sim.peers[1].got.iter().filter(|g| g.1 == 0).count();
    assert_eq!(n, 27);
}

#[test]
fn a_busy_subscriber_without_a_free_slot_drops_and_counts() {
    let mut sim = Sim::new();
    // Peer 0 has one audio slot and one video slot; two others talk.
    sim.join(0, 1, 1);
    sim.join(1, 2, 2);
    sim.join(2, 2, 2);
    sim.connect_all();
    talk(&mut sim, 10);
    let from: Vec<u32> = sim.peers[0].got.iter().map(|g| g.1).collect();
    // The first source to arrive holds the slot; the other is counted as no_slot.
    assert!(from.iter().all(|l| *l == from[0]), "one source per slot");
    assert!(sim.core.counters().drops.no_slot > 0);
}

#[test]
fn keyframe_requests_reach_the_publisher_at_most_every_200_ms() {
    let mut sim = Sim::new();
    for leaf in 0..3 {
        sim.join(leaf, 2, 2);
    }
    sim.connect_all();
    talk(&mut sim, 5);
    let before = sim.peers[0].keyframe_requests;
    // Both subscribers ask for peer 0's video ten times within 100 ms.
    for _ in 0..10 {
        for sub in [1, 2] {
            sim.ask_keyframe(sub, 0);
        }
        sim.run(Duration::from_millis(10));
    }
    sim.run(Duration::from_millis(50));
    let relayed = sim.peers[0].keyframe_requests - before;
    assert_eq!(relayed, 1, "20 requests within 100 ms make one");
    assert!(sim.core.counters().keyframe_requests_suppressed > 0);
    // After the interval, the next request goes through.
    sim.run(Duration::from_millis(200));
    sim.ask_keyframe(1, 0);
    sim.run(Duration::from_millis(50));
    assert_eq!(sim.peers[0].keyframe_requests - before, 2);
}

#[test]
fn a_big_room_forwards_audio_of_the_loudest_only() {
    let mut sim = Sim::with(|c| {
        c.big_room = 3;
        c.loudest = 1;
    });
    for leaf in 0..5 {
        sim.join(leaf, 4, 0);
    }
    for (i, p) in sim.peers.iter_mut().enumerate() {
        p.level = if i == 3 { -5 } else { -60 };
    }
    sim.connect_all();
    talk(&mut sim, 50);
    // From the first ranking with speech in it (at most 300 ms = 15 frames in), only
    // peer 3 is heard (by everyone but itself).
    for peer in sim.peers.iter().filter(|p| p.leaf != 3) {
        let from3 = peer.got.iter().filter(|g| g.1 == 3).count();
        assert!(
            from3 >= 33,
            "peer {} heard {from3} frames of the loudest",
            peer.leaf
        );
        let others = peer.got.iter().filter(|g| g.1 != 3).count();
        assert!(
            others <= 20,
            "peer {} heard {others} frames of quiet speakers",
            peer.leaf
        );
    }
    assert!(sim.core.counters().audio_not_loudest > 0);
    let speakers: Vec<Event> = std::iter::from_fn(|| sim.core.poll_event())
        .filter(|e| matches!(e, Event::DominantSpeaker { .. }))
        .collect();
    assert_eq!(
        speakers.last(),
        Some(&Event::DominantSpeaker {
            room: sim.room,
            device: sim.peers[3].device.clone()
        })
    );
}

#[test]
fn an_audio_only_subscriber_runs_few_timers() {
    let mut sim = Sim::new();
    // Peers 0 and 1 receive video; 2 and 3 receive audio only.
    for leaf in 0..4 {
        let video_slots = if leaf < 2 { 3 } else { 0 };
        sim.join(leaf, 3, video_slots);
    }
    sim.connect_all();
    talk(&mut sim, 10);
    let before = sim.core.counters().timer_runs;
    sim.run(Duration::from_secs(2));
    let per_second = (sim.core.counters().timer_runs - before) as f64 / 2.0;
    // Two connections with bandwidth estimation wake about every millisecond; the two
    // without stay near the tens a second of RTCP and keep-alives.
    assert!(
        per_second < 2.0 * 1100.0 + 2.0 * 100.0,
        "{per_second} timer runs a second"
    );
    assert!(
        per_second > 2.0 * 500.0,
        "the estimating ones do run ({per_second})"
    );
    assert!(!offers_video_slots(
        "v=0\r\nm=audio 9 UDP\r\na=recvonly\r\nm=video 9 UDP\r\na=sendonly\r\n"
    ));
    assert!(offers_video_slots(
        "v=0\r\nm=video 9 UDP\r\na=sendonly\r\nm=video 9 UDP\r\na=recvonly\r\n"
    ));
}
