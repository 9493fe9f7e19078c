//! Rooms from the CLI, as people use them: `room create --name` with an invitation, the
//! invitation reaching a running `sotto listen`, `sotto rooms` on both sides, an owner's
//! `room remove`, a later `room invite` by name, and the refusals a stranger gets, each in
//! one sentence.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Output, Stdio},
    sync::mpsc,
    time::Duration,
};

use common::{create_account, sotto};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `sotto` to completion and asks for `code`.
fn run(profile: &std::path::Path, args: &[&str], code: i32) -> Output {
    let o = sotto(profile, args).output().expect("sotto runs");
    assert_eq!(
        o.status.code(),
        Some(code),
        "sotto {args:?}: stdout {:?} stderr {:?}",
        stdout(&o),
        stderr(&o)
    );
    o
}

/// The room id in "created room <id> (name)".
fn created_room(o: &Output) -> String {
    let out = stdout(o);
    out.lines()
        .find_map(|l| l.strip_prefix("created room "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no room id in {out:?}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_created_named_invited_listed_and_left_by_removal_from_the_cli() {
    let common::Setup {
        server, addr, a, b, ..
    } = common::setup().await;
    let carol = tempfile::tempdir().expect("dir");
    for (dir, handle) in [
        (a.path(), "@alice"),
        (b.path(), "@bob"),
        (carol.path(), "@carol"),
    ] {
        create_account(dir, handle, &addr, &server.fingerprint);
    }

    // Bob listens; his listener is told of the invitation as it comes.
    let mut bob = sotto(b.path(), &["listen"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("listener starts");
    let (lines_tx, lines) = mpsc::channel();
    let err = bob.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(l) if l.contains(what) => return l,
                Ok(_) => {}
                Err(_) => panic!("the listener never said {what:?}"),
            }
        }
    };
    wait_for("listening for calls");

    let created = run(
        a.path(),
        &["room", "create", "--name", "standup", "@bob"],
        0,
    );
    let room = created_room(&created);
    let out = stdout(&created);
    assert!(out.contains("(standup)"), "{out}");
    assert!(out.contains("invited @bob"), "{out}");
    let told = wait_for("invited you to room");
    assert!(
        told.contains("@alice") && told.contains(&room),
        "the invitation names who and which room: {told}"
    );
    assert!(told.contains(&format!("sotto room join {room}")), "{told}");
    bob.kill().expect("stop the listener");
    bob.wait().expect("reaped");

    // Both see the room: the owner by its name, Bob as invited by Alice (his listener
    // recorded it, so nothing waits on the server).
    let listed = stdout(&run(a.path(), &["rooms"], 0));
    assert!(
        listed.contains(&room) && listed.contains("standup") && listed.contains("yours"),
        "{listed}"
    );
    let listed = stdout(&run(b.path(), &["rooms"], 0));
    assert!(
        listed.contains(&room) && listed.contains("invited by @alice"),
        "{listed}"
    );

    // A stranger may neither invite to the room nor remove from it; the owner may, by
    // the room's name.
    let refused = run(carol.path(), &["room", "invite", &room, "@carol"], 1);
    let said = stderr(&refused);
    assert_eq!(said.lines().count(), 1, "one sentence: {said:?}");
    assert!(!said.contains('{') && !said.contains("Forbidden"), "{said}");
    let refused = run(carol.path(), &["room", "remove", &room, "@bob"], 1);
    assert_eq!(
        stderr(&refused).lines().count(),
        1,
        "{:?}",
        stderr(&refused)
    );

    let removed = run(a.path(), &["room", "remove", "standup", "@bob"], 0);
    assert!(
        stdout(&removed).contains(&format!("@bob removed from room {room}")),
        "{}",
        stdout(&removed)
    );
    // Removed means he may not come back: joining is refused, in words.
    let refused = run(
        b.path(),
        &[
            "room",
            "join",
            &room,
            "--audio-in",
            "synth",
            "--audio-out",
            "none",
        ],
        1,
    );
    // (Before the refusal the status line says it is waiting to be let in.)
    let said = stderr(&refused);
    let last = said.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("sotto: could not join room") && last.contains("not invited"),
        "{said}"
    );
    assert!(last.contains("ask its owner"), "says what to do: {last}");
    // Until the owner invites him again.
    let again = run(a.path(), &["room", "invite", "standup", "@bob"], 0);
    assert!(
        stdout(&again).contains("invited @bob"),
        "{}",
        stdout(&again)
    );
    server.shutdown().await;
}
