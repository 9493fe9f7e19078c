//! Frames in and out: our encoded frames are SFrame-encrypted under our sender keys and
//! sent on the link; frames from the link are decrypted, and the sender is the leaf the
//! key proved (the SFU's slot and SSRC only carry them here). A frame of an epoch we have
//! not reached yet is held until the commit that brings it is applied, or for
//! [`super::RoomOptions::hold`].

use std::{net::SocketAddr, time::Instant};

use sotto_media::{ContextId, keys::RejectReason};
use sotto_proto::{Request, Response, RtcSignal};
use sotto_wire::rtp_ext::AudioLevel;
use str0m::media::Mid;

use super::{
    Answer, Asked, Env, Frame, LeftReason, RoomEvent, RoomSession, Stage,
    sfu_link::{LinkConfig, LinkEvent, SfuLink},
};

/// What a direct call's bandwidth estimate probes for: Opus at its best and one video
/// layer at the largest rate we configure (1280×720), with headers.
const DIRECT_MAX_BPS: u64 = 2_000_000;
/// At most this many frames wait for an epoch we have not reached.
const MAX_HELD: usize = 256;

impl RoomSession {
    /// Once we are a member with keys, asks for a join token for the room's SFU (or, on
    /// a direct call, offers media to the peer; the answering side waits for the offer).
    pub(super) fn maybe_connect(&mut self, env: &mut Env<'_>, now: Instant) {
        if self.link_asked || self.keys.is_none() || self.stage != Stage::Member {
            return;
        }
        self.link_asked = true;
        match self.opts.direct {
            None => {
                self.ask(Asked::Token, Request::SfuToken { room: self.room });
            }
            Some(d) if d.offerer => {
                let (link, offer) = match SfuLink::offer(self.direct_link(), now) {
                    Ok(x) => x,
                    Err(e) => return self.end(env, LeftReason::Failed(e.to_string())),
                };
                self.link = Some(link);
                self.relay_due = d.relay_after.map(|after| now + after);
                self.ask(
                    Asked::Relay,
                    Request::Relay {
                        call: d.call,
                        signal: RtcSignal::Offer(offer),
                    },
                );
            }
            Some(_) => {}
        }
    }

    /// A direct call's link: one line each way, one video layer.
    fn direct_link(&self) -> LinkConfig {
        LinkConfig {
            simulcast: false,
            slots: (1, usize::from(self.opts.link.video)),
            bwe: Some(DIRECT_MAX_BPS),
            ..self.opts.link.clone()
        }
    }

    /// The peer's offer or answer on a direct call. The answer goes back at once, member
    /// or not yet: frames that come before our keys are held like any early frame.
    pub(super) fn handle_peer_signal(
        &mut self,
        env: &mut Env<'_>,
        signal: &RtcSignal,
        now: Instant,
    ) {
        let Some(d) = self.opts.direct else {
            return;
        };
        match signal {
            RtcSignal::Offer(sdp) if !d.offerer && self.link.is_none() => {
                let (link, answer) = match SfuLink::answer(self.direct_link(), sdp, now) {
                    Ok(x) => x,
                    Err(e) => return self.end(env, LeftReason::Failed(e.to_string())),
                };
                self.link = Some(link);
                self.link_asked = true;
                self.ask(
                    Asked::Relay,
                    Request::Relay {
                        call: d.call,
                        signal: RtcSignal::Answer(answer),
                    },
                );
            }
            RtcSignal::Answer(sdp) if d.offerer => {
                let Some(link) = self.link.as_mut() else {
                    return;
                };
                if let Err(e) = link.accept_answer(sdp, now) {
                    self.end(env, LeftReason::Failed(e.to_string()));
                }
            }
            // The call moved to the relay (the other party asked, or we did): same room,
            // same group and keys, the SFU's link instead of the peer's.
            RtcSignal::UseRoom { room } if *room == self.room => self.use_sfu(env, now),
            _ => tracing::debug!("a peer's signal that does not apply now"),
        }
    }

    /// A direct call's link has not connected in time: ask the service to relay it (the
    /// other party hears `UseRoom`; we move when the service agrees).
    pub(super) fn direct_timeout(&mut self, now: Instant) {
        let Some(due) = self.relay_due.filter(|t| *t <= now) else {
            return;
        };
        self.relay_due = None;
        let (Some(d), false) = (
            self.opts.direct,
            self.link.as_ref().is_some_and(SfuLink::is_connected),
        ) else {
            return;
        };
        tracing::info!(
            waited_ms = (now - due).as_millis() as u64,
            "the direct path has not connected: asking for the relay"
        );
        self.ask(Asked::RelayCall, Request::RelayCall { call: d.call });
    }

    /// The service answered our relay request.
    pub(super) fn relay_answered(&mut self, env: &mut Env<'_>, answer: Answer, now: Instant) {
        match answer {
            Answer::Ok(Response::RoomCreated { room }) if room == self.room => {
                self.use_sfu(env, now);
            }
            other => {
                // No SFU (or no answer): the call keeps trying peer to peer.
                tracing::warn!(answer = %other.describe(), "the call could not move to the relay");
            }
        }
    }

    /// Whether media goes through the SFU (else straight to a direct call's peer).
    pub fn via_sfu(&self) -> bool {
        self.opts.direct.is_none()
    }

    /// Moves a direct call's media to the room's SFU (the direct path did not connect, or
    /// a party asked for the relay): the peer link goes, and a join token is asked for as
    /// in any room. Nothing else changes: the group, keys and receive chains carry on.
    pub fn use_sfu(&mut self, env: &mut Env<'_>, now: Instant) {
        if self.opts.direct.take().is_none() {
            return;
        }
        tracing::info!("the call moves to the SFU");
        self.relay_due = None;
        self.retire_link();
        self.link_asked = false;
        self.maybe_connect(env, now);
    }

    /// The token came: offer media to the SFU through signaling.
    pub(super) fn token_answered(&mut self, env: &mut Env<'_>, answer: Answer, now: Instant) {
        let token = match answer {
            Answer::Ok(Response::SfuToken { token, .. }) => token,
            Answer::Refused(e) => {
                return self.end(
                    env,
                    LeftReason::Failed(format!("no media for this room: {}", e.message)),
                );
            }
            other => {
                return self.end(
                    env,
                    LeftReason::Failed(format!(
                        "the server gave no join token for the room's media: {}",
                        other.describe()
                    )),
                );
            }
        };
        let (link, offer) = match SfuLink::offer(self.opts.link.clone(), now) {
            Ok(x) => x,
            Err(e) => return self.end(env, LeftReason::Failed(e.to_string())),
        };
        self.link = Some(link);
        self.ask(
            Asked::Relay,
            Request::RelayToSfu {
                room: self.room,
                signal: RtcSignal::JoinSfu { token, offer },
            },
        );
    }

    /// A message from the room's SFU.
    pub(super) fn handle_sfu_signal(
        &mut self,
        env: &mut Env<'_>,
        signal: &RtcSignal,
        now: Instant,
    ) {
        match signal {
            RtcSignal::Answer(sdp) => {
                let Some(link) = self.link.as_mut() else {
                    return;
                };
                if let Err(e) = link.accept_answer(sdp, now) {
                    return self.end(env, LeftReason::Failed(e.to_string()));
                }
                if let Some(layer) = self.opts.max_layer {
                    self.tell_max_layer(layer);
                }
            }
            RtcSignal::PauseLayers { paused } => {
                self.emit(RoomEvent::PausedLayers(paused.clone()));
            }
            _ => {}
        }
    }

    /// Receive at most `layer` of anyone's simulcast video from now on (the SFU is told
    /// at once if media is set up, else once it is).
    pub fn set_max_layer(&mut self, layer: u8) {
        self.opts.max_layer = Some(layer);
        if self.link.is_some() {
            self.tell_max_layer(layer);
        }
    }

    fn tell_max_layer(&mut self, layer: u8) {
        self.ask(
            Asked::Relay,
            Request::RelayToSfu {
                room: self.room,
                signal: RtcSignal::MaxLayer { layer },
            },
        );
    }

    /// A datagram arrived from `from` on our media address `to`.
    pub fn handle_datagram(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        bytes: &[u8],
        now: Instant,
    ) {
        if let Some(l) = self.link.as_mut() {
            l.handle_datagram(now, from, to, bytes);
        }
        self.media_events(now);
    }

    /// Sends one encoded audio frame (a `sotto_media::payload`) with its level.
    pub fn send_audio(&mut self, payload: &[u8], timestamp: u32, level: AudioLevel, now: Instant) {
        if let Some(wire) = self.encrypt(ContextId::Audio, payload)
            && let Some(l) = self.link.as_mut()
        {
            l.send_audio(timestamp, &wire, level, now);
        }
    }

    /// Sends one encoded video frame on simulcast `layer` (0 without simulcast). Every
    /// layer is encrypted under our one video key, so the counters form one sequence.
    pub fn send_video(
        &mut self,
        payload: &[u8],
        timestamp: u32,
        layer: u8,
        keyframe: bool,
        now: Instant,
    ) {
        if let Some(wire) = self.encrypt(ContextId::Video, payload)
            && let Some(l) = self.link.as_mut()
        {
            l.send_video(timestamp, &wire, layer, keyframe, now);
        }
    }

    /// Asks the SFU for keyframes (our decoder lost its reference).
    pub fn request_keyframe(&mut self, now: Instant) {
        if let Some(l) = self.link.as_mut() {
            l.request_keyframe(now);
        }
    }

    fn encrypt(&mut self, context: ContextId, payload: &[u8]) -> Option<Vec<u8>> {
        if !self.link.as_ref().is_some_and(SfuLink::is_connected) {
            return None;
        }
        let mut wire = Vec::with_capacity(payload.len() + 32);
        match self
            .keys
            .as_mut()?
            .encrypt(context, b"", payload, &mut wire)
        {
            Ok(_) => Some(wire),
            Err(e) => {
                tracing::warn!(error = %e, "could not encrypt a frame");
                None
            }
        }
    }

    /// Moves what the link has into events.
    pub(super) fn media_events(&mut self, now: Instant) {
        while let Some(e) = self.link.as_mut().and_then(SfuLink::poll_event) {
            match e {
                LinkEvent::Connected => {
                    let to = if self.opts.direct.is_some() {
                        "the peer"
                    } else {
                        "the SFU"
                    };
                    tracing::info!("media connected to {to}");
                    self.emit(RoomEvent::Connected);
                    self.emit(RoomEvent::KeyframeNeeded);
                }
                LinkEvent::Disconnected => tracing::warn!("media connection lost"),
                LinkEvent::KeyframeRequest => {
                    self.status.keyframe_requests_received += 1;
                    self.emit(RoomEvent::KeyframeNeeded);
                }
                LinkEvent::Estimate(bps) => self.emit(RoomEvent::SendEstimate(bps)),
                LinkEvent::FrameLost { slot } => {
                    if let Some(sender) = self.slot_senders.get(&slot).copied() {
                        self.emit(RoomEvent::VideoLost { sender });
                    }
                }
                LinkEvent::Frame {
                    slot,
                    video,
                    timestamp,
                    data,
                } => self.decrypt(slot, video, timestamp, data, now),
            }
        }
    }

    /// Decrypts a frame; one of an epoch not reached yet is held. The sender a video
    /// slot last carried (as its key proved) is whom a frame lost on it belonged to.
    fn decrypt(&mut self, slot: Mid, video: bool, timestamp: u32, data: Vec<u8>, now: Instant) {
        match self.open(timestamp, &data, now) {
            Some(Ok(e)) => {
                if let RoomEvent::Video(f) = &e {
                    self.slot_senders.insert(slot, f.sender);
                }
                self.emit(e);
            }
            Some(Err(e)) if e.reason == RejectReason::UnknownKid && self.held.len() < MAX_HELD => {
                self.held.push_back((now, video, timestamp, data));
            }
            Some(Err(e)) => self.count_failure(e.sender),
            None => {}
        }
    }

    /// The frame decrypted, as an event; `None` without keys.
    fn open(
        &mut self,
        timestamp: u32,
        data: &[u8],
        now: Instant,
    ) -> Option<Result<RoomEvent, sotto_media::keys::DecryptError>> {
        let keys = self.keys.as_mut()?;
        let mut plain = Vec::new();
        Some(keys.decrypt(data, b"", &mut plain, now).map(|got| {
            let frame = Frame {
                sender: got.sender,
                timestamp,
                payload: plain,
                epoch: got.epoch,
            };
            // The key says which track it is; the slot it came on is the SFU's word.
            if got.context == ContextId::Video {
                RoomEvent::Video(frame)
            } else {
                RoomEvent::Audio(frame)
            }
        }))
    }

    fn count_failure(&mut self, sender: Option<u32>) {
        *self
            .status
            .decrypt_failures
            .entry(sender.unwrap_or(u32::MAX))
            .or_default() += 1;
    }

    /// A held frame's epoch never came: timing if it arrived around our join, a decrypt
    /// failure if later.
    pub(super) fn held_gave_up(&mut self, arrived: Instant) {
        let around_join = self.entered_at.is_none_or(|t| arrived < t + self.opts.hold);
        if around_join {
            self.status.held_expired += 1;
        } else {
            self.count_failure(None);
        }
    }

    /// New keys: frames held for them are tried again; the rest wait on.
    pub(super) fn retry_held(&mut self, now: Instant) {
        let held = std::mem::take(&mut self.held);
        for (at, video, ts, data) in held {
            match self.open(ts, &data, now) {
                Some(Ok(e)) => {
                    self.status.held_recovered += 1;
                    self.emit(e);
                }
                Some(Err(e))
                    if e.reason == RejectReason::UnknownKid && at + self.opts.hold > now =>
                {
                    self.held.push_back((at, video, ts, data));
                }
                Some(Err(e)) if e.reason == RejectReason::UnknownKid => self.held_gave_up(at),
                Some(Err(e)) => self.count_failure(e.sender),
                None => self.held.push_back((at, video, ts, data)),
            }
        }
    }
}
