//! Whoever waited alone in a room is seen by those who arrive later. While alone, the
//! first publisher's upper simulcast layers are paused (nobody watches them); the
//! latecomers' slots must start on the layer that still arrives and then climb, so each
//! decodes at least 95 % of the first one's video frames once everyone is in.

use std::time::Duration;

use sotto_client::room::RoomPhase;
use sotto_tests::{
    h,
    room::{heard, join_with, latest_when, leave, person, small_simulcast, video_share},
    sfu::start_sfu,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latecomers_see_the_one_who_waited_alone() {
    let net = start_sfu(1).await;
    let mut first = person(&net, "@early").await;
    let (b, c) = (person(&net, "@late1").await, person(&net, "@late2").await);
    let room = first.create_room().await.expect("room");
    first
        .invite_to_room(room, vec![h("@late1"), h("@late2")])
        .await
        .expect("invited");
    let mut early = join_with(first, room, 300.0, Some(small_simulcast()));
    latest_when(&mut [&mut early], Duration::from_secs(10), |l| {
        l.phase == RoomPhase::InCall
    })
    .await
    .expect("the first is in");
    // Alone long enough for the SFU to pause what nobody watches.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut late1 = join_with(b, room, 450.0, Some(small_simulcast()));
    let mut late2 = join_with(c, room, 600.0, Some(small_simulcast()));
    let mut all = [&mut early, &mut late1, &mut late2];
    latest_when(&mut all, Duration::from_secs(20), |l| {
        l.phase == RoomPhase::InCall && l.members.len() == 3
    })
    .await
    .expect("three in the call");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start = latest_when(&mut all, Duration::from_secs(3), |_| true)
        .await
        .expect("lines");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let end = latest_when(&mut all, Duration::from_secs(3), |_| true)
        .await
        .expect("lines");
    let ids = start[0].last_video_id.expect("video") + 1..=end[0].last_video_id.expect("video");
    let reports = [leave(early).await, leave(late1).await, leave(late2).await];
    for (i, r) in reports.iter().enumerate().skip(1) {
        let s = heard(r, "@early").expect("heard the first");
        let (share, in_order) = video_share(s, ids.clone());
        assert!(
            share >= 0.95 && in_order,
            "latecomer {i} decoded {:.1} % of the first one's video frames {ids:?} (in order: {in_order}; {:?})",
            share * 100.0,
            s.video
        );
    }
}
