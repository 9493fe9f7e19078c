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

pub use device::{MlsDevice, StagedJoin};
pub use group::{CallGroup, Commit, GroupEvent, StagedMessage};

use openmls::prelude::{BasicCredential, Ciphersuite, Credential, Member};

/// The ciphersuite of every sotto group (DESIGN §4.2).
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// Who a member says it is: the handle its basic credential names and the signature key
/// it signs with. Nothing here is believed until it has been compared with the
/// directory's identity key for the handle and the key pinned for that contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberCredential {
    /// The member's leaf index (`u32::MAX` for a KeyPackage not yet in a group).
    pub leaf: u32,
    /// The identity bytes of its credential: a handle, if the member is honest. Not
    /// validated: compare them, never display them unchecked.
    pub identity: Vec<u8>,
    /// Its signature public key: sotto binds it to the account's Ed25519 identity key.
    pub signature_key: Vec<u8>,
}

impl MemberCredential {
    pub(crate) fn of_leaf(leaf: u32, credential: &Credential, signature_key: &[u8]) -> Self {
        let identity = BasicCredential::try_from(credential.clone())
            .map(|b| b.identity().to_vec())
            .unwrap_or_default();
        Self {
            leaf,
            identity,
            signature_key: signature_key.to_vec(),
        }
    }

    pub(crate) fn of_member(m: &Member) -> Self {
        Self::of_leaf(m.index.u32(), &m.credential, &m.signature_key)
    }
}

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
