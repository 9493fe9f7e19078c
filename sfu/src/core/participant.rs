//! One participant's WebRTC connection (a str0m `Rtc` in RTP mode, ICE-lite) and the media
//! lines it negotiated: what it publishes, and the slots the SFU fills with others' media.

use super::ParticipantId;
use super::rewrite::Rewrite;
use sotto_proto::{DeviceAddr, RoomId};
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
}

impl Participant {
    /// Notes a media line the offer brought, by its direction as the SFU sees it.
    pub(crate) fn add_media(&mut self, mid: Mid, kind: MediaKind, direction: Direction) {
        match direction {
            Direction::RecvOnly => self.published.push((mid, kind)),
            Direction::SendOnly => {
                let pt = self.pt_for(mid, kind);
                self.slots.push(Slot {
                    mid,
                    kind,
                    pt,
                    source: None,
                    rewrite: Rewrite::default(),
                    last_used: None,
                });
            }
            // A two-way line both publishes and receives one slot.
            Direction::SendRecv => {
                self.published.push((mid, kind));
                let pt = self.pt_for(mid, kind);
                self.slots.push(Slot {
                    mid,
                    kind,
                    pt,
                    source: None,
                    rewrite: Rewrite::default(),
                    last_used: None,
                });
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

    /// The kind of a line it publishes on.
    pub(crate) fn published_kind(&self, mid: Mid) -> Option<MediaKind> {
        self.published
            .iter()
            .find(|(m, _)| *m == mid)
            .map(|(_, k)| *k)
    }
}
