//! MLS for calls (RFC 9420, openmls): a device's credential and KeyPackages, call groups,
//! and their bridge into the SFrame key schedule.
//!
//! Group changes follow the delivery service's epoch fencing: a commit we create stays
//! *pending* until the server accepts it ([`CallGroup::merge_pending`]) or rejects it for a
//! stale epoch ([`CallGroup::discard_pending`]). Incoming commits are validated into a
//! staged state and applied only if they are valid, so a bad message leaves the group as
//! it was.

mod device;
mod group;
pub mod provider;

pub use device::MlsDevice;
pub use group::{CallGroup, Commit, GroupEvent};

use openmls::prelude::Ciphersuite;

/// The ciphersuite of every sotto group (DESIGN §4.2).
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// Why an MLS operation failed. openmls' own errors are kept as the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MlsError {
    /// Bytes from the network are not a well-formed MLS message of the expected kind.
    #[error("malformed MLS message: {0}")]
    Malformed(String),
    /// A KeyPackage failed verification (bad signature, wrong suite or version).
    #[error("invalid KeyPackage: {0}")]
    InvalidKeyPackage(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A Welcome could not be used to join (not for us, tampered, unknown KeyPackage).
    #[error("cannot join from Welcome: {0}")]
    Join(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A handshake message was rejected (wrong epoch, bad signature, not a member...).
    #[error("rejected MLS message: {0}")]
    Rejected(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A local operation failed (creating a group, a commit, a KeyPackage, storage).
    #[error("MLS {op} failed: {source}")]
    Local {
        /// What we were doing.
        op: &'static str,
        /// openmls' error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The group is no longer active for us (we were removed).
    #[error("not a member of this group any more")]
    Inactive,
}

impl MlsError {
    pub(crate) fn local(
        op: &'static str,
    ) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> Self {
        move |source| Self::Local { op, source }
    }
}

/// Boxes any openmls error for [`MlsError`].
pub(crate) fn boxed<E: std::error::Error + Send + Sync + 'static>(
    e: E,
) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(e)
}
