//! The `sotto` CLI places and answers a real call: account creation, `listen
//! --auto-answer`, `call --duration`, exit codes, contacts pinned on first use.

mod common;

use std::{
    process::{Command, Output, Stdio},
    time::Duration,
};

/// `sotto --profile <profile> args…`; calls and listeners send media on loopback only
/// (`--bind 127.0.0.1`), never to this machine's other addresses.
fn sotto(profile: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sotto"));
    c.arg("--profile").arg(profile).args(args);
    if matches!(args.first(), Some(&"call" | &"listen")) {
        c.args(["--bind", "127.0.0.1"]);
    }
    c.env("RUST_LOG", "error");
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_call_between_two_profiles() {
    let common::Setup {
        server,
        addr,
        data: _data,
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
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("is yours"), "{}", text(&o));
    }

    // No sound card or camera here: synthetic capture, playout nowhere.
    let bob = sotto(
        b.path(),
        &[
            "listen",
            "--auto-answer",
            "--once",
            "--audio-in",
            "synth:660",
            "--audio-out",
            "none",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("listen");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let alice = tokio::task::spawn_blocking({
        let a = a.path().to_owned();
        move || {
            sotto(
                &a,
                &[
                    "call",
                    "@bob",
                    "--duration",
                    "2s",
                    "--audio-in",
                    "synth",
                    "--audio-out",
                    "none",
                ],
            )
            .output()
            .expect("call")
        }
    })
    .await
    .expect("join");
    let bob = tokio::task::spawn_blocking(move || bob.wait_with_output().expect("bob exits"))
        .await
        .expect("join");
    assert_eq!(alice.status.code(), Some(0), "{}", text(&alice));
    assert_eq!(bob.status.code(), Some(0), "{}", text(&bob));
    for o in [&alice, &bob] {
        let t = text(o);
        assert!(t.contains("call ended: hung up"), "{t}");
        assert!(t.contains("verification code"), "{t}");
        assert!(t.contains("● in call"), "a live status line was shown: {t}");
        assert!(t.contains("safety number"), "{t}");
    }

    // Contacts were pinned on first use.
    let o = sotto(a.path(), &["contacts"]).output().expect("contacts");
    assert!(
        text(&o).contains("@bob") && text(&o).contains("pinned on first use"),
        "{}",
        text(&o)
    );

    // Calling nobody: exit code 5 with a plain message.
    let o = tokio::task::spawn_blocking({
        let a = a.path().to_owned();
        move || sotto(&a, &["call", "@nobody"]).output().expect("call")
    })
    .await
    .expect("join");
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(text(&o).contains("no account @nobody"), "{}", text(&o));

    // A real device that does not exist: a clear message naming the ones that do (exit 8),
    // before anyone is called.
    let listed = sotto(a.path(), &["devices"]).output().expect("devices");
    assert_eq!(listed.status.code(), Some(0), "{}", text(&listed));
    let listing = text(&listed);
    for section in [
        "microphones (--audio-in):",
        "speakers (--audio-out):",
        "cameras (--video-in):",
    ] {
        assert!(listing.contains(section), "{listing}");
    }
    let microphones: Vec<&str> = listing
        .lines()
        .skip_while(|l| !l.starts_with("microphones"))
        .skip(1)
        .take_while(|l| l.starts_with("  ") && !l.contains("(synthetic)"))
        .filter(|l| !l.contains("(none found)"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let o = tokio::task::spawn_blocking({
        let a = a.path().to_owned();
        move || {
            sotto(
                &a,
                &["call", "@bob", "--audio-in", "hw:7", "--audio-out", "none"],
            )
            .output()
            .expect("call")
        }
    })
    .await
    .expect("join");
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("microphone \"hw:7\" is not available"), "{t}");
    for m in &microphones {
        assert!(t.contains(m), "the error names {m}: {t}");
    }
    assert!(!t.contains("panicked"), "{t}");
    // A listener with no camera says so at start, not when a call comes.
    let o = sotto(
        b.path(),
        &[
            "listen",
            "--video",
            "--video-in",
            "/dev/video99",
            "--audio-in",
            "synth",
            "--audio-out",
            "none",
        ],
    )
    .output()
    .expect("listen");
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    assert!(
        text(&o).contains("camera \"/dev/video99\" is not available"),
        "{}",
        text(&o)
    );
    server.shutdown().await;
}
