//! What the `sotto` CLI says when something goes wrong: one line on stderr, one sentence
//! that says what happened and what to do, with no Debug forms (`{`), no type or variant
//! names, and no clause said twice. Also: a server with a real certificate chain is
//! checked against the trusted roots without `--pin`. Everything runs on loopback.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use sotto_signaling::{
    server::{Running, ServerConfig, start},
    tls::CertSource,
};

/// Names that must never reach a person: every `ErrorCode` variant, the variants of the
/// client's error enums, and rustls's certificate errors.
const FORBIDDEN_NAMES: &[&str] = &[
    // sotto_proto::ErrorCode
    "UnsupportedVersion",
    "Malformed",
    "TooLarge",
    "Unauthenticated",
    "BadSignature",
    "HandleTaken",
    "InvalidHandle",
    "NotFound",
    "Busy",
    "Offline",
    "Forbidden",
    "AlreadyAnswered",
    "InvalidState",
    "StaleEpoch",
    "RateLimited",
    "LimitReached",
    "Internal",
    // sotto_proto::HandleError
    "MissingAt",
    "Length",
    "Character",
    // sotto_client::signaling::ClientError
    "BadPin",
    "BadServerName",
    "Connect",
    "WrongCertificate",
    "UntrustedCertificate",
    "NoRootCertificates",
    "Server",
    "Closed",
    "Timeout",
    "Protocol",
    // sotto_client::call::CallError
    "Signaling",
    "Mls",
    "Keys",
    "Transport",
    "Codec",
    "Contact",
    "Device",
    "Setup",
    // sotto_client::profile::ProfileError, transport::TransportError
    "Io",
    "Corrupt",
    "InsecureKeyFile",
    "KeyChanged",
    "Webrtc",
    "BadRemote",
    // rustls
    "ApplicationVerificationFailure",
    "UnknownIssuer",
    "NotValidForName",
    "InvalidCertificate",
    "ConnectionError",
    "TransportError",
];

fn sotto(profile: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sotto"));
    c.arg("--profile").arg(profile).args(args);
    if matches!(args.first(), Some(&"call" | &"listen")) {
        c.args(["--bind", "127.0.0.1"]);
    }
    // As a person runs it: no RUST_LOG, so library log lines go to the profile's log file.
    c.env_remove("RUST_LOG");
    c
}

async fn output(mut c: Command) -> Output {
    tokio::task::spawn_blocking(move || c.output().expect("sotto runs"))
        .await
        .expect("join")
}

/// The one error line of a failed run, checked for the wording rules.
fn error_line(o: &Output) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "it failed: {stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .map(|l| l.trim_start_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .collect();
    let errors: Vec<&&str> = lines.iter().filter(|l| l.starts_with("sotto:")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line: {stderr}");
    for l in &lines {
        assert!(
            l.starts_with("sotto:") || l.starts_with("calling @"),
            "nothing but the error (and progress) on stderr: {stderr}"
        );
    }
    let line = errors[0].to_string();
    eprintln!("{line}");
    check_wording(&line);
    line
}

fn check_wording(line: &str) {
    assert!(!line.contains('{'), "no Debug form: {line}");
    let words: Vec<&str> = line
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    for name in FORBIDDEN_NAMES {
        assert!(
            !words.contains(name),
            "no type or variant name ({name}): {line}"
        );
    }
    let lower: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
    let mut seen = std::collections::HashSet::new();
    for four in lower.windows(4) {
        assert!(
            seen.insert(four.join(" ")),
            "no clause said twice (\"{}\"): {line}",
            four.join(" ")
        );
    }
}

#[test]
fn the_wording_check_catches_what_it_is_meant_to_catch() {
    let caught = |line: &'static str| std::panic::catch_unwind(|| check_wording(line)).is_err();
    assert!(caught(
        "sotto: server refused: LimitReached { what: \"key packages\" }"
    ));
    assert!(caught(
        "sotto: server refused: BadSignature: signature does not verify"
    ));
    assert!(caught(
        "sotto: signature does not verify: signature does not verify"
    ));
    assert!(!caught(
        "sotto: @alice is taken on 127.0.0.1:4433 by someone else: pick another handle"
    ));
}

struct Server {
    running: Running,
    _data: tempfile::TempDir,
}

impl Server {
    async fn start(cert: CertSource, listen: SocketAddr) -> Self {
        let data = tempfile::tempdir().expect("dir");
        let mut cfg = ServerConfig::new(listen, data.path().to_owned());
        cfg.cert = cert;
        Self {
            running: start(cfg).await.expect("server"),
            _data: data,
        }
    }

    fn addr(&self) -> String {
        self.running.addr.to_string()
    }
}

fn create(profile: &Path, handle: &str, server: &str, pin: &str) -> Command {
    sotto(
        profile,
        &[
            "account", "create", handle, "--server", server, "--pin", pin,
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_one_sentence_for_people() {
    let server = Server::start(CertSource::Dev, "127.0.0.1:0".parse().expect("addr")).await;
    let (addr, pin) = (server.addr(), server.running.fingerprint.clone());
    let alice = tempfile::tempdir().expect("dir");
    let o = output(create(alice.path(), "@alice", &addr, &pin)).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // A missing argument is named.
    let o = output(sotto(alice.path(), &["room", "invite"])).await;
    let e = error_line(&o);
    assert!(
        e.contains("<ROOM>") && e.contains("sotto room invite --help"),
        "{e}"
    );

    // A wrong pin: the certificate is not the pinned one.
    let fresh = tempfile::tempdir().expect("dir");
    let o = output(create(fresh.path(), "@carol", &addr, &"ab".repeat(32))).await;
    let e = error_line(&o);
    assert!(e.contains("not the one you pinned"), "{e}");
    assert!(e.contains("intercepting"), "{e}");
    assert_eq!(o.status.code(), Some(1));

    // A handle taken by someone else, claimed from a fresh profile (and spelled with
    // capitals: handles are case-insensitive).
    let o = output(create(fresh.path(), "@Alice", &addr, &pin)).await;
    let e = error_line(&o);
    assert!(e.contains("@alice is taken"), "{e}");
    assert!(e.contains("pick another handle"), "{e}");
    // ...and the failed claim left the fresh profile without an account.
    let o = output(sotto(fresh.path(), &["call", "@alice"])).await;
    let e = error_line(&o);
    assert!(e.contains("no account yet"), "{e}");
    assert!(e.contains("sotto account create"), "{e}");

    // Creating the account again from its own profile is fine.
    let o = output(create(alice.path(), "@alice", &addr, &pin)).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Calling a handle nobody has: exit 5.
    let o = output(sotto(
        alice.path(),
        &[
            "call",
            "@nobody",
            "--audio-in",
            "synth",
            "--audio-out",
            "none",
        ],
    ))
    .await;
    let e = error_line(&o);
    assert!(e.contains("no account @nobody"), "{e}");
    assert!(e.contains("check the spelling"), "{e}");
    assert_eq!(o.status.code(), Some(5));

    // A fingerprint that is not one.
    let o = output(create(fresh.path(), "@carol", &addr, "xyz")).await;
    let e = error_line(&o);
    assert!(
        e.contains("\"xyz\" is not a certificate fingerprint"),
        "{e}"
    );
    assert!(e.contains("64 hex digits"), "{e}");

    // A server nobody answers at (a port just freed on loopback).
    let closed = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .to_string();
    let o = output(create(fresh.path(), "@carol", &closed, &pin)).await;
    let e = error_line(&o);
    assert!(
        e.contains(&format!("cannot reach the signaling server at {closed}")),
        "{e}"
    );
    assert!(e.contains("check the address"), "{e}");

    // A server address without a port.
    let o = output(create(fresh.path(), "@carol", "127.0.0.1", &pin)).await;
    let e = error_line(&o);
    assert!(e.contains("HOST:PORT"), "{e}");

    // A profile that cannot be a directory.
    let file = tempfile::NamedTempFile::new().expect("file");
    let o = output(sotto(file.path(), &["contacts"])).await;
    let e = error_line(&o);
    assert!(e.contains("cannot open the profile"), "{e}");
    assert!(e.contains("--profile"), "{e}");

    // Bad flag values, ours and clap's: one line too, pointing at the help.
    for (args, expect) in [
        (
            vec!["call", "@bob", "--duration", "5x"],
            "\"5x\" is not a duration",
        ),
        (vec!["call", "@bob", "--frame-ms", "15"], "10 or 20 ms"),
        (vec!["call", "@bob", "--bind", "nonsense"], "--bind"),
        (vec!["call", "bob"], "\"bob\" is not a handle"),
        (vec!["call", "@bob", "--no-such-flag"], "--no-such-flag"),
    ] {
        let o = output(sotto(alice.path(), &args)).await;
        let e = error_line(&o);
        assert!(e.contains(expect), "{args:?}: {e}");
        assert_eq!(o.status.code(), Some(1), "{args:?}");
    }
    // An address this machine does not have.
    let o = output(sotto(
        alice.path(),
        &["call", "@bob", "--bind", "192.0.2.1", "--audio-in", "synth"],
    ))
    .await;
    let e = error_line(&o);
    assert!(e.contains("cannot send media from 192.0.2.1"), "{e}");
    server.running.shutdown().await;
}

/// A test CA called `ca_name` and a leaf for `localhost` it signed, as PEM files in `dir`;
/// returns (chain.pem, key.pem, ca.pem).
fn real_chain(dir: &Path, ca_name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    let leaf_key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf");
    let (chain, key, ca_file) = (
        dir.join("chain.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    );
    std::fs::write(&chain, format!("{}{}", leaf.pem(), ca.pem())).expect("write");
    std::fs::write(&key, leaf_key.serialize_pem()).expect("write");
    std::fs::write(&ca_file, ca.pem()).expect("write");
    (chain, key, ca_file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_certificate_is_checked_against_the_trusted_roots_without_a_pin() {
    let dir = tempfile::tempdir().expect("dir");
    let (chain, key, ca) = real_chain(dir.path(), "sotto test CA");
    let other = tempfile::tempdir().expect("dir");
    let (_, _, other_ca) = real_chain(other.path(), "another test CA");
    // Listen where `localhost` resolves first, so the client finds the server by name.
    let local = tokio::net::lookup_host("localhost:0")
        .await
        .expect("localhost resolves")
        .next()
        .expect("an address");
    let server = Server::start(CertSource::Files { chain, key }, local).await;
    let name = format!("localhost:{}", server.running.addr.port());
    let roots = |c: &mut Command, ca: &Path| {
        // What a machine trusts: rustls-native-certs reads SSL_CERT_FILE instead of the
        // system store when it is set (the same override OpenSSL honours).
        c.env("SSL_CERT_FILE", ca).env_remove("SSL_CERT_DIR");
    };

    // Trusted by the client's roots: no pin needed.
    let profile = tempfile::tempdir().expect("dir");
    let mut c = sotto(
        profile.path(),
        &["account", "create", "@dana", "--server", &name],
    );
    roots(&mut c, &ca);
    let o = output(c).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("@dana is yours"));

    // A client that trusts another authority refuses the same server, and says why.
    let profile = tempfile::tempdir().expect("dir");
    let mut c = sotto(
        profile.path(),
        &["account", "create", "@erin", "--server", &name],
    );
    roots(&mut c, &other_ca);
    let e = error_line(&output(c).await);
    assert!(
        e.contains("the certificate of localhost cannot be trusted"),
        "{e}"
    );
    assert!(
        e.contains("not signed by an authority this machine trusts"),
        "{e}"
    );

    // The right authority, but the server reached by a name its certificate lacks.
    let by_ip = format!("{}:{}", local.ip(), server.running.addr.port());
    let by_ip = if local.is_ipv6() {
        format!("[{}]:{}", local.ip(), server.running.addr.port())
    } else {
        by_ip
    };
    let mut c = sotto(
        profile.path(),
        &["account", "create", "@erin", "--server", &by_ip],
    );
    roots(&mut c, &ca);
    let e = error_line(&output(c).await);
    assert!(e.contains("it is for another name"), "{e}");
    server.running.shutdown().await;
}
