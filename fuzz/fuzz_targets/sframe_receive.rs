//! The receive path with real keys: arbitrary bytes are never accepted as a frame (that
//! would be a forgery), never leave plaintext behind, and never disturb a genuine frame.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use sotto_media::{
    ContextId,
    keys::{CallKeys, EpochKeys, KeyConfig, MlsExporter},
};

struct Fixed;
impl MlsExporter for Fixed {
    type Error = std::convert::Infallible;
    fn export_secret(&self, _: &str, _: &[u8], len: usize) -> Result<Vec<u8>, Self::Error> {
        Ok(vec![0x42; len])
    }
}

fn keys(own: u32) -> CallKeys {
    let epoch = EpochKeys::derive(&Fixed, 7, [0, 1, 2], &KeyConfig::default()).expect("derive");
    CallKeys::new(own, epoch).expect("keys")
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut sender = keys(0);
    let mut receiver = keys(1);
    let mut genuine = Vec::new();
    sender
        .encrypt(ContextId::Audio, b"", b"genuine", &mut genuine)
        .expect("encrypt");
    let mut out = Vec::new();
    if data != genuine.as_slice() {
        assert!(
            receiver.decrypt(data, b"", &mut out, now).is_err(),
            "forged frame accepted"
        );
        assert!(out.is_empty());
    }
    receiver
        .decrypt(&genuine, b"", &mut out, now)
        .expect("genuine frame still decrypts");
    assert_eq!(out, b"genuine");
});
