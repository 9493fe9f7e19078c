//! `sotto-sfu`: the SFU binary.
//!
//! Settings come from flags, then `SOTTO_SFU_*` environment variables, then the config
//! file (`--config`, TOML with the same names), then defaults. It registers with the
//! signaling service, prints its media addresses, and on SIGTERM or Ctrl-C drains: every
//! media connection is closed and the forwarding threads stop.

use anyhow::Context;
use clap::Parser;
use serde::Deserialize;
use sotto_sfu::control::{SfuConfig, start};
use sotto_signaling_client::Pin;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "sotto-sfu",
    version,
    about = "The sotto SFU: forwards end-to-end encrypted media it cannot decrypt"
)]
struct Cli {
    /// The signaling service's QUIC address.
    #[arg(long, env = "SOTTO_SFU_SIGNALING")]
    signaling: Option<SocketAddr>,
    /// The signaling service's certificate fingerprint (it prints it on start).
    #[arg(long, env = "SOTTO_SFU_PIN")]
    pin: Option<String>,
    /// Instead of a pin: trust the system's roots for a server with this DNS name.
    #[arg(long, env = "SOTTO_SFU_SERVER_NAME", conflicts_with = "pin")]
    server_name: Option<String>,
    /// The shared secret SFU nodes register with (the signaling service's sfu_secret).
    #[arg(long, env = "SOTTO_SFU_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Where the media sockets bind (worker i takes this port + i).
    #[arg(long, env = "SOTTO_SFU_LISTEN")]
    listen: Option<SocketAddr>,
    /// The address participants reach the media port at, if not the listen address
    /// (behind NAT, or when listening on 0.0.0.0).
    #[arg(long, env = "SOTTO_SFU_MEDIA_ADDR")]
    media_addr: Option<SocketAddr>,
    /// This node's name.
    #[arg(long, env = "SOTTO_SFU_NODE")]
    node: Option<String>,
    /// Participants this node takes.
    #[arg(long, env = "SOTTO_SFU_CAPACITY")]
    capacity: Option<u32>,
    /// Forwarding threads (default: one per core).
    #[arg(long, env = "SOTTO_SFU_WORKERS")]
    workers: Option<usize>,
    /// Serve Prometheus metrics on this address (`GET /metrics`).
    #[arg(long, env = "SOTTO_SFU_METRICS")]
    metrics: Option<SocketAddr>,
    /// TOML config file with the same settings.
    #[arg(long, env = "SOTTO_SFU_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    signaling: Option<SocketAddr>,
    pin: Option<String>,
    server_name: Option<String>,
    secret: Option<String>,
    listen: Option<SocketAddr>,
    media_addr: Option<SocketAddr>,
    node: Option<String>,
    capacity: Option<u32>,
    workers: Option<usize>,
    metrics: Option<SocketAddr>,
}

fn config(cli: Cli) -> anyhow::Result<SfuConfig> {
    let file: FileConfig = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let signaling = cli
        .signaling
        .or(file.signaling)
        .context("say where the signaling service is: --signaling ADDR")?;
    let pin: Pin = match (cli.pin.or(file.pin), cli.server_name.or(file.server_name)) {
        (Some(p), _) => p.parse().map_err(|e| anyhow::anyhow!("--pin: {e}"))?,
        (None, Some(name)) => Pin::system_roots(&name).map_err(|e| anyhow::anyhow!("{e}"))?,
        (None, None) => anyhow::bail!(
            "say how to trust the signaling service: --pin FINGERPRINT (it prints one on start) or --server-name NAME"
        ),
    };
    let secret = cli
        .secret
        .or(file.secret)
        .context("give the SFU registration secret: --secret or SOTTO_SFU_SECRET")?;
    let listen = cli
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3478)));
    let media_addr = cli.media_addr.or(file.media_addr).unwrap_or(listen);
    if media_addr.ip().is_unspecified() {
        anyhow::bail!(
            "listening on {listen}: say which address participants reach with --media-addr"
        );
    }
    let workers = cli
        .workers
        .or(file.workers)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    Ok(SfuConfig {
        signaling,
        pin,
        secret,
        node: cli.node.or(file.node).unwrap_or_else(|| "sfu-1".to_owned()),
        listen,
        media_addr,
        capacity: cli.capacity.or(file.capacity).unwrap_or(1000),
        workers,
        metrics: cli.metrics.or(file.metrics),
        tap: None,
    })
}

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sotto-sfu: could not start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sotto-sfu: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// What happened, then why: each cause once (a cause already quoted by the message
/// before it is not repeated).
fn one_line(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = config(Cli::parse())?;
    let running = start(cfg).await?;
    for a in &running.media_addrs {
        println!("media {a}");
    }
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
