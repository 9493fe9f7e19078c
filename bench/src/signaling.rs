//! Signaling figures: logins per second, invite → ringing latency, memory per idle
//! session. The server is the real `sotto-signaling` binary in its own process, so its
//! resident memory is its own; clients share a few UDP endpoints.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use ed25519_dalek::SigningKey;
use futures_util::StreamExt;
use sotto_client::signaling::{Incoming, Pin, SignalingClient};
use sotto_proto::{CallId, Event, Handle, Request, Response};

/// What to measure.
pub struct Options {
    /// Idle sessions to hold open.
    pub sessions: usize,
    /// Calls for the ringing-latency figure.
    pub calls: usize,
    /// Concurrent logins in flight.
    pub concurrency: usize,
    /// Path of the server binary (default: next to this one).
    pub server_bin: Option<PathBuf>,
}

struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    pin: Pin,
    _dir: tempfile::TempDir,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(bin: &std::path::Path, max_sessions: usize) -> anyhow::Result<ServerProcess> {
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--max-sessions",
            &max_sessions.to_string(),
            "--data",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let (mut addr, mut pin) = (None, None);
    while addr.is_none() || pin.is_none() {
        let line = lines.next().context("server exited before listening")??;
        if let Some(a) = line.strip_prefix("listening ") {
            addr = Some(a.parse()?);
        } else if let Some(f) = line.strip_prefix("fingerprint ") {
            pin = Some(f.parse()?);
        }
    }
    Ok(ServerProcess {
        child,
        addr: addr.context("address")?,
        pin: pin.context("fingerprint")?,
        _dir: dir,
    })
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")
}

/// User + system CPU time of a process, from /proc (clock ticks of 10 ms).
pub(crate) fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after ") ".
    let rest = stat
        .rsplit_once(") ")
        .map(|(_, r)| r)
        .context("stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).context("utime")?.parse::<u64>()?
        + fields.get(12).context("stime")?.parse::<u64>()?;
    Ok(Duration::from_millis(ticks * 10))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the signaling benchmark and prints its figures.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let bin = match opts.server_bin {
        Some(b) => b,
        None => std::env::current_exe()?.with_file_name("sotto-signaling"),
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p sotto-signaling)",
            bin.display()
        );
    }
    let server = start_server(&bin, opts.sessions + 100)?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let base_kib = rss_kib(server.child.id())?;

    // Clients share endpoints: 500 connections per UDP socket.
    let endpoints: Vec<quinn::Endpoint> = (0..opts.sessions.div_ceil(500))
        .map(|_| quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))))
        .collect::<Result<_, _>>()?;
    let cpu_before = cpu_time(server.child.id())?;
    let started = Instant::now();
    let clients: Vec<SignalingClient> = futures_util::stream::iter(0..opts.sessions)
        .map(|i| {
            let ep = endpoints[i / 500].clone();
            let (addr, pin) = (server.addr, server.pin.clone());
            async move {
                let c = SignalingClient::connect_on(&ep, addr, &pin).await?;
                let handle = Handle::parse(&format!("@bench{i:06}"))?;
                let key = SigningKey::from_bytes(&[(i % 251) as u8 + 1; 32]);
                c.register(&handle, &key, 1).await?;
                anyhow::Ok(c)
            }
        })
        .buffered(opts.concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let login_secs = started.elapsed().as_secs_f64();
    let logins_per_sec = opts.sessions as f64 / login_secs;
    let server_cpu = cpu_time(server.child.id())?.saturating_sub(cpu_before);
    let cpu_us_per_login = server_cpu.as_secs_f64() * 1e6 / opts.sessions as f64;

    // Let the server settle, then read its memory with every session idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_kib = rss_kib(server.child.id())?;
    let per_session_kib = (idle_kib.saturating_sub(base_kib)) as f64 / opts.sessions as f64;

    // Invite -> ringing: the caller's send to the callee's IncomingCall, same clock.
    let mut clients = clients;
    let mut latencies = Vec::with_capacity(opts.calls);
    let pairs = (opts.calls).min(clients.len() / 2);
    for n in 0..opts.calls {
        let i = 2 * (n % pairs);
        let (left, right) = clients.split_at_mut(i + 1);
        let (caller, callee) = (&left[i], &mut right[0]);
        let call = CallId(
            n.to_be_bytes()
                .iter()
                .copied()
                .cycle()
                .take(16)
                .collect::<Vec<_>>()
                .try_into()
                .unwrap_or([0; 16]),
        );
        let to = Handle::parse(&format!("@bench{:06}", i + 1))?;
        let t0 = Instant::now();
        let (r, rang) = tokio::join!(caller.request(Request::Invite { call, to }), async {
            loop {
                match callee.next_within(Duration::from_secs(5)).await {
                    Some(Incoming::Event(Event::IncomingCall { .. })) => break Some(t0.elapsed()),
                    Some(_) => continue,
                    None => break None,
                }
            }
        });
        if !matches!(r?, Response::Ringing { .. }) {
            bail!("invite not ringing");
        }
        latencies.push(rang.context("callee never rang")?);
        callee.request(Request::Decline { call }).await?;
        // Drain the CallEnded both sides get.
        let _ = callee.next_within(Duration::from_millis(50)).await;
    }
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));

    println!(
        "signaling benchmark (server: {}, separate process)",
        bin.display()
    );
    println!("  sessions            {:>10}", opts.sessions);
    println!(
        "  logins              {logins_per_sec:>10.0} /s  ({} in {login_secs:.2} s, {} in flight)",
        opts.sessions, opts.concurrency
    );
    println!(
        "  server CPU / login  {:>10.0} µs  (QUIC+TLS handshake, register, Ed25519 verify, SQLite) ≈ {:.0} logins/s per core",
        cpu_us_per_login,
        1e6 / cpu_us_per_login.max(1.0)
    );
    println!(
        "  server RSS          {:>10} KiB idle base, {idle_kib} KiB with all sessions idle",
        base_kib
    );
    println!(
        "  memory / idle sess. {per_session_kib:>10.1} KiB  (10,000 sessions ≈ {:.0} MiB)",
        per_session_kib * 10_000.0 / 1024.0
    );
    println!(
        "  invite → ringing    p50 {:>7.3} ms   p99 {:>7.3} ms   ({} calls)",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        latencies.len()
    );
    println!(
        "{{\"sessions\":{},\"logins_per_sec\":{logins_per_sec:.1},\"server_cpu_us_per_login\":{cpu_us_per_login:.0},\"rss_base_kib\":{base_kib},\"rss_idle_kib\":{idle_kib},\"kib_per_idle_session\":{per_session_kib:.2},\"ring_p50_ms\":{:.3},\"ring_p99_ms\":{:.3}}}",
        opts.sessions,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    drop(clients);
    Ok(())
}
