//! `sotto-bench`: places real calls between headless clients and measures them.
//!
//! Until the call demo lands, its one job is `selfcheck`: an end-to-end encryption
//! self-check with real openmls members and SFrame frames, printing each step.

mod demo;
mod measure;
mod relay;
mod selfcheck;
mod sfu_bench;
mod signaling;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sotto-bench",
    version,
    about = "Measure sotto calls: latency, loss, capacity"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job: a real end-to-end encrypted 1:1 call on loopback (signaling server and
    /// two headless clients in this process) with a latency report. Exits non-zero unless
    /// media flowed both ways.
    Demo {
        /// Call length in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// End-to-end encryption self-check: a 3-member MLS group exchanging SFrame-encrypted
    /// frames, a removal, and a late joiner. Exits non-zero if any check fails.
    Selfcheck {
        /// Frames each member sends per phase (20 ms audio frames).
        #[arg(long, default_value_t = 50)]
        frames: u32,
    },
    /// Signaling figures: logins/s, invite → ringing latency, memory per idle session,
    /// against the real `sotto-signaling` binary in its own process.
    Signaling {
        /// Idle sessions to hold open.
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
        /// Calls measured for invite → ringing latency.
        #[arg(long, default_value_t = 1_000)]
        calls: usize,
        /// Logins in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// The server binary (default: `sotto-signaling` next to this binary).
        #[arg(long)]
        server_bin: Option<std::path::PathBuf>,
    },
    /// SFU figures: a room of load participants (real signaling, MLS, SFrame, WebRTC)
    /// through the in-process SFU; forwarded packets per SFU core-second, forwarding
    /// latency, loss, memory. Writes `sfu-<participants>.json`.
    Sfu {
        /// Participants in the room.
        #[arg(long, default_value_t = 10)]
        participants: usize,
        /// How many of them send video (default: all).
        #[arg(long)]
        video_senders: Option<usize>,
        /// Length of the measurement window in seconds.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Warm-up before the window, in seconds.
        #[arg(long, default_value_t = 3.0)]
        warmup: f64,
        /// SFU forwarding threads.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Slots per participant as AUDIO,VIDEO (default: fits the room).
        #[arg(long, value_parser = parse_slots)]
        slots: Option<(usize, usize)>,
        /// Then run the relay baseline on the same traffic and print SFU ÷ relay.
        #[arg(long)]
        compare_relay: bool,
        /// Where the JSON result goes.
        #[arg(long, default_value = "bench-results")]
        out: std::path::PathBuf,
    },
    /// The bare GSO UDP forwarder the SFU is measured against, on the load participants'
    /// packet trace: forwarded datagrams per relay core-second and latency. Writes
    /// `relay-baseline.json`.
    RelayBaseline {
        /// Endpoints in the room.
        #[arg(long, default_value_t = 10)]
        participants: usize,
        /// How many of them send video (default: all).
        #[arg(long)]
        video_senders: Option<usize>,
        /// Seconds the endpoints send for.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Slots per participant as AUDIO,VIDEO (default: as `sfu` picks them).
        #[arg(long, value_parser = parse_slots)]
        slots: Option<(usize, usize)>,
        /// Where the JSON result goes.
        #[arg(long, default_value = "bench-results")]
        out: std::path::PathBuf,
    },
}

/// `AUDIO,VIDEO` slot counts.
fn parse_slots(s: &str) -> Result<(usize, usize), String> {
    let (a, v) = s.split_once(',').ok_or("expected AUDIO,VIDEO")?;
    let n = |x: &str| x.trim().parse::<usize>().map_err(|e| e.to_string());
    Ok((n(a)?, n(v)?))
}

fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,rtc_dtls=error,rtc_ice=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Selfcheck { frames } => selfcheck::run(frames),
        Command::Demo { seconds } => {
            init_tracing();
            tokio::runtime::Runtime::new()?.block_on(demo::run(seconds))
        }
        Command::Signaling {
            sessions,
            calls,
            concurrency,
            server_bin,
        } => tokio::runtime::Runtime::new()?.block_on(signaling::run(signaling::Options {
            sessions,
            calls,
            concurrency,
            server_bin,
        })),
        Command::Sfu {
            participants,
            video_senders,
            seconds,
            warmup,
            workers,
            slots,
            compare_relay,
            out,
        } => {
            init_tracing();
            sfu_bench::run(sfu_bench::Options {
                participants,
                video_senders,
                seconds,
                warmup,
                workers,
                slots,
                compare_relay,
                out,
            })
        }
        Command::RelayBaseline {
            participants,
            video_senders,
            seconds,
            slots,
            out,
        } => {
            let k = video_senders.unwrap_or(participants).min(participants);
            let slots = slots.unwrap_or_else(|| {
                let (audio, video) = sfu_bench::default_slots(participants);
                (audio, if k == 0 { 0 } else { video })
            });
            relay::run(
                relay::Shape {
                    participants,
                    video_senders: k,
                    audio_slots: slots.0,
                    video_slots: slots.1,
                },
                seconds,
                &out,
            )
        }
    }
}
