//! The media pipeline of a call or room, sans-IO: bytes and time in, PCM out (DESIGN §3).
//!
//! - [`recv`]: one [`AudioChain`] per remote sender: its jitter buffer and Opus decoder,
//!   dormant while the sender is silent (DTX), so silence is not concealed frame by frame.
//! - [`mixer`]: the [`Mixer`] sums the active chains; the speaker's callback pulls it 10 ms
//!   at a time, so the device clock drives playout.
//!
//! Nothing here reads a clock or awaits: every call takes the `Instant` it happens at, so
//! tests run whole conversations on a virtual clock.

pub mod mixer;
pub mod recv;
#[cfg(test)]
mod testing;

pub use mixer::{Mixer, PULL_SAMPLES};
pub use recv::{
    AudioChain, ChainStats, DORMANT_AFTER, LONE_PACKET_AFTER, MAX_PLAYED_STAMPS, PlayedStamp,
};
