//! Five people in a room through a real SFU on loopback: everyone hears and sees
//! everyone. Each participant sends its own tone and the synthetic video pattern in three
//! small simulcast layers; once all five are in the call, every receiver must play at
//! least 95 % of every other participant's audio frames sent in the next 10 s, at that
//! sender's frequency, and decode at least 95 % of its video frames, in order; everyone
//! sees the same verification code.

use std::time::Duration;

use sotto_client::{
    room::{RoomPhase, RoomReport},
    session::LeftReason,
};
use sotto_tests::{
    h,
    room::{
        heard, join_with, latest_when, leave, person, played_share, small_simulcast, video_share,
    },
    sfu::start_sfu,
};

const PEOPLE: usize = 5;
const WINDOW: Duration = Duration::from_secs(10);

fn hz(i: usize) -> f64 {
    300.0 + 110.0 * i as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_people_hear_each_other() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let net = start_sfu(1).await;
    let mut eps = Vec::new();
    for i in 0..PEOPLE {
        eps.push(person(&net, &format!("@person{i}")).await);
    }
    let room = eps[0].create_room().await.expect("room");
    let invited = (1..PEOPLE).map(|i| h(&format!("@person{i}"))).collect();
    eps[0].invite_to_room(room, invited).await.expect("invited");
    let mut people: Vec<_> = eps
        .into_iter()
        .enumerate()
        .map(|(i, ep)| join_with(ep, room, hz(i), Some(small_simulcast())))
        .collect();

    // Everyone in the call with everyone, and the senders' switch to the last epoch over
    // (frames sent under an earlier epoch are not the newest member's to decrypt): the
    // window starts.
    let mut all: Vec<&mut _> = people.iter_mut().collect();
    latest_when(&mut all, Duration::from_secs(40), |l| {
        l.phase == RoomPhase::InCall && l.members.len() == PEOPLE
    })
    .await
    .expect("all five are in the call with each other within 40 s");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let start = latest_when(&mut all, Duration::from_secs(3), |_| true)
        .await
        .expect("status lines keep coming");
    tokio::time::sleep(WINDOW).await;
    let end = latest_when(&mut all, Duration::from_secs(3), |_| true)
        .await
        .expect("status lines keep coming");

    let mut reports: Vec<RoomReport> = Vec::new();
    for p in people {
        reports.push(leave(p).await);
    }
    for (i, r) in reports.iter().enumerate() {
        assert_eq!(r.ended, Some(LeftReason::Left), "person{i} left by itself");
    }
    let last: Vec<&String> = reports
        .iter()
        .map(|r| &r.codes.last().expect("an epoch").1)
        .collect();
    assert!(
        last.windows(2).all(|w| w[0] == w[1]),
        "verification codes differ: {last:?}"
    );

    for (ri, r) in reports.iter().enumerate() {
        for si in (0..PEOPLE).filter(|s| *s != ri) {
            let name = format!("@person{si}");
            let s =
                heard(r, &name).unwrap_or_else(|| panic!("person{ri} heard nothing from {name}"));
            let ids = start[si].last_frame_id.expect("sending") + 1
                ..=end[si].last_frame_id.expect("sending");
            assert!(
                ids.clone().count() >= 400,
                "the window holds {ids:?} of {name}"
            );
            let share = played_share(s, ids.clone());
            assert!(
                share >= 0.95,
                "person{ri} played {:.1} % of {name}'s frames {ids:?}",
                share * 100.0
            );
            let vids =
                start[si].last_video_id.expect("video") + 1..=end[si].last_video_id.expect("video");
            assert!(
                vids.clone().count() >= 80,
                "the window holds {vids:?} of {name}'s video"
            );
            let (vshare, in_order) = video_share(s, vids.clone());
            assert!(
                vshare >= 0.95,
                "person{ri} decoded {:.1} % of {name}'s video frames {vids:?} ({:?}, {} asked keyframes; ids {:?})",
                vshare * 100.0,
                s.video,
                r.keyframe_requests_sent,
                s.video_ids
                    .iter()
                    .filter(|i| vids.contains(i))
                    .collect::<Vec<_>>()
            );
            assert!(in_order, "person{ri} decoded {name}'s video out of order");
            assert_eq!(
                s.video_mismatches, 0,
                "person{ri} saw pictures of {name} under the wrong id"
            );
            let heard = s.received_hz.expect("a frequency");
            assert!(
                (heard - hz(si)).abs() < hz(si) * 0.05,
                "person{ri} hears {name} at {heard:.0} Hz, sent at {:.0} Hz",
                hz(si)
            );
        }
    }
    let mut latencies: Vec<Duration> = reports
        .iter()
        .flat_map(|r| {
            r.senders
                .values()
                .flat_map(|s| s.played.iter().map(|p| p.1))
        })
        .collect();
    latencies.sort_unstable();
    let q = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    let chains: Vec<_> = reports
        .iter()
        .flat_map(|r| r.senders.values().map(|s| s.stats))
        .collect();
    let sum = |f: fn(&sotto_client::pipeline::ChainStats) -> u64| chains.iter().map(f).sum::<u64>();
    eprintln!(
        "audio, all chains: played {}, concealed {} (fec {}), late {}, underrun {} ms",
        sum(|s| s.played),
        sum(|s| s.concealed),
        sum(|s| s.fec_recovered),
        sum(|s| s.late),
        sum(|s| s.underrun_samples) / 48
    );
    let mut video: Vec<Duration> = reports
        .iter()
        .flat_map(|r| {
            r.senders
                .values()
                .flat_map(|s| s.video_latency.iter().copied())
        })
        .collect();
    video.sort_unstable();
    let vq = |p: f64| video[((video.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    eprintln!(
        "video capture→decode p50 {:.1} ms, p99 {:.1} ms",
        vq(0.5),
        vq(0.99)
    );
    let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    let admitted: Vec<f64> = reports.iter().map(|r| ms(r.admitted)).collect();
    let connected: Vec<f64> = reports.iter().map(|r| ms(r.connected)).collect();
    let first: Vec<f64> = reports.iter().map(|r| ms(r.first_audio)).collect();
    eprintln!(
        "group call of {PEOPLE}: capture→playout p50 {:.1} ms, p99 {:.1} ms; from the join: in the group {admitted:.0?} ms, media up {connected:.0?} ms, first audio {first:.0?} ms",
        q(0.5).as_secs_f64() * 1e3,
        q(0.99).as_secs_f64() * 1e3,
    );
}
