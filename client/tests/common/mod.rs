//! What the CLI tests share: running `sotto` as a user would, on loopback only.

#![allow(dead_code)] // each test file uses its own part of this

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
};

/// `sotto --profile <profile> args…`; media on loopback only.
pub fn sotto(profile: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sotto"));
    c.arg("--profile").arg(profile).args(args);
    if matches!(args.first(), Some(&"call" | &"listen")) {
        c.args([
            "--bind",
            "127.0.0.1",
            "--audio-in",
            "synth",
            "--audio-out",
            "none",
        ]);
    }
    c.env("RUST_LOG", "error");
    c
}

/// Starts `sotto listen --auto-answer` and waits until it is logged in and listening.
pub fn listener(profile: &std::path::Path) -> Child {
    let mut child = sotto(profile, &["listen", "--auto-answer"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("listener starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines
            .next()
            .expect("the listener says it is listening")
            .expect("utf-8");
        if line.contains("listening for calls") {
            break;
        }
    }
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

/// Creates `handle`'s account in `profile` on the server at `addr` (pinned).
pub fn create_account(profile: &std::path::Path, handle: &str, addr: &str, pin: &str) {
    let o = sotto(
        profile,
        &["account", "create", handle, "--server", addr, "--pin", pin],
    )
    .output()
    .expect("runs");
    assert!(o.status.success(), "{o:?}");
}

/// A signaling server on loopback with its data in a temporary directory, and two fresh
/// profile directories (`a`, `b`).
pub struct Setup {
    /// The running server.
    pub server: sotto_signaling::server::Running,
    /// Its address, as `--server` takes it.
    pub addr: String,
    /// Its data directory.
    pub data: tempfile::TempDir,
    /// The first profile.
    pub a: tempfile::TempDir,
    /// The second profile.
    pub b: tempfile::TempDir,
}

/// See [`Setup`].
pub async fn setup() -> Setup {
    let data = tempfile::tempdir().expect("dir");
    let server = sotto_signaling::server::start(sotto_signaling::server::ServerConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        data.path().to_owned(),
    ))
    .await
    .expect("server");
    Setup {
        addr: server.addr.to_string(),
        server,
        data,
        a: tempfile::tempdir().expect("a"),
        b: tempfile::tempdir().expect("b"),
    }
}
