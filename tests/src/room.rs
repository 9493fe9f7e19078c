//! Room calls between in-process endpoints through a real SFU: starting participants and
//! reading what they reported.

use std::{collections::BTreeSet, time::Duration};

use sotto_client::{
    call::{CallError, Endpoint},
    room::{JoinOptions, RoomLine, RoomReport, SenderReport},
    video::{Layer, VideoSend},
};
use sotto_media::synth::AudioSignal;
use sotto_proto::RoomId;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

use crate::{h, key_for, sfu::SfuHarness};

/// A participant's call running in its own task.
pub struct InRoom {
    /// Its status lines.
    pub lines: mpsc::UnboundedReceiver<RoomLine>,
    /// Set to leave.
    pub leave: watch::Sender<bool>,
    /// The call; it ends with the endpoint and the report.
    pub call: JoinHandle<(Endpoint, Result<RoomReport, CallError>)>,
}

/// Logs `name` in (ephemeral state, loopback only).
pub async fn person(net: &SfuHarness, name: &str) -> Endpoint {
    Endpoint::connect(
        net.server.running.addr,
        &net.server.pin,
        h(name),
        key_for(name),
        1,
    )
    .await
    .expect("logs in")
}

/// Joins `room` with a tone of `hz`, media on 127.0.0.1, capture stamps on.
pub fn join(ep: Endpoint, room: RoomId, hz: f64) -> InRoom {
    join_with(ep, room, hz, None)
}

/// Three small simulcast layers of the synthetic pattern (so five senders fit on 2
/// cores; the bench uses the real sizes), 10 frames a second, at low rates: four of them
/// must fit the SFU's per-subscriber estimate, which on loopback stays near 0.5 Mb/s in
/// a test this short (above it, the lowest-ranked publisher's video is suspended).
pub fn small_simulcast() -> VideoSend {
    let layer = |width, height, bitrate| Layer {
        width,
        height,
        bitrate,
    };
    VideoSend {
        layers: vec![
            layer(320, 180, 25_000),
            layer(480, 270, 45_000),
            layer(640, 360, 70_000),
        ],
        fps: 10,
        camera: None,
    }
}

/// [`join`], sending `video` too.
pub fn join_with(ep: Endpoint, room: RoomId, hz: f64, video: Option<VideoSend>) -> InRoom {
    join_opts(
        ep,
        room,
        JoinOptions {
            audio: AudioSignal::Tone { hz },
            video,
            ..JoinOptions::default()
        },
    )
}

/// Joins `room` with `opts`, but always with media on 127.0.0.1, capture stamps on, and
/// the status lines and leave switch of the returned [`InRoom`].
pub fn join_opts(mut ep: Endpoint, room: RoomId, mut opts: JoinOptions) -> InRoom {
    let (tx, lines) = mpsc::unbounded_channel();
    let (leave, leave_rx) = watch::channel(false);
    opts.media_ips = vec!["127.0.0.1".parse().expect("ip")];
    opts.status = Some(tx);
    opts.leave = Some(leave_rx);
    opts.stamps = true;
    let call = tokio::spawn(async move {
        let r = ep.join_room(room, &mut opts).await;
        (ep, r)
    });
    InRoom { lines, leave, call }
}

/// Waits until the latest status line of every one of `who` satisfies `ok`; returns those
/// lines, or `None` after `within`.
pub async fn latest_when(
    who: &mut [&mut InRoom],
    within: Duration,
    ok: impl Fn(&RoomLine) -> bool,
) -> Option<Vec<RoomLine>> {
    let deadline = tokio::time::Instant::now() + within;
    let mut latest: Vec<Option<RoomLine>> = vec![None; who.len()];
    loop {
        for (i, p) in who.iter_mut().enumerate() {
            while let Ok(l) = p.lines.try_recv() {
                latest[i] = Some(l);
            }
        }
        if latest.iter().all(|l| l.as_ref().is_some_and(&ok)) {
            return Some(latest.into_iter().flatten().collect());
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Leaves and returns the report.
pub async fn leave(p: InRoom) -> RoomReport {
    let _ = p.leave.send(true);
    let (_ep, r) = p.call.await.expect("the call's task");
    r.expect("the call runs")
}

/// What `receiver` heard from the participant called `sender`.
pub fn heard<'a>(receiver: &'a RoomReport, sender: &str) -> Option<&'a SenderReport> {
    receiver
        .senders
        .values()
        .find(|s| s.handle.as_ref().is_some_and(|h| h.as_str() == sender))
}

/// Of the frames with ids in `ids`, the share `s` played.
pub fn played_share(s: &SenderReport, ids: std::ops::RangeInclusive<u64>) -> f64 {
    let want = ids.clone().count();
    let got: BTreeSet<u64> = s
        .played
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| ids.contains(id))
        .collect();
    got.len() as f64 / want.max(1) as f64
}

/// Of the video frames with ids in `ids`, the share `s` decoded, and whether the ids it
/// decoded never went back.
pub fn video_share(s: &SenderReport, ids: std::ops::RangeInclusive<u64>) -> (f64, bool) {
    let want = ids.clone().count();
    let got: BTreeSet<u64> = s
        .video_ids
        .iter()
        .copied()
        .filter(|id| ids.contains(id))
        .collect();
    // At a layer switch the SFU may forward the same picture from both layers (the old
    // layer's frame, then the new one's keyframe of the same capture): a repeat, not
    // disorder.
    let in_order = s.video_ids.windows(2).all(|w| w[0] <= w[1]);
    (got.len() as f64 / want.max(1) as f64, in_order)
}
