//! A storm of joins: nineteen people arrive within a second at a room where one is
//! waiting. They are let in by a few commits (one per batch, not one each), nobody is left
//! out (no fork: everyone ends in one epoch with all twenty), no frame fails to decrypt
//! once they are in, and within 3 s of the last join every member has decrypted audio from
//! every other. Prints how long each joiner took from its join to a decrypted frame from
//! everyone.

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

/// In the room at the end: twenty, or `SOTTO_STORM_PEOPLE` (2 to 50) to measure another
/// size (the 3 s bound holds for twenty in a debug build).
fn room_size() -> usize {
    std::env::var("SOTTO_STORM_PEOPLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .clamp(2, 50)
}
/// Between two joins of the storm: nineteen within a second.
const APART: Duration = Duration::from_millis(50);

fn hz(i: usize) -> f64 {
    250.0 + 60.0 * i as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nineteen_joining_within_a_second_are_let_in_by_a_few_commits() {
    let size = room_size();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let net = start_sfu(1).await;
    let mut eps = Vec::new();
    for i in 0..size {
        eps.push(person(&net, &format!("@storm{i}")).await);
    }
    let room = eps[0].create_room().await.expect("room");
    let invited = (1..size).map(|i| h(&format!("@storm{i}"))).collect();
    eps[0].invite_to_room(room, invited).await.expect("invited");
    let mut eps = eps.into_iter();
    let owner_joined = tokio::time::Instant::now();
    let mut people = vec![join(eps.next().expect("owner"), room, hz(0))];
    latest_when(&mut [&mut people[0]], Duration::from_secs(10), |l| {
        l.phase == RoomPhase::InCall
    })
    .await
    .expect("the first is in");
    let mut joined = vec![owner_joined];
    for (i, ep) in eps.enumerate() {
        joined.push(tokio::time::Instant::now());
        people.push(join(ep, room, hz(i + 1)));
        tokio::time::sleep(APART).await;
    }
    let last_join = joined[size - 1];
    let mut all: Vec<&mut _> = people.iter_mut().collect();
    latest_when(&mut all, Duration::from_secs(30), |l| {
        l.phase == RoomPhase::InCall && l.members.len() == size
    })
    .await
    .expect("all twenty in the call with each other within 30 s");
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
    // No fork: one epoch and one verification code for all twenty.
    let epochs: Vec<(u64, &str)> = start.iter().map(|l| (l.epoch, l.code.as_str())).collect();
    assert!(
        epochs.iter().all(|e| *e == epochs[0]),
        "everyone in one epoch with one code: {epochs:?}"
    );
    // Every accepted commit, ours or an external one (a rejoin), moves the group one
    // epoch on from the owner's epoch 0; so the epoch all share before anyone leaves
    // counts the commits that let the storm in. (The reports' own counts also hold the
    // removals committed while the others leave at the end.)
    let epoch = start[0].epoch;
    assert!(
        epoch <= 5,
        "{} joins took {epoch} commits: {:?}",
        size - 1,
        reports
            .iter()
            .map(|r| (r.commits, r.rejoins))
            .collect::<Vec<_>>()
    );
    // Keys: once everyone is in, no frame from anyone fails to decrypt anywhere.
    for (i, (a, b)) in start.iter().zip(&end).enumerate() {
        assert_eq!(
            b.rejected - a.rejected,
            0,
            "storm{i} could not decrypt frames after the storm"
        );
    }
    // Twenty full clients (Opus in and out, SFrame, str0m, debug build) and the servers
    // share this test's two cores, so how much plays is what the machine manages: the
    // lowest pair played 75-100 % on a quiet machine, 14-33 % later the same day on the
    // same code (this VM's share of the host varies), 17-34 % with a busy loop beside it, always with nothing rejected (the packets came too late), and
    // 98.5-100 % in release even beside the busy loop (NOTES). This test is about
    // admission and keys; delivery quality is group_call.rs's (≥ 95 % with five). Here
    // every member must still be playing every other's frames after the storm: a member
    // left out, or a sender nobody can decrypt, plays none (and the decrypt failures
    // above are zero).
    let mut lowest = (1.0f64, String::new());
    for (ri, r) in reports.iter().enumerate() {
        for si in (0..size).filter(|s| *s != ri) {
            let name = format!("@storm{si}");
            let s =
                heard(r, &name).unwrap_or_else(|| panic!("storm{ri} heard nothing from {name}"));
            let ids =
                start[si].last_frame_id.expect("sent") + 1..=end[si].last_frame_id.expect("sent");
            let share = played_share(s, ids.clone());
            if share < lowest.0 {
                lowest = (
                    share,
                    format!(
                        "storm{ri} played {:.1} % of {name}'s frames {ids:?} {:?}",
                        share * 100.0,
                        s.stats
                    ),
                );
            }
        }
    }
    eprintln!("lowest share played: {}", lowest.1);
    assert!(lowest.0 > 0.0, "{}", lowest.1);
    // Per member: when it had decrypted a frame from every other member, against the
    // last join; and, per joiner, from its own join.
    let mut after_last = Vec::new();
    let mut from_own = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        let firsts: Vec<Duration> = r.senders.values().filter_map(|s| s.first_audio).collect();
        assert_eq!(firsts.len(), size - 1, "storm{i} heard from everyone");
        let all = *firsts.iter().max().expect("senders");
        let at = joined[i] + all;
        after_last.push(at.saturating_duration_since(last_join).as_secs_f64() * 1e3);
        if i > 0 {
            from_own.push(all.as_secs_f64() * 1e3);
        }
    }
    after_last.sort_by(f64::total_cmp);
    from_own.sort_by(f64::total_cmp);
    eprintln!(
        "join storm of {}: {epoch} commits; join → audio from everyone: p50 {:.0} ms, max {:.0} ms; everyone heard everyone {:.0} ms after the last join",
        size - 1,
        from_own[from_own.len() / 2],
        from_own[from_own.len() - 1],
        after_last[after_last.len() - 1],
    );
    assert!(
        after_last[after_last.len() - 1] <= 3000.0,
        "everyone had decrypted everyone {:.0} ms after the last join (at most 3 s)",
        after_last[after_last.len() - 1]
    );
}
