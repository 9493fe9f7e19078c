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

    /// The first half of an epoch transition: frames of the newer epoch `keys` decrypt
    /// from `now` on, while we keep sending under the epoch we send in until
    /// [`Self::send_current`] (so members still behind can read us). If we were still
    /// sending under an older epoch than the current one, we move to the current one
    /// first: only one epoch back stays readable for others.
    pub fn receive_epoch(&mut self, keys: EpochKeys, now: Instant) -> Result<(), KeyScheduleError> {
        if keys.epoch() <= self.rx.epoch() {
            return Err(KeyScheduleError::EpochNotNewer {
                current: self.rx.epoch(),
                new: keys.epoch(),
            });
        }
        self.send_current()?;
        self.rx.advance(keys, now)
    }

    /// The second half: our frames go out under the current epoch from now on.
    pub fn send_current(&mut self) -> Result<(), KeyScheduleError> {
        for enc in &mut self.tx {
            enc.install(self.rx.current())?;
        }
        Ok(())
    }

    /// The epoch our frames are encrypted in.
    pub fn send_epoch(&self) -> Option<u64> {
        self.tx[0].epoch()
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

    /// Like [`Self::decrypt`], in the frame's own buffer: the plaintext is `frame[range]`.
    pub fn decrypt_in_place(
        &mut self,
        frame: &mut [u8],
        metadata: &[u8],
        now: Instant,
    ) -> Result<(ReceivedFrame, std::ops::Range<usize>), DecryptError> {
        self.rx.decrypt_in_place(frame, metadata, now)
    }

    /// Like [`Self::advance`] after we rejoined the group by external commit, which may
    /// have put us at another leaf: our frames go out under `own_index` from now on.
    pub fn rejoined(
        &mut self,
        own_index: u32,
        keys: EpochKeys,
        now: Instant,
    ) -> Result<(), KeyScheduleError> {
        self.tx = ContextId::ALL.map(|c| FrameEncryptor::new(c, own_index));
        self.advance(keys, now)
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::{
        keys::{KeyConfig, epoch::tests::FixedExporter},
        sframe::CipherSuite,
    };

    fn epoch_keys(suite: CipherSuite, epoch: u64, secret: u8) -> EpochKeys {
        let config = KeyConfig {
            suite,
            ..KeyConfig::default()
        };
        // The exporter yields AEAD.Nk bytes: 16, 48 for the CTR suites, 32 for AES-256.
        let exporter = FixedExporter((secret..secret + 16).collect());
        EpochKeys::derive(&exporter, epoch, [0, 1], &config).expect("derive")
    }

    /// Sends one frame per context from `from` to `to` and checks each arrives intact,
    /// attributed to `from_index`, in `epoch`.
    fn exchange(from: &mut CallKeys, from_index: u32, to: &mut CallKeys, epoch: u64, now: Instant) {
        let mut wire = Vec::new();
        let mut plain = Vec::new();
        for context in ContextId::ALL {
            let payload = format!("frame from {from_index} on {context:?} in epoch {epoch}");
            let ctr = from
                .encrypt(context, b"rtp", payload.as_bytes(), &mut wire)
                .expect("encrypt");
            let got = to.decrypt(&wire, b"rtp", &mut plain, now).expect("decrypt");
            assert_eq!(
                got,
                ReceivedFrame {
                    sender: from_index,
                    context,
                    epoch,
                    ctr
                }
            );
            assert_eq!(plain, payload.as_bytes());
        }
    }

    #[test]
    fn two_members_round_trip_with_every_suite() {
        let t0 = Instant::now();
        for suite in CipherSuite::ALL {
            let mut alice = CallKeys::new(0, epoch_keys(suite, 1, 10))
                .unwrap_or_else(|e| panic!("{suite:?}: member 0 keys: {e}"));
            let mut bob = CallKeys::new(1, epoch_keys(suite, 1, 10))
                .unwrap_or_else(|e| panic!("{suite:?}: member 1 keys: {e}"));
            exchange(&mut alice, 0, &mut bob, 1, t0);
            exchange(&mut bob, 1, &mut alice, 1, t0);

            // A transition in two halves: Bob reads epoch 2 at once, Alice keeps
            // sending under 1 (still readable for Bob) until she switches.
            bob.receive_epoch(epoch_keys(suite, 2, 50), t0)
                .expect("receive");
            assert_eq!(bob.send_epoch(), Some(1));
            exchange(&mut alice, 0, &mut bob, 1, t0);
            exchange(&mut bob, 1, &mut alice, 1, t0);
            alice
                .receive_epoch(epoch_keys(suite, 2, 50), t0)
                .expect("receive");
            bob.send_current().expect("switch");
            exchange(&mut bob, 1, &mut alice, 2, t0);
            alice.send_current().expect("switch");
            exchange(&mut alice, 0, &mut bob, 2, t0);
            // A rotation moves both directions to the new sender keys.
            alice
                .advance(epoch_keys(suite, 3, 70), t0)
                .expect("advance");
            bob.advance(epoch_keys(suite, 3, 70), t0).expect("advance");
            exchange(&mut alice, 0, &mut bob, 3, t0);
            exchange(&mut bob, 1, &mut alice, 3, t0);
        }
    }
}
