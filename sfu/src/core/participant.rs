//! One participant's WebRTC connection (a str0m `Rtc` in RTP mode, ICE-lite) and the media
//! lines it negotiated: what it publishes, and the slots the SFU fills with others' media.

use super::ParticipantId;
use super::layers::{LayerRates, MAX_LAYERS};
use super::rewrite::Rewrite;
use sotto_proto::{DeviceAddr, RoomId};
use std::collections::HashMap;
use std::time::Instant;
use str0m::Rtc;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};

/// A media line the SFU sends on: it carries one source at a time.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) mid: Mid,
    pub(crate) kind: MediaKind,
    /// The payload type the participant accepted for our codec on this line.
    pub(crate) pt: Option<Pt>,
    /// The publisher and its SSRC currently behind this slot.
    pub(crate) source: Option<(ParticipantId, u32)>,
    pub(crate) rewrite: Rewrite,
    /// When the slot last carried a packet (an idle slot may be given to another source).
    pub(crate) last_used: Option<Instant>,
    /// The simulcast layer the slot should carry (switched to at its next keyframe).
    pub(crate) target_layer: u8,
    /// The layer it carries now.
    pub(crate) layer: Option<u8>,
    /// When its target last stepped down a layer.
    pub(crate) last_down: Option<Instant>,
    /// Held back: the subscriber's estimate has no room for this source.
    pub(crate) suspended: bool,
    /// Coming back from a suspension: resumes at the target layer's next keyframe.
    pub(crate) resume: bool,
}

impl Slot {
    /// The slot carries `source` (at `layer`) from its packet at `(seq, ts)` on: numbers
    /// continue where the slot's last stream stopped; any suspension or resume is over.
    pub(crate) fn take(
        &mut self,
        source: (ParticipantId, u32),
        layer: u8,
        (seq, ts): (u64, u32),
        kind: MediaKind,
    ) {
        let step = if kind == MediaKind::Audio { 960 } else { 3000 };
        self.source = Some(source);
        self.layer = Some(layer);
        self.suspended = false;
        self.resume = false;
        self.rewrite.switch(seq, ts, step);
    }

    /// The slot carries nothing (its source left, or fell out of the last-N).
    pub(crate) fn clear(&mut self) {
        self.source = None;
        self.layer = None;
        self.suspended = false;
        self.resume = false;
    }

    fn new(mid: Mid, kind: MediaKind, pt: Option<Pt>) -> Self {
        Slot {
            mid,
            kind,
            pt,
            source: None,
            rewrite: Rewrite::default(),
            last_used: None,
            target_layer: 0,
            layer: None,
            last_down: None,
            suspended: false,
            resume: false,
        }
    }
}

/// A participant of a room.
pub(crate) struct Participant {
    pub(crate) rtc: Rtc,
    pub(crate) room: RoomId,
    pub(crate) device: DeviceAddr,
    /// Its MLS leaf: the sender index its frames' KIDs must carry.
    pub(crate) leaf: u32,
    /// When its `Rtc` next wants a timeout.
    pub(crate) next_timeout: Instant,
    /// Media lines it publishes on (SFU receives).
    pub(crate) published: Vec<(Mid, MediaKind)>,
    /// Media lines the SFU sends to it on.
    pub(crate) slots: Vec<Slot>,
    /// The remote address ICE nominated, once known (for demultiplexing).
    pub(crate) remote: Option<std::net::SocketAddr>,
    /// Its speech level, from its audio packets' RFC 6464 extension.
    pub(crate) speech: super::speakers::SpeechMeter,
    /// As a publisher: the simulcast layer of each video SSRC, and what each costs.
    pub(crate) layer_of: HashMap<u32, u8>,
    /// As a publisher: the SSRC of each layer.
    pub(crate) layer_ssrc: [Option<u32>; MAX_LAYERS],
    /// As a publisher: its layers' rates and who wants them.
    pub(crate) rates: LayerRates,
    /// As a subscriber: the bandwidth estimate towards it (transport-wide CC), bits/s.
    pub(crate) estimate: Option<u64>,
    /// As a subscriber: the highest layer it asked for.
    pub(crate) max_layer: u8,
    /// When its connection came up.
    pub(crate) connected_at: Option<Instant>,
    /// Cumulative NACK counts per stream its stats last reported: (mid, rid, egress).
    pub(crate) nack_totals: HashMap<(Mid, Option<str0m::media::Rid>, bool), u64>,
}

impl Participant {
    /// Notes a media line the offer brought, by its direction as the SFU sees it.
    pub(crate) fn add_media(&mut self, mid: Mid, kind: MediaKind, direction: Direction) {
        match direction {
            Direction::RecvOnly => self.published.push((mid, kind)),
            Direction::SendOnly => {
                let pt = self.pt_for(mid, kind);
                self.slots.push(Slot::new(mid, kind, pt));
            }
            // A two-way line both publishes and receives one slot.
            Direction::SendRecv => {
                self.published.push((mid, kind));
                let pt = self.pt_for(mid, kind);
                self.slots.push(Slot::new(mid, kind, pt));
            }
            Direction::Inactive => {}
        }
    }

    /// The negotiated payload type of our codec for `kind` on `mid` (Opus for audio, H.264
    /// for video: the codec the SFrame ciphertext is labelled with).
    fn pt_for(&self, mid: Mid, kind: MediaKind) -> Option<Pt> {
        let want = match kind {
            MediaKind::Audio => Codec::Opus,
            MediaKind::Video => Codec::H264,
        };
        let media = self.rtc.media(mid)?;
        let remote = media.remote_pts();
        self.rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec == want && remote.contains(&p.pt()))
            .map(|p| p.pt())
    }

    /// The simulcast layer of one of its video SSRCs: the position of the stream's RID in
    /// its offer's simulcast list (lowest first), or 0 without simulcast.
    pub(crate) fn layer(&mut self, ssrc: u32) -> u8 {
        if let Some(l) = self.layer_of.get(&ssrc) {
            return *l;
        }
        let mut api = self.rtc.direct_api();
        let (mid, rid) = match api.stream_rx(&ssrc.into()) {
            Some(s) => (s.mid(), s.rid()),
            None => return 0,
        };
        let layer = match (rid, self.rtc.media(mid).map(|m| m.rids_rx())) {
            (Some(rid), Some(str0m::media::Rids::Specific(list))) => list
                .iter()
                .position(|r| *r == rid)
                .map_or(0, |i| i.min(MAX_LAYERS - 1) as u8),
            _ => 0,
        };
        self.layer_of.insert(ssrc, layer);
        if let Some(slot) = self.layer_ssrc.get_mut(usize::from(layer)) {
            *slot = Some(ssrc);
        }
        layer
    }

    /// What this subscriber can spend on one video source, bits per second: its estimate
    /// less its audio, shared by the video slots in use.
    pub(crate) fn video_budget(&self) -> f64 {
        let estimate = self.estimate.unwrap_or(super::INITIAL_ESTIMATE_BPS);
        let audio = self
            .slots
            .iter()
            .filter(|s| s.kind == MediaKind::Audio && s.source.is_some())
            .count() as u64
            * super::layers::AUDIO_BPS;
        let videos = self
            .slots
            .iter()
            .filter(|s| s.kind == MediaKind::Video && s.source.is_some())
            .count()
            .max(1);
        estimate.saturating_sub(audio) as f64 / videos as f64
    }

    /// The kind of a line it publishes on.
    pub(crate) fn published_kind(&self, mid: Mid) -> Option<MediaKind> {
        self.published
            .iter()
            .find(|(m, _)| *m == mid)
            .map(|(_, k)| *k)
    }
}
