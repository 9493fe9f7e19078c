//! Active speaker and last-N through the real SFU: the loudest participant is announced
//! (through signaling, to everyone in the room) within a second, and again within a
//! second when someone else takes the floor; with 12 video senders and N = 9, each
//! subscriber receives the video of the 9 top-ranked others only.

use sotto_tests::sfu::{run_for, start_sfu};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loudest_is_announced_within_a_second() {
    let h = start_sfu(1).await;
    let (_room, participants) = h.room(4, (4, 4)).await;
    for (i, p) in participants.iter().enumerate() {
        let level = if i == 2 { -10 } else { -50 };
        p.peer.audio_level.store(level, Ordering::Relaxed);
    }
    let loud = participants[2].joined.device.clone();
    let next = participants[0].joined.device.clone();
    let levels: Vec<_> = participants
        .iter()
        .map(|p| p.peer.audio_level.clone())
        .collect();
    let heard: Vec<_> = participants.iter().map(|p| p.speakers.clone()).collect();
    let (stop, rx) = watch::channel(false);
    let start = Instant::now();
    let tasks: Vec<_> = participants
        .into_iter()
        .map(|p| tokio::spawn(p.run(rx.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Participant 0 takes the floor.
    levels[2].store(-50, Ordering::Relaxed);
    levels[0].store(-5, Ordering::Relaxed);
    let switched = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = stop.send(true);
    for t in tasks {
        t.await.expect("task");
    }
    for (i, log) in heard.iter().enumerate() {
        let log = log.lock().expect("log").clone();
        let first = log.iter().find(|(_, d)| *d == loud).map(|(t, _)| *t);
        let first =
            first.unwrap_or_else(|| panic!("participant {i} never heard the loudest: {log:?}"));
        assert!(
            first.duration_since(start) < Duration::from_secs(1),
            "participant {i}: announced after {:?}",
            first.duration_since(start)
        );
        let later = log
            .iter()
            .find(|(t, d)| *d == next && *t > switched)
            .map(|(t, _)| t.duration_since(switched));
        assert!(
            later.is_some_and(|d| d < Duration::from_secs(1)),
            "participant {i}: the new speaker was announced after {later:?}"
        );
    }
    h.sfu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_twelve_video_senders_each_subscriber_gets_the_top_nine() {
    let h = start_sfu(2).await;
    let (_room, participants) = h.room(12, (11, 9)).await;
    // Distinct levels: participant 0 loudest, 11 quietest; that is also join order, the
    // ranking before anyone has spoken.
    for (i, p) in participants.iter().enumerate() {
        p.peer
            .audio_level
            .store(-(10 + 3 * i as i8), Ordering::Relaxed);
    }
    let done = run_for(participants, Duration::from_secs(4)).await;
    // Should a subscriber's estimate not have made room for nine videos, the SFU would
    // suspend some (by design); say so if an assertion below fails.
    let page = h.metrics().await;
    let context = page
        .lines()
        .filter(|l| l.contains("suspensions_total ") || l.contains("estimate_bps{"))
        .collect::<Vec<_>>()
        .join("; ");
    let order: Vec<u32> = done.iter().map(|(p, _)| p.joined.leaf).collect();
    let sent: Vec<u64> = done.iter().map(|(_, s)| s.sent.1).collect();
    for (p, stats) in &done {
        let me = p.joined.leaf;
        let top: Vec<u32> = order.iter().copied().filter(|l| *l != me).take(9).collect();
        let video_from: Vec<u32> = stats
            .tracks
            .iter()
            .filter(|((_, video), t)| *video && t.frames > 0)
            .map(|((l, _), _)| *l)
            .collect();
        for (i, leaf) in order.iter().enumerate().filter(|(_, l)| **l != me) {
            let got = stats.tracks.get(&(*leaf, true)).map_or(0, |t| t.frames);
            if top.contains(leaf) {
                assert!(
                    got as f64 >= 0.8 * sent[i] as f64,
                    "leaf {me}: {got} of {} video frames from top-9 leaf {leaf} ({context})",
                    sent[i]
                );
            } else {
                assert!(
                    (got as f64) < 0.2 * sent[i] as f64,
                    "leaf {me} got {got} video frames from leaf {leaf}, outside its last-N; video from {video_from:?}"
                );
            }
        }
        // Audio: a room of 12 is below the big-room threshold, so everyone is heard.
        let heard = stats.tracks.keys().filter(|(_, v)| !*v).count();
        assert_eq!(heard, 11, "leaf {me} heard {heard} others");
    }
    h.sfu.shutdown().await;
}
