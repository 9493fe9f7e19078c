//! Media for sotto: end-to-end encryption of frames and the pieces of the media pipeline
//! that the client and the bench share.
//!
//! - [`sframe`]: RFC 9605 SFrame encryption of whole encoded frames, behind our own small
//!   API (the `sframe` crate does the framing; [`sframe::backend`] the cipher work).
//! - [`keys`]: the MLS → SFrame key schedule of RFC 9605 §5.2: per-epoch secrets from the
//!   MLS exporter, per-sender keys by leaf index, and a receiver key store with an epoch
//!   grace period and per-sender replay windows.
//! - [`payload`]: what goes inside an SFrame (an optional capture stamp, then codec bytes).
//! - [`jitter`]: the adaptive jitter buffer, sans-IO.
//! - [`synth`]: synthetic sources and sinks with frame stamps, for headless runs.
//!
//! This crate can derive media keys, so the SFU must never depend on it; the keyless wire
//! formats the SFU needs live in `sotto-wire`.

pub mod jitter;
pub mod keys;
pub mod payload;
pub mod sframe;
pub mod synth;

pub use sotto_wire::{ContextId, KidLayout};
