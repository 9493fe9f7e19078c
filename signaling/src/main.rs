//! `sotto-signaling`: the signaling service binary.
//!
//! Settings come from flags, then `SOTTO_*` environment variables, then the config file
//! (`--config`, TOML with the same names), then defaults. On start it prints the address
//! and the certificate fingerprint clients pin; SIGTERM or Ctrl-C shuts it down gracefully.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Parser;
use serde::Deserialize;
use sotto_signaling::{
    server::{ServerConfig, start},
    tls::CertSource,
};

#[derive(Parser, Debug)]
#[command(
    name = "sotto-signaling",
    version,
    about = "The sotto signaling service (QUIC, ALPN sotto/1)"
)]
struct Cli {
    /// QUIC listen address.
    #[arg(long, env = "SOTTO_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data directory (database, development certificate, token key).
    #[arg(long, env = "SOTTO_DATA")]
    data: Option<PathBuf>,
    /// TOML config file with the same settings.
    #[arg(long, env = "SOTTO_CONFIG")]
    config: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (`GET /metrics`).
    #[arg(long, env = "SOTTO_METRICS")]
    metrics: Option<SocketAddr>,
    /// PEM certificate chain (with --key) instead of the development certificate.
    #[arg(long, env = "SOTTO_CERT", requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key for --cert.
    #[arg(long, env = "SOTTO_KEY", requires = "cert")]
    key: Option<PathBuf>,
    /// Seconds a call rings before it times out.
    #[arg(long, env = "SOTTO_RING_TIMEOUT_SECS")]
    ring_timeout_secs: Option<u64>,
    /// Seconds without traffic before a connection is dropped.
    #[arg(long, env = "SOTTO_IDLE_TIMEOUT_SECS")]
    idle_timeout_secs: Option<u64>,
    /// Shared secret SFU nodes register with (none: SFUs are refused).
    #[arg(long, env = "SOTTO_SFU_SECRET", hide_env_values = true)]
    sfu_secret: Option<String>,
    /// Most sessions at once.
    #[arg(long, env = "SOTTO_MAX_SESSIONS")]
    max_sessions: Option<usize>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data: Option<PathBuf>,
    metrics: Option<SocketAddr>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ring_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    sfu_secret: Option<String>,
    max_sessions: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let file: FileConfig = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let listen = cli
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 4433)));
    let data = cli
        .data
        .or(file.data)
        .unwrap_or_else(|| PathBuf::from("sotto-signaling-data"));
    let mut cfg = ServerConfig::new(listen, data);
    cfg.metrics_listen = cli.metrics.or(file.metrics);
    if let (Some(chain), Some(key)) = (cli.cert.or(file.cert), cli.key.or(file.key)) {
        cfg.cert = CertSource::Files { chain, key };
    }
    if let Some(s) = cli.ring_timeout_secs.or(file.ring_timeout_secs) {
        cfg.core.ring_timeout = Duration::from_secs(s);
    }
    if let Some(s) = cli.idle_timeout_secs.or(file.idle_timeout_secs) {
        cfg.idle_timeout = Duration::from_secs(s.max(1));
    }
    cfg.core.sfu_secret = cli.sfu_secret.or(file.sfu_secret);
    if let Some(n) = cli.max_sessions.or(file.max_sessions) {
        cfg.core.limits.max_sessions = n;
    }

    let running = start(cfg).await.context("starting the signaling service")?;
    println!("listening {}", running.addr);
    println!("fingerprint {}", running.fingerprint);
    if let Some(m) = running.metrics_addr {
        println!("metrics http://{m}/metrics");
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt"),
    }
    running.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
