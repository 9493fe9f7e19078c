//! One slow member never stalls the room. The member first in line to commit (it started
//! the room's group, so it holds leaf 0) is a real `sotto` process, and it is frozen
//! (SIGSTOP) while someone new joins: the next member in line lets the newcomer in after
//! the frozen one's turn, and the others keep hearing each other throughout. Thawed
//! (SIGCONT), the slow member catches up with the commits it missed, ends up on the
//! room's current verification code, and leaves cleanly.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use sotto_client::room::RoomPhase;
use sotto_tests::{
    bins::bins,
    h,
    room::{heard, join, latest_when, leave, person, played_share},
    sfu::start_sfu,
};

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_first_in_line_does_not_keep_a_newcomer_out() {
    let net = start_sfu(1).await;
    let profile = tempfile::tempdir().expect("profile dir");
    let server = net.server.running.addr.to_string();
    let pin = net.server.running.fingerprint.clone();
    let sotto = |args: &[&str]| {
        let mut c = Command::new(&bins().sotto);
        c.arg("--profile")
            .arg(profile.path())
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    };
    let out = sotto(&[
        "account", "create", "@slow", "--server", &server, "--pin", &pin,
    ])
    .output()
    .expect("sotto runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut ana = person(&net, "@ana").await;
    let (ben, dee) = (person(&net, "@ben").await, person(&net, "@dee").await);
    let room = ana.create_room().await.expect("room");
    ana.invite_to_room(room, vec![h("@slow"), h("@ben"), h("@dee")])
        .await
        .expect("invited");

    // @slow arrives first and starts the group: leaf 0, first in line.
    let report = profile.path().join("slow.json");
    let room_arg = room.to_string();
    let report_arg = report.to_string_lossy().into_owned();
    let slow = sotto(&[
        "room",
        "join",
        &room_arg,
        "--audio-in",
        "synth:500",
        "--audio-out",
        "none",
        "--report-json",
        &report_arg,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("sotto starts");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut ana = join(ana, room, 300.0);
    let mut ben = join(ben, room, 420.0);
    latest_when(&mut [&mut ana, &mut ben], Duration::from_secs(20), |l| {
        l.phase == RoomPhase::InCall && l.members.len() == 3
    })
    .await
    .expect("@slow let ana and ben in");

    // Frozen: it answers nothing, commits nothing, and its connection stays up.
    signal(slow.id(), "-STOP");
    let frozen_at = tokio::time::Instant::now();
    let mut dee = join(dee, room, 640.0);
    let four = latest_when(
        &mut [&mut ana, &mut ben, &mut dee],
        Duration::from_secs(15),
        |l| l.phase == RoomPhase::InCall && l.members.len() == 4,
    )
    .await
    .expect("dee is let in although the first in line is frozen");
    let waited = frozen_at.elapsed();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let start = latest_when(
        &mut [&mut ana, &mut ben, &mut dee],
        Duration::from_secs(3),
        |_| true,
    )
    .await
    .expect("lines");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end = latest_when(
        &mut [&mut ana, &mut ben, &mut dee],
        Duration::from_secs(3),
        |_| true,
    )
    .await
    .expect("lines");

    // Thawed: it catches up and shares the room's code again.
    signal(slow.id(), "-CONT");
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(slow.id(), "-INT");
    let out = tokio::task::spawn_blocking(move || slow.wait_with_output())
        .await
        .expect("join")
        .expect("sotto ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "@slow: {stderr}");
    let slow_report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");

    let names = ["@ana", "@ben", "@dee"];
    let reports = [leave(ana).await, leave(ben).await, leave(dee).await];
    for (ri, r) in reports.iter().enumerate() {
        for si in (0..3).filter(|s| *s != ri) {
            let s = heard(r, names[si]).expect("heard");
            let ids =
                start[si].last_frame_id.expect("sent") + 1..=end[si].last_frame_id.expect("sent");
            let share = played_share(s, ids.clone());
            assert!(
                share >= 0.95,
                "{} played {:.1} % of {}'s frames {ids:?}",
                names[ri],
                share * 100.0,
                names[si]
            );
        }
    }
    // The epoch in which dee had been let in (the others moved on after @slow left).
    let last_code = &end[0].code;
    let slow_codes: Vec<&str> = slow_report["codes"]
        .as_array()
        .expect("codes")
        .iter()
        .filter_map(|c| c["code"].as_str())
        .collect();
    assert!(
        slow_codes.contains(&last_code.as_str()),
        "@slow caught up with the room's epoch {}: it saw {slow_codes:?}",
        four[0].epoch
    );
    eprintln!(
        "a newcomer waited {:.1} s with the first in line frozen (its turn is 2 s)",
        waited.as_secs_f64()
    );
}
