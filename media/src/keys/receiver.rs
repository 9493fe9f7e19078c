//! Decrypting other members' frames: current epoch, previous epoch for a grace period,
//! per-KID replay windows.

use std::{collections::HashMap, time::Instant};

use sotto_wire::{ContextId, SframeHeader};

use super::{EpochKeys, KeyConfig, KeyScheduleError};
use crate::sframe::{DecryptKey, SframeError};

/// Why a frame was rejected. Frames rejected for any reason never reach a decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RejectReason {
    /// Not an SFrame: the header is truncated or garbage.
    #[error("malformed SFrame")]
    Malformed,
    /// Shorter than its header plus an authentication tag: cut off in transit or on purpose.
    /// (A cut that leaves a tag's worth of bytes fails authentication instead.)
    #[error("truncated SFrame ({len} bytes)")]
    Truncated {
        /// The frame's length.
        len: usize,
    },
    /// The KID names a context or epoch this receiver has no keys for (for example an
    /// epoch from before it joined).
    #[error("unknown KID")]
    UnknownKid,
    /// The KID names an epoch whose keys were erased after the grace period.
    #[error("epoch {epoch} has expired")]
    EpochExpired {
        /// The expired epoch.
        epoch: u64,
    },
    /// The KID names a leaf index that is not a member of that epoch.
    #[error("sender index is not in the group")]
    SenderNotInGroup,
    /// The tag did not verify: tampered, truncated, forged, or keys that differ.
    #[error("authentication failed")]
    AuthenticationFailed,
    /// The counter was seen before or is too old for the replay window.
    #[error("replayed frame (counter {ctr})")]
    Replay {
        /// The frame's counter.
        ctr: u64,
    },
}

/// A rejected frame: who it claimed to come from and why it was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("frame from sender {} (KID {}) rejected: {reason}", fmt_opt(.sender), fmt_kid(.kid))]
pub struct DecryptError {
    /// The sender's leaf index as the KID claims it, when the KID could be read.
    pub sender: Option<u32>,
    /// The KID, when the header could be read.
    pub kid: Option<u64>,
    /// Why.
    pub reason: RejectReason,
}

fn fmt_opt(v: &Option<u32>) -> String {
    v.map_or_else(|| "?".to_owned(), |v| v.to_string())
}

fn fmt_kid(v: &Option<u64>) -> String {
    v.map_or_else(|| "?".to_owned(), |v| format!("{v:#x}"))
}

/// What an accepted frame was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceivedFrame {
    /// The sender's leaf index, authenticated by the frame's key.
    pub sender: u32,
    /// The track kind.
    pub context: ContextId,
    /// The MLS epoch the frame was sent in.
    pub epoch: u64,
    /// The frame counter.
    pub ctr: u64,
}

struct EpochSlot {
    keys: EpochKeys,
    /// Keys derived so far, by KID, each with its replay window.
    by_kid: HashMap<u64, DecryptKey>,
}

impl EpochSlot {
    fn new(keys: EpochKeys) -> Self {
        Self {
            keys,
            by_kid: HashMap::new(),
        }
    }
}

/// The receiving side of the key schedule: a sans-IO store, time passed in.
///
/// Holds the current epoch and, for [`KeyConfig::grace`] after a rotation, the previous one.
/// Keys per KID are derived on first use (after checking the sender is a member) and
/// cached; erasing an epoch drops (and zeroizes) all of its keys.
pub struct ReceiverKeys {
    config: KeyConfig,
    first_epoch: u64,
    newest_erased: Option<u64>,
    current: EpochSlot,
    previous: Option<(EpochSlot, Instant)>,
}

impl ReceiverKeys {
    /// A store starting at `keys` (the epoch we joined in, or the group's first).
    pub fn new(keys: EpochKeys) -> Self {
        Self {
            config: keys.config().clone(),
            first_epoch: keys.epoch(),
            newest_erased: None,
            current: EpochSlot::new(keys),
            previous: None,
        }
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.current.keys.epoch()
    }

    /// The current epoch's keys (membership, KIDs).
    pub fn current(&self) -> &EpochKeys {
        &self.current.keys
    }

    /// Moves to a newer epoch at `now`. The old current epoch stays readable until
    /// `now + grace`; an older previous epoch is erased at once.
    pub fn advance(&mut self, keys: EpochKeys, now: Instant) -> Result<(), KeyScheduleError> {
        if keys.epoch() <= self.epoch() {
            return Err(KeyScheduleError::EpochNotNewer {
                current: self.epoch(),
                new: keys.epoch(),
            });
        }
        let old = std::mem::replace(&mut self.current, EpochSlot::new(keys));
        if let Some((erased, _)) = self.previous.replace((old, now + self.config.grace)) {
            self.note_erased(erased.keys.epoch());
        }
        Ok(())
    }

    /// When [`Self::handle_timeout`] next has work: the end of the grace period.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.previous.as_ref().map(|(_, at)| *at)
    }

    /// Erases the previous epoch's keys once its grace period has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.previous.as_ref().is_some_and(|(_, at)| now >= *at)
            && let Some((slot, _)) = self.previous.take()
        {
            self.note_erased(slot.keys.epoch());
        }
    }

    fn note_erased(&mut self, epoch: u64) {
        self.newest_erased = Some(self.newest_erased.map_or(epoch, |e| e.max(epoch)));
    }

    /// Authenticates and decrypts `frame` into `out` at time `now`.
    ///
    /// On error `out` is empty and the error names the claimed sender and the reason; the
    /// store's state is unchanged except that an expired epoch may be erased.
    pub fn decrypt(
        &mut self,
        frame: &[u8],
        metadata: &[u8],
        out: &mut Vec<u8>,
        now: Instant,
    ) -> Result<ReceivedFrame, DecryptError> {
        out.clear();
        let (key, from) = self.key_for(frame, now)?;
        let got = key
            .decrypt_into(frame, metadata, out)
            .map_err(|e| from.rejected(e))?;
        Ok(from.received(got.ctr))
    }

    /// Like [`Self::decrypt`], in `frame`'s own buffer (no copy): the plaintext is
    /// `frame[range]`. For receivers that own the reassembled frame.
    pub fn decrypt_in_place(
        &mut self,
        frame: &mut [u8],
        metadata: &[u8],
        now: Instant,
    ) -> Result<(ReceivedFrame, std::ops::Range<usize>), DecryptError> {
        let (key, from) = self.key_for(frame, now)?;
        let (got, range) = key
            .decrypt_in_place(frame, metadata)
            .map_err(|e| from.rejected(e))?;
        Ok((from.received(got.ctr), range))
    }

    /// The key for `frame`'s KID (derived on first use) and who the KID says sent it,
    /// after checking the KID's epoch is held and its sender is a member.
    fn key_for(
        &mut self,
        frame: &[u8],
        now: Instant,
    ) -> Result<(&mut DecryptKey, Claimed), DecryptError> {
        self.handle_timeout(now);
        let reject = |sender, kid, reason| DecryptError {
            sender,
            kid,
            reason,
        };

        let (header, header_len) =
            SframeHeader::parse(frame).map_err(|_| reject(None, None, RejectReason::Malformed))?;
        let kid = header.kid;
        if frame.len() < header_len + self.config.suite.tag_len() {
            return Err(reject(
                None,
                Some(kid),
                RejectReason::Truncated { len: frame.len() },
            ));
        }

        let parts = self
            .config
            .layout
            .parse(kid)
            .map_err(|_| reject(None, Some(kid), RejectReason::UnknownKid))?;
        let sender = Some(parts.sender_index);
        let missing = self.classify_missing_epoch(parts.epoch_bits);

        let slot = if parts.epoch_bits == self.config.layout.epoch_tag(self.epoch()) {
            &mut self.current
        } else {
            match &mut self.previous {
                Some((slot, _))
                    if self.config.layout.epoch_tag(slot.keys.epoch()) == parts.epoch_bits =>
                {
                    slot
                }
                _ => return Err(reject(sender, Some(kid), missing)),
            }
        };
        let epoch = slot.keys.epoch();
        if !slot.keys.is_member(parts.sender_index) {
            return Err(reject(sender, Some(kid), RejectReason::SenderNotInGroup));
        }
        let key = match slot.by_kid.entry(kid) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let key = slot
                    .keys
                    .decrypt_key(parts.context, parts.sender_index)
                    .map_err(|_| reject(sender, Some(kid), RejectReason::UnknownKid))?;
                v.insert(key)
            }
        };
        Ok((
            key,
            Claimed {
                sender: parts.sender_index,
                context: parts.context,
                epoch,
                kid,
            },
        ))
    }

    /// A KID whose epoch bits match neither held epoch: expired if it names an epoch we
    /// held and erased, otherwise unknown (before we joined, or not yet known to us).
    fn classify_missing_epoch(&self, epoch_bits: u64) -> RejectReason {
        let layout = &self.config.layout;
        let modulus = 1u64
            .checked_shl(u32::from(layout.epoch_bits()))
            .unwrap_or(0);
        let current = self.epoch();
        let back = if modulus == 0 {
            current.wrapping_sub(epoch_bits)
        } else {
            (layout.epoch_tag(current) + modulus - epoch_bits) % modulus
        };
        match current.checked_sub(back) {
            Some(epoch)
                if epoch >= self.first_epoch && self.newest_erased.is_some_and(|e| epoch <= e) =>
            {
                RejectReason::EpochExpired { epoch }
            }
            _ => RejectReason::UnknownKid,
        }
    }
}

/// Who a frame's KID says sent it, before the frame authenticated.
#[derive(Clone, Copy)]
struct Claimed {
    sender: u32,
    context: ContextId,
    epoch: u64,
    kid: u64,
}

impl Claimed {
    fn rejected(self, e: SframeError) -> DecryptError {
        let reason = match e {
            SframeError::Replay { ctr } => RejectReason::Replay { ctr },
            SframeError::Malformed(_) => RejectReason::Malformed,
            _ => RejectReason::AuthenticationFailed,
        };
        DecryptError {
            sender: Some(self.sender),
            kid: Some(self.kid),
            reason,
        }
    }

    fn received(self, ctr: u64) -> ReceivedFrame {
        ReceivedFrame {
            sender: self.sender,
            context: self.context,
            epoch: self.epoch,
            ctr,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::keys::{FrameEncryptor, epoch::tests::FixedExporter};

    fn epoch(n: u64, secret: u8, members: &[u32]) -> EpochKeys {
        EpochKeys::derive(
            &FixedExporter(vec![secret; 16]),
            n,
            members.iter().copied(),
            &KeyConfig::default(),
        )
        .expect("derive")
    }

    #[test]
    fn grace_keeps_previous_epoch_then_erases_it() {
        let t0 = Instant::now();
        let mut alice = FrameEncryptor::new(ContextId::Audio, 0);
        alice.install(&epoch(1, 1, &[0, 1])).expect("install");
        let mut old = Vec::new();
        alice.encrypt(b"", b"old", &mut old).expect("encrypt");

        let mut bob = ReceiverKeys::new(epoch(1, 1, &[0, 1]));
        bob.advance(epoch(2, 2, &[0, 1]), t0).expect("advance");
        assert_eq!(bob.poll_timeout(), Some(t0 + Duration::from_secs(2)));
        let mut out = Vec::new();
        let got = bob
            .decrypt(&old, b"", &mut out, t0 + Duration::from_millis(1500))
            .expect("within grace");
        assert_eq!((got.sender, got.epoch, got.ctr), (0, 1, 0));

        let mut old2 = Vec::new();
        alice
            .encrypt(b"", b"old again", &mut old2)
            .expect("encrypt");
        let err = bob
            .decrypt(&old2, b"", &mut out, t0 + Duration::from_secs(2))
            .expect_err("grace over");
        assert_eq!(err.reason, RejectReason::EpochExpired { epoch: 1 });
        assert_eq!(err.sender, Some(0));
        assert!(out.is_empty());
        assert_eq!(bob.poll_timeout(), None);
    }

    #[test]
    fn reasons_are_specific() {
        let t0 = Instant::now();
        let keys = epoch(3, 9, &[0, 2]);
        let mut bob = ReceiverKeys::new(epoch(3, 9, &[0, 2]));
        let mut out = Vec::new();
        let err = |r: Result<ReceivedFrame, DecryptError>| r.expect_err("must be rejected").reason;

        assert_eq!(
            err(bob.decrypt(&[], b"", &mut out, t0)),
            RejectReason::Malformed
        );
        // Index 1 is not a member: its frame (encrypted with a key made for it elsewhere)
        // is refused before any key is derived.
        let outsider = EpochKeys::derive(
            &FixedExporter(vec![9; 16]),
            3,
            [0, 1, 2],
            &KeyConfig::default(),
        )
        .expect("derive");
        let mut enc = FrameEncryptor::new(ContextId::Audio, 1);
        enc.install(&outsider).expect("install");
        let mut f = Vec::new();
        enc.encrypt(b"", b"x", &mut f).expect("encrypt");
        assert_eq!(
            err(bob.decrypt(&f, b"", &mut out, t0)),
            RejectReason::SenderNotInGroup
        );

        // A frame from an epoch we never held: unknown.
        let mut enc = FrameEncryptor::new(ContextId::Audio, 0);
        enc.install(&epoch(2, 9, &[0, 2])).expect("install");
        enc.encrypt(b"", b"x", &mut f).expect("encrypt");
        assert_eq!(
            err(bob.decrypt(&f, b"", &mut out, t0)),
            RejectReason::UnknownKid
        );

        // Unknown context bits.
        let bogus_kid = SframeHeader {
            kid: 7 << 22,
            ctr: 0,
        };
        let mut b = [0u8; 32];
        let n = bogus_kid.encode(&mut b).expect("encode");
        assert_eq!(
            err(bob.decrypt(&b[..n + 16], b"", &mut out, t0)),
            RejectReason::UnknownKid
        );
        assert_eq!(
            err(bob.decrypt(&b[..n + 15], b"", &mut out, t0)),
            RejectReason::Truncated { len: n + 15 }
        );

        // Right KID, different secret: authentication.
        let mut enc = FrameEncryptor::new(ContextId::Video, 2);
        enc.install(&epoch(3, 8, &[0, 2])).expect("install");
        enc.encrypt(b"", b"x", &mut f).expect("encrypt");
        assert_eq!(
            err(bob.decrypt(&f, b"", &mut out, t0)),
            RejectReason::AuthenticationFailed
        );

        // Replay.
        let mut enc = FrameEncryptor::new(ContextId::Video, 2);
        enc.install(&keys).expect("install");
        enc.encrypt(b"", b"x", &mut f).expect("encrypt");
        bob.decrypt(&f, b"", &mut out, t0).expect("first time");
        assert_eq!(out, b"x");
        assert_eq!(
            err(bob.decrypt(&f, b"", &mut out, t0)),
            RejectReason::Replay { ctr: 0 }
        );
    }

    #[test]
    fn epochs_only_move_forward_and_counters_never_repeat_within_one() {
        let mut bob = ReceiverKeys::new(epoch(4, 1, &[0]));
        assert!(bob.advance(epoch(4, 1, &[0]), Instant::now()).is_err());
        let mut enc = FrameEncryptor::new(ContextId::Audio, 0);
        enc.install(&epoch(4, 1, &[0])).expect("install");
        let mut f = Vec::new();
        assert_eq!(enc.encrypt(b"", b"a", &mut f).expect("enc"), 0);
        enc.install(&epoch(4, 1, &[0]))
            .expect("same epoch is a no-op");
        assert_eq!(enc.encrypt(b"", b"b", &mut f).expect("enc"), 1);
        assert!(enc.install(&epoch(3, 1, &[0])).is_err());
    }
}
