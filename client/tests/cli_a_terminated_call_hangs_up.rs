//! `sotto call` stopped by the system (SIGTERM: a service manager, `kill`, `timeout`)
//! hangs up as Ctrl-C does: it prints its report and exits 0, and the other side hears a
//! hang-up rather than a connection that went silent.

mod common;

use std::{
    io::Read,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{create_account, listener, sotto};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hangs_up_and_prints_the_report() {
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
    let ap = a.path().to_owned();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        let mut alice = sotto(&ap, &["call", "@bob", "--duration", "60"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the call starts");
        // The status line is redrawn with \r: read bytes, not lines.
        let err = Arc::new(Mutex::new(Vec::new()));
        let mut stderr = alice.stderr.take().expect("stderr");
        let sink = err.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        });
        let in_call = |e: &Arc<Mutex<Vec<u8>>>| {
            String::from_utf8_lossy(&e.lock().expect("lock")).contains("in call")
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !in_call(&err) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(in_call(&err), "the call came up");
        std::thread::sleep(Duration::from_secs(1));
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &alice.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(s) = alice.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = alice.kill();
                panic!("sotto call did not end after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let _ = reader.join();
        let mut out = String::new();
        if let Some(mut o) = alice.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        let err = String::from_utf8_lossy(&err.lock().expect("lock")).into_owned();
        (status.code(), out, err)
    })
    .await
    .expect("join");
    let _ = bob.kill();
    let _ = bob.wait();
    let all = format!("{out}{err}");
    assert_eq!(code, Some(0), "{all}");
    assert!(all.contains("hanging up"), "{all}");
    assert!(
        all.contains("hung up"),
        "the report says how it ended: {all}"
    );
}
