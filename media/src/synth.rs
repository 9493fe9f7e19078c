//! Synthetic sources and sinks for headless runs, tests and the bench.
//!
//! Sources stamp every frame with an id and its capture instant; the stamp travels inside
//! the encrypted payload (see [`crate::payload`]), so a sink can say what arrived, in what
//! order and how late, on the same clock. Content survives lossy codecs: the audio source
//! is a tone (or a speech-like signal) whose frequency the sink measures; the video
//! pattern draws the frame id as large black/white blocks the sink reads back.

use std::{f64::consts::TAU, time::Instant};

/// 48 kHz, the rate of every audio path in sotto.
pub const SAMPLE_RATE: u32 = 48_000;

/// One captured audio frame (mono, 16-bit).
#[derive(Clone, Debug, PartialEq)]
pub struct AudioFrame {
    /// Increasing frame id.
    pub id: u64,
    /// When it was captured.
    pub captured: Instant,
    /// Samples at [`SAMPLE_RATE`].
    pub samples: Vec<i16>,
}

/// What the synthetic audio source produces.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AudioSignal {
    /// A pure tone.
    Tone {
        /// Frequency in Hz.
        hz: f64,
    },
    /// Voiced speech-like sound: a 140 Hz fundamental with harmonics, gated into
    /// syllables about 4 times a second with pauses, so DTX and VAD have work to do.
    Speech,
}

/// Audio frames of `frame_ms` from a signal; time is passed in.
#[derive(Clone, Debug)]
pub struct AudioSource {
    signal: AudioSignal,
    samples_per_frame: usize,
    next_id: u64,
    position: u64,
}

impl AudioSource {
    /// A source of `frame_ms`-long frames (10 or 20 ms).
    pub fn new(signal: AudioSignal, frame_ms: u32) -> Self {
        Self {
            signal,
            samples_per_frame: (SAMPLE_RATE / 1000 * frame_ms) as usize,
            next_id: 0,
            position: 0,
        }
    }

    /// Samples in one frame.
    pub fn samples_per_frame(&self) -> usize {
        self.samples_per_frame
    }

    /// The next frame, stamped `captured`.
    pub fn next_frame(&mut self, captured: Instant) -> AudioFrame {
        let mut samples = Vec::with_capacity(self.samples_per_frame);
        for _ in 0..self.samples_per_frame {
            let t = self.position as f64 / f64::from(SAMPLE_RATE);
            let v = match self.signal {
                AudioSignal::Tone { hz } => 0.5 * (TAU * hz * t).sin(),
                AudioSignal::Speech => {
                    let syllable = (TAU * 4.0 * t).sin().max(0.0);
                    let gate = if (t % 2.0) < 1.6 { 1.0 } else { 0.0 };
                    let voice: f64 = (1..=6)
                        .map(|k| (TAU * 140.0 * f64::from(k) * t).sin() / f64::from(k))
                        .sum();
                    0.35 * syllable * gate * voice
                }
            };
            samples.push((v * f64::from(i16::MAX)) as i16);
            self.position += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        AudioFrame {
            id,
            captured,
            samples,
        }
    }
}

/// The dominant frequency of `samples` (48 kHz), by counting rising zero crossings with
/// linear interpolation. Good to a few Hz for a tone over 20 ms or more.
pub fn estimate_frequency(samples: &[i16]) -> Option<f64> {
    let mut crossings = Vec::new();
    for (i, w) in samples.windows(2).enumerate() {
        let (a, b) = (f64::from(w[0]), f64::from(w[1]));
        if a < 0.0 && b >= 0.0 {
            crossings.push(i as f64 + a / (a - b));
        }
    }
    if crossings.len() < 2 {
        return None;
    }
    let span = crossings[crossings.len() - 1] - crossings[0];
    Some(f64::from(SAMPLE_RATE) * (crossings.len() - 1) as f64 / span)
}

/// One captured video frame in I420 (Y plane, then U and V at half resolution).
#[derive(Clone, Debug, PartialEq)]
pub struct VideoFrame {
    /// Increasing frame id, also drawn into the picture.
    pub id: u64,
    /// When it was captured.
    pub captured: Instant,
    /// Width in pixels (even).
    pub width: usize,
    /// Height in pixels (even).
    pub height: usize,
    /// I420 planes, `width * height * 3 / 2` bytes.
    pub i420: Vec<u8>,
}

/// Side of one id block in pixels: large enough to survive a real-time encoder.
const BLOCK: usize = 16;
/// Bits of frame id drawn.
const ID_BITS: usize = 24;

/// A moving test pattern: a gradient background, a bar sweeping across, and the frame id
/// as a row of [`ID_BITS`] black/white blocks at the top left.
#[derive(Clone, Debug)]
pub struct PatternSource {
    width: usize,
    height: usize,
    next_id: u64,
}

impl PatternSource {
    /// A `width` x `height` pattern (even sizes, at least `24 * 16` wide and 32 high).
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width: width.max(ID_BITS * BLOCK) & !1,
            height: height.max(2 * BLOCK) & !1,
            next_id: 0,
        }
    }

    /// The next frame, stamped `captured`.
    pub fn next_frame(&mut self, captured: Instant) -> VideoFrame {
        let (w, h) = (self.width, self.height);
        let id = self.next_id;
        self.next_id += 1;
        let mut i420 = vec![128u8; w * h * 3 / 2];
        let bar = (id as usize * 8) % w;
        for y in 0..h {
            for x in 0..w {
                let mut v = ((x * 160 / w) + (y * 60 / h) + 16) as u8;
                if x >= bar && x < bar + 24 {
                    v = 235;
                }
                i420[y * w + x] = v;
            }
        }
        for bit in 0..ID_BITS {
            let on = (id >> (ID_BITS - 1 - bit)) & 1 == 1;
            let v = if on { 235 } else { 16 };
            for y in 0..BLOCK {
                let row = y * w + bit * BLOCK;
                i420[row..row + BLOCK].fill(v);
            }
        }
        VideoFrame {
            id,
            captured,
            width: w,
            height: h,
            i420,
        }
    }
}

/// Reads the frame id drawn by [`PatternSource`] from a decoded luma plane with rows
/// `stride` bytes apart (the inner 8x8 of each block, thresholded at mid-grey). `None` if
/// the picture is too small.
pub fn read_pattern_id(luma: &[u8], stride: usize, width: usize, height: usize) -> Option<u64> {
    if width < ID_BITS * BLOCK
        || height < BLOCK
        || stride < width
        || luma.len() < stride * (BLOCK - 1) + width
    {
        return None;
    }
    let mut id = 0u64;
    for bit in 0..ID_BITS {
        let mut sum = 0u32;
        for y in 4..12 {
            for x in 4..12 {
                sum += u32::from(luma[y * stride + bit * BLOCK + x]);
            }
        }
        id = (id << 1) | u64::from(sum / 64 > 128);
    }
    Some(id)
}

/// What a sink saw of one frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Arrival {
    /// The frame id from its stamp.
    pub id: u64,
    /// Capture to playout.
    pub latency: std::time::Duration,
}

/// Records arrivals: order, gaps and latency.
#[derive(Clone, Debug, Default)]
pub struct ArrivalLog {
    arrivals: Vec<Arrival>,
}

impl ArrivalLog {
    /// Records a frame captured at `captured` and played out at `played`.
    pub fn record(&mut self, id: u64, captured: Instant, played: Instant) {
        self.arrivals.push(Arrival {
            id,
            latency: played.saturating_duration_since(captured),
        });
    }

    /// Records frame `id` played `latency` after its capture.
    pub fn push(&mut self, id: u64, latency: std::time::Duration) {
        self.arrivals.push(Arrival { id, latency });
    }

    /// Everything recorded, in arrival order.
    pub fn arrivals(&self) -> &[Arrival] {
        &self.arrivals
    }

    /// Whether ids only ever increased.
    pub fn in_order(&self) -> bool {
        self.arrivals.windows(2).all(|w| w[0].id < w[1].id)
    }

    /// The `p`-quantile (0..=1) of latency.
    pub fn latency_quantile(&self, p: f64) -> Option<std::time::Duration> {
        let mut l: Vec<_> = self.arrivals.iter().map(|a| a.latency).collect();
        l.sort();
        let i = ((l.len() as f64 - 1.0) * p.clamp(0.0, 1.0)).round() as usize;
        l.get(i).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_frequency_is_measurable_per_frame() {
        let t0 = Instant::now();
        let mut s = AudioSource::new(AudioSignal::Tone { hz: 440.0 }, 20);
        let f = s.next_frame(t0);
        assert_eq!(f.samples.len(), 960);
        let hz = estimate_frequency(&f.samples).expect("a tone");
        assert!((hz - 440.0).abs() < 2.0, "{hz}");
        assert_eq!(s.next_frame(t0).id, 1);
        assert_eq!(
            AudioSource::new(AudioSignal::Speech, 10)
                .next_frame(t0)
                .samples
                .len(),
            480
        );
    }

    #[test]
    fn pattern_id_reads_back_even_with_noise() {
        let mut p = PatternSource::new(640, 360);
        let t0 = Instant::now();
        for _ in 0..5 {
            p.next_frame(t0);
        }
        let mut f = p.next_frame(t0);
        assert_eq!(f.id, 5);
        // Coding noise of +-40 on every pixel does not change the id.
        for (i, v) in f.i420.iter_mut().enumerate().take(640 * 360) {
            *v = v.saturating_add_signed(if i % 2 == 0 { 40 } else { -40 });
        }
        assert_eq!(read_pattern_id(&f.i420, 640, 640, 360), Some(5));
    }

    #[test]
    fn arrival_log_orders_and_quantiles() {
        let t0 = Instant::now();
        let mut log = ArrivalLog::default();
        for (id, ms) in [(0, 30), (1, 20), (2, 40)] {
            log.record(id, t0, t0 + std::time::Duration::from_millis(ms));
        }
        assert!(log.in_order());
        assert_eq!(
            log.latency_quantile(0.5),
            Some(std::time::Duration::from_millis(30))
        );
        log.record(1, t0, t0);
        assert!(!log.in_order());
    }
}
