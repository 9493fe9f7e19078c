//! The sotto SFU: a selective forwarding unit for group calls that forwards SFrame-encrypted
//! media it cannot decrypt.
//!
//! It reads only what it needs to forward well: RTP headers and header extensions (audio
//! level, frame marking, transport-wide sequence numbers) and the SFrame header's KID,
//! which needs no key. It holds no keys and cannot derive any: it depends on keyless crates
//! only (`sotto-wire`, `sotto-proto`, `sotto-signaling-client`, str0m for hop-by-hop
//! DTLS-SRTP), never on `sotto-media` or openmls, and `tests/tests/sfu_holds_no_keys.rs`
//! checks that structurally.
//!
//! - [`control`]: registration with signaling, joins and removals, the metrics endpoint.
//! - [`worker`]: one forwarding thread: a UDP socket (batched receives, GSO sends) around
//!   one core.
//! - [`gso`]: a batch of datagrams sent grouped per destination into GSO runs.
//! - [`metrics`]: the Prometheus page.
//! - [`core`]: the sans-IO forwarding core (str0m in RTP mode): datagrams and time in,
//!   datagrams and events out.
//! - [`frame_marking`]: RFC 9626 frame marking through str0m without an allocation.
//! - [`join_token`]: verifies the signaling service's signed join tokens (room,
//!   participant, MLS leaf, expiry).
//! - [`sender_binding`]: drops a packet whose KID names a sender other than the participant
//!   it arrived from, so no member can impersonate another's stream at the hop.

pub mod control;
pub mod core;
/// RFC 9626 frame marking through str0m (shared with the room client).
pub use sotto_wire::str0m_ext as frame_marking;
pub mod gso;
pub mod join_token;
pub mod metrics;
pub mod sender_binding;
pub mod worker;
