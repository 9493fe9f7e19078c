//! The fan-out: one received packet to every other member of its room, through the slot
//! that carries its publisher at each subscriber, with sender binding, layer switches at
//! keyframes, and the header extensions it passes on.

use super::*;
use allocate::selected;

impl Core {
    /// Forwards one packet of publisher `from` to everyone else in its room.
    pub(super) fn forward(&mut self, from: ParticipantId, packet: &RtpPacket, now: Instant) {
        let Some(p) = self.participants.get_mut(&from) else {
            return;
        };
        let ssrc = packet.header.ssrc;
        let Some(kind) = p
            .rtc
            .direct_api()
            .stream_rx(&ssrc)
            .map(|s| s.mid())
            .and_then(|mid| p.published_kind(mid))
        else {
            return;
        };
        if let Err(e) = bind_sender(&packet.payload, &self.cfg.kid_layout, p.leaf) {
            match e {
                BindingError::WrongSender { .. } => self.counters.drops.wrong_sender += 1,
                _ => self.counters.drops.not_sframe += 1,
            }
            return;
        }
        let room = p.room;
        if kind == MediaKind::Audio
            && let Some(level) = packet.header.ext_vals.audio_level
        {
            let voice = packet.header.ext_vals.voice_activity.unwrap_or(true);
            p.speech.observe(level, voice, now);
        }
        let layer = match kind {
            MediaKind::Audio => 0,
            MediaKind::Video => {
                let layer = p.layer(*ssrc);
                p.rates.observe(layer, packet.payload.len(), now);
                layer
            }
        };
        let keyframe_start = match kind {
            MediaKind::Audio => true,
            // Without frame marking the SFU cannot tell a keyframe: it takes the start of
            // a frame, so a switch at least never lands mid-frame.
            MediaKind::Video => match Rfc9626::read(&packet.header.ext_vals) {
                Some(fm) => fm.start && fm.independent,
                None => Descriptor::parse(&packet.payload).is_some_and(|(d, _)| d.start),
            },
        };
        let Some(r) = self.rooms.get(&room) else {
            return;
        };
        if kind == MediaKind::Audio
            && r.members.len() > self.cfg.big_room
            && !r.ranking.iter().take(self.cfg.loudest).any(|x| *x == from)
        {
            self.counters.audio_not_loudest += 1;
            return;
        }
        // Who gets it, into a reused list (no allocation per packet).
        let mut fanout = std::mem::take(&mut self.fanout);
        fanout.clear();
        for to in r.members.iter().copied().filter(|m| *m != from) {
            if kind == MediaKind::Video {
                let n = self
                    .participants
                    .get(&to)
                    .map_or(0, video_slots)
                    .min(self.cfg.last_n);
                if !selected(&r.ranking, to, from, n) {
                    self.counters.video_not_selected += 1;
                    continue;
                }
            }
            fanout.push(to);
        }
        let arrival = Arrival {
            source: (from, *ssrc),
            kind,
            layer,
            keyframe_start,
        };
        for to in fanout.drain(..) {
            self.forward_to(to, &arrival, packet, now);
        }
        self.fanout = fanout;
    }

    /// Which of `to`'s slots carries this packet, switching a slot to a new source or
    /// layer at a keyframe; `None` (counted) when it is not forwarded to `to`.
    fn slot_for(
        &mut self,
        to: ParticipantId,
        a: &Arrival,
        packet: &RtpPacket,
        now: Instant,
    ) -> Option<usize> {
        let idle = self.cfg.slot_idle;
        let sub = self.participants.get_mut(&to)?;
        let at = (*packet.seq_no, packet.header.timestamp);
        match pick_slot(&mut sub.slots, a.source, a.kind, now, idle) {
            Pick::Current(i) => {
                let slot = &mut sub.slots[i];
                if slot.suspended {
                    self.counters.video_over_budget += 1;
                    return None;
                }
                if slot.source == Some(a.source) && !slot.resume {
                    return Some(i);
                }
                // Resuming, or another layer of the same publisher: only onto the target
                // layer, only at its keyframe, with the numbers continuing.
                if a.layer == slot.target_layer && a.keyframe_start {
                    if !slot.resume {
                        self.counters.layer_switches += 1;
                    }
                    slot.take(a.source, a.layer, at, a.kind);
                    return Some(i);
                }
                if slot.resume {
                    self.counters.drops.awaiting_keyframe += 1;
                } else {
                    self.counters.other_layers += 1;
                }
                None
            }
            Pick::Free(i) => {
                // What this subscriber should get of this publisher, now that a slot is free.
                let target = match a.kind {
                    MediaKind::Audio => 0,
                    MediaKind::Video => {
                        let (budget, max) = (sub.video_budget(), sub.max_layer);
                        let p = self.participants.get(&a.source.0)?;
                        layers::choose_arriving(&p.rates, budget, max, now)
                    }
                };
                if a.layer != target {
                    self.counters.other_layers += 1;
                    return None;
                }
                if !a.keyframe_start {
                    self.counters.drops.awaiting_keyframe += 1;
                    self.request_keyframe(a.source, KeyframeRequestKind::Pli, now, false);
                    return None;
                }
                let slot = &mut self.participants.get_mut(&to)?.slots[i];
                slot.target_layer = target;
                slot.take(a.source, a.layer, at, a.kind);
                Some(i)
            }
            Pick::None => {
                self.counters.drops.no_slot += 1;
                None
            }
        }
    }

    fn forward_to(&mut self, to: ParticipantId, a: &Arrival, packet: &RtpPacket, now: Instant) {
        let kind = a.kind;
        let Some(slot) = self.slot_for(to, a, packet, now) else {
            return;
        };
        let Some(sub) = self.participants.get_mut(&to) else {
            return;
        };
        let slot: &mut Slot = &mut sub.slots[slot];
        let Some((seq, ts)) = slot.rewrite.map(*packet.seq_no, packet.header.timestamp) else {
            self.counters.drops.stale += 1;
            return;
        };
        slot.last_used = Some(now);
        let (mid, pt) = (slot.mid, slot.pt);
        let Some(pt) = pt else {
            self.counters.drops.no_slot += 1;
            return;
        };
        let mut api = sub.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, None) else {
            self.counters.drops.no_slot += 1;
            return;
        };
        let seq: SeqNo = seq.into();
        if let Some(tap) = &self.cfg.tap {
            tap(Tapped {
                payload: &packet.payload,
                audio_level: packet.header.ext_vals.audio_level,
                frame_mark: packet.header.ext_vals.frame_mark,
            });
        }
        stream.write_rtp(
            RtpWrite::new(pt, seq, ts, now, packet.payload.clone())
                .marker(packet.header.marker)
                .ext_vals(forwarded_extensions(&packet.header.ext_vals))
                .nackable(kind == MediaKind::Video),
        );
        self.counters.rtp_forwarded += 1;
        self.drain(to, now);
    }
}

/// The header extensions the SFU passes on (the rest, like transport-wide sequence
/// numbers, are per hop and str0m writes its own).
fn forwarded_extensions(ev: &ExtensionValues) -> ExtensionValues {
    ExtensionValues {
        audio_level: ev.audio_level,
        voice_activity: ev.voice_activity,
        frame_mark: ev.frame_mark,
        ..Default::default()
    }
}

/// Sender binding on the SFrame packetization: the first packet of a frame carries the
/// SFrame header, whose KID must name the publisher's own leaf. Later packets of a frame
/// carry ciphertext only; a forged one cannot pass the receiver's AEAD check under the
/// sender the first packet named.
fn bind_sender(payload: &[u8], layout: &KidLayout, leaf: u32) -> Result<(), BindingError> {
    let (descriptor, rest) = Descriptor::parse(payload).ok_or(BindingError::NotSframe)?;
    if descriptor.start {
        sender_binding::check(rest, layout, leaf)
    } else {
        Ok(())
    }
}

pub(super) fn video_slots(p: &Participant) -> usize {
    p.slots
        .iter()
        .filter(|s| s.kind == MediaKind::Video)
        .count()
}

enum Pick {
    /// The slot already carries this source.
    Current(usize),
    /// A free (or idle) slot of the right kind.
    Free(usize),
    /// Every slot of this kind is busy.
    None,
}

/// One received packet, as the fan-out sees it.
struct Arrival {
    /// Publisher and SSRC.
    source: (ParticipantId, u32),
    kind: MediaKind,
    /// Its simulcast layer (0 for audio and single-layer video).
    layer: u8,
    /// Audio, or the first packet of a video keyframe.
    keyframe_start: bool,
}

fn pick_slot(
    slots: &mut [Slot],
    source: (ParticipantId, u32),
    kind: MediaKind,
    now: Instant,
    idle: Duration,
) -> Pick {
    // A slot carries one publisher's stream of a kind (any of its layers).
    if let Some(i) = slots
        .iter()
        .position(|s| s.kind == kind && s.source.is_some_and(|(p, _)| p == source.0))
    {
        return Pick::Current(i);
    }
    // A suspended slot is held for its source, however long it has been quiet.
    let free = slots.iter().position(|s| {
        s.kind == kind
            && !s.suspended
            && (s.source.is_none() || s.last_used.is_none_or(|t| now.duration_since(t) >= idle))
    });
    match free {
        Some(i) => Pick::Free(i),
        None => Pick::None,
    }
}
