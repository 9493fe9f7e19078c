//! `sotto-sfu`'s error paths speak to people: one line each, no Debug forms, no type or
//! variant names, no clause said twice, and a non-zero exit.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sotto-sfu"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env("RUST_LOG", "off")
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check(args: &[&str], says: &str) {
    let (ok, err) = run(args);
    assert!(!ok, "{args:?} succeeded");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: one line, got {err:?}");
    let line = lines[0];
    assert!(line.starts_with("sotto-sfu: "), "{line}");
    assert!(
        line.contains(says),
        "{args:?}: {line:?} should say {says:?}"
    );
    assert!(!line.contains('{') && !line.contains("Error"), "{line}");
    let clauses: Vec<&str> = line.split(": ").collect();
    for (i, c) in clauses.iter().enumerate() {
        assert!(
            !clauses[i + 1..].contains(c),
            "repeated clause {c:?} in {line}"
        );
    }
}

#[test]
fn each_mistake_gets_a_sentence() {
    let pin = "a".repeat(64);
    check(&[], "--signaling ADDR");
    check(&["--signaling", "127.0.0.1:4433"], "--pin FINGERPRINT");
    check(
        &["--signaling", "127.0.0.1:4433", "--pin", "abcd"],
        "not a certificate fingerprint",
    );
    check(
        &["--signaling", "127.0.0.1:4433", "--pin", &pin],
        "registration secret",
    );
    check(
        &[
            "--signaling",
            "127.0.0.1:4433",
            "--pin",
            &pin,
            "--secret",
            "s",
            "--listen",
            "0.0.0.0:5000",
        ],
        "--media-addr",
    );
    check(
        &["--config", "/nonexistent/sotto-sfu.toml"],
        "reading /nonexistent/sotto-sfu.toml",
    );
}
