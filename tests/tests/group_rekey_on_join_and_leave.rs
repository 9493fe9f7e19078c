//! Keys turn over on every join and every leave, and the call goes on through it. Three
//! people talk; a fourth joins, then one of the first three leaves. Each change is a new
//! epoch with a new verification code that every member present agrees on, the two who
//! stay throughout lose (almost) none of each other's frames across both changes, and the
//! newcomer hears everyone from shortly after it is let in.

use std::time::Duration;

use sotto_client::{room::RoomPhase, session::LeftReason};
use sotto_tests::{
    h,
    room::{heard, join, latest_when, leave, person, played_share},
    sfu::start_sfu,
};

fn hz(i: usize) -> f64 {
    320.0 + 130.0 * i as f64
}

fn in_call_with(n: usize) -> impl Fn(&sotto_client::room::RoomLine) -> bool {
    move |l| l.phase == RoomPhase::InCall && l.members.len() == n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_on_join_and_leave_without_losing_the_call() {
    let net = start_sfu(1).await;
    let mut owner = person(&net, "@ana").await;
    let (b, c, d) = (
        person(&net, "@ben").await,
        person(&net, "@cyd").await,
        person(&net, "@dee").await,
    );
    let room = owner.create_room().await.expect("room");
    owner
        .invite_to_room(room, vec![h("@ben"), h("@cyd"), h("@dee")])
        .await
        .expect("invited");
    let mut ana = join(owner, room, hz(0));
    let mut ben = join(b, room, hz(1));
    let mut cy = join(c, room, hz(2));
    let before = latest_when(
        &mut [&mut ana, &mut ben, &mut cy],
        Duration::from_secs(30),
        in_call_with(3),
    )
    .await
    .expect("three in the call");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let start = latest_when(&mut [&mut ana, &mut cy], Duration::from_secs(3), |_| true)
        .await
        .expect("lines");

    // A fourth joins: a new epoch for everyone.
    let mut dee = join(d, room, hz(3));
    let four = latest_when(
        &mut [&mut ana, &mut ben, &mut cy, &mut dee],
        Duration::from_secs(30),
        in_call_with(4),
    )
    .await
    .expect("four in the call");
    assert!(four[0].epoch > before[0].epoch, "the join turned the keys");
    assert_ne!(four[0].code, before[0].code, "a new code for the new epoch");
    assert!(four.windows(2).all(|w| w[0].code == w[1].code), "{four:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let dee_start = latest_when(&mut [&mut ana, &mut cy], Duration::from_secs(3), |_| true)
        .await
        .expect("lines");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // One of the first three leaves: the keys turn again.
    let ben_report = leave(ben).await;
    assert_eq!(ben_report.ended, Some(LeftReason::Left));
    let three = latest_when(
        &mut [&mut ana, &mut cy, &mut dee],
        Duration::from_secs(30),
        in_call_with(3),
    )
    .await
    .expect("three again");
    assert!(three[0].epoch > four[0].epoch, "the leave turned the keys");
    assert!(
        three.windows(2).all(|w| w[0].code == w[1].code),
        "{three:?}"
    );
    let ben_codes: Vec<&String> = ben_report.codes.iter().map(|c| &c.1).collect();
    assert!(
        !ben_codes.contains(&&three[0].code),
        "the leaver never had the epoch after its leave"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let end = latest_when(
        &mut [&mut ana, &mut cy, &mut dee],
        Duration::from_secs(3),
        |_| true,
    )
    .await
    .expect("lines");

    let (ana_r, cy_r, dee_r) = (leave(ana).await, leave(cy).await, leave(dee).await);
    // Ana and cyd were there throughout: across both changes each played nearly every frame
    // of the other.
    let mut lost = Vec::new();
    for (r, (si, sender)) in [(&ana_r, (1, "@cyd")), (&cy_r, (0, "@ana"))] {
        let s = heard(r, sender).expect("heard");
        let ids = start[si].last_frame_id.expect("sent") + 1..=end[si].last_frame_id.expect("sent");
        let share = played_share(s, ids.clone());
        lost.push(((1.0 - share) * ids.clone().count() as f64).round());
        assert!(
            share >= 0.98,
            "{sender}'s frames {ids:?} played {:.1} % across a join and a leave",
            share * 100.0
        );
    }
    // The newcomer hears both from shortly after it was let in.
    for (si, sender) in [(0, "@ana"), (1, "@cyd")] {
        let s = heard(&dee_r, sender).expect("dee heard");
        let ids =
            dee_start[si].last_frame_id.expect("sent") + 1..=end[si].last_frame_id.expect("sent");
        let share = played_share(s, ids.clone());
        assert!(
            share >= 0.95,
            "dee played {:.1} % of {sender}",
            share * 100.0
        );
    }
    eprintln!(
        "epochs: {} → {} (join) → {} (leave); frames lost by ana and cyd across both: {lost:?}",
        before[0].epoch, four[0].epoch, three[0].epoch
    );
}
