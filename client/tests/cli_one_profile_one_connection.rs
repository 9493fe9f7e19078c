//! One connection per profile: the server keeps one session per device, so a second
//! `sotto` with the same profile must not log in and end the first one's connection. With
//! `sotto listen` running, `sotto rooms` shows what the profile recorded (exit 0) and
//! `sotto room create` says another sotto is connected (exit 1); the listener stays
//! connected and still answers a call.

mod common;

use common::{create_account, listener, sotto};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sotto_with_the_same_profile_leaves_the_first_connected() {
    let common::Setup {
        server,
        addr,
        data: _data,
        a,
        b,
    } = common::setup().await;
    create_account(a.path(), "@alice", &addr, &server.fingerprint);
    create_account(b.path(), "@bob", &addr, &server.fingerprint);
    let mut bob = listener(b.path());
    let bp = b.path().to_owned();
    let (rooms, create) = tokio::task::spawn_blocking(move || {
        (
            sotto(&bp, &["rooms"]).output().expect("runs"),
            sotto(&bp, &["room", "create"]).output().expect("runs"),
        )
    })
    .await
    .expect("join");
    let err = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(rooms.status.code(), Some(0), "{}", err(&rooms));
    assert!(
        err(&rooms).contains("another sotto with this profile is connected"),
        "{}",
        err(&rooms)
    );
    assert_eq!(create.status.code(), Some(1), "{}", err(&create));
    assert!(
        err(&create).contains("another sotto is connected with this profile"),
        "{}",
        err(&create)
    );
    assert!(
        bob.try_wait().expect("status").is_none(),
        "the listener runs"
    );
    // Still connected: it answers.
    let ap = a.path().to_owned();
    let call = tokio::task::spawn_blocking(move || {
        sotto(&ap, &["call", "@bob", "--duration", "1s"])
            .output()
            .expect("call runs")
    })
    .await
    .expect("join");
    assert_eq!(call.status.code(), Some(0), "{}", err(&call));
    bob.kill().expect("stop the listener");
    bob.wait().expect("reaped");
    server.shutdown().await;
}
