//! The binary's configuration: a TOML file, environment overrides on top, a real
//! certificate chain instead of the development one, and the metrics endpoint.

use std::{
    io::{BufRead, BufReader, Read, Write},
    process::{Command, Stdio},
};

use sotto_client::signaling::SignalingClient;

fn run(args: &[&str], envs: &[(&str, &str)]) -> (std::process::Child, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sotto-signaling"))
        .args(args)
        .envs(envs.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut out = Vec::new();
    while out.len() < 3 {
        out.push(lines.next().expect("a line").expect("utf-8"));
    }
    (child, out)
}

fn field<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in {lines:?}"))
}

#[tokio::test]
async fn config_file_env_override_real_certificate_and_metrics() {
    let dir = tempfile::tempdir().expect("dir");
    // A real (CA-issued style) chain: a leaf signed by our own test CA, as PEM files.
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    let leaf_key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["signal.example".to_owned()])
        .expect("params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf");

    let chain = dir.path().join("chain.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&chain, format!("{}{}", leaf.pem(), ca.pem())).expect("write");
    std::fs::write(&key, leaf_key.serialize_pem()).expect("write");

    let file_data = dir.path().join("from-file");
    let env_data = dir.path().join("from-env");
    let config = dir.path().join("signaling.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata = {:?}\nmetrics = \"127.0.0.1:0\"\ncert = {:?}\nkey = {:?}\n",
            file_data, chain, key
        ),
    )
    .expect("write");
    let config_arg = config.to_str().expect("utf-8").to_owned();
    let env_data_s = env_data.to_str().expect("utf-8").to_owned();
    let (mut child, lines) = run(&["--config", &config_arg], &[("SOTTO_DATA", &env_data_s)]);

    // The environment beat the file for the data directory.
    assert!(env_data.join("sotto.db").exists());
    assert!(!file_data.exists());
    // The fingerprint is the real leaf's, and a client pinning it connects.
    let fp = field(&lines, "fingerprint ");
    assert_eq!(fp, sotto_signaling::tls::fingerprint(leaf.der()));
    let addr = field(&lines, "listening ").parse().expect("addr");
    let client = SignalingClient::connect(addr, &fp.parse().expect("pin"))
        .await
        .expect("connects");

    // The metrics endpoint serves the Prometheus text format.
    let metrics = field(&lines, "metrics http://")
        .trim_end_matches("/metrics")
        .to_owned();
    let mut tcp = std::net::TcpStream::connect(&metrics).expect("metrics port");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut body = String::new();
    tcp.read_to_string(&mut body).expect("read");
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains("# TYPE sotto_sessions_open gauge"));
    assert!(
        body.contains("sotto_sessions_open 1"),
        "one session open:\n{body}"
    );
    assert!(body.contains("sotto_calls_ended_total{reason=\"timeout\"} 0"));
    assert!(body.contains("sotto_errors_total{kind=\"stale_epoch\"} 0"));

    client.close();
    // SIGTERM: a graceful stop with exit status 0.
    let pid = child.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let status = child.wait().expect("exits");
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
}
