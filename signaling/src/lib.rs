//! The sotto signaling service, a QUIC server (quinn + rustls).
//!
//! It brokers who talks to whom and never holds a media key: accounts (a handle and an
//! Ed25519 identity key), challenge–response login and presence, one-to-one call
//! negotiation (ring, accept, decline, SDP/ICE relay), the MLS delivery service
//! (KeyPackages, Welcome and Commit fan-out, epoch fencing) and rooms for group calls with
//! SFU placement. Protocol types live in `sotto-proto` so clients never link this crate's
//! storage.
//!
//! - [`storage`]: what must survive a restart, behind a trait; SQLite by default.

pub mod core;
pub mod server;
pub mod storage;
pub mod tls;
