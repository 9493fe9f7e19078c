//! The sans-IO forwarding core: datagrams and time in, datagrams and events out. It never
//! reads a clock or a socket, so the shell can batch its I/O and tests can drive it on a
//! virtual clock.
//!
//! Each participant is a str0m `Rtc` in RTP mode (ICE-lite, DTLS-SRTP), chosen by the
//! fan-out microbenchmark (`cargo bench -p sotto-sfu`; NOTES.md). A participant's offer
//! brings the media lines it publishes on (the SFU receives) and *slots*: lines the SFU
//! sends on, each carrying one other participant's audio or video at a time, with sequence
//! numbers and timestamps rewritten so the subscriber sees one continuous stream per slot.
//! Fixed slots mean no renegotiation when people join or leave; the subscriber learns whose
//! frame it got from the SFrame KID inside it, which it checks by decrypting.
//!
//! The core reads only RTP headers, the header extensions it forwards on, and the SFrame
//! header's KID (for sender binding); it never sees a key.

mod allocate;
mod forward;
#[doc(hidden)]
pub mod fuzz;
pub mod layers;
mod participant;
mod rewrite;
pub mod speakers;

use crate::frame_marking::Rfc9626;
use crate::sender_binding::{self, BindingError};
use participant::{Participant, Slot};
pub use rewrite::Rewrite;
use sotto_proto::{DeviceAddr, RoomId};
use sotto_wire::KidLayout;
use sotto_wire::rtp_sframe::Descriptor;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use str0m::bwe::{Bitrate, BweKind};
use str0m::change::SdpOffer;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::rtp::{ExtensionMap, ExtensionValues, RtpPacket, RtpWrite, SeqNo};
use str0m::{Candidate, Event as RtcEvent, Input, Output, Rtc};

/// The bandwidth estimate a subscriber starts with, before transport-wide CC has spoken.
pub const INITIAL_ESTIMATE_BPS: u64 = 2_000_000;
/// How long after a subscriber connects before video is suspended for its estimate:
/// time for probing to find the path's real capacity.
const SUSPEND_GRACE: Duration = Duration::from_secs(3);

/// How often each connection reports its stream statistics (NACK counts for metrics).
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// The least time between two keyframe requests for one published stream.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(200);

/// A participant's handle inside the core (never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(u64);

/// What a test tap sees of each forwarded packet: everything of it the SFU reads or
/// writes in the clear before SRTP (the payload and the extension values it passes on).
#[derive(Clone, Copy, Debug)]
pub struct Tapped<'a> {
    /// The RTP payload (SFrame packetization).
    pub payload: &'a [u8],
    /// RFC 6464 level, if any.
    pub audio_level: Option<i8>,
    /// RFC 9626 frame marking in the packed form (`frame_marking`), if any.
    pub frame_mark: Option<u32>,
}

/// A hook that sees every forwarded packet (tests prove the SFU never sees plaintext).
pub type Tap = std::sync::Arc<dyn Fn(Tapped<'_>) + Send + Sync>;

/// How the core behaves.
#[derive(Clone)]
pub struct Config {
    /// The address participants reach the SFU's media port at (its one ICE candidate).
    pub media_addr: SocketAddr,
    /// How the SFrame KID is laid out (it must match the clients').
    pub kid_layout: KidLayout,
    /// A slot whose source sent nothing for this long may carry another source.
    pub slot_idle: Duration,
    /// Sees every forwarded packet (tests only).
    pub tap: Option<Tap>,
    /// Video is forwarded from this many of the room's top-ranked speakers (last-N), at
    /// most as many as a subscriber has video slots.
    pub last_n: usize,
    /// Rooms with more participants than this forward audio of the loudest only.
    pub big_room: usize,
    /// How many loudest speakers a big room forwards audio from.
    pub loudest: usize,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("media_addr", &self.media_addr)
            .field("slot_idle", &self.slot_idle)
            .field("tap", &self.tap.is_some())
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Defaults for an SFU reached at `media_addr`.
    pub fn new(media_addr: SocketAddr) -> Self {
        Config {
            media_addr,
            kid_layout: KidLayout::default(),
            slot_idle: Duration::from_secs(1),
            tap: None,
            last_n: 9,
            big_room: 20,
            loudest: 3,
        }
    }
}

/// A datagram to send.
#[derive(Debug)]
pub struct Transmit {
    /// The local address to send from (the media address).
    pub source: SocketAddr,
    /// Where to.
    pub destination: SocketAddr,
    /// The bytes (DTLS, STUN or SRTP).
    pub contents: Vec<u8>,
    /// When the datagram whose handling made this one was received (forwarded media and
    /// replies), for the forwarding-latency histogram; `None` for timer-driven output.
    pub received: Option<Instant>,
}

/// What the shell must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A participant's media connection is up (ICE and DTLS done).
    Connected {
        /// The room.
        room: RoomId,
        /// Who.
        device: DeviceAddr,
    },
    /// A removal was applied: nothing more is sent to or forwarded from this participant.
    /// The shell acknowledges it to signaling.
    RemovalApplied {
        /// The room.
        room: RoomId,
        /// Who.
        device: DeviceAddr,
    },
    /// The room's dominant speaker changed (from audio levels; a UI hint, since the SFU
    /// is not trusted for content).
    DominantSpeaker {
        /// The room.
        room: RoomId,
        /// Who speaks now.
        device: DeviceAddr,
    },
    /// Tell a publisher which of its simulcast layers nobody watches (it stops encoding
    /// them) and, by omission, which to send again (starting with a keyframe).
    PauseLayers {
        /// The room.
        room: RoomId,
        /// The publisher.
        device: DeviceAddr,
        /// The layers to pause, lowest 0.
        paused: Vec<u8>,
    },
    /// A participant's connection died (ICE timed out, or its DTLS failed).
    ParticipantLost {
        /// The room.
        room: RoomId,
        /// Who.
        device: DeviceAddr,
    },
}

/// Why a join was refused: the participant's offer (their fault), or our own state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The offer is not SDP we can answer.
    #[error("the offer could not be accepted: {0}")]
    BadOffer(String),
}

/// Packets dropped, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drops {
    /// From an address and STUN username that belong to no participant.
    pub unknown_source: u64,
    /// Not a datagram str0m could classify, or one its connection refused.
    pub malformed: u64,
    /// The frame's KID names another sender than the participant's leaf.
    pub wrong_sender: u64,
    /// The payload does not start with a readable SFrame packetization.
    pub not_sframe: u64,
    /// A subscriber had no free slot of the packet's kind.
    pub no_slot: u64,
    /// A video source waits for a keyframe before it may take a slot.
    pub awaiting_keyframe: u64,
    /// From before the last source switch of the slot.
    pub stale: u64,
}

/// What the core has counted since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// RTP packets received from publishers.
    pub rtp_in: u64,
    /// RTP packets written to subscribers.
    pub rtp_forwarded: u64,
    /// Removals applied (participants that were here).
    pub removals: u64,
    /// Connection timers run (str0m's pacing, BWE, RTCP, ICE keep-alives).
    pub timer_runs: u64,
    /// Audio packets of a big room not forwarded: their sender is not among the loudest.
    pub audio_not_loudest: u64,
    /// Video packets not forwarded to a subscriber: their sender is not in its last-N.
    pub video_not_selected: u64,
    /// Dominant-speaker changes announced.
    pub speaker_changes: u64,
    /// Simulcast layer switches (each at a keyframe).
    pub layer_switches: u64,
    /// NACKs subscribers sent the SFU (each answered from its retransmission cache).
    pub nacks_received: u64,
    /// NACKs the SFU sent publishers for packets lost on their way in.
    pub nacks_sent: u64,
    /// Video packets of a layer a subscriber does not get (not a loss: simulcast).
    pub other_layers: u64,
    /// Video packets held back because the subscriber's estimate had no room for that
    /// source (its slot is suspended).
    pub video_over_budget: u64,
    /// Video slots suspended for bandwidth.
    pub suspensions: u64,
    /// Keyframe requests (PLI/FIR) sent to publishers: relayed from subscribers, or for a
    /// video slot waiting to switch to a new source.
    pub keyframe_requests: u64,
    /// Keyframe requests not sent because one for the same stream went out recently.
    pub keyframe_requests_suppressed: u64,
    /// Drops by reason.
    pub drops: Drops,
}

/// A room's members and who is speaking.
#[derive(Default)]
struct Room {
    /// In join order.
    members: Vec<ParticipantId>,
    /// By [`speakers::rank`]: speaking and loudest first.
    ranking: Vec<ParticipantId>,
    dominant: Option<ParticipantId>,
}

/// The forwarding core; see the module docs.
pub struct Core {
    cfg: Config,
    next_id: u64,
    participants: HashMap<ParticipantId, Participant>,
    rooms: HashMap<RoomId, Room>,
    /// When rooms are next ranked by speech.
    next_speaker_tick: Instant,
    by_device: HashMap<(RoomId, DeviceAddr), ParticipantId>,
    by_addr: HashMap<SocketAddr, ParticipantId>,
    by_ufrag: HashMap<String, ParticipantId>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Packets received in the current input, forwarded once its `Rtc` was drained.
    received: Vec<RtpPacket>,
    /// Keyframe requests subscribers sent in the current input: (subscriber, slot mid).
    keyframe_asks: Vec<(ParticipantId, Mid, KeyframeRequestKind)>,
    /// When a keyframe was last requested of each published stream.
    last_keyframe_request: HashMap<(ParticipantId, u32), Instant>,
    /// While a received datagram is being handled: when it arrived.
    input_at: Option<Instant>,
    /// Participants whose timers are due (kept to reuse its allocation).
    due: Vec<ParticipantId>,
    /// The recipients of the packet being forwarded (reused).
    fanout: Vec<ParticipantId>,
    counters: Counters,
}

impl Core {
    /// A core with no rooms.
    pub fn new(cfg: Config) -> Self {
        Core {
            next_speaker_tick: Instant::now(),
            cfg,
            next_id: 0,
            participants: HashMap::new(),
            rooms: HashMap::new(),
            by_device: HashMap::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            received: Vec::new(),
            keyframe_asks: Vec::new(),
            last_keyframe_request: HashMap::new(),
            input_at: None,
            due: Vec::new(),
            fanout: Vec::new(),
            counters: Counters::default(),
        }
    }

    /// Adds `device` (MLS leaf `leaf`, from its verified join token) to `room` and answers
    /// its SDP offer. A device already in the room is replaced (it reconnected).
    pub fn join(
        &mut self,
        now: Instant,
        room: RoomId,
        device: DeviceAddr,
        leaf: u32,
        offer: &str,
    ) -> Result<String, JoinError> {
        let receives_video = offers_video_slots(offer);
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| JoinError::BadOffer(e.to_string()))?;
        let mut rtc = self.new_rtc(now, receives_video);
        // str0m asserts some properties of what it negotiates instead of returning an
        // error: on the client's side, corrupt H.264 fmtp lines make it lock one payload
        // type twice and panic. A search flipping every byte of an offer found no such
        // input for the SFU's configuration, but a participant's hostile offer must never
        // take the worker, and every room on it, down: the fresh connection is dropped
        // with the error instead.
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rtc.sdp_api().accept_offer(offer)
        }))
        .map_err(|_| JoinError::BadOffer("str0m could not negotiate it".into()))?
        .map_err(|e| JoinError::BadOffer(e.to_string()))?;
        if self.by_device.contains_key(&(room, device.clone())) {
            // It reconnected: the old connection goes, but this is no removal (nothing
            // to acknowledge to signaling).
            self.drop_participant(&room, &device);
        }
        let id = ParticipantId(self.next_id);
        self.next_id += 1;
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        self.by_ufrag.insert(ufrag, id);
        self.by_device.insert((room, device.clone()), id);
        let r = self.rooms.entry(room).or_default();
        r.members.push(id);
        r.ranking.push(id);
        self.participants.insert(
            id,
            Participant {
                rtc,
                room,
                device,
                leaf,
                next_timeout: now,
                published: Vec::new(),
                slots: Vec::new(),
                remote: None,
                speech: speakers::SpeechMeter::default(),
                layer_of: HashMap::new(),
                layer_ssrc: [None; layers::MAX_LAYERS],
                rates: layers::LayerRates::default(),
                estimate: None,
                max_layer: (layers::MAX_LAYERS - 1) as u8,
                nack_totals: HashMap::new(),
                connected_at: None,
            },
        );
        self.drain(id, now);
        tracing::debug!(participant = id.0, "joined");
        Ok(answer.to_sdp_string())
    }

    fn new_rtc(&self, now: Instant, receives_video: bool) -> Rtc {
        let mut exts = ExtensionMap::standard();
        // Ids 1 (audio level) and 3 (transport-wide CC) stay; frame marking in the RFC's
        // form replaces what the standard map has at 5.
        exts.set(5, Rfc9626::extension());
        let mut builder = Rtc::builder()
            .set_rtp_mode(true)
            .set_ice_lite(true)
            .set_extension_map(exts)
            .set_stats_interval(Some(STATS_INTERVAL));
        // Bandwidth estimation is what layer choice needs, and it costs: str0m's pacer
        // then wakes about every millisecond and pads each connection to 50 kbit/s. A
        // subscriber without video slots (audio at a fixed rate) goes without.
        if receives_video {
            builder = builder.enable_bwe(Some(Bitrate::bps(INITIAL_ESTIMATE_BPS)));
        }
        let mut rtc = builder.build(now);
        if let Ok(candidate) = Candidate::host(self.cfg.media_addr, "udp") {
            rtc.add_local_candidate(candidate);
        }
        rtc
    }

    /// Removes a participant: its connection is dropped at once, nothing queued for it is
    /// sent, and the slots it filled are freed. Emits [`Event::RemovalApplied`] (also when
    /// it was not here, so signaling's resends are acknowledged). Returns whether it was.
    pub fn remove(&mut self, room: &RoomId, device: &DeviceAddr) -> bool {
        let found = self.drop_participant(room, device);
        self.counters.removals += u64::from(found);
        self.events.push_back(Event::RemovalApplied {
            room: *room,
            device: device.clone(),
        });
        found
    }

    fn drop_participant(&mut self, room: &RoomId, device: &DeviceAddr) -> bool {
        let Some(id) = self.by_device.remove(&(*room, device.clone())) else {
            return false;
        };
        let Some(mut gone) = self.participants.remove(&id) else {
            return false;
        };
        self.by_ufrag.retain(|_, p| *p != id);
        self.by_addr.retain(|_, p| *p != id);
        self.last_keyframe_request.retain(|(p, _), _| *p != id);
        if let Some(remote) = gone.remote {
            self.transmits.retain(|t| t.destination != remote);
        }
        gone.rtc.disconnect();
        if let Some(r) = self.rooms.get_mut(room) {
            r.members.retain(|p| *p != id);
            r.ranking.retain(|p| *p != id);
            if r.dominant == Some(id) {
                r.dominant = None;
            }
            if r.members.is_empty() {
                self.rooms.remove(room);
            }
        }
        for p in self.participants.values_mut() {
            for slot in &mut p.slots {
                if slot.source.is_some_and(|(src, _)| src == id) {
                    slot.clear();
                }
            }
        }
        true
    }

    /// The address participants reach this core at.
    pub fn media_addr(&self) -> SocketAddr {
        self.cfg.media_addr
    }

    /// Closes every connection (the SFU is stopping); each participant is reported lost.
    pub fn close_all(&mut self) {
        let all: Vec<ParticipantId> = self.participants.keys().copied().collect();
        for id in all {
            self.lose(id);
        }
    }

    /// One datagram that arrived on the media port.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) {
        self.counters.datagrams_in += 1;
        self.counters.bytes_in += contents.len() as u64;
        let Ok(datagram) = DatagramRecv::try_from(contents) else {
            self.counters.drops.malformed += 1;
            return;
        };
        let Some(id) = self.route(source, contents) else {
            self.counters.drops.unknown_source += 1;
            return;
        };
        let Some(p) = self.participants.get_mut(&id) else {
            self.counters.drops.unknown_source += 1;
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents: datagram,
            },
        );
        if !p.rtc.accepts(&input) {
            self.counters.drops.unknown_source += 1;
            return;
        }
        if let Err(e) = p.rtc.handle_input(input) {
            // One participant's bad packet stays its own problem.
            tracing::debug!(participant = id.0, error = %e, "input refused");
            self.counters.drops.malformed += 1;
        }
        self.input_at = Some(now);
        self.drain(id, now);
        self.input_at = None;
    }

    /// Which participant a datagram belongs to: by its source address once ICE has
    /// nominated it, else by the STUN username (our ufrag first).
    fn route(&self, source: SocketAddr, contents: &[u8]) -> Option<ParticipantId> {
        if let Some(id) = self.by_addr.get(&source) {
            return Some(*id);
        }
        let stun = str0m::ice::StunMessage::parse(contents).ok()?;
        let (local, _remote) = stun.split_username()?;
        self.by_ufrag.get(local).copied()
    }

    /// Time passed: runs every participant's timers that are due, and ranks the rooms'
    /// speakers every [`speakers::SPEAKER_INTERVAL`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_speaker_tick {
            self.next_speaker_tick = now + speakers::SPEAKER_INTERVAL;
            self.rank_speakers(now);
            self.choose_layers(now);
        }
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        due.extend(
            self.participants
                .iter()
                .filter(|(_, p)| p.next_timeout <= now)
                .map(|(id, _)| *id),
        );
        self.counters.timer_runs += due.len() as u64;
        for id in due.drain(..) {
            if let Some(p) = self.participants.get_mut(&id)
                && p.rtc.handle_input(Input::Timeout(now)).is_err()
            {
                self.lose(id);
                continue;
            }
            self.drain(id, now);
        }
        self.due = due;
    }

    /// The earliest time [`Core::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let rtc = self.participants.values().map(|p| p.next_timeout).min()?;
        Some(rtc.min(self.next_speaker_tick))
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the shell.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// What has been counted so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Rooms with at least one participant.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// The subscribers' bandwidth estimates (transport-wide CC), bits per second,
    /// as (how many, sum, min, max), folded without allocating.
    pub fn estimates(&self) -> (u64, u64, u64, u64) {
        self.participants
            .values()
            .filter_map(|p| p.estimate)
            .fold((0, 0, u64::MAX, 0), |(n, sum, min, max), e| {
                (n + 1, sum + e, min.min(e), max.max(e))
            })
    }

    /// Participants in all rooms.
    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    /// A participant's connection died: drop it and say so.
    fn lose(&mut self, id: ParticipantId) {
        let Some((room, device)) = self
            .participants
            .get(&id)
            .map(|p| (p.room, p.device.clone()))
        else {
            return;
        };
        tracing::info!(participant = id.0, "connection lost");
        self.drop_participant(&room, &device);
        self.events
            .push_back(Event::ParticipantLost { room, device });
    }

    /// Polls participant `id` until it wants a timeout, then forwards what it received.
    fn drain(&mut self, id: ParticipantId, now: Instant) {
        if !self.poll_participant(id, now) {
            self.received.clear();
            self.lose(id);
            return;
        }
        let mut received = std::mem::take(&mut self.received);
        for packet in received.drain(..) {
            self.counters.rtp_in += 1;
            self.forward(id, &packet, now);
        }
        self.received = received;
        let asks = std::mem::take(&mut self.keyframe_asks);
        for (sub, mid, kind) in asks {
            let source = self
                .participants
                .get(&sub)
                .and_then(|p| p.slots.iter().find(|s| s.mid == mid))
                .and_then(|s| s.source);
            if let Some(source) = source {
                self.request_keyframe(source, kind, now, true);
            }
        }
    }

    /// Asks a publisher for a keyframe of one stream, at most once per
    /// [`KEYFRAME_REQUEST_INTERVAL`] (many subscribers asking make one request).
    fn request_keyframe(
        &mut self,
        (publisher, ssrc): (ParticipantId, u32),
        kind: KeyframeRequestKind,
        now: Instant,
        relayed: bool,
    ) {
        let last = self.last_keyframe_request.get(&(publisher, ssrc));
        if last.is_some_and(|t| now.duration_since(*t) < KEYFRAME_REQUEST_INTERVAL) {
            // Only a subscriber's own request counts as suppressed; the SFU's own asks
            // (once per packet while a slot waits) just wait for the interval.
            if relayed {
                self.counters.keyframe_requests_suppressed += 1;
            }
            return;
        }
        let Some(p) = self.participants.get_mut(&publisher) else {
            return;
        };
        let mut api = p.rtc.direct_api();
        let Some(stream) = api.stream_rx(&ssrc.into()) else {
            return;
        };
        stream.request_keyframe(kind);
        self.last_keyframe_request.insert((publisher, ssrc), now);
        self.counters.keyframe_requests += 1;
        self.drain(publisher, now);
    }

    /// Moves what participant `id`'s `Rtc` has to say into the core's queues; false when
    /// its connection failed or ended.
    fn poll_participant(&mut self, id: ParticipantId, now: Instant) -> bool {
        let Self {
            participants,
            by_addr,
            transmits,
            events,
            received,
            counters,
            keyframe_asks,
            input_at,
            ..
        } = self;
        let Some(p) = participants.get_mut(&id) else {
            return true;
        };
        loop {
            match p.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    p.next_timeout = at;
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    if p.remote.is_none() {
                        p.remote = Some(t.destination);
                        by_addr.insert(t.destination, id);
                    }
                    let contents: Vec<u8> = t.contents.into();
                    counters.datagrams_out += 1;
                    counters.bytes_out += contents.len() as u64;
                    transmits.push_back(Transmit {
                        source: t.source,
                        destination: t.destination,
                        contents,
                        received: *input_at,
                    });
                }
                Ok(Output::Event(e)) => match e {
                    RtcEvent::RtpPacket(packet) => received.push(packet),
                    RtcEvent::MediaAdded(m) => p.add_media(m.mid, m.kind, m.direction),
                    RtcEvent::KeyframeRequest(r) => keyframe_asks.push((id, r.mid, r.kind)),
                    RtcEvent::MediaEgressStats(st) => {
                        let key = (st.mid, st.rid, true);
                        let last = p.nack_totals.insert(key, st.nacks).unwrap_or(0);
                        counters.nacks_received += st.nacks.saturating_sub(last);
                    }
                    RtcEvent::MediaIngressStats(st) => {
                        let key = (st.mid, st.rid, false);
                        let last = p.nack_totals.insert(key, st.nacks).unwrap_or(0);
                        counters.nacks_sent += st.nacks.saturating_sub(last);
                    }
                    RtcEvent::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                        p.estimate = Some(estimate.as_u64());
                    }
                    RtcEvent::Connected => {
                        p.connected_at = Some(now);
                        events.push_back(Event::Connected {
                            room: p.room,
                            device: p.device.clone(),
                        });
                    }
                    _ => {}
                },
                Err(e) => {
                    tracing::debug!(participant = id.0, error = %e, "connection failed");
                    return false;
                }
            }
        }
        p.rtc.is_alive()
    }
}

/// Whether an SDP offer has a video line the participant receives on (a slot).
fn offers_video_slots(offer: &str) -> bool {
    offer.split("\nm=").skip(1).any(|section| {
        section.starts_with("video")
            && section
                .lines()
                .any(|l| matches!(l.trim_end(), "a=recvonly" | "a=sendrecv"))
    })
}

#[cfg(test)]
mod tests;
