//! One MLS epoch's SFrame secret and membership.

use std::collections::BTreeSet;

use sotto_wire::ContextId;
use zeroize::Zeroizing;

use super::{KeyConfig, KeyScheduleError, MlsExporter, SFRAME_EXPORTER_LABEL};
use crate::sframe::{DecryptKey, EncryptKey, backend};

/// The SFrame epoch secret of one MLS epoch and who may send in it.
///
/// Membership travels with the secret so that a frame naming a leaf index outside the
/// group is refused before any key is derived for it.
pub struct EpochKeys {
    epoch: u64,
    config: KeyConfig,
    secret: Zeroizing<Vec<u8>>,
    members: BTreeSet<u32>,
}

impl std::fmt::Debug for EpochKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("EpochKeys")
            .field("epoch", &self.epoch)
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

impl EpochKeys {
    /// Exports `sframe_epoch_secret` from the group's current epoch `epoch`, whose members
    /// sit at the leaf indices `members`.
    pub fn derive<E: MlsExporter>(
        exporter: &E,
        epoch: u64,
        members: impl IntoIterator<Item = u32>,
        config: &KeyConfig,
    ) -> Result<Self, KeyScheduleError> {
        let nk = config.suite.key_len();
        let secret = Zeroizing::new(
            exporter
                .export_secret(SFRAME_EXPORTER_LABEL, b"", nk)
                .map_err(|e| KeyScheduleError::Export(Box::new(e)))?,
        );
        if secret.len() != nk {
            return Err(KeyScheduleError::ExportLength {
                expected: nk,
                got: secret.len(),
            });
        }
        Ok(Self {
            epoch,
            config: config.clone(),
            secret,
            members: members.into_iter().collect(),
        })
    }

    /// The MLS epoch number.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The parameters these keys were made with.
    pub fn config(&self) -> &KeyConfig {
        &self.config
    }

    /// Whether `index` may send in this epoch.
    pub fn is_member(&self, index: u32) -> bool {
        self.members.contains(&index)
    }

    /// Leaf indices of the members, ascending.
    pub fn members(&self) -> impl Iterator<Item = u32> + '_ {
        self.members.iter().copied()
    }

    /// The KID of `index`'s `context` track in this epoch.
    pub fn kid(&self, context: ContextId, index: u32) -> Result<u64, KeyScheduleError> {
        Ok(self.config.layout.kid(context, index, self.epoch)?)
    }

    /// `sender_base_key[index] = HKDF-Expand(sframe_epoch_secret, be32(index), AEAD.Nk)`.
    fn sender_base_key(&self, index: u32) -> Result<Zeroizing<Vec<u8>>, KeyScheduleError> {
        if !self.is_member(index) {
            return Err(KeyScheduleError::NotAMember {
                index,
                epoch: self.epoch,
            });
        }
        backend::hkdf_expand(
            self.config.suite.to_crate(),
            &self.secret,
            &index.to_be_bytes(),
            self.config.suite.key_len(),
        )
        .map_err(|e| KeyScheduleError::Sframe(e.into()))
    }

    /// The key `index` encrypts its `context` track with in this epoch.
    pub fn encrypt_key(
        &self,
        context: ContextId,
        index: u32,
    ) -> Result<EncryptKey, KeyScheduleError> {
        let base = self.sender_base_key(index)?;
        Ok(EncryptKey::derive(
            self.config.suite,
            self.kid(context, index)?,
            &base,
        )?)
    }

    /// The key that decrypts `index`'s `context` track in this epoch, with a fresh replay
    /// window.
    pub fn decrypt_key(
        &self,
        context: ContextId,
        index: u32,
    ) -> Result<DecryptKey, KeyScheduleError> {
        let base = self.sender_base_key(index)?;
        Ok(DecryptKey::with_replay_window(
            self.config.suite,
            self.kid(context, index)?,
            &base,
            self.config.replay_window,
        )?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sframe::CipherSuite;

    /// An exporter over a fixed secret, standing in for an MLS group in unit tests.
    pub(crate) struct FixedExporter(pub Vec<u8>);

    impl MlsExporter for FixedExporter {
        type Error = std::convert::Infallible;
        fn export_secret(
            &self,
            label: &str,
            context: &[u8],
            len: usize,
        ) -> Result<Vec<u8>, Self::Error> {
            assert_eq!(label, SFRAME_EXPORTER_LABEL);
            assert!(context.is_empty());
            Ok(self.0.iter().copied().cycle().take(len).collect())
        }
    }

    #[test]
    fn sender_keys_differ_by_index_and_context_and_match_across_members() {
        let cfg = KeyConfig::default();
        let a =
            EpochKeys::derive(&FixedExporter(vec![1, 2, 3]), 5, [0, 1, 2], &cfg).expect("derive");
        let b =
            EpochKeys::derive(&FixedExporter(vec![1, 2, 3]), 5, [0, 1, 2], &cfg).expect("derive");
        let mut out = Vec::new();
        let mut plain = Vec::new();
        a.encrypt_key(ContextId::Audio, 1)
            .expect("key")
            .encrypt_into(0, b"", b"hello", &mut out)
            .expect("encrypt");
        b.decrypt_key(ContextId::Audio, 1)
            .expect("key")
            .decrypt_into(&out, b"", &mut plain)
            .expect("same secret, same index: decrypts");
        assert!(
            b.decrypt_key(ContextId::Video, 1)
                .expect("key")
                .decrypt_into(&out, b"", &mut plain)
                .is_err()
        );
        assert!(matches!(
            a.encrypt_key(ContextId::Audio, 7),
            Err(KeyScheduleError::NotAMember { index: 7, epoch: 5 })
        ));
    }

    #[test]
    fn sender_base_key_is_rfc9605_hkdf_expand_of_nk_bytes() {
        // HKDF-Expand(sframe_epoch_secret, be32(index), Nk) for every suite, cross-checked
        // with the hkdf crate on a secret long enough for its `from_prk`. The CTR suites'
        // Nk of 48 bytes takes two SHA-256 blocks.
        let prk = [7u8; 64];
        for suite in CipherSuite::ALL {
            let ours =
                backend::hkdf_expand(suite.to_crate(), &prk, &3u32.to_be_bytes(), suite.key_len())
                    .expect("expand");
            let mut theirs = vec![0u8; suite.key_len()];
            if suite == CipherSuite::AesGcm256Sha512 {
                hkdf::Hkdf::<sha2::Sha512>::from_prk(&prk)
                    .expect("prk")
                    .expand(&3u32.to_be_bytes(), &mut theirs)
            } else {
                hkdf::Hkdf::<sha2::Sha256>::from_prk(&prk)
                    .expect("prk")
                    .expand(&3u32.to_be_bytes(), &mut theirs)
            }
            .expect("expand");
            assert_eq!(&ours[..], &theirs[..], "{suite:?}");
        }
    }
}
