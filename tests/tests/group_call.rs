//! Five people in a room through a real SFU on loopback: everyone hears everyone. Each
//! participant sends its own tone; once all five are in the call, every receiver must
//! play at least 95 % of every other participant's frames sent in the next 10 s, at that
//! sender's frequency, and everyone sees the same verification code.

use std::{collections::BTreeMap, time::Duration};

use sotto_client::{
    call::Endpoint,
    room::{JoinOptions, RoomLine, RoomPhase, RoomReport},
    session::LeftReason,
};
use sotto_media::synth::AudioSignal;
use sotto_tests::{h, key_for, sfu::start_sfu};
use tokio::sync::{mpsc, watch};

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
    let addr = net.server.running.addr;
    let mut people = Vec::new();
    for i in 0..PEOPLE {
        let name = format!("@person{i}");
        let ep = Endpoint::connect(addr, &net.server.pin, h(&name), key_for(&name), 1)
            .await
            .expect("logs in");
        people.push(ep);
    }
    let room = people[0].create_room().await.expect("room");
    let invited = (1..PEOPLE).map(|i| h(&format!("@person{i}"))).collect();
    people[0]
        .invite_to_room(room, invited)
        .await
        .expect("invited");

    let (leave_tx, leave_rx) = watch::channel(false);
    let mut lines = Vec::new();
    let mut calls = Vec::new();
    for (i, mut ep) in people.into_iter().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel::<RoomLine>();
        lines.push(rx);
        let mut opts = JoinOptions {
            audio: AudioSignal::Tone { hz: hz(i) },
            media_ip: Some("127.0.0.1".parse().expect("ip")),
            status: Some(tx),
            leave: Some(leave_rx.clone()),
            stamps: true,
            ..JoinOptions::default()
        };
        calls.push(tokio::spawn(async move {
            let r = ep.join_room(room, &mut opts).await;
            (ep, r)
        }));
    }

    // Everyone in the call with everyone, and the senders' switch to the last epoch over
    // (frames sent under an earlier epoch are not the newest member's to decrypt): the
    // window starts.
    latest_when(&mut lines, Duration::from_secs(40), |l| {
        l.phase == RoomPhase::InCall && l.members.len() == PEOPLE
    })
    .await
    .expect("all five are in the call with each other within 40 s");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let start = latest_when(&mut lines, Duration::from_secs(3), |_| true)
        .await
        .expect("status lines keep coming");
    tokio::time::sleep(WINDOW).await;
    let end = latest_when(&mut lines, Duration::from_secs(3), |_| true)
        .await
        .expect("status lines keep coming");
    let _ = leave_tx.send(true);

    let mut reports: Vec<RoomReport> = Vec::new();
    for c in calls {
        let (_ep, r) = c.await.expect("task");
        reports.push(r.expect("the call runs"));
    }
    for (i, r) in reports.iter().enumerate() {
        assert_eq!(r.ended, Some(LeftReason::Left), "person{i} left by itself");
    }
    // One code for everyone in the last epoch they shared.
    let last: Vec<&String> = reports
        .iter()
        .map(|r| &r.codes.last().expect("an epoch").1)
        .collect();
    assert!(
        last.windows(2).all(|w| w[0] == w[1]),
        "verification codes differ: {last:?}"
    );

    for (ri, r) in reports.iter().enumerate() {
        let by_handle: BTreeMap<String, &sotto_client::room::SenderReport> = r
            .senders
            .values()
            .filter_map(|s| s.handle.as_ref().map(|h| (h.to_string(), s)))
            .collect();
        for si in (0..PEOPLE).filter(|s| *s != ri) {
            let name = format!("@person{si}");
            let s = by_handle
                .get(&name)
                .unwrap_or_else(|| panic!("person{ri} heard nothing from {name}"));
            let (a, b) = (
                start[si].last_frame_id.expect("sending"),
                end[si].last_frame_id.expect("sending"),
            );
            let want: Vec<u64> = (a + 1..=b).collect();
            let got: std::collections::BTreeSet<u64> = s
                .played
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| (a + 1..=b).contains(id))
                .collect();
            let share = got.len() as f64 / want.len() as f64;
            assert!(
                want.len() >= 400,
                "the window holds {} frames of {name}",
                want.len()
            );
            assert!(
                share >= 0.95,
                "person{ri} played {:.1} % of {name}'s {} frames",
                share * 100.0,
                want.len()
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

/// Waits until every participant's latest status line satisfies `ok`; returns those lines.
async fn latest_when(
    lines: &mut [mpsc::UnboundedReceiver<RoomLine>],
    within: Duration,
    ok: impl Fn(&RoomLine) -> bool,
) -> Option<Vec<RoomLine>> {
    let deadline = tokio::time::Instant::now() + within;
    let mut latest: Vec<Option<RoomLine>> = vec![None; lines.len()];
    loop {
        for (i, rx) in lines.iter_mut().enumerate() {
            while let Ok(l) = rx.try_recv() {
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
