//! A one-to-one call once answered: it runs as a room of its two parties, on the same
//! session core and media pipeline as group calls. Its media goes peer to peer (the
//! caller's link offers through the call's relay, the callee's answers), or through the
//! room's SFU (`sotto call --relay`, or the fallback when the direct path does not
//! connect), so that neither side learns the other's address. The room is the signaling
//! service's (it exists while the call lasts; its id is the call's, and so is its MLS
//! group's); only the two parties may be in the group, checked against the directory and
//! the pins like any member.

use std::time::{Duration, Instant};

use sotto_proto::{CallId, DeviceAddr, EndReason, ErrorCode, Event, Request, Response, RoomId};
use tokio::sync::mpsc;

use crate::{
    call::{CallError, CallOptions, CallReport, CallStatus, Endpoint, RelayPolicy},
    room::{JoinOptions, PairCall, RoomLine, RoomPhase, RoomReport},
    session::LeftReason,
    signaling::ClientError,
    transport::Bind,
    verify,
    video::{Layer, VideoSend},
};

/// The two parties of a call, as one side sees them.
struct Parties {
    /// The call.
    call: CallId,
    /// The other party's device.
    peer: DeviceAddr,
    /// Whether we placed the call: only the caller starts the call's group.
    caller: bool,
    /// Media peer to peer first (else through the SFU from the start).
    direct: bool,
}

impl Endpoint {
    /// Asks the service to carry `call` through an SFU; the other party hears of it.
    pub(crate) async fn request_relay(&mut self, call: CallId) -> Result<RoomId, CallError> {
        match self.signaling.request(Request::RelayCall { call }).await? {
            Response::RoomCreated { room } => Ok(room),
            other => Err(CallError::Setup(format!(
                "the server answered a relay request with {other:?}: report this with the log"
            ))),
        }
    }

    /// Runs an answered call: peer to peer (the call's room, whose id is the call's), or
    /// through the SFU from the start when our policy says so (`RelayPolicy::Always`,
    /// either side; the call is hung up if the service cannot relay it).
    pub(crate) async fn run_call(
        &mut self,
        call: CallId,
        peer: DeviceAddr,
        caller: bool,
        opts: &CallOptions,
        report: CallReport,
        started: Instant,
    ) -> Result<CallReport, CallError> {
        let direct = opts.relay != RelayPolicy::Always;
        let room = if direct {
            RoomId(call.0)
        } else {
            match self.request_relay(call).await {
                Ok(room) => room,
                Err(e) => {
                    let _ = self.signaling.request(Request::Hangup { call }).await;
                    return Err(e);
                }
            }
        };
        let parties = Parties {
            call,
            peer,
            caller,
            direct,
        };
        self.in_call_room(parties, room, opts, report, started)
            .await
    }

    /// Runs `call` with `peer` in its room until either side hangs up, and reports it as
    /// a call (`report` holds what setup already recorded).
    async fn in_call_room(
        &mut self,
        parties: Parties,
        room: RoomId,
        opts: &CallOptions,
        mut report: CallReport,
        started: Instant,
    ) -> Result<CallReport, CallError> {
        let call = parties.call;
        let peer = parties.peer.clone();
        if !parties.direct {
            tracing::info!(%call, %room, "the call goes through the SFU");
        }
        let mut join = join_options(&parties, opts);
        let status = opts
            .status
            .clone()
            .map(|tx| forward_status(tx, peer.clone()));
        join.status = status.as_ref().map(|(tx, _)| tx.clone());
        let joined_at = started.elapsed();
        let result = self.join_room(room, &mut join).await;
        drop(join);
        if let Some((_, task)) = status {
            task.abort();
        }
        // The call ends with the room, whoever left first; a call already over is fine.
        // A credential that did not check out ends it as a key mismatch, so the other
        // side hears why.
        let mismatch = matches!(
            &result,
            Ok(RoomReport {
                ended: Some(LeftReason::KeyMismatch { .. }),
                ..
            })
        );
        let end = if mismatch {
            Request::KeyMismatch { call }
        } else {
            Request::Hangup { call }
        };
        match self.signaling.request(end).await {
            Ok(_) => {}
            Err(ClientError::Server(e)) if e.code == ErrorCode::NotFound => {}
            Err(e) => tracing::debug!(%call, error = %e, "ending the relayed call"),
        }
        self.forget_held(&call.0).await;
        let ended_meanwhile = self.take_call_ended(call);
        let r = match result {
            Ok(r) => r,
            // The other side hung up before we were in: its room is gone.
            Err(e) => match ended_meanwhile {
                Some(reason) => {
                    report.ended = Some(reason);
                    return Ok(report);
                }
                None => return Err(e),
            },
        };
        if r.call_ended.or(ended_meanwhile) == Some(EndReason::KeyMismatch) {
            return Err(CallError::PeerSawKeyMismatch { peer });
        }
        if let Some(LeftReason::KeyMismatch { handle, reason }) = &r.ended {
            return Err(CallError::KeyMismatch {
                handle: handle.clone(),
                reason: reason.clone(),
            });
        }
        if let Some(LeftReason::Failed(why)) = &r.ended {
            return Err(CallError::Setup(format!("the call failed: {why}")));
        }
        fill_report(&mut report, &r, joined_at);
        if let Some(key) = &r.peer_key {
            report.safety_number = verify::safety_number(
                self.handle.as_str(),
                &self.identity.verifying_key().to_bytes(),
                peer.handle.as_str(),
                key,
            );
        }
        Ok(report)
    }
}

impl Endpoint {
    /// Takes the `CallEnded` of `call` out of the events read ahead, if it came.
    fn take_call_ended(&mut self, call: CallId) -> Option<EndReason> {
        let at = self
            .backlog
            .iter()
            .position(|e| matches!(e, Event::CallEnded { call: c, .. } if *c == call))?;
        match self.backlog.remove(at) {
            Some(Event::CallEnded { reason, .. }) => Some(reason),
            _ => None,
        }
    }
}

/// The room options of a call, from the call's.
fn join_options(parties: &Parties, opts: &CallOptions) -> JoinOptions {
    let relay_after = match opts.relay {
        // The caller decides on a fallback to the relay; the callee follows when told.
        RelayPolicy::Fallback(after) if parties.caller => Some(after),
        _ => None,
    };
    JoinOptions {
        duration: opts.duration,
        audio: opts.audio,
        microphone: opts.microphone.clone(),
        speaker: opts.speaker.clone(),
        frame_ms: opts.frame_ms,
        media_ips: match &opts.transport.bind {
            Bind::Addrs(a) => a.clone(),
            Bind::AllInterfaces => Vec::new(),
        },
        admission_timeout: opts.setup_timeout,
        status: None,
        leave: opts.hangup.clone(),
        controls: None,
        video: opts.video.map(|v| VideoSend {
            layers: vec![Layer {
                width: v.width,
                height: v.height,
                bitrate: v.bitrate,
            }],
            fps: v.fps,
            camera: opts.camera.clone(),
        }),
        stamps: opts.stamps,
        pair: Some(PairCall {
            call: parties.call,
            peer: parties.peer.clone(),
            arrive_within: opts.setup_timeout,
            caller: parties.caller,
            direct: parties.direct,
            relay_after,
        }),
        max_layer: None,
        stun: opts.transport.stun.clone(),
        self_update_every: opts.rekey_every,
        test_drop_video: opts.test_drop_video.clone(),
        test_inbound_loss: opts.transport.test_inbound_loss,
        test_wrong_keys: opts.test_wrong_keys,
        test_add_unchecked: false,
    }
}

/// Room status lines turned into call status lines, for the caller's channel.
fn forward_status(
    to: mpsc::UnboundedSender<CallStatus>,
    peer: DeviceAddr,
) -> (mpsc::UnboundedSender<RoomLine>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<RoomLine>();
    let task = tokio::spawn(async move {
        while let Some(l) = rx.recv().await {
            let s = CallStatus {
                connected: l.phase == RoomPhase::InCall,
                peer: Some(peer.clone()),
                verification_code: l.code,
                send_bps: l.send_bps,
                recv_bps: l.recv_bps,
                decrypt_failures: l.rejected,
                video_decoded: l.video_decoded,
                audio_played: l.played,
                concealed: l.concealed,
                loss: l.loss,
                epoch: l.epoch,
                relayed: l.via_sfu,
                rtt: l.rtt,
                estimate_bps: l.estimate_bps,
                ..CallStatus::default()
            };
            if to.send(s).is_err() {
                break;
            }
        }
    });
    (tx, task)
}

/// What the room's report says about the other party's media, in the call report's terms
/// (the room was joined `joined_at` into the call).
fn fill_report(report: &mut CallReport, r: &RoomReport, joined_at: Duration) {
    report.relayed = r.via_sfu;
    // The server's word if it ended the call; else we hung up (we left, or the other
    // party did and we followed).
    report.ended = report.ended.or(r.call_ended).or(Some(EndReason::HungUp));
    report.verification_code = r.codes.last().map(|(_, c)| c.clone()).unwrap_or_default();
    report.epoch_changes = r.rekeys;
    report.epoch_keyframes = r.epoch_keyframes;
    report.audio_sent = r.audio_sent;
    report.video_sent = r.video_sent;
    report.video_keyframes = r.video_keyframes;
    report.video_keyframes_forced = r.video_keyframes_forced;
    report.keyframe_requests_sent = r.keyframe_requests_sent;
    report.keyframe_requests_received = r.keyframe_requests_received;
    report.retransmissions_received = r.retransmissions_received;
    report.rtt = r.rtt;
    report.estimate_bps = r.estimate_bps;
    report.estimate_updates = r.estimate_updates;
    report.audio_bitrate = r.audio_bitrate;
    report.audio_bitrate_min = r.audio_bitrate_min;
    report.video_bitrate = r.video_bitrate;
    report.decrypt_failures = r.decrypt_failures.clone();
    report.rejoins = r.rejoins;
    report.remote_addrs = r.sfu_addrs.clone();
    report.media_from = r.media_from.iter().copied().collect();
    // Setup: from the call's start to the first audio from the other party.
    report.setup_time = r.first_audio.map(|t| joined_at + t);
    let Some(peer) = r.senders.values().next() else {
        return;
    };
    report.audio_played = peer.stats.played;
    report.audio_concealed = peer.stats.concealed;
    report.audio_fec = peer.stats.fec_recovered;
    report.received_hz = peer.received_hz;
    for (id, latency) in &peer.played {
        report.latency.push(*id, *latency);
    }
    report.video_decoded = peer.video_decoded;
    report.video_mismatches = peer.video_mismatches;
    report.video_skipped = peer.video.skipped;
    for (id, latency) in peer.video_ids.iter().zip(&peer.video_latency) {
        report.video.push(*id, *latency);
    }
}
