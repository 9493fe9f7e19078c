//! SFrame encrypt/decrypt through our API beside raw AES-128-GCM seal/open of the same
//! implementation (aes-gcm), and the sframe crate's built-in backend for reference.
//! Sizes: 100 B (an Opus frame), 1200 B (a packet), 50 KB (a video keyframe).
//! Read the ratio raw ÷ ours from one run: both run on the same machine, same moment.

use aes_gcm::{AeadInOut, Aes128Gcm, KeyInit, aead::array::Array};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sotto_media::sframe::{CipherSuite, DecryptKey, EncryptKey};
use std::hint::black_box;

const SIZES: [usize; 3] = [100, 1200, 50_000];
const KID: u64 = 0x40_0102;
const BASE_KEY: [u8; 16] = [7; 16];

fn bench(c: &mut Criterion) {
    let suite = CipherSuite::AesGcm128Sha256;
    for size in SIZES {
        let mut g = c.benchmark_group(format!("{size}B"));
        g.throughput(Throughput::Bytes(size as u64));
        let payload = vec![0x5au8; size];
        let raw = Aes128Gcm::new_from_slice(&BASE_KEY).expect("key");
        let nonce = |i: u64| {
            let mut n = [0u8; 12];
            n[4..].copy_from_slice(&i.to_be_bytes());
            Array::from(n)
        };

        // Encrypt: the output buffer is reused, as the send path does.
        let ek = EncryptKey::derive(suite, KID, &BASE_KEY).expect("derive");
        let mut out = Vec::with_capacity(size + 64);
        let mut ctr = 0u64;
        g.bench_function("sframe_encrypt", |b| {
            b.iter(|| {
                ctr += 1;
                ek.encrypt_into(ctr, b"", black_box(&payload), &mut out)
                    .expect("encrypt");
            })
        });
        let mut buf = payload.clone();
        let mut i = 0u64;
        g.bench_function("raw_seal", |b| {
            b.iter(|| {
                i += 1;
                buf.copy_from_slice(&payload);
                let tag = raw
                    .encrypt_inout_detached(
                        &nonce(i),
                        &[0x9a; 4],
                        black_box(buf.as_mut_slice()).into(),
                    )
                    .expect("seal");
                black_box(tag);
            })
        });
        let crate_key = sframe::key::EncryptionKey::derive_from(
            sframe::CipherSuite::AesGcm128Sha256,
            KID,
            BASE_KEY,
        )
        .expect("derive");
        let mut j = 0u64;
        g.bench_function("crate_builtin_encrypt", |b| {
            b.iter(|| {
                j += 1;
                let frame = sframe::frame::MediaFrameView::with_meta_data(
                    &mut Fixed(j),
                    black_box(&payload),
                    &[] as &[u8],
                );
                frame.encrypt_into(&crate_key, &mut out).expect("encrypt");
            })
        });

        // Decrypt: a fresh counter per frame (the replay window refuses repeats); frames are
        // made outside the timed part.
        let mut dk = DecryptKey::derive(suite, KID, &BASE_KEY).expect("derive");
        let mut plain = Vec::with_capacity(size + 64);
        let mut k = 0u64;
        g.bench_function("sframe_decrypt", |b| {
            b.iter_batched_ref(
                || {
                    k += 1;
                    let mut f = Vec::with_capacity(size + 64);
                    ek.encrypt_into(k, b"", &payload, &mut f).expect("encrypt");
                    f
                },
                |frame| dk.decrypt_into(frame, b"", &mut plain).expect("decrypt"),
                BatchSize::SmallInput,
            )
        });
        let mut sealed = payload.clone();
        let tag = raw
            .encrypt_inout_detached(&nonce(1), &[0x9a; 4], sealed.as_mut_slice().into())
            .expect("seal");
        g.bench_function("raw_open", |b| {
            b.iter_batched_ref(
                || sealed.clone(),
                |ct| {
                    raw.decrypt_inout_detached(
                        &nonce(1),
                        &[0x9a; 4],
                        ct.as_mut_slice().into(),
                        &tag,
                    )
                    .expect("open")
                },
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }
}

struct Fixed(u64);
impl sframe::frame::FrameCounter for Fixed {
    type Error = std::convert::Infallible;
    fn try_next(&mut self) -> Result<u64, Self::Error> {
        Ok(self.0)
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
