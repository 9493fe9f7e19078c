//! What each subscriber gets, decided every [`speakers::SPEAKER_INTERVAL`]: the rooms'
//! speaker ranking and dominant speaker, each video slot's simulcast layer within the
//! subscriber's bandwidth estimate, suspensions for what does not fit, and the layers
//! publishers may pause.

use super::*;
use forward::video_slots;

impl Core {
    /// Sets each video slot's target layer from its subscriber's bandwidth estimate, asks
    /// publishers for keyframes where a slot must switch, tells publishers which layers
    /// nobody watches, and points each subscriber's bandwidth probing at what it could use.
    pub(super) fn choose_layers(&mut self, now: Instant) {
        for p in self.participants.values_mut() {
            p.rates.tick(speakers::SPEAKER_INTERVAL);
        }
        let mut decisions = Vec::new();
        let mut probes = Vec::new();
        for (sub_id, sub) in &self.participants {
            let budget = sub.video_budget();
            let ranking = self.rooms.get(&sub.room).map(|r| r.ranking.as_slice());
            let rank = |p: ParticipantId| {
                ranking
                    .and_then(|r| r.iter().position(|x| *x == p))
                    .unwrap_or(usize::MAX)
            };
            let mut mine = Vec::new();
            let mut desired = 0.0;
            for (i, slot) in sub.slots.iter().enumerate() {
                let Some((publisher, _)) = slot.source.filter(|_| slot.kind == MediaKind::Video)
                else {
                    continue;
                };
                let Some(p) = self.participants.get(&publisher) else {
                    continue;
                };
                let target = layers::choose_from(
                    &p.rates,
                    budget,
                    sub.max_layer,
                    Some(slot.target_layer),
                    slot.last_down,
                    now,
                );
                let best = layers::choose(&p.rates, f64::INFINITY, sub.max_layer, now);
                desired += p.rates.bps[usize::from(best)];
                let cost = p.rates.bps[usize::from(target)];
                mine.push((rank(publisher), i, publisher, target, slot.layer, cost));
            }
            let audio = sub
                .slots
                .iter()
                .filter(|s| s.kind == MediaKind::Audio && s.source.is_some())
                .count() as f64
                * layers::AUDIO_BPS as f64;
            // What does not fit the estimate even at the chosen layers is suspended,
            // lowest-ranked sources first (the top one always plays): a pacer fed more
            // than the link carries only adds delay.
            let total = sub.estimate.unwrap_or(INITIAL_ESTIMATE_BPS) as f64 - audio;
            mine.sort_by_key(|m| m.0);
            let settled = sub
                .connected_at
                .is_some_and(|t| now.saturating_duration_since(t) >= SUSPEND_GRACE);
            let mut used = 0.0;
            for (n, (_, i, publisher, target, current, cost)) in mine.into_iter().enumerate() {
                let fits = n == 0 || !settled || used + cost <= total;
                if fits {
                    used += cost;
                }
                decisions.push((*sub_id, i, publisher, target, current, !fits));
            }
            probes.push((*sub_id, used + audio, desired + audio));
        }
        let mut keyframes = Vec::new();
        for (sub, i, publisher, target, current, suspend) in decisions {
            if let Some(slot) = self
                .participants
                .get_mut(&sub)
                .and_then(|s| s.slots.get_mut(i))
            {
                if target < slot.target_layer {
                    slot.last_down = Some(now);
                }
                slot.target_layer = target;
                if suspend && !slot.suspended {
                    self.counters.suspensions += 1;
                }
                if slot.suspended && !suspend {
                    // Back within the estimate: resume at the target layer's keyframe.
                    slot.resume = true;
                    keyframes.push((publisher, target));
                } else if slot.layer != Some(target) && !suspend {
                    keyframes.push((publisher, target));
                }
                slot.suspended = suspend;
                if suspend {
                    continue;
                }
            }
            // The layer a slot is on stays wanted until it has switched: pausing it
            // before the target's keyframe arrives would leave the slot empty.
            if let Some(p) = self.participants.get_mut(&publisher) {
                p.rates.want(target, now);
                if let Some(current) = current {
                    p.rates.want(current, now);
                }
            }
        }
        for (sub, minimum, desired) in probes {
            if let Some(p) = self.participants.get_mut(&sub) {
                p.rtc
                    .bwe()
                    .set_bitrate(Bitrate::bps(minimum as u64), Bitrate::bps(desired as u64));
            }
        }
        for (publisher, layer) in keyframes {
            let ssrc = self
                .participants
                .get(&publisher)
                .and_then(|p| p.layer_ssrc[usize::from(layer)]);
            if let Some(ssrc) = ssrc {
                self.request_keyframe((publisher, ssrc), KeyframeRequestKind::Pli, now, false);
            }
        }
        for p in self.participants.values_mut() {
            // Only simulcast publishers have layers to pause.
            if p.layer_ssrc.iter().flatten().count() < 2 {
                continue;
            }
            let could_watch = self.rooms.get(&p.room).is_some_and(|r| r.members.len() > 1);
            if let Some(paused) = p.rates.pause_change(now, could_watch) {
                self.events.push_back(Event::PauseLayers {
                    room: p.room,
                    device: p.device.clone(),
                    paused: (0..layers::MAX_LAYERS as u8)
                        .filter(|l| paused[usize::from(*l)])
                        .collect(),
                });
            }
        }
    }

    /// A subscriber asks for at most `layer` of everyone's video.
    pub fn set_max_layer(&mut self, room: &RoomId, device: &DeviceAddr, layer: u8) {
        if let Some(p) = self
            .by_device
            .get(&(*room, device.clone()))
            .and_then(|id| self.participants.get_mut(id))
        {
            p.max_layer = layer.min((layers::MAX_LAYERS - 1) as u8);
        }
    }

    /// Ranks every room, announces dominant-speaker changes, and frees the video slots of
    /// sources that fell out of a subscriber's last-N.
    pub(super) fn rank_speakers(&mut self, now: Instant) {
        for p in self.participants.values_mut() {
            p.speech.tick();
        }
        let Self {
            rooms,
            participants,
            events,
            counters,
            cfg,
            ..
        } = self;
        for (room_id, room) in rooms.iter_mut() {
            let members: Vec<(ParticipantId, &speakers::SpeechMeter)> = room
                .members
                .iter()
                .filter_map(|id| participants.get(id).map(|p| (*id, &p.speech)))
                .collect();
            room.ranking = speakers::rank(&members, now);
            let look = |id: ParticipantId| {
                participants
                    .get(&id)
                    .map(|p| (p.speech.speaking(now), p.speech.loudness))
            };
            let dominant = speakers::dominant(room.dominant, &room.ranking, look);
            if dominant != room.dominant {
                room.dominant = dominant;
                if let Some(d) = dominant.and_then(|d| participants.get(&d)) {
                    counters.speaker_changes += 1;
                    events.push_back(Event::DominantSpeaker {
                        room: *room_id,
                        device: d.device.clone(),
                    });
                }
            }
            for sub in &room.members {
                let Some(p) = participants.get_mut(sub) else {
                    continue;
                };
                let n = video_slots(p).min(cfg.last_n);
                for slot in p.slots.iter_mut().filter(|s| s.kind == MediaKind::Video) {
                    if slot
                        .source
                        .is_some_and(|(src, _)| !selected(&room.ranking, *sub, src, n))
                    {
                        slot.clear();
                    }
                }
            }
        }
    }
}

/// The first `n` of `ranking` apart from `sub` include `p`.
pub(super) fn selected(
    ranking: &[ParticipantId],
    sub: ParticipantId,
    p: ParticipantId,
    n: usize,
) -> bool {
    ranking
        .iter()
        .filter(|x| **x != sub)
        .take(n)
        .any(|x| *x == p)
}
