//! What one client of a 10-person room with 9 video senders costs in CPU, from measured
//! parts: H.264 encode of our three simulcast layers (320×180, 640×360, 1280×720 at 30
//! frames a second, the synthetic pattern), H.264 decode of one layer per remote sender,
//! Opus encode and decode of 20 ms frames. Each part is timed here on this machine, on
//! one thread, over a few seconds of media; the budget multiplies them by the room's
//! rates. Crypto (SFrame: under 1 µs a packet, see `sotto-media`'s bench), str0m and the
//! mixer are left out: they are small beside the codecs.
//!
//! `cargo bench -p sotto-client --bench room_client_cpu`. Prints a table; nothing is
//! asserted (the machines are noisy: read the ratios).

use std::time::{Duration, Instant};

use sotto_client::codec::{
    audio::{AudioDecoder, AudioEncoder},
    video::{VideoDecoder, VideoEncoder},
};
use sotto_media::synth::{AudioSignal, AudioSource, PatternSource};

const FPS: f64 = 30.0;
const FRAMES: usize = 150;
const LAYERS: [(usize, usize, u32); 3] = [
    (320, 180, 150_000),
    (640, 360, 500_000),
    (1280, 720, 1_500_000),
];
/// Remote video senders in the room.
const SENDERS: f64 = 9.0;

/// Mean time per call of `f` over `n` calls.
fn per_call(n: usize, mut f: impl FnMut(usize)) -> Duration {
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    start.elapsed() / n as u32
}

fn main() {
    let t0 = Instant::now();
    let mut encode = Vec::new();
    let mut decode = Vec::new();
    for (w, h, bitrate) in LAYERS {
        let mut src = PatternSource::new(w, h);
        let frames: Vec<_> = (0..FRAMES).map(|_| src.next_frame(t0)).collect();
        let mut enc = VideoEncoder::new(FPS as f32, bitrate).expect("encoder");
        let mut out = Vec::new();
        encode.push(per_call(FRAMES, |i| {
            if let Ok(Some(e)) = enc.encode(&frames[i]) {
                out.push(e.data);
            }
        }));
        let mut dec = VideoDecoder::new().expect("decoder");
        let n = out.len().max(1);
        decode.push(per_call(n, |i| {
            if let Some(d) = out.get(i) {
                let _ = dec.decode(d);
            }
        }));
    }
    let mut src = AudioSource::new(AudioSignal::Tone { hz: 440.0 }, 20);
    let pcm: Vec<_> = (0..250).map(|_| src.next_frame(t0).samples).collect();
    let mut enc = AudioEncoder::new().expect("opus encoder");
    let mut packets = Vec::new();
    let opus_enc = per_call(pcm.len(), |i| {
        if let Ok(Some(p)) = enc.encode(&pcm[i]) {
            packets.push(p.data.to_vec());
        }
    });
    let mut dec = AudioDecoder::new(960).expect("opus decoder");
    let mut out = Vec::new();
    let n = packets.len().max(1);
    let opus_dec = per_call(n, |i| {
        if let Some(p) = packets.get(i) {
            let _ = dec.decode(p, &mut out);
        }
    });

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("part                          µs per frame");
    for (i, (w, h, _)) in LAYERS.iter().enumerate() {
        println!(
            "H.264 {w}×{h:<4} encode {:>10.0}   decode {:>8.0}",
            us(encode[i]),
            us(decode[i])
        );
    }
    println!(
        "Opus 20 ms      encode {:>10.1}   decode {:>8.1}",
        us(opus_enc),
        us(opus_dec)
    );
    // The budget, in cores: our three layers out at 30 fps, nine senders in at 30 fps on
    // the layer the SFU forwards (the middle one for a grid of nine; the high one as the
    // worst case), nine Opus streams in and ours out at 50 frames a second.
    let send = encode.iter().map(|d| d.as_secs_f64()).sum::<f64>() * FPS;
    let audio = (opus_enc.as_secs_f64() + SENDERS * opus_dec.as_secs_f64()) * 50.0;
    for (name, layer) in [("middle", 1), ("high", 2)] {
        let recv = SENDERS * decode[layer].as_secs_f64() * FPS;
        println!(
            "room of 10, 9 senders on the {name} layer: send {:.2} + receive {:.2} + audio {:.3} = {:.2} cores",
            send,
            recv,
            audio,
            send + recv + audio
        );
    }
}
