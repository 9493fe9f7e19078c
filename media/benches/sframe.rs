//! SFrame encrypt/decrypt through our API (AES_128_GCM_SHA256_128) beside raw AES-128-GCM
//! seal/open from both implementations we could use, ring and RustCrypto's aes-gcm, and the
//! sframe crate's built-in backend for reference.
//!
//! Sizes: 100 B (an Opus frame), 1200 B (a packet), 50 KB (a video keyframe).
//! The baseline that counts is the faster raw implementation on the machine at hand (ring
//! on x86-64 with AES-NI/VAES); read `fastest raw time ÷ SFrame time` from one run, where
//! both ran on the same machine at the same moment.
//!
//! Every timed step includes one copy of its input, as our API makes (it takes `&[u8]` and
//! writes into a caller's buffer): raw seal and raw open copy the plaintext/ciphertext
//! into a work buffer and then seal/open it in place. SFrame decrypt also parses the
//! header and checks and updates the replay window; its frames, each with a fresh counter,
//! are made outside the timed part.
//!
//! `cargo bench -p sotto-media --bench sframe`; medians land in
//! `$CARGO_TARGET_DIR/criterion/<size>B/<bench>/new/estimates.json`.

use aes_gcm::{AeadInOut, Aes128Gcm, KeyInit, aead::array::Array};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use sotto_media::sframe::{CipherSuite, DecryptKey, EncryptKey};
use std::hint::black_box;

const SIZES: [usize; 3] = [100, 1200, 50_000];
const KID: u64 = 0x40_0102;
const BASE_KEY: [u8; 16] = [7; 16];
/// Raw AEAD associated data, as long as the SFrame header of [`KID`] with a small counter.
const AAD: [u8; 4] = [0x9a; 4];

fn nonce_bytes(i: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&i.to_be_bytes());
    n
}

fn bench(c: &mut Criterion) {
    let suite = CipherSuite::AesGcm128Sha256;
    let rustcrypto = Aes128Gcm::new_from_slice(&BASE_KEY).expect("key");
    let ring = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &BASE_KEY).expect("key"));
    for size in SIZES {
        let mut g = c.benchmark_group(format!("{size}B"));
        g.throughput(Throughput::Bytes(size as u64));
        let payload = vec![0x5au8; size];

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
        g.bench_function("raw_ring_seal", |b| {
            b.iter(|| {
                i += 1;
                buf.copy_from_slice(&payload);
                let tag = ring
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce_bytes(i)),
                        Aad::from(&AAD),
                        black_box(buf.as_mut_slice()),
                    )
                    .expect("seal");
                // Returned, so criterion keeps it alive.
                tag
            })
        });
        g.bench_function("raw_rustcrypto_seal", |b| {
            b.iter(|| {
                i += 1;
                buf.copy_from_slice(&payload);
                let tag = rustcrypto
                    .encrypt_inout_detached(
                        &Array::from(nonce_bytes(i)),
                        &AAD,
                        black_box(buf.as_mut_slice()).into(),
                    )
                    .expect("seal");
                // Returned, so criterion keeps it alive.
                tag
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

        // Decrypt: a fresh counter per frame (the replay window refuses repeats).
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
        // The same, in the frame's own buffer (what a receiver that owns the reassembled
        // frame does): no copy.
        let mut dk = DecryptKey::derive(suite, KID, &BASE_KEY).expect("derive");
        let mut k = 0u64;
        g.bench_function("sframe_decrypt_in_place", |b| {
            b.iter_batched_ref(
                || {
                    k += 1;
                    let mut f = Vec::with_capacity(size + 64);
                    ek.encrypt_into(k, b"", &payload, &mut f).expect("encrypt");
                    f
                },
                |frame| {
                    dk.decrypt_in_place(frame.as_mut_slice(), b"")
                        .expect("decrypt")
                        .1
                        .len()
                },
                BatchSize::SmallInput,
            )
        });
        // ring opens `ciphertext || tag` in one buffer.
        let mut ring_sealed = payload.clone();
        let tag = ring
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce_bytes(1)),
                Aad::from(&AAD),
                &mut ring_sealed,
            )
            .expect("seal");
        ring_sealed.extend_from_slice(tag.as_ref());
        let mut work = ring_sealed.clone();
        g.bench_function("raw_ring_open", |b| {
            b.iter(|| {
                work.copy_from_slice(&ring_sealed);
                ring.open_in_place(
                    Nonce::assume_unique_for_key(nonce_bytes(1)),
                    Aad::from(&AAD),
                    black_box(work.as_mut_slice()),
                )
                .map(|pt| pt.len())
                .expect("open")
            })
        });
        // The same open, fed the way `sframe_decrypt` is: a fresh buffer per frame from a
        // batch made beforehand (SFrame's replay window refuses a repeated counter, so its
        // bench cannot reuse one hot buffer). Comparing these two separates SFrame's own
        // cost from what the batched setup costs in cache misses.
        g.bench_function("raw_ring_open_batched", |b| {
            b.iter_batched_ref(
                || ring_sealed.clone(),
                |frame| {
                    ring.open_in_place(
                        Nonce::assume_unique_for_key(nonce_bytes(1)),
                        Aad::from(&AAD),
                        black_box(frame.as_mut_slice()),
                    )
                    .map(|pt| pt.len())
                    .expect("open")
                },
                BatchSize::SmallInput,
            )
        });
        // And fed that way but copied into a work buffer first, as `decrypt_into` must (ring
        // opens only in place, and the caller keeps its frame).
        let mut work = ring_sealed.clone();
        g.bench_function("raw_ring_open_batched_copy", |b| {
            b.iter_batched_ref(
                || ring_sealed.clone(),
                |frame| {
                    work.copy_from_slice(frame);
                    ring.open_in_place(
                        Nonce::assume_unique_for_key(nonce_bytes(1)),
                        Aad::from(&AAD),
                        black_box(work.as_mut_slice()),
                    )
                    .map(|pt| pt.len())
                    .expect("open")
                },
                BatchSize::SmallInput,
            )
        });
        let mut sealed = payload.clone();
        let tag = rustcrypto
            .encrypt_inout_detached(
                &Array::from(nonce_bytes(1)),
                &AAD,
                sealed.as_mut_slice().into(),
            )
            .expect("seal");
        let mut work = sealed.clone();
        g.bench_function("raw_rustcrypto_open", |b| {
            b.iter(|| {
                work.copy_from_slice(&sealed);
                rustcrypto
                    .decrypt_inout_detached(
                        &Array::from(nonce_bytes(1)),
                        &AAD,
                        black_box(work.as_mut_slice()).into(),
                        &tag,
                    )
                    .expect("open")
            })
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
    // Short runs: the machine is shared. 7 benchmarks x 3 sizes x ~3 s.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
