//! Test support: synthetic senders that encode real Opus, and a driver that delivers their
//! packets to a [`Mixer`] and pulls it 10 ms at a time on a virtual clock.

use std::time::{Duration, Instant};

use sotto_media::{
    payload::{self, Stamp},
    synth::{AudioSignal, AudioSource, SAMPLE_RATE},
};

use super::{Mixer, PULL_SAMPLES};
use crate::codec::audio::AudioEncoder;

/// One-way network delay of every packet.
pub(super) const NET: Duration = Duration::from_millis(5);
/// One pull.
pub(super) const PULL: Duration = Duration::from_millis(10);

/// A remote sender: a tone (or silence), Opus-encoded with DTX, stamped, one frame per
/// `frame_ms` from `t0`.
pub(super) struct Talker {
    src: AudioSource,
    enc: AudioEncoder,
    frame: Duration,
    samples: u32,
    rtp_ts: u32,
    t0: Instant,
    next_id: u64,
    /// Encode silence instead of the tone (so DTX takes over).
    pub silent: bool,
}

impl Talker {
    /// A talker of `hz` in `frame_ms` frames whose first capture is at `t0`.
    pub fn new(hz: f64, frame_ms: u32, t0: Instant) -> Self {
        Self {
            src: AudioSource::new(AudioSignal::Tone { hz }, frame_ms),
            enc: AudioEncoder::new().expect("encoder"),
            frame: Duration::from_millis(u64::from(frame_ms)),
            samples: SAMPLE_RATE / 1000 * frame_ms,
            rtp_ts: 0x1234_5678,
            t0,
            next_id: 0,
            silent: false,
        }
    }

    /// The same, with the first RTP timestamp `ts`.
    pub fn starting_at(mut self, ts: u32) -> Self {
        self.rtp_ts = ts;
        self
    }

    /// When frame `id` was captured.
    pub fn captured(&self, id: u64) -> Instant {
        self.t0 + self.frame * u32::try_from(id).expect("small id")
    }

    fn next_arrival(&self) -> Instant {
        self.captured(self.next_id) + NET
    }

    /// Captures and encodes the next frame: its id, arrival and, unless DTX kept it back,
    /// its RTP timestamp and payload.
    pub fn next_packet(&mut self) -> (u64, Instant, Option<(u32, Vec<u8>)>) {
        let id = self.next_id;
        let captured = self.captured(id);
        let mut pcm = self.src.next_frame(captured).samples;
        if self.silent {
            pcm.fill(0);
        }
        let stamp = Stamp {
            id,
            captured_us: u64::try_from((captured - self.t0).as_micros()).expect("short test"),
        };
        let packet = self.enc.encode(&pcm).expect("encode").map(|e| {
            let mut out = Vec::new();
            payload::encode(Some(stamp), e.data, &mut out);
            (self.rtp_ts, out)
        });
        self.rtp_ts = self.rtp_ts.wrapping_add(self.samples);
        self.next_id += 1;
        (id, captured + NET, packet)
    }
}

/// Every 10 ms from `from` until before `until`: delivers to `mixer` (talker `i` under key
/// `i`) what arrived by then, except packets `lost(key, id)`, then pulls 10 ms. Returns the
/// mixed audio.
pub(super) fn run(
    mixer: &mut Mixer<usize>,
    talkers: &mut [Talker],
    from: Instant,
    until: Instant,
    lost: impl Fn(usize, u64) -> bool,
) -> Vec<i16> {
    let mut out = Vec::new();
    let mut buf = [0i16; PULL_SAMPLES];
    let mut t = from;
    while t < until {
        for (key, talker) in talkers.iter_mut().enumerate() {
            while talker.next_arrival() <= t {
                let (id, arrival, packet) = talker.next_packet();
                if let Some((ts, payload)) = packet
                    && !lost(key, id)
                {
                    mixer
                        .chain_mut(key)
                        .expect("chain")
                        .push(ts, payload, arrival);
                }
            }
        }
        mixer.pull(t, &mut buf);
        out.extend_from_slice(&buf);
        t += PULL;
    }
    out
}

/// The amplitude of the `hz` component of `x` (Goertzel over the whole slice).
pub(super) fn amplitude(x: &[i16], hz: f64) -> f64 {
    let w = std::f64::consts::TAU * hz / f64::from(SAMPLE_RATE);
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s = f64::from(v) + c * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - c * s1 * s2;
    2.0 * power.max(0.0).sqrt() / x.len() as f64
}

/// `t0 + ms`.
pub(super) fn at(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}
