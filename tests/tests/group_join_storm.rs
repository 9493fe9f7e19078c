//! A storm of joins: nine people arrive within a second at a room where one is waiting.
//! They are let in by a few commits (one per batch, not one each), nobody is left out,
//! and every member soon hears every other. Prints how long each joiner took from its
//! join to a decrypted frame from everyone.

use std::time::Duration;

use sotto_client::{
    room::{RoomPhase, RoomReport},
    session::LeftReason,
};
use sotto_tests::{
    h,
    room::{heard, join, latest_when, leave, person, played_share},
    sfu::start_sfu,
};

const PEOPLE: usize = 10;

fn hz(i: usize) -> f64 {
    250.0 + 60.0 * i as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nine_joining_at_once_are_let_in_by_a_few_commits() {
    let net = start_sfu(1).await;
    let mut eps = Vec::new();
    for i in 0..PEOPLE {
        eps.push(person(&net, &format!("@storm{i}")).await);
    }
    let room = eps[0].create_room().await.expect("room");
    let invited = (1..PEOPLE).map(|i| h(&format!("@storm{i}"))).collect();
    eps[0].invite_to_room(room, invited).await.expect("invited");
    let mut eps = eps.into_iter();
    let mut people = vec![join(eps.next().expect("owner"), room, hz(0))];
    latest_when(&mut [&mut people[0]], Duration::from_secs(10), |l| {
        l.phase == RoomPhase::InCall
    })
    .await
    .expect("the first is in");
    // The storm: one every 100 ms.
    for (i, ep) in eps.enumerate() {
        people.push(join(ep, room, hz(i + 1)));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut all: Vec<&mut _> = people.iter_mut().collect();
    latest_when(&mut all, Duration::from_secs(30), |l| {
        l.phase == RoomPhase::InCall && l.members.len() == PEOPLE
    })
    .await
    .expect("all ten in the call with each other within 30 s");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let start = latest_when(&mut all, Duration::from_secs(3), |_| true)
        .await
        .expect("lines");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let end = latest_when(&mut all, Duration::from_secs(3), |_| true)
        .await
        .expect("lines");

    let mut reports: Vec<RoomReport> = Vec::new();
    for p in people {
        reports.push(leave(p).await);
    }
    for (i, r) in reports.iter().enumerate() {
        assert_eq!(r.ended, Some(LeftReason::Left), "storm{i}");
    }
    let commits: u64 = reports.iter().map(|r| r.commits).sum();
    let epoch = start[0].epoch;
    assert!(
        commits <= 5 && epoch <= 5,
        "nine joins took {commits} commits (epoch {epoch})"
    );
    for (ri, r) in reports.iter().enumerate() {
        for si in (0..PEOPLE).filter(|s| *s != ri) {
            let name = format!("@storm{si}");
            let s =
                heard(r, &name).unwrap_or_else(|| panic!("storm{ri} heard nothing from {name}"));
            let ids =
                start[si].last_frame_id.expect("sent") + 1..=end[si].last_frame_id.expect("sent");
            let share = played_share(s, ids.clone());
            assert!(
                share >= 0.9,
                "storm{ri} played {:.1} % of {name}'s frames {ids:?}",
                share * 100.0
            );
        }
    }
    // Per joiner: from its join to a decrypted frame from every other member.
    let mut everyone: Vec<f64> = reports[1..]
        .iter()
        .map(|r| {
            r.senders
                .values()
                .filter_map(|s| s.first_audio)
                .max()
                .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
        })
        .collect();
    everyone.sort_by(f64::total_cmp);
    eprintln!(
        "join storm of {}: {commits} commits, epoch {epoch}; join → audio from everyone: p50 {:.0} ms, max {:.0} ms",
        PEOPLE - 1,
        everyone[everyone.len() / 2],
        everyone[everyone.len() - 1],
    );
}
