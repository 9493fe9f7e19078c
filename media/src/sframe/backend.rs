//! Our crypto backend for the `sframe` crate: the same RFC 9605 algorithms as its built-in
//! RustCrypto backend, but with each cipher keyed once per KID instead of once per frame.
//!
//! Why not the built-in backend: it keeps raw key bytes and runs the AES key schedule (and,
//! for the CTR suites, the HMAC key setup) on every frame. Measured on this machine at
//! 1200 B, AES-128-GCM: raw seal 657 ns, seal with a fresh key schedule 790 ns, the crate's
//! encrypt 877 ns (0.75 of raw). Keying once per KID removes the largest part of that gap.
//! The crate's published extension points (`KeyDerivation`, `AeadEncrypt`, `AeadDecrypt`)
//! are used as intended, so framing, header and AAD handling stay the crate's.

use aes::Aes128;
use aes_gcm::{AeadInOut, Aes128Gcm, Aes256Gcm, KeyInit};
use cipher::{InnerIvInit, StreamCipher, array::Array};
use ctr::Ctr32BE;
use hmac::{Hmac, Mac};
use sframe::{
    CipherSuite as CrateSuite,
    crypto::{
        AeadDecrypt, AeadEncrypt, DecryptionBufferView, EncryptionBufferView, KeyDerivation,
        get_hkdf_key_expand_label, get_hkdf_salt_expand_label,
    },
    error::SframeError as CrateError,
    header::{Counter, KeyId},
};
use sha2::{Sha256, Sha512};
use zeroize::Zeroizing;

/// Nonce (and salt) length of every RFC 9605 suite.
pub(crate) const NONCE_LEN: usize = 12;

/// Key material for one KID: a keyed cipher and the nonce salt.
pub struct Secret {
    cipher: Keyed,
    salt: [u8; NONCE_LEN],
}

impl Drop for Secret {
    fn drop(&mut self) {
        // The ciphers zeroize their own round keys (the `zeroize` features of aes and
        // aes-gcm); the salt is ours to clear.
        zeroize::Zeroize::zeroize(&mut self.salt);
    }
}

enum Keyed {
    Gcm128(Box<Aes128Gcm>),
    Gcm256(Box<Aes256Gcm>),
    /// AES-128-CTR with truncated HMAC-SHA256 (RFC 9605 §4.5.1). The MAC is stored keyed
    /// (inner and outer pads absorbed) and cloned per frame.
    Ctr {
        aes: Box<Aes128>,
        mac: Box<Hmac<Sha256>>,
        tag_len: usize,
    },
}

impl Secret {
    /// Builds a secret from a raw SFrame key and salt, as RFC 9605 §4.4.2 derives them.
    /// For the CTR suites `key` is `enc_key || auth_key` (16 + 32 bytes).
    pub(crate) fn from_raw(suite: CrateSuite, key: &[u8], salt: &[u8]) -> Result<Self, CrateError> {
        let salt: [u8; NONCE_LEN] = salt
            .try_into()
            .map_err(|_| CrateError::KeyDerivationFailure)?;
        if key.len() != suite.key_len() {
            return Err(CrateError::KeyDerivationFailure);
        }
        let cipher = match suite {
            CrateSuite::AesGcm128Sha256 => Keyed::Gcm128(Box::new(
                Aes128Gcm::new_from_slice(key).map_err(|_| CrateError::KeyDerivationFailure)?,
            )),
            CrateSuite::AesGcm256Sha512 => Keyed::Gcm256(Box::new(
                Aes256Gcm::new_from_slice(key).map_err(|_| CrateError::KeyDerivationFailure)?,
            )),
            CrateSuite::AesCtr128HmacSha256_80
            | CrateSuite::AesCtr128HmacSha256_64
            | CrateSuite::AesCtr128HmacSha256_32 => {
                let (enc_key, auth_key) = key.split_at(key.len() - suite.hash_len());
                Keyed::Ctr {
                    aes: Box::new(
                        Aes128::new_from_slice(enc_key)
                            .map_err(|_| CrateError::KeyDerivationFailure)?,
                    ),
                    mac: Box::new(
                        <Hmac<Sha256> as KeyInit>::new_from_slice(auth_key)
                            .map_err(|_| CrateError::KeyDerivationFailure)?,
                    ),
                    tag_len: suite.auth_tag_len(),
                }
            }
            _ => return Err(CrateError::UnsupportedCipherSuite),
        };
        Ok(Self { cipher, salt })
    }

    /// `nonce = salt XOR encode_big_endian(counter, 12)` (RFC 9605 §4.4.3).
    pub(crate) fn nonce(&self, counter: Counter) -> [u8; NONCE_LEN] {
        let mut nonce = self.salt;
        for (n, c) in nonce[NONCE_LEN - 8..].iter_mut().zip(counter.to_be_bytes()) {
            *n ^= c;
        }
        nonce
    }

    /// Seals `data` in place and writes the tag. Used by the frame API and by the raw AEAD
    /// test vectors.
    pub(crate) fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        data: &mut [u8],
        tag_out: &mut [u8],
    ) -> Result<(), CrateError> {
        match &self.cipher {
            Keyed::Gcm128(c) => {
                let tag = c
                    .encrypt_inout_detached(&Array::from(*nonce), aad, data.into())
                    .map_err(|_| CrateError::EncryptionFailure)?;
                copy_tag(&tag, tag_out)
            }
            Keyed::Gcm256(c) => {
                let tag = c
                    .encrypt_inout_detached(&Array::from(*nonce), aad, data.into())
                    .map_err(|_| CrateError::EncryptionFailure)?;
                copy_tag(&tag, tag_out)
            }
            Keyed::Ctr { aes, mac, tag_len } => {
                ctr_keystream(aes, nonce, data)?;
                let full = ctr_tag(mac, nonce, aad, data, *tag_len)
                    .finalize()
                    .into_bytes();
                copy_tag(&full[..*tag_len], tag_out)
            }
        }
    }

    /// Opens `data` (ciphertext without tag) in place after checking `tag` in constant time.
    pub(crate) fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        data: &mut [u8],
        tag: &[u8],
    ) -> Result<(), CrateError> {
        match &self.cipher {
            Keyed::Gcm128(c) => {
                let tag = Array::try_from(tag).map_err(|_| CrateError::DecryptionFailure)?;
                c.decrypt_inout_detached(&Array::from(*nonce), aad, data.into(), &tag)
                    .map_err(|_| CrateError::DecryptionFailure)
            }
            Keyed::Gcm256(c) => {
                let tag = Array::try_from(tag).map_err(|_| CrateError::DecryptionFailure)?;
                c.decrypt_inout_detached(&Array::from(*nonce), aad, data.into(), &tag)
                    .map_err(|_| CrateError::DecryptionFailure)
            }
            Keyed::Ctr { aes, mac, tag_len } => {
                if tag.len() != *tag_len {
                    return Err(CrateError::DecryptionFailure);
                }
                ctr_tag(mac, nonce, aad, data, *tag_len)
                    .verify_truncated_left(tag)
                    .map_err(|_| CrateError::DecryptionFailure)?;
                ctr_keystream(aes, nonce, data)
            }
        }
    }

    fn tag_len(&self) -> usize {
        match &self.cipher {
            Keyed::Gcm128(_) | Keyed::Gcm256(_) => 16,
            Keyed::Ctr { tag_len, .. } => *tag_len,
        }
    }
}

fn copy_tag(tag: &[u8], out: &mut [u8]) -> Result<(), CrateError> {
    if tag.len() != out.len() {
        return Err(CrateError::EncryptionFailure);
    }
    out.copy_from_slice(tag);
    Ok(())
}

/// AES-CTR with the 12-byte nonce followed by a 32-bit block counter starting at zero.
fn ctr_keystream(aes: &Aes128, nonce: &[u8; NONCE_LEN], data: &mut [u8]) -> Result<(), CrateError> {
    let mut iv = [0u8; 16];
    iv[..NONCE_LEN].copy_from_slice(nonce);
    let mut ctr =
        Ctr32BE::<Aes128>::from_core(ctr::CtrCore::inner_iv_init(aes.clone(), &Array::from(iv)));
    ctr.try_apply_keystream(data)
        .map_err(|_| CrateError::EncryptionFailure)
}

/// `HMAC(auth_key, len(aad) || len(ct) || tag_len || nonce || aad || ct)`, lengths as
/// 64-bit big-endian (RFC 9605 §4.5.1).
fn ctr_tag(
    mac: &Hmac<Sha256>,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ct: &[u8],
    tag_len: usize,
) -> Hmac<Sha256> {
    let mut m = mac.clone();
    m.update(&(aad.len() as u64).to_be_bytes());
    m.update(&(ct.len() as u64).to_be_bytes());
    m.update(&(tag_len as u64).to_be_bytes());
    m.update(nonce);
    m.update(aad);
    m.update(ct);
    m
}

/// The AEAD half of the backend: which suite; the keyed state lives in [`Secret`].
#[derive(Clone, Copy, Debug)]
pub struct Aead;

impl TryFrom<CrateSuite> for Aead {
    type Error = CrateError;
    fn try_from(_: CrateSuite) -> Result<Self, CrateError> {
        Ok(Aead)
    }
}

impl AeadEncrypt for Aead {
    type Secret = Secret;

    fn encrypt<'a, B>(&self, secret: &Secret, buffer: B, counter: Counter) -> Result<(), CrateError>
    where
        B: Into<EncryptionBufferView<'a>>,
    {
        let view = buffer.into();
        secret.seal(&secret.nonce(counter), view.aad, view.data, view.tag)
    }
}

impl AeadDecrypt for Aead {
    type Secret = Secret;

    fn decrypt<'a, B>(&self, secret: &Secret, buffer: B, counter: Counter) -> Result<(), CrateError>
    where
        B: Into<DecryptionBufferView<'a>>,
    {
        let view = buffer.into();
        let tag_len = secret.tag_len();
        if view.data.len() < tag_len {
            return Err(CrateError::DecryptionFailure);
        }
        let split = view.data.len() - tag_len;
        let (data, tag) = view.data.split_at_mut(split);
        secret.open(&secret.nonce(counter), view.aad, data, tag)
    }
}

/// The key-derivation half: RFC 9605 §4.4.2.
///
/// ```text
/// sframe_secret = HKDF-Extract("", base_key)
/// sframe_key    = HKDF-Expand(sframe_secret, "SFrame 1.0 Secret key " + KID + suite, Nk)
/// sframe_salt   = HKDF-Expand(sframe_secret, "SFrame 1.0 Secret salt " + KID + suite, Nn)
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Kdf;

impl KeyDerivation for Kdf {
    type Secret = Secret;

    fn expand_from<M, K>(
        suite: CrateSuite,
        key_material: M,
        key_id: K,
    ) -> Result<Secret, CrateError>
    where
        M: AsRef<[u8]>,
        K: Into<KeyId>,
    {
        let kid = key_id.into();
        let key_label = get_hkdf_key_expand_label(kid, suite);
        let salt_label = get_hkdf_salt_expand_label(kid, suite);
        let mut key = Zeroizing::new(vec![0u8; suite.key_len()]);
        let mut salt = Zeroizing::new([0u8; NONCE_LEN]);
        match suite {
            CrateSuite::AesGcm256Sha512 => {
                let hk = hkdf::Hkdf::<Sha512>::new(None, key_material.as_ref());
                hk.expand(&key_label, &mut key)
                    .and_then(|()| hk.expand(&salt_label, salt.as_mut()))
            }
            _ => {
                let hk = hkdf::Hkdf::<Sha256>::new(None, key_material.as_ref());
                hk.expand(&key_label, &mut key)
                    .and_then(|()| hk.expand(&salt_label, salt.as_mut()))
            }
        }
        .map_err(|_| CrateError::KeyDerivationFailure)?;
        Secret::from_raw(suite, &key, salt.as_ref())
    }
}

/// One block of HKDF-Expand (RFC 5869) for outputs no longer than the hash:
/// `HMAC-Hash(prk, info || 0x01)[..len]`.
///
/// Hand-written because RFC 9605 §5.2 expands from an MLS exporter secret of only AEAD.Nk
/// bytes (16 for AES-128), shorter than the hash, which the `hkdf` crate's `from_prk`
/// rejects; HKDF-Expand itself is defined for it.
pub(crate) fn hkdf_expand_short(
    suite: CrateSuite,
    prk: &[u8],
    info: &[u8],
    len: usize,
) -> Result<Zeroizing<Vec<u8>>, CrateError> {
    let block = match suite {
        CrateSuite::AesGcm256Sha512 => {
            let mut m = <Hmac<Sha512> as KeyInit>::new_from_slice(prk)
                .map_err(|_| CrateError::KeyDerivationFailure)?;
            m.update(info);
            m.update(&[1]);
            m.finalize().into_bytes().to_vec()
        }
        _ => {
            let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(prk)
                .map_err(|_| CrateError::KeyDerivationFailure)?;
            m.update(info);
            m.update(&[1]);
            m.finalize().into_bytes().to_vec()
        }
    };
    let mut block = Zeroizing::new(block);
    if len > block.len() {
        return Err(CrateError::KeyDerivationFailure);
    }
    block.truncate(len);
    Ok(block)
}
