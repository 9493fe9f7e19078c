//! Calling keeps working however often people call: 30 consecutive calls, each from a
//! fresh `sotto call` process, to a listener restarted every 4 calls for the first 12 and
//! then left running for 18, more calls than one stock of KeyPackages (16) covers. Every
//! call connects, and the listener's stock of one-use KeyPackages on the server never
//! runs out: restarts replace it, claims that run it low make the listener top it up, and
//! the last-resort package is never needed. Nor do the profiles pile up private keys: a
//! restart deletes those of the packages it replaced that nobody claimed.

mod common;

use std::{process::Child, sync::atomic::Ordering};

use common::{listener, sotto};

const CALLS: usize = 30;
/// A device's stock of one-use KeyPackages.
const KEY_PACKAGE_TARGET: i64 = sotto_client::call::KEY_PACKAGE_TARGET as i64;
/// Calls before which the listener is (re)started.
const RESTART_BEFORE: [usize; 4] = [0, 4, 8, 12];

/// One-use KeyPackages the server holds for `handle`, read from its database.
fn one_use_packages(data: &std::path::Path, handle: &str) -> i64 {
    let db = rusqlite::Connection::open_with_flags(
        data.join("sotto.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("server database");
    db.query_row(
        "SELECT COUNT(*) FROM key_packages WHERE handle = ?1 AND last_resort = 0",
        [handle],
        |r| r.get(0),
    )
    .expect("count")
}

/// KeyPackages whose private keys a profile holds (openmls' table in its `mls.db`).
fn private_key_packages(profile: &std::path::Path) -> i64 {
    // Read-write: the processes are gone, and a WAL database read alone needs its index.
    let db = rusqlite::Connection::open(profile.join("mls.db")).expect("profile's MLS storage");
    db.query_row("SELECT COUNT(*) FROM openmls_key_packages", [], |r| {
        r.get(0)
    })
    .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_calls_from_fresh_processes_all_connect_and_key_packages_never_run_out() {
    let common::Setup {
        server,
        addr,
        data,
        a,
        b,
    } = common::setup().await;
    for (dir, handle) in [(a.path(), "@alice"), (b.path(), "@bob")] {
        let o = sotto(
            dir,
            &[
                "account",
                "create",
                handle,
                "--server",
                &addr,
                "--pin",
                &server.fingerprint,
            ],
        )
        .output()
        .expect("runs");
        assert!(o.status.success(), "{o:?}");
    }

    let mut bob: Option<Child> = None;
    for i in 0..CALLS {
        if RESTART_BEFORE.contains(&i) {
            if let Some(mut old) = bob.take() {
                old.kill().expect("stop the listener");
                old.wait().expect("reaped");
            }
            bob = Some(listener(b.path()));
        }
        let a = a.path().to_owned();
        let o = tokio::task::spawn_blocking(move || {
            sotto(&a, &["call", "@bob", "--duration", "1s"])
                .output()
                .expect("call runs")
        })
        .await
        .expect("join");
        assert_eq!(
            o.status.code(),
            Some(0),
            "call {} of {CALLS} failed: {}",
            i + 1,
            String::from_utf8_lossy(&o.stderr)
        );
        let left = one_use_packages(data.path(), "@bob");
        assert!(
            left > 0,
            "after call {} the listener has no one-use KeyPackage left",
            i + 1
        );
    }
    if let Some(mut old) = bob.take() {
        old.kill().expect("stop the listener");
        old.wait().expect("reaped");
    }
    assert_eq!(
        server.metrics.last_resort_claims.load(Ordering::Relaxed),
        0,
        "the last-resort package is for emergencies, not the steady state"
    );
    assert!(
        one_use_packages(data.path(), "@alice") <= 16,
        "a caller restarted 30 times replaces its KeyPackages instead of piling them up"
    );
    // One stock and a last-resort package; nobody claimed the caller's.
    let kept = private_key_packages(a.path());
    assert_eq!(
        kept,
        KEY_PACKAGE_TARGET + 1,
        "the caller's profile keeps only the packages the server holds"
    );
    // The listener's: what the server still holds of its stock, and the last resort;
    // none of the 30 it used to join.
    let kept = private_key_packages(b.path());
    assert_eq!(
        kept,
        one_use_packages(data.path(), "@bob") + 1,
        "the listener's profile holds {kept} KeyPackages"
    );
    server.shutdown().await;
}
