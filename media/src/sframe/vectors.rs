//! Every RFC 9605 test vector (shared/vectors/rfc9605-sframe.json) through our API.
//! A missing vectors file fails: these tests never skip.

use super::{CipherSuite, DecryptKey, EncryptKey, backend};
use sframe::crypto::{KeyDerivation, get_hkdf_key_expand_label, get_hkdf_salt_expand_label};

#[derive(serde::Deserialize)]
struct Vectors {
    header: Vec<Header>,
    aes_ctr_hmac: Vec<AesCtrHmac>,
    sframe: Vec<Sframe>,
}

#[derive(serde::Deserialize)]
struct Header {
    kid: u64,
    ctr: u64,
    encoded: String,
}

#[derive(serde::Deserialize)]
struct AesCtrHmac {
    cipher_suite: u16,
    key: String,
    enc_key: String,
    auth_key: String,
    nonce: String,
    aad: String,
    pt: String,
    ct: String,
}

#[derive(serde::Deserialize)]
struct Sframe {
    cipher_suite: u16,
    kid: u64,
    ctr: u64,
    base_key: String,
    sframe_key_label: String,
    sframe_salt_label: String,
    nonce: String,
    metadata: String,
    pt: String,
    ct: String,
}

fn vectors() -> Vectors {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/vectors/rfc9605-sframe.json"
    );
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("RFC 9605 vectors must be at {path}: {e}"));
    serde_json::from_str(&text).expect("vectors parse")
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

fn suite(id: u16) -> CipherSuite {
    CipherSuite::from_id(id).expect("known suite")
}

#[test]
fn header_vectors_all_289_through_encrypt() {
    let v = vectors();
    assert_eq!(v.header.len(), 289);
    let base = [0x42u8; 16];
    let mut out = Vec::new();
    for t in &v.header {
        let want = h(&t.encoded);
        let key = EncryptKey::derive(CipherSuite::default(), t.kid, &base).expect("derive");
        key.encrypt_into(t.ctr, b"", b"x", &mut out)
            .expect("encrypt");
        assert_eq!(&out[..want.len()], &want[..], "kid={} ctr={}", t.kid, t.ctr);
        assert_eq!(out.len(), want.len() + 1 + 16, "header, one byte, tag");
    }
}

#[test]
fn aes_ctr_hmac_vectors_all_3() {
    let v = vectors();
    assert_eq!(v.aes_ctr_hmac.len(), 3);
    for t in &v.aes_ctr_hmac {
        let s = suite(t.cipher_suite).to_crate();
        let key = h(&t.key);
        assert_eq!(key, [h(&t.enc_key), h(&t.auth_key)].concat());
        let nonce: [u8; 12] = h(&t.nonce).try_into().expect("12-byte nonce");
        let secret = backend::Secret::from_raw(s, &key, &nonce).expect("secret");
        let (aad, pt, ct) = (h(&t.aad), h(&t.pt), h(&t.ct));
        let mut data = pt.clone();
        let mut tag = vec![0u8; s.auth_tag_len()];
        secret
            .seal(&nonce, &aad, &mut data, &mut tag)
            .expect("seal");
        assert_eq!(
            [data.clone(), tag.clone()].concat(),
            ct,
            "suite {}",
            t.cipher_suite
        );
        secret.open(&nonce, &aad, &mut data, &tag).expect("open");
        assert_eq!(data, pt);
        tag[0] ^= 1;
        assert!(secret.open(&nonce, &aad, &mut data, &tag).is_err());
    }
}

#[test]
fn sframe_vectors_all_5_suites() {
    let v = vectors();
    assert_eq!(v.sframe.len(), 5);
    let mut out = Vec::new();
    let mut plain = Vec::new();
    for t in &v.sframe {
        let s = suite(t.cipher_suite);
        assert_eq!(
            get_hkdf_key_expand_label(t.kid, s.to_crate()),
            h(&t.sframe_key_label)
        );
        assert_eq!(
            get_hkdf_salt_expand_label(t.kid, s.to_crate()),
            h(&t.sframe_salt_label)
        );
        let base = h(&t.base_key);
        let secret = backend::Kdf::expand_from(s.to_crate(), &base, t.kid).expect("kdf");
        assert_eq!(
            secret.nonce(t.ctr).to_vec(),
            h(&t.nonce),
            "nonce, suite {}",
            t.cipher_suite
        );

        let (meta, pt, ct) = (h(&t.metadata), h(&t.pt), h(&t.ct));
        let ek = EncryptKey::derive(s, t.kid, &base).expect("derive");
        ek.encrypt_into(t.ctr, &meta, &pt, &mut out)
            .expect("encrypt");
        assert_eq!(out, ct, "ciphertext, suite {}", t.cipher_suite);

        let mut dk = DecryptKey::derive(s, t.kid, &base).expect("derive");
        let got = dk.decrypt_into(&ct, &meta, &mut plain).expect("decrypt");
        assert_eq!((got.kid, got.ctr), (t.kid, t.ctr));
        assert_eq!(plain, pt, "plaintext, suite {}", t.cipher_suite);
    }
}
