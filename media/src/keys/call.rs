//! One participant's keys for one call: an encryptor per media context and the receiver
//! store, rotated together on every epoch change.

use std::time::Instant;

use sotto_wire::ContextId;

use super::{
    DecryptError, EncryptError, EpochKeys, FrameEncryptor, KeyScheduleError, ReceivedFrame,
    ReceiverKeys,
};

/// Our sending keys (one per context, so audio and video have separate counters) and our
/// receiving store, kept on the same epoch.
pub struct CallKeys {
    tx: [FrameEncryptor; 4],
    rx: ReceiverKeys,
}

impl CallKeys {
    /// Keys for leaf `own_index`, starting at `keys`.
    pub fn new(own_index: u32, keys: EpochKeys) -> Result<Self, KeyScheduleError> {
        let mut tx = ContextId::ALL.map(|c| FrameEncryptor::new(c, own_index));
        for enc in &mut tx {
            enc.install(&keys)?;
        }
        Ok(Self {
            tx,
            rx: ReceiverKeys::new(keys),
        })
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.rx.epoch()
    }

    /// The receiver store (current epoch's membership and KIDs).
    pub fn receiver(&self) -> &ReceiverKeys {
        &self.rx
    }

    /// Moves sending and receiving to a newer epoch at `now`; the previous epoch stays
    /// readable for the grace period.
    pub fn advance(&mut self, keys: EpochKeys, now: Instant) -> Result<(), KeyScheduleError> {
        if keys.epoch() <= self.rx.epoch() {
            return Err(KeyScheduleError::EpochNotNewer {
                current: self.rx.epoch(),
                new: keys.epoch(),
            });
        }
        for enc in &mut self.tx {
            enc.install(&keys)?;
        }
        self.rx.advance(keys, now)
    }

    /// Encrypts one of our `context` frames; returns its counter.
    pub fn encrypt(
        &mut self,
        context: ContextId,
        metadata: &[u8],
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<u64, EncryptError> {
        self.tx[context as usize].encrypt(metadata, payload, out)
    }

    /// Authenticates and decrypts another member's frame.
    pub fn decrypt(
        &mut self,
        frame: &[u8],
        metadata: &[u8],
        out: &mut Vec<u8>,
        now: Instant,
    ) -> Result<ReceivedFrame, DecryptError> {
        self.rx.decrypt(frame, metadata, out, now)
    }

    /// When [`Self::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.rx.poll_timeout()
    }

    /// Erases keys whose grace has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.rx.handle_timeout(now);
    }
}
