//! Tests, the demo and the bench send media only on loopback: by default a call gathers
//! candidates on every interface that is up (as it must between machines), so each of
//! them has to pin loopback explicitly, or it would send to this machine's other
//! addresses. This reads their sources and names every place that does not.
//!
//! The rule, per file: no `TransportConfig::default()`; `CallOptions::default()` only as
//! the base of a literal that sets `transport` (say `..sotto_tests::loopback()` instead);
//! and a file that runs the `sotto` CLI's `call` or `listen` passes `--bind`.
//! `two_hosts.rs` is exempt: it runs in network namespaces of its own, where gathering on
//! every interface is the point.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// What is wrong with one file's source, if anything.
fn problems(name: &str, src: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, line) in src.lines().enumerate() {
        if line.contains("TransportConfig::default()") {
            found.push(format!(
                "{name}:{}: TransportConfig::default() gathers on every interface; use TransportConfig::loopback()",
                i + 1
            ));
        }
    }
    let mut at = 0;
    while let Some(pos) = src[at..].find("CallOptions::default()") {
        let pos = at + pos;
        let line = src[..pos].lines().count().max(1);
        let spread = src[..pos].trim_end().ends_with("..");
        let literal = src[..pos].rfind("CallOptions {").map(|s| &src[s..pos]);
        let pinned = spread && literal.is_some_and(|l| l.contains("transport:"));
        if !pinned {
            found.push(format!(
                "{name}:{line}: CallOptions::default() gathers on every interface; start from sotto_tests::loopback() or set transport: TransportConfig::loopback()"
            ));
        }
        at = pos + 1;
    }
    let runs_cli = src.contains("CARGO_BIN_EXE_sotto\"") || src.contains("bins().sotto");
    let calls = src.contains("\"call\"") || src.contains("\"listen\"");
    if runs_cli && calls && !src.contains("\"--bind\"") {
        found.push(format!(
            "{name}: runs `sotto call`/`sotto listen` without --bind 127.0.0.1"
        ));
    }
    found
}

#[test]
fn the_rule_catches_what_it_is_meant_to_catch() {
    assert_eq!(problems("x", "let o = CallOptions::default();").len(), 1);
    assert_eq!(
        problems("x", "CallOptions { video: None, ..CallOptions::default() }").len(),
        1
    );
    assert_eq!(
        problems("x", "let t = TransportConfig::default();").len(),
        1
    );
    assert_eq!(
        problems("x", "env!(\"CARGO_BIN_EXE_sotto\"); [\"call\", \"@bob\"]").len(),
        1
    );
    assert!(
        problems(
            "x",
            "CallOptions { transport: TransportConfig::loopback(), ..CallOptions::default() }"
        )
        .is_empty()
    );
    assert!(problems("x", "CallOptions { video: None, ..loopback() }").is_empty());
}

#[test]
fn tests_demo_and_bench_pin_loopback() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned();
    let mut files = Vec::new();
    for dir in [
        "tests/tests",
        "tests/src",
        "bench/src",
        "client/tests",
        "signaling/tests",
        "sfu/tests",
        "sfu/src",
    ] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(
        files.iter().any(|f| f.ends_with("one_to_one_call.rs")),
        "the test sources are where this test looks: {}",
        root.display()
    );
    let mut found = Vec::new();
    for f in &files {
        let name = f.strip_prefix(&root).unwrap_or(f).display().to_string();
        // Those run `sotto` only inside network namespaces they made themselves (the
        // machine's own addresses are not there), and this file names what it looks for.
        let in_own_namespaces = ["two_hosts.rs", "relayed_one_to_one.rs", "netns.rs"];
        if in_own_namespaces.iter().any(|n| name.ends_with(n)) || name.ends_with("loopback_only.rs")
        {
            continue;
        }
        let src = std::fs::read_to_string(f).expect("readable source");
        found.extend(problems(&name, &src));
    }
    assert!(
        found.is_empty(),
        "these would send to this machine's other addresses:\n{}",
        found.join("\n")
    );
}
