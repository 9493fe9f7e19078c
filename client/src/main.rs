//! `sotto`: end-to-end encrypted calls by handle, from the command line.
//!
//! ```text
//! sotto account create @alice --server 127.0.0.1:4433 --pin <sha256>
//! sotto call @bob [--video] [--duration 30s]
//! sotto listen [--auto-answer]
//! sotto devices
//! sotto contacts            sotto contacts verify @bob
//! ```
//! Exit codes say how a call ended: 0 hung up, 2 declined, 3 busy, 4 no answer,
//! 5 offline or unknown, 6 contact's key changed, 7 connection lost, 8 a device is missing
//! or unusable, 1 any other error.

use std::{
    io::{BufRead, IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use sotto_client::{
    call::{CallError, CallOptions, CallReport, CallStatus, Endpoint, VideoOptions},
    devices,
    profile::{Account, Profile, ProfileError},
    signaling::{ClientError, Pin},
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
        #[command(flatten)]
        media: MediaArgs,
    },
    /// Wait for calls.
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
        #[command(flatten)]
        media: MediaArgs,
    },
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
        /// Signaling server address.
        #[arg(long)]
        server: String,
        /// The server certificate's SHA-256 fingerprint (printed by sotto-signaling).
        #[arg(long)]
        pin: String,
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
    /// STUN server for ICE (`stun:host:port`); repeat for several. None by default.
    #[arg(long = "stun")]
    stun: Vec<String>,
    /// Commit a fresh MLS epoch this often during the call (e.g. 5m): new media keys.
    #[arg(long)]
    rekey_every: Option<String>,
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
    let n: u64 = n.parse().with_context(|| format!("bad duration {s:?}"))?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        other => bail!("bad duration unit {other:?} (use ms, s or m)"),
    })
}

/// A synthetic signal for `synth…`, `None` for a device name.
fn audio_signal(spec: &str) -> anyhow::Result<Option<AudioSignal>> {
    Ok(match spec {
        "synth" => Some(AudioSignal::Tone { hz: 440.0 }),
        "synth:speech" => Some(AudioSignal::Speech),
        s if s.starts_with("synth:") => Some(AudioSignal::Tone {
            hz: s["synth:".len()..]
                .parse()
                .with_context(|| format!("bad tone in {s:?} (synth:HZ, e.g. synth:440)"))?,
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
        rekey_every: media
            .rekey_every
            .as_deref()
            .map(parse_duration)
            .transpose()?,
        ..CallOptions::default()
    };
    o.transport.stun = media.stun.clone();
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
        if s.connected {
            "● in call"
        } else {
            "○ connecting"
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

fn print_report(r: &CallReport) {
    eprintln!();
    println!(
        "call ended: {}",
        r.ended
            .map_or_else(|| "no reason given".to_owned(), |e| format!("{e:?}"))
    );
    if !r.safety_number.is_empty() {
        println!("safety number      {}", r.safety_number);
        println!("verification code  {}", r.verification_code);
    }
    println!(
        "audio: sent {}, played {}, concealed {}, rejected {}; video decoded {}",
        r.audio_sent,
        r.audio_played,
        r.audio_concealed,
        r.decrypt_failures.values().sum::<u64>(),
        r.video_decoded
    );
    if let (Some(p50), Some(p99)) = (
        r.latency.latency_quantile(0.5),
        r.latency.latency_quantile(0.99),
    ) {
        println!(
            "latency: p50 {:.1} ms, p99 {:.1} ms",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
}

/// Runs a call future with a status line and Ctrl-C hang-up.
async fn with_status<F, Fut>(mut opts: CallOptions, run: F) -> Result<CallReport, CallError>
where
    F: FnOnce(CallOptions) -> Fut,
    Fut: Future<Output = Result<CallReport, CallError>>,
{
    let (status_tx, mut status_rx) = tokio::sync::mpsc::unbounded_channel();
    let (hangup_tx, hangup_rx) = tokio::sync::watch::channel(false);
    opts.status = Some(status_tx);
    opts.hangup = Some(hangup_rx);
    let printer = tokio::spawn(async move {
        let mut shown_numbers = false;
        while let Some(s) = status_rx.recv().await {
            if !shown_numbers && !s.safety_number.is_empty() {
                shown_numbers = true;
                eprintln!(
                    "safety number {}  (compare it with the other person once; it only changes if a key does)",
                    s.safety_number
                );
            }
            print_status(&s);
        }
    });
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nhanging up…");
            let _ = hangup_tx.send(true);
        }
    });
    let result = run(opts).await;
    ctrl_c.abort();
    printer.abort();
    result
}

async fn endpoint(profile: Profile) -> anyhow::Result<Endpoint> {
    let account = profile
        .account()
        .cloned()
        .context("no account in this profile: run `sotto account create @you --server ADDR --pin FINGERPRINT` first")?;
    let server = tokio::net::lookup_host(&account.server)
        .await
        .with_context(|| format!("resolving {}", account.server))?
        .next()
        .with_context(|| format!("{} has no address", account.server))?;
    let pin: Pin = account.pin.parse()?;
    let handle = Handle::parse(&account.handle)?;
    Ok(Endpoint::open(server, &pin, handle, profile).await?)
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let dir = cli.profile.unwrap_or_else(default_profile);
    let mut profile =
        Profile::open(&dir).with_context(|| format!("opening profile {}", dir.display()))?;
    match cli.command {
        Command::Account {
            command:
                AccountCommand::Create {
                    handle,
                    server,
                    pin,
                },
        } => {
            let handle = Handle::parse(&handle)?;
            let _: Pin = pin.parse()?;
            profile.set_account(Account {
                handle: handle.to_string(),
                server: server.clone(),
                pin,
            })?;
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
            media,
        } => {
            let opts = options(&media, video)?;
            let to = Handle::parse(&handle)?;
            let mut ep = endpoint(profile).await?;
            eprintln!("calling {to}…");
            match with_status(opts, |o| async move { ep.call(&to, &o).await }).await {
                Ok(r) => {
                    print_report(&r);
                    Ok(exit_for_end(&r))
                }
                Err(e) => {
                    eprintln!("\n{e}");
                    Ok(exit_for_error(&e))
                }
            }
        }
        Command::Listen {
            auto_answer,
            video,
            once,
            media,
        } => {
            let opts = options(&media, video)?;
            // Find out now, not when someone calls, that a device is missing.
            if let Err(e) = sotto_client::call::check_devices(&opts) {
                eprintln!("sotto: {e}");
                return Ok(exit_for_error(&e));
            }
            let mut ep = endpoint(profile).await?;
            eprintln!("{} listening for calls (Ctrl-C to stop)…", ep.handle);
            loop {
                let (call, from) = tokio::select! {
                    c = ep.next_call(Duration::from_secs(24 * 3600)) => c?,
                    _ = tokio::signal::ctrl_c() => return Ok(0),
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
                        exit_for_end(&r)
                    }
                    Err(e) => {
                        eprintln!("\n{e}");
                        exit_for_error(&e)
                    }
                };
                if once {
                    return Ok(code);
                }
            }
        }
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
            let h = Handle::parse(&handle)?;
            let mut ep = endpoint(profile).await?;
            ep.verify_contact(&h).await?;
            println!("{h} verified: its current identity key is trusted");
            Ok(0)
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,rtc_dtls=error,rtc_ice=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sotto: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("sotto: {e:#}");
            ExitCode::from(1)
        }
    }
}
