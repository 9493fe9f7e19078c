//! Encrypting our own frames under the current epoch.

use sotto_wire::ContextId;

use super::{EpochKeys, KeyScheduleError};
use crate::sframe::{EncryptKey, SframeError};

/// Why a frame of ours was not encrypted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncryptError {
    /// No epoch installed yet: nothing may be sent before keys exist.
    #[error("no epoch keys installed")]
    NoKey,
    /// 2^64 frames under one key: install a new epoch.
    #[error("frame counter exhausted for epoch {epoch}")]
    CounterExhausted {
        /// The epoch whose counter ran out.
        epoch: u64,
    },
    /// SFrame failed.
    #[error(transparent)]
    Sframe(#[from] SframeError),
}

/// Encrypts one of our tracks (one context) with our sender key of the current epoch.
///
/// The counter starts at zero in every epoch (each epoch is a new key, so no nonce
/// repeats) and installing the same epoch twice is a no-op, so a counter is never reused
/// under one key.
pub struct FrameEncryptor {
    context: ContextId,
    own_index: u32,
    key: Option<(u64, EncryptKey)>,
    next_ctr: u64,
}

impl FrameEncryptor {
    /// An encryptor for our leaf `own_index`'s `context` track; it needs [`Self::install`]
    /// before it can encrypt.
    pub fn new(context: ContextId, own_index: u32) -> Self {
        Self {
            context,
            own_index,
            key: None,
            next_ctr: 0,
        }
    }

    /// Switches to the keys of a newer epoch.
    pub fn install(&mut self, keys: &EpochKeys) -> Result<(), KeyScheduleError> {
        match &self.key {
            Some((epoch, _)) if *epoch == keys.epoch() => return Ok(()),
            Some((epoch, _)) if *epoch > keys.epoch() => {
                return Err(KeyScheduleError::EpochNotNewer {
                    current: *epoch,
                    new: keys.epoch(),
                });
            }
            _ => {}
        }
        let key = keys.encrypt_key(self.context, self.own_index)?;
        self.key = Some((keys.epoch(), key));
        self.next_ctr = 0;
        Ok(())
    }

    /// The epoch frames are encrypted in, if any.
    pub fn epoch(&self) -> Option<u64> {
        self.key.as_ref().map(|(e, _)| *e)
    }

    /// Encrypts `payload` (authenticating `metadata`) into `out`; returns the counter used.
    pub fn encrypt(
        &mut self,
        metadata: &[u8],
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<u64, EncryptError> {
        let (epoch, key) = self.key.as_ref().ok_or(EncryptError::NoKey)?;
        let ctr = self.next_ctr;
        self.next_ctr = ctr
            .checked_add(1)
            .ok_or(EncryptError::CounterExhausted { epoch: *epoch })?;
        key.encrypt_into(ctr, metadata, payload, out)?;
        Ok(ctr)
    }
}
