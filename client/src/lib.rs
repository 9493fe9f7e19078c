//! The sotto client: everything a device needs to place and take encrypted calls.
//!
//! - [`mls`]: the device's MLS identity and call groups (openmls), and the bridge from a
//!   group's exporter to the SFrame key schedule in `sotto-media`. Every call, one-to-one
//!   included, is an MLS group.
//! - [`session`]: the sans-IO session core every call runs on (one-to-one peer to peer,
//!   one-to-one through the SFU, rooms): membership, epochs, keys and the str0m media link.
//! - [`room`]: the thin tokio shell around it, with the devices, codecs and mixer;
//!   [`call`] rings and answers one-to-one calls and then runs them on the same shell.
//! - [`verify`]: verification codes people compare out of band.
//!
//! This crate may derive media keys; the SFU never links it.

pub mod bitrate;
pub mod call;
mod call_room;
pub mod codec;
pub mod devices;
pub mod inbox;
pub mod media_sockets;
pub mod mls;
pub mod panics;
pub mod pipeline;
pub mod profile;
pub mod room;
pub mod sdp;
pub mod session;
pub mod signaling;
pub mod stun;
pub mod transport;
pub mod video;

pub mod verify;
