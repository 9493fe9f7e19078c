//! The sotto client: everything a device needs to place and take encrypted calls.
//!
//! - [`mls`]: the device's MLS identity and call groups (openmls), and the bridge from a
//!   group's exporter to the SFrame key schedule in `sotto-media`. Every call, one-to-one
//!   included, is an MLS group.
//! - [`verify`]: verification codes people compare out of band.

//!
//! Capture, codecs, the WebRTC transport, playout and the `sotto` CLI join as the calling
//! features land. This crate may derive media keys; the SFU never links it.

pub mod bitrate;
pub mod call;
pub mod codec;
pub mod devices;
pub mod feedback;
pub mod inbox;
pub mod media_sockets;
pub mod mls;
pub mod panics;
pub mod pipeline;
pub mod profile;
mod relayed;
pub mod room;
pub mod sdp;
pub mod session;
pub mod signaling;
pub mod transport;
pub mod video;

pub mod verify;
