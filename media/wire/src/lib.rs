//! Keyless media wire formats shared by the clients and the SFU.
//!
//! Everything here can be read without any key material: the SFrame header (RFC 9605 §4.3),
//! the layout of the MLS-derived key id (RFC 9605 §5.2), the RTP payload format that
//! carries encrypted frames ([`rtp_sframe`], draft-ietf-avtcore-rtp-sframe) and the header
//! extensions the SFU forwards on ([`rtp_ext`]: RFC 6464 audio level, RFC 9626 frame
//! marking; [`str0m_ext`] carries it through str0m without an allocation, behind the `str0m`
//! feature). The SFU depends on this crate
//! to bind each packet to its sender; it must never depend on `sotto-media`, which holds the
//! key schedule. Keep this crate free of anything that can derive or hold a key.

pub mod kid;
pub mod rtp_ext;
pub mod rtp_sframe;
pub mod sframe_header;
#[cfg(feature = "str0m")]
pub mod str0m_ext;

pub use kid::{ContextId, KidError, KidLayout, KidParts};
pub use sframe_header::{HeaderError, SframeHeader};
