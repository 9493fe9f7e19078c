//! The signaling protocol of sotto, spoken over QUIC (ALPN `sotto/1`) between clients,
//! SFU nodes and the signaling service.
//!
//! - [`handle`]: user handles (`@alice`), validated and normalized here so client and
//!   server agree byte for byte.
//! - [`message`]: every message, as serde types. Enums only ever grow at the end, so an
//!   old peer decodes what it knows; the version handshake ([`ClientMsg::Hello`]) refuses
//!   peers of another protocol version outright.
//! - [`frame`]: how messages travel: a 4-byte big-endian length, then the postcard
//!   encoding, at most [`frame::MAX_FRAME_LEN`] bytes. Oversized or undecodable frames are
//!   errors, never panics.
//!
//! This crate holds no server storage and no key material, so clients and SFUs can link it
//! without widening what they can see.

pub mod frame;
pub mod handle;
pub mod message;

pub use frame::{FrameError, MAX_FRAME_LEN, codec, decode, encode};
pub use handle::{Handle, HandleError};
pub use message::*;

/// ALPN identifier of the protocol on QUIC.
pub const ALPN: &[u8] = b"sotto/1";

/// The protocol version this crate speaks. Version 2: per-message acknowledgements,
/// validated handshakes (GroupInfo with group creation and commits), KeyPackage
/// replacement and top-up.
pub const PROTOCOL_VERSION: u16 = 2;
