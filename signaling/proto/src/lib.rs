//! The signaling protocol of sotto: the serde message types and their length-prefixed
//! framing, spoken over QUIC (ALPN `sotto/1`) between clients, SFU nodes and the signaling
//! service.
//!
//! This crate is the only thing a client or an SFU needs to talk to signaling: it holds no
//! server storage and no key material, so linking it cannot widen what either can see.
//! The message set grows with the signaling service (accounts, calls, MLS delivery, rooms).
