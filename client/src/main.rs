//! `sotto`: end-to-end encrypted calls by handle, from the command line.
//!
//! ```text
//! sotto account create @alice --server 127.0.0.1:4433 --pin <sha256>
//! sotto account create @alice --server signal.example.org:4433   (a real certificate)
//! sotto call @bob [--video] [--relay] [--duration 30s] [--bind ADDR] [--stun stun:host:port]
//! sotto listen [--auto-answer]
//! sotto room create [--name NAME] [@bob @carol]   sotto room invite ROOM @dave
//! sotto room join ROOM [--duration 30s]           sotto room remove ROOM @dave
//! sotto rooms
//! sotto devices
//! sotto contacts            sotto contacts verify @bob
//! ```
//! Exit codes say how a call ended: 0 hung up, 2 declined, 3 busy, 4 no answer,
//! 5 offline or unknown, 6 contact's key changed, 7 connection lost, 8 a device is missing
//! or unusable, 9 removed from the room by its owner, 1 any other error (a bad flag
//! included).
//!
//! Errors are one line on stderr, `sotto: <what happened>: <what to do>`. Library log lines
//! go to `<profile>/sotto.log`, never into the live status line, unless `RUST_LOG` is set
//! (then to stderr, filtered by it).

use std::{
    io::{BufRead, IsTerminal, Write},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

mod cli;

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand};
use sotto_client::{
    call::{CallError, CallOptions, CallReport, CallStatus, Endpoint, RelayPolicy, VideoOptions},
    devices,
    profile::{Account, Profile, ProfileError},
    room::Knock,
    signaling::{ClientError, Pin, ServerTrust, SignalingClient},
    transport::{self, Bind},
};
use sotto_media::synth::AudioSignal;
use sotto_proto::{EndReason, ErrorCode, Handle};

#[derive(Parser)]
#[command(
    name = "sotto",
    version,
    about = "End-to-end encrypted voice and video calls by handle"
)]
struct Cli {
    /// Profile directory (identity key, contacts, MLS state).
    #[arg(long, global = true, env = "SOTTO_PROFILE")]
    profile: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Accounts.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Call someone by handle.
    Call {
        /// Who, e.g. @bob.
        handle: String,
        /// Send and receive video too.
        #[arg(long)]
        video: bool,
        /// Go through the SFU from the start, so neither side learns the other's address.
        /// Without it, a call whose direct path has not connected 4 s after the answer
        /// moves to the SFU by itself.
        #[arg(long)]
        relay: bool,
        #[command(flatten)]
        media: MediaArgs,
    },
    /// Wait for calls (and show room invitations as they come).
    Listen {
        /// Answer every call without asking.
        #[arg(long)]
        auto_answer: bool,
        /// Send and receive video too.
        #[arg(long)]
        video: bool,
        /// Stop after one call.
        #[arg(long)]
        once: bool,
        /// Take every call through the SFU, so callers never learn this machine's
        /// address (without it, a caller may call peer to peer).
        #[arg(long)]
        relay: bool,
        #[command(flatten)]
        media: MediaArgs,
    },
    /// Group calls: create a room, invite people, join, remove someone.
    Room {
        #[command(subcommand)]
        command: cli::rooms::RoomCommand,
    },
    /// The rooms you own or were invited to.
    Rooms,
    /// Microphones, speakers and cameras this machine offers.
    Devices,
    /// Pinned contacts.
    Contacts {
        #[command(subcommand)]
        command: Option<ContactsCommand>,
    },
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Claim a handle on a server with this profile's identity key.
    Create {
        /// The handle, e.g. @alice.
        handle: String,
        /// Signaling server, HOST:PORT.
        #[arg(long)]
        server: String,
        /// The server certificate's SHA-256 fingerprint, printed by sotto-signaling (for
        /// its development certificate). Without it the server needs a real certificate
        /// for HOST, checked against this machine's root certificates.
        #[arg(long)]
        pin: Option<String>,
    },
}

#[derive(Subcommand)]
enum ContactsCommand {
    /// You compared safety numbers with this contact: trust its current key.
    Verify {
        /// The contact.
        handle: String,
    },
}

#[derive(clap::Args)]
struct MediaArgs {
    /// Microphone: `default`, a device from `sotto devices`, or a synthetic source:
    /// `synth` (440 Hz tone), `synth:HZ`, `synth:speech`.
    #[arg(long, default_value = "default")]
    audio_in: String,
    /// Speaker: `default`, a device from `sotto devices`, or `none` (decode, measure and
    /// play nowhere).
    #[arg(long, default_value = "default")]
    audio_out: String,
    /// Camera (with --video): `default`, a device from `sotto devices`, or `synth` (moving
    /// test pattern).
    #[arg(long, default_value = "default")]
    video_in: String,
    /// Hang up after this long (e.g. 30s, 2m); default: until someone hangs up.
    #[arg(long)]
    duration: Option<String>,
    /// Audio frame length in milliseconds: 20, or 10 for lower latency at a higher
    /// packet rate.
    #[arg(long, default_value_t = 20, value_parser = parse_frame_ms)]
    frame_ms: u32,
    /// STUN server for ICE (`stun:host:port`); repeat for several. None by default; needed
    /// when the other side is behind a NAT.
    #[arg(long = "stun")]
    stun: Vec<String>,
    /// Send and receive media only on these local addresses (repeat, or separate with
    /// commas). Default: every address of every interface that is up, except loopback.
    #[arg(long = "bind", value_name = "ADDR", value_delimiter = ',')]
    bind: Vec<IpAddr>,
    /// After the call, write its figures (frames sent, played, concealed, decoded...) to
    /// this file as JSON.
    #[arg(long, value_name = "FILE")]
    report_json: Option<PathBuf>,
    /// Commit a fresh MLS epoch this often during the call (e.g. 5m): new media keys.
    #[arg(long)]
    rekey_every: Option<String>,
    /// Stamp each frame with its capture time (inside the encryption) so the end-of-call
    /// report shows audio frame latency; both sides must ask. Off by default: it costs
    /// 17 bytes a frame and tells the other side your clock.
    #[arg(long)]
    measure_latency: bool,
}

/// A `--rekey-every` period: each rekey is a commit every member processes, so less than
/// a second is refused (it would keep the group committing instead of talking).
fn parse_rekey(s: &str) -> anyhow::Result<Duration> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) {
        bail!("--rekey-every {s}: rekey at most once a second (for example 5m)");
    }
    Ok(d)
}

fn parse_frame_ms(s: &str) -> Result<u32, String> {
    match s {
        "10" => Ok(10),
        "20" => Ok(20),
        _ => Err("audio frames are 10 or 20 ms".into()),
    }
}

fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let (n, unit) = s.trim().split_at(
        s.trim()
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(s.trim().len()),
    );
    let bad = || anyhow!("\"{s}\" is not a duration: write it like 30s, 500ms or 2m");
    let n: u64 = n.parse().map_err(|_| bad())?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(bad()),
    })
}

/// A synthetic signal for `synth…`, `None` for a device name.
fn audio_signal(spec: &str) -> anyhow::Result<Option<AudioSignal>> {
    Ok(match spec {
        "synth" => Some(AudioSignal::Tone { hz: 440.0 }),
        "synth:speech" => Some(AudioSignal::Speech),
        s if s.starts_with("synth:") => Some(AudioSignal::Tone {
            hz: s["synth:".len()..].parse().map_err(|_| {
                anyhow!("\"{s}\" is not a synthetic source: write synth, synth:speech or synth:HZ, e.g. synth:440")
            })?,
        }),
        _ => None,
    })
}

fn options(media: &MediaArgs, video: bool) -> anyhow::Result<CallOptions> {
    let synth = audio_signal(&media.audio_in)?;
    let mut o = CallOptions {
        duration: media.duration.as_deref().map(parse_duration).transpose()?,
        microphone: synth.is_none().then(|| media.audio_in.clone()),
        speaker: (media.audio_out != "none").then(|| media.audio_out.clone()),
        camera: (video && media.video_in != "synth").then(|| media.video_in.clone()),
        video: video.then(VideoOptions::default),
        frame_ms: media.frame_ms,
        rekey_every: media.rekey_every.as_deref().map(parse_rekey).transpose()?,
        stamps: media.measure_latency,
        ..CallOptions::default()
    };
    for url in &media.stun {
        if let Err(e) = sotto_client::stun::host_port(url) {
            bail!("--stun {e}");
        }
    }
    o.transport.stun = media.stun.clone();
    if !media.bind.is_empty() {
        for ip in &media.bind {
            if let Err(e) = std::net::UdpSocket::bind((*ip, 0)) {
                bail!(
                    "cannot send media from {ip} ({e}): give --bind an address of this machine (`ip address` lists them)"
                );
            }
        }
        o.transport.bind = Bind::Addrs(media.bind.clone());
    } else if transport::host_addrs(&Bind::AllInterfaces)
        .iter()
        .all(IpAddr::is_loopback)
    {
        eprintln!(
            "sotto: warning: no network interface is up, so this call can reach only this machine"
        );
    }
    if let Some(s) = synth {
        o.audio = s;
    }
    Ok(o)
}

fn print_devices() {
    let l = devices::list();
    let show = |title: &str, names: &[String], synth: &str| {
        println!("{title}");
        if names.is_empty() {
            println!("  (none found)");
        }
        for n in names {
            if devices::audio::is_clockless(n) {
                println!("  {n}  (discards audio and has no clock: not usable for calls)");
            } else {
                println!("  {n}");
            }
        }
        println!("  {synth}");
    };
    show(
        "microphones (--audio-in):",
        &l.microphones,
        "synth | synth:HZ | synth:speech  (synthetic)",
    );
    show(
        "speakers (--audio-out):",
        &l.speakers,
        "none  (play nowhere)",
    );
    show(
        "cameras (--video-in):",
        &l.cameras,
        "synth  (moving test pattern)",
    );
    for p in &l.problems {
        println!("note: {p}");
    }
}

fn default_profile() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("sotto")
}

/// Exit code for how a call ended.
fn exit_for_end(report: &CallReport) -> u8 {
    match report.ended {
        Some(EndReason::HungUp) | None => 0,
        Some(EndReason::Declined | EndReason::AnsweredElsewhere) => 2,
        Some(EndReason::Timeout) => 4,
        Some(EndReason::Cancelled) => 0,
        Some(EndReason::PeerDisconnected) => 7,
        Some(EndReason::KeyMismatch) => 6,
    }
}

fn exit_for_error(e: &CallError) -> u8 {
    match e {
        CallError::Signaling(ClientError::Server(b)) => match b.code {
            ErrorCode::Busy => 3,
            ErrorCode::Offline | ErrorCode::NotFound => 5,
            _ => 1,
        },
        CallError::Contact(ProfileError::KeyChanged { .. })
        | CallError::KeyMismatch { .. }
        | CallError::PeerSawKeyMismatch { .. } => 6,
        CallError::Device(_) => 8,
        _ => 1,
    }
}

fn print_status(s: &CallStatus) {
    let peer = s
        .peer
        .as_ref()
        .map_or_else(String::new, ToString::to_string);
    let rtt = s.rtt.map_or_else(
        || "-".to_owned(),
        |r| format!("{:.1} ms", r.as_secs_f64() * 1e3),
    );
    let estimate = s
        .estimate_bps
        .map_or_else(String::new, |e| format!(" (est {} kb/s)", e / 1000));
    eprint!(
        "\r{} {peer}  code {}  ↑ {} kb/s{estimate} ↓ {} kb/s  rtt {rtt}  loss {:.0}%  played {} concealed {} rejected {}{}   ",
        match (s.connected, s.relayed) {
            (true, false) => "● in call",
            (true, true) => "● in call via the SFU",
            (false, _) => "○ connecting",
        },
        s.verification_code,
        s.send_bps / 1000,
        s.recv_bps / 1000,
        s.loss * 100.0,
        s.audio_played,
        s.concealed,
        s.decrypt_failures,
        if s.video_decoded > 0 {
            format!(" video {}", s.video_decoded)
        } else {
            String::new()
        },
    );
    let _ = std::io::stderr().flush();
}

/// How a call ended, in words.
fn ended_text(reason: Option<EndReason>) -> String {
    reason.map_or_else(|| "no reason given".to_owned(), |r| r.to_string())
}

/// The report as JSON, for scripts and tests (`--report-json`).
fn report_json(r: &CallReport) -> serde_json::Value {
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
    serde_json::json!({
        "ended": ended_text(r.ended),
        "safety_number": r.safety_number,
        "verification_code": r.verification_code,
        "audio_sent": r.audio_sent,
        "audio_played": r.audio_played,
        "audio_concealed": r.audio_concealed,
        "audio_fec": r.audio_fec,
        "audio_in_order": r.latency.in_order(),
        "received_hz": r.received_hz,
        "decrypt_failures": r.decrypt_failures.values().sum::<u64>(),
        "video_sent": r.video_sent,
        "video_decoded": r.video_decoded,
        "video_skipped": r.video_skipped,
        "video_mismatches": r.video_mismatches,
        "video_in_order": r.video.in_order(),
        "video_keyframes": r.video_keyframes,
        "keyframe_requests_sent": r.keyframe_requests_sent,
        "keyframe_requests_received": r.keyframe_requests_received,
        "retransmissions_received": r.retransmissions_received,
        "frame_latency_p50_ms": ms(r.latency.latency_quantile(0.5)),
        "frame_latency_p99_ms": ms(r.latency.latency_quantile(0.99)),
        "video_latency_p50_ms": ms(r.video.latency_quantile(0.5)),
        "rtt_ms": ms(r.rtt),
        "setup_ms": ms(r.setup_time),
        "estimate_bps": r.estimate_bps,
        "relayed": r.relayed,
        "remote_addrs": r.remote_addrs,
        "media_from": r.media_from,
    })
}

/// Writes a report (`--report-json FILE`) for scripts, if a file was given.
fn write_json(path: Option<&Path>, report: &serde_json::Value) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").map_err(|e| {
        anyhow!(
            "cannot write the report to {} ({e}): give --report-json a file you can write",
            path.display()
        )
    })
}

fn print_report(r: &CallReport) {
    eprintln!();
    println!(
        "call ended: {}{}",
        ended_text(r.ended),
        if r.relayed {
            " (it went through the SFU)"
        } else {
            ""
        }
    );
    if !r.safety_number.is_empty() {
        println!("safety number      {}", r.safety_number);
        println!("verification code  {}", r.verification_code);
    }
    println!(
        "audio: sent {}, played {}, concealed {} (fec {}), rejected {}; video: sent {}, decoded {}; retransmissions received {}",
        r.audio_sent,
        r.audio_played,
        r.audio_concealed,
        r.audio_fec,
        r.decrypt_failures.values().sum::<u64>(),
        r.video_sent,
        r.video_decoded,
        r.retransmissions_received,
    );
    if let (Some(p50), Some(p99)) = (
        r.latency.latency_quantile(0.5),
        r.latency.latency_quantile(0.99),
    ) {
        println!(
            "audio frame latency (frame ready → playout start): p50 {:.1} ms, p99 {:.1} ms",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
}

/// Runs a call future with a status line and Ctrl-C hang-up. Ends the status line (if one
/// was drawn) before returning, so whatever is printed next starts on a line of its own.
async fn with_status<F, Fut>(mut opts: CallOptions, run: F) -> Result<CallReport, CallError>
where
    F: FnOnce(CallOptions) -> Fut,
    Fut: Future<Output = Result<CallReport, CallError>>,
{
    let (status_tx, mut status_rx) = tokio::sync::mpsc::unbounded_channel();
    let (hangup_tx, hangup_rx) = tokio::sync::watch::channel(false);
    opts.status = Some(status_tx);
    opts.hangup = Some(hangup_rx);
    let drawn = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let printer = tokio::spawn({
        let drawn = drawn.clone();
        async move {
            let mut shown_numbers = false;
            while let Some(s) = status_rx.recv().await {
                if !shown_numbers && !s.safety_number.is_empty() {
                    shown_numbers = true;
                    if drawn.load(std::sync::atomic::Ordering::Relaxed) {
                        eprintln!();
                    }
                    eprintln!(
                        "safety number {}  (compare it with the other person once; it only changes if a key does)",
                        s.safety_number
                    );
                }
                print_status(&s);
                drawn.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let ctrl_c = tokio::spawn(async move {
        cli::stop_requested().await;
        eprintln!("\nhanging up…");
        let _ = hangup_tx.send(true);
    });
    let result = run(opts).await;
    ctrl_c.abort();
    printer.abort();
    let _ = printer.await;
    if result.is_err() && drawn.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!();
    }
    result
}

/// An error and its causes as one line, each cause once: a cause whose text the line
/// already holds (a wrapper that repeats its source) is left out.
fn one_line(top: &(dyn std::error::Error + 'static)) -> String {
    let mut line = top.to_string();
    let mut cause = top.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line.replace('\n', " ")
}

fn parse_handle(s: &str) -> anyhow::Result<Handle> {
    Handle::parse(s).map_err(|e| anyhow!("\"{s}\" is not a handle: {e}"))
}

/// The HOST of `HOST:PORT` (`[v6]:PORT` too).
fn host_of(server: &str) -> anyhow::Result<&str> {
    let bad = || {
        anyhow!(
            "\"{server}\" is not a server address: write it as HOST:PORT, e.g. signal.example.org:4433"
        )
    };
    let (host, port) = server.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok(host)
}

/// How to check the server's certificate: the pinned fingerprint, or (no pin) the system's
/// roots for the server's name.
fn trust_for(server: &str, pin: Option<&str>) -> anyhow::Result<Pin> {
    Ok(match pin {
        Some(p) => p.parse()?,
        None => ServerTrust::system_roots(host_of(server)?)?,
    })
}

async fn resolve(server: &str) -> anyhow::Result<SocketAddr> {
    host_of(server)?;
    let not_found = |why: String| {
        anyhow!("cannot find the server {server} ({why}): check its name and your network")
    };
    tokio::net::lookup_host(server)
        .await
        .map_err(|e| not_found(e.to_string()))?
        .next()
        .ok_or_else(|| not_found("it has no address".into()))
}

const NO_ACCOUNT: &str = "this profile has no account yet: run `sotto account create @you --server HOST:PORT` (with `--pin FINGERPRINT` for a development server) first, or pass --profile DIR";

/// Held while this process is connected as the profile's device. The server keeps one
/// connection per device, so a second `sotto` logging in with the same profile would end
/// the first one's connection (a `sotto rooms` would stop a `sotto listen`).
static SESSION_LOCK: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();

/// Another `sotto` is connected with this profile.
#[derive(Debug)]
pub struct ProfileBusy;

impl std::fmt::Display for ProfileBusy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "another sotto is connected with this profile (sotto listen, a call or a room call): the server keeps one connection per device, so stop that one first, or use another profile",
        )
    }
}

impl std::error::Error for ProfileBusy {}

/// Takes the profile's session lock for the rest of this process, or says who has it.
fn hold_profile(dir: &Path) -> anyhow::Result<()> {
    if SESSION_LOCK.get().is_some() {
        return Ok(());
    }
    let path = dir.join("session.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| {
            anyhow!(
                "cannot open {} ({e}): check the profile directory's permissions",
                path.display()
            )
        })?;
    match file.try_lock() {
        Ok(()) => {
            let _ = SESSION_LOCK.set(file);
            Ok(())
        }
        Err(std::fs::TryLockError::WouldBlock) => Err(ProfileBusy.into()),
        Err(std::fs::TryLockError::Error(e)) => Err(anyhow!(
            "cannot lock {} ({e}): check the profile directory's permissions",
            path.display()
        )),
    }
}

async fn endpoint(profile: Profile) -> anyhow::Result<Endpoint> {
    let account = profile.account().cloned().context(NO_ACCOUNT)?;
    hold_profile(profile.dir())?;
    let pin = (!account.pin.is_empty()).then_some(account.pin.as_str());
    let trust = trust_for(&account.server, pin)?;
    let server = resolve(&account.server).await?;
    let handle = Handle::parse(&account.handle)?;
    Ok(Endpoint::open(server, &trust, handle, profile).await?)
}

/// `account create`: claims `handle` with this profile's key. A handle that exists is
/// someone else's unless this profile's key logs in to it (creating it again is harmless);
/// never falls back to logging in as someone else.
async fn create_account(
    profile: &mut Profile,
    handle: &Handle,
    server: &str,
    pin: Option<String>,
) -> anyhow::Result<()> {
    let trust = trust_for(server, pin.as_deref())?;
    let addr = resolve(server).await?;
    let client = SignalingClient::connect(addr, &trust).await?;
    let (key, device) = (profile.identity().clone(), profile.device());
    match client.register(handle, &key, device).await {
        Ok(_) => {}
        Err(ClientError::Server(e)) if e.code == ErrorCode::HandleTaken => {
            match client.login(handle, &key, device).await {
                Ok(_) => {}
                Err(ClientError::Server(e)) if e.code == ErrorCode::BadSignature => bail!(
                    "{handle} is taken on {server} by someone else: pick another handle (or, if it is yours, use the profile that created it)"
                ),
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    }
    client.close();
    profile.set_account(Account {
        handle: handle.to_string(),
        server: server.to_owned(),
        pin: pin.unwrap_or_default(),
    })?;
    Ok(())
}

fn print_call_error(e: &CallError) -> u8 {
    eprintln!("sotto: {}", one_line(e));
    exit_for_error(e)
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let dir = cli.profile.unwrap_or_else(default_profile);
    let mut profile = Profile::open(&dir).map_err(|e| {
        anyhow!(
            "cannot open the profile in {} ({}): pass --profile DIR with a directory you can write",
            dir.display(),
            one_line(&e)
        )
    })?;
    init_logging(&dir);
    match cli.command {
        Command::Account {
            command:
                AccountCommand::Create {
                    handle,
                    server,
                    pin,
                },
        } => {
            let handle = parse_handle(&handle)?;
            create_account(&mut profile, &handle, &server, pin).await?;
            let ep = endpoint(profile).await?;
            println!(
                "{} is yours on {server} (device {:08x}, profile {})",
                ep.handle,
                ep.device,
                dir.display()
            );
            Ok(0)
        }
        Command::Call {
            handle,
            video,
            relay,
            media,
        } => {
            let mut opts = options(&media, video)?;
            if relay {
                opts.relay = RelayPolicy::Always;
            }
            let to = parse_handle(&handle)?;
            let mut ep = endpoint(profile).await?;
            eprintln!("calling {to}…");
            match with_status(opts, |o| async move { ep.call(&to, &o).await }).await {
                Ok(r) => {
                    print_report(&r);
                    write_json(media.report_json.as_deref(), &report_json(&r))?;
                    Ok(exit_for_end(&r))
                }
                Err(e) => Ok(print_call_error(&e)),
            }
        }
        Command::Listen {
            auto_answer,
            video,
            once,
            relay,
            media,
        } => {
            let mut opts = options(&media, video)?;
            if relay {
                opts.relay = RelayPolicy::Always;
            }
            // Find out now, not when someone calls, that a device is missing.
            if let Err(e) = sotto_client::call::check_devices(&opts) {
                return Ok(print_call_error(&e));
            }
            let mut ep = endpoint(profile).await?;
            eprintln!("{} listening for calls (Ctrl-C to stop)…", ep.handle);
            loop {
                let knock = tokio::select! {
                    c = ep.next_knock(Duration::from_secs(24 * 3600)) => c?,
                    () = cli::stop_requested() => return Ok(0),
                };
                let (call, from) = match knock {
                    Knock::Call { call, from } => (call, from),
                    Knock::Invite { seq, room, from } => {
                        cli::rooms::record_invite(&mut ep, seq, room, &from).await?;
                        eprintln!(
                            "{from} invited you to room {room}: join it with `sotto room join {room}`"
                        );
                        continue;
                    }
                };
                let answer = if auto_answer {
                    true
                } else if std::io::stdin().is_terminal() {
                    eprint!("{from} is calling. Answer? [y/N] ");
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                    line.trim().eq_ignore_ascii_case("y")
                } else {
                    eprintln!("{from} is calling; not answering (no terminal; use --auto-answer)");
                    false
                };
                if !answer {
                    ep.decline(call).await?;
                    continue;
                }
                let o = opts.clone();
                let result = with_status(o, |o| {
                    let ep = &mut ep;
                    async move { ep.answer_call(call, from, &o).await }
                })
                .await;
                let code = match result {
                    Ok(r) => {
                        print_report(&r);
                        write_json(media.report_json.as_deref(), &report_json(&r))?;
                        exit_for_end(&r)
                    }
                    Err(e) => print_call_error(&e),
                };
                if once {
                    return Ok(code);
                }
            }
        }
        Command::Room { command } => cli::rooms::run(profile, command).await,
        Command::Rooms => cli::rooms::list(profile).await,
        Command::Devices => {
            print_devices();
            Ok(0)
        }
        Command::Contacts { command: None } => {
            if profile.contacts().is_empty() {
                println!("no contacts yet: they are pinned the first time you call or are called");
            }
            for (handle, c) in profile.contacts() {
                let key = hex::decode(&c.identity_key).unwrap_or_default();
                println!(
                    "{handle:<24} key {}  {}",
                    sotto_client::profile::key_fingerprint(&key),
                    if c.verified {
                        "verified"
                    } else {
                        "pinned on first use"
                    }
                );
            }
            Ok(0)
        }
        Command::Contacts {
            command: Some(ContactsCommand::Verify { handle }),
        } => {
            let h = parse_handle(&handle)?;
            let mut ep = endpoint(profile).await?;
            ep.verify_contact(&h).await?;
            println!("{h} verified: its current identity key is trusted");
            Ok(0)
        }
    }
}

/// The log file in a profile, and the size at which it starts over.
const LOG_FILE: &str = "sotto.log";
const LOG_MAX_BYTES: u64 = 8 << 20;

/// Library log lines go to `<profile>/sotto.log`, never into the status line on stderr,
/// unless `RUST_LOG` asks for them (then to stderr, filtered by it).
fn init_logging(profile: &Path) {
    use tracing_subscriber::EnvFilter;
    if let Ok(filter) = EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
        return;
    }
    let path = profile.join(LOG_FILE);
    let too_big = std::fs::metadata(&path).is_ok_and(|m| m.len() > LOG_MAX_BYTES);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(!too_big)
        .write(true)
        .truncate(too_big)
        .open(&path);
    // No log file (a read-only profile): log lines are dropped rather than shown.
    if let Ok(file) = file {
        tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("warn"))
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .init();
    }
}

/// A command-line mistake as one line that says where to look, e.g. `sotto: invalid value
/// 'x' for '--bind <ADDR>': invalid IP address syntax; see `sotto call --help``.
fn usage_error(e: &clap::Error) -> String {
    use clap::CommandFactory;
    let text = e.render().to_string();
    let mut lines = text.lines();
    let mut first = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_owned();
    if first.ends_with(':') {
        // "the following required arguments were not provided:" lists them below.
        let listed: Vec<&str> = lines
            .take_while(|l| l.starts_with("  "))
            .map(str::trim)
            .collect();
        first = format!("{first} {}", listed.join(", "));
    }
    // The subcommand the mistake is in, from the words given (options skipped).
    let mut command = vec!["sotto".to_owned()];
    let mut cmd = Cli::command();
    for word in std::env::args().skip(1) {
        let Some(sub) = cmd.find_subcommand(&word).cloned() else {
            continue;
        };
        command.push(word);
        cmd = sub;
    }
    format!("{first}; see `{} --help`", command.join(" "))
}

/// A closed stdout (`sotto rooms | head -1`) ends the process quietly, as it does any
/// command-line tool, instead of a panic on the next `println!`.
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // unsafe: `signal` is a C call. Restoring SIGPIPE's default (the Rust runtime sets it
    // to "ignore") is sound here, first thing in `main`, before any other thread exists;
    // the client writes to no pipe or TCP socket but stdout and stderr.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    quiet_on_closed_pipe();
    sotto_client::panics::install_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
            }
            eprintln!("sotto: {}", usage_error(&e));
            return ExitCode::from(1);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sotto: cannot start ({e}): check the system's limits on threads and files");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("sotto: {}", one_line(e.as_ref()));
            ExitCode::from(1)
        }
    }
}
