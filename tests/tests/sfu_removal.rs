//! The owner removes a participant: signaling tells the SFU, the SFU's forwarding core
//! drops the connection and acknowledges, and from then on not one datagram reaches the
//! removed participant, while the others go on hearing each other.

use sotto_bench::load::room::identity_for;
use sotto_client::signaling::SignalingClient;
use sotto_proto::{Handle, Request};
use sotto_tests::sfu::{metric, start_sfu};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_participant_receives_nothing_more() {
    let h = start_sfu(1).await;
    let (room, participants) = h.room(3, (4, 4)).await;
    let removed = participants[2].datagrams.clone();
    let removed_handle = participants[2].joined.device.handle.clone();
    let (stop, rx) = watch::channel(false);
    let tasks: Vec<_> = participants
        .into_iter()
        .map(|p| tokio::spawn(p.run(rx.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before_removal = removed.load(Ordering::Relaxed);
    assert!(before_removal > 100, "it was receiving ({before_removal})");

    // The owner, from a second device, removes it.
    let owner = SignalingClient::connect(h.server.running.addr, &h.server.pin)
        .await
        .expect("connect");
    let owner_handle = Handle::parse("@load0").expect("handle");
    owner
        .login(&owner_handle, &identity_for("@load0"), 2)
        .await
        .expect("owner logs in");
    owner
        .request(Request::RemoveFromRoom {
            room,
            handle: removed_handle,
        })
        .await
        .expect("removal");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let page = h.metrics().await;
        if metric(&page, "sotto_sfu_removals_applied_total") == Some(1.0) {
            assert_eq!(metric(&page, "sotto_sfu_participants"), Some(2.0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the SFU never applied the removal: {page}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Anything already on the loopback wire lands within a few milliseconds.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let at_removal = removed.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        removed.load(Ordering::Relaxed),
        at_removal,
        "datagrams reached the removed participant"
    );
    let _ = stop.send(true);
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.expect("task"));
    }
    // The two who stayed heard each other all along (3 s of audio each way).
    for (p, stats) in done.iter().take(2) {
        let other = 1 - p.joined.leaf;
        let audio = stats.tracks.get(&(other, false)).map_or(0, |t| t.frames);
        assert!(
            audio > 120,
            "leaf {} got {audio} audio frames",
            p.joined.leaf
        );
    }
    h.sfu.shutdown().await;
}
