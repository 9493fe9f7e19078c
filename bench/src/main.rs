//! `sotto-bench`: places real calls between headless clients and measures them.
//!
//! Until the call demo lands, its one job is `selfcheck`: an end-to-end encryption
//! self-check with real openmls members and SFrame frames, printing each step.

mod demo;
mod selfcheck;
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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Selfcheck { frames } => selfcheck::run(frames),
        Command::Demo { seconds } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "warn,rtc_dtls=error,rtc_ice=error".into()),
                )
                .with_writer(std::io::stderr)
                .init();
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
    }
}
