//! The MLS → SFrame key schedule of RFC 9605 §5.2, as DESIGN §4.2 lays it out.
//!
//! ```text
//! sframe_epoch_secret = MLS-Exporter("SFrame 1.0 Base Key", "", AEAD.Nk)
//! sender_base_key[i]  = HKDF-Expand(sframe_epoch_secret, encode_big_endian(i, 4), AEAD.Nk)
//! KID                 = context ‖ i ‖ (epoch mod 2^E)
//! ```
//! - [`MlsExporter`] is how an MLS group hands us its exporter; the openmls implementation
//!   lives in the client, out of the SFU's reach.
//! - [`EpochKeys`] holds one epoch's secret and membership and derives sender keys.
//! - [`FrameEncryptor`] encrypts one of our own tracks under the current epoch.
//! - [`CallKeys`] bundles one participant's encryptors (one per context) and receiver
//!   store, rotated together.
//! - [`ReceiverKeys`] decrypts everyone else's frames: the current epoch, the previous one
//!   for a grace period (time passed in, never read from a clock), per-KID replay windows,
//!   and errors that name the sender and the reason.

mod call;
mod epoch;
mod receiver;
mod sender;

use std::time::Duration;

pub use call::CallKeys;
pub use epoch::EpochKeys;
pub use receiver::{DecryptError, ReceivedFrame, ReceiverKeys, RejectReason};
pub use sender::{EncryptError, FrameEncryptor};

use crate::sframe::{CipherSuite, DEFAULT_REPLAY_WINDOW};
use sotto_wire::KidLayout;

/// The MLS exporter label RFC 9605 §5.2 fixes for SFrame base keys.
pub const SFRAME_EXPORTER_LABEL: &str = "SFrame 1.0 Base Key";

/// An MLS group's exporter (RFC 9420 §8.5), for its current epoch.
pub trait MlsExporter {
    /// Why an export failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// `MLS-Exporter(label, context, len)` of the current epoch.
    fn export_secret(
        &self,
        label: &str,
        context: &[u8],
        len: usize,
    ) -> Result<Vec<u8>, Self::Error>;
}

/// Parameters both ends of a call must agree on.
#[derive(Clone, Debug)]
pub struct KeyConfig {
    /// SFrame cipher suite; AES_128_GCM_SHA256_128 by default.
    pub suite: CipherSuite,
    /// How a KID is split into context, sender index and epoch bits.
    pub layout: KidLayout,
    /// How long a receiver keeps the previous epoch's keys after a rotation, so frames in
    /// flight across it still decrypt. 2 s by default.
    pub grace: Duration,
    /// Counters remembered per KID for replay protection.
    pub replay_window: usize,
}

impl Default for KeyConfig {
    fn default() -> Self {
        Self {
            suite: CipherSuite::default(),
            layout: KidLayout::default(),
            grace: Duration::from_secs(2),
            replay_window: DEFAULT_REPLAY_WINDOW,
        }
    }
}

/// Why keys for an epoch or a sender could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyScheduleError {
    /// The MLS exporter failed.
    #[error("MLS exporter failed: {0}")]
    Export(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The exporter returned a secret of the wrong length.
    #[error("MLS exporter returned {got} bytes, expected {expected}")]
    ExportLength {
        /// AEAD.Nk of the suite.
        expected: usize,
        /// What came back.
        got: usize,
    },
    /// The leaf index is not a member of this epoch.
    #[error("leaf index {index} is not a member of epoch {epoch}")]
    NotAMember {
        /// The leaf index.
        index: u32,
        /// The epoch.
        epoch: u64,
    },
    /// The KID cannot be built (index too large for the layout).
    #[error(transparent)]
    Kid(#[from] sotto_wire::KidError),
    /// SFrame key derivation failed.
    #[error(transparent)]
    Sframe(#[from] crate::sframe::SframeError),
    /// Epochs only move forward.
    #[error("epoch {new} does not follow epoch {current}")]
    EpochNotNewer {
        /// The epoch held.
        current: u64,
        /// The epoch offered.
        new: u64,
    },
}
