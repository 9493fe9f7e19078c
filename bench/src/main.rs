//! `sotto-bench`: places real calls between headless clients and measures them.
//!
//! Until the call demo lands, its one job is `selfcheck`: an end-to-end encryption
//! self-check with real openmls members and SFrame frames, printing each step.

mod selfcheck;

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
    /// End-to-end encryption self-check: a 3-member MLS group exchanging SFrame-encrypted
    /// frames, a removal, and a late joiner. Exits non-zero if any check fails.
    Selfcheck {
        /// Frames each member sends per phase (20 ms audio frames).
        #[arg(long, default_value_t = 50)]
        frames: u32,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Selfcheck { frames } => selfcheck::run(frames),
    }
}
