//! One audio receive chain per remote sender: decrypted payloads in, PCM out.
//!
//! A chain learns the sender's frame length (10 or 20 ms, the sender's choice) from the
//! packets themselves, orders them in a [`JitterBuffer`] and decodes them with Opus,
//! concealing (or recovering from FEC) what was lost. It is pulled by the device clock:
//! [`AudioChain::pull`] adds exactly as many samples as asked for.
//!
//! While a sender is silent, Opus DTX sends next to nothing (a comfort-noise packet every
//! 400 ms). A chain that heard nothing for [`DORMANT_AFTER`] goes dormant: it adds
//! nothing and conceals nothing, so a room of mostly silent people costs no decoding. The
//! next packet wakes it with a fresh jitter buffer, which starts its schedule from that
//! packet instead of concealing the whole pause. A packet that no other follows (a DTX
//! comfort packet, 400 ms after the last) keeps it awake only [`LONE_PACKET_AFTER`].

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use sotto_media::{
    jitter::{JitterBuffer, JitterConfig, Playout, Pushed},
    payload::{self, Stamp},
    synth::{SAMPLE_RATE, estimate_frequency},
};

use crate::codec::{CodecError, audio::AudioDecoder};

/// A chain that received no packet for this long (and has nothing left to play) is
/// dormant: silent, and concealing nothing. Half the Opus DTX comfort-packet interval.
pub const DORMANT_AFTER: Duration = Duration::from_millis(200);

/// A chain woken by one packet that no second one has followed yet goes dormant again
/// after this long: DTX comfort packets come alone, 400 ms apart, and each would otherwise
/// cost [`DORMANT_AFTER`] of concealment. Speech resuming sends its second packet one
/// frame (10 or 20 ms) after the first.
pub const LONE_PACKET_AFTER: Duration = Duration::from_millis(60);

/// Played stamps kept at most (the oldest go first); drain them with
/// [`AudioChain::take_played_stamps`].
pub const MAX_PLAYED_STAMPS: usize = 10_000;

/// Frame length assumed until the sender's first packet says otherwise (20 ms).
const DEFAULT_FRAME_SAMPLES: usize = 960;
/// Played frames before the chain starts keeping PCM for [`AudioChain::received_hz`]
/// (the decoder's start-up and the first concealments are not the sender's tone).
const WARMUP_FRAMES: u64 = 25;
/// PCM kept for [`AudioChain::received_hz`]: the last 2 s.
const KEEP_PCM: usize = 2 * SAMPLE_RATE as usize;

/// Counters of one chain, over its whole life (across dormant periods).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainStats {
    /// Packets accepted into the jitter buffer.
    pub received: u64,
    /// Frames decoded and played.
    pub played: u64,
    /// Slots the jitter buffer had no frame for, filled by PLC or FEC (includes
    /// [`fec_recovered`](Self::fec_recovered)).
    pub concealed: u64,
    /// Of the concealed slots, those recovered from the next packet's in-band FEC.
    pub fec_recovered: u64,
    /// Packets that arrived after their slot had been played.
    pub late: u64,
    /// Packets already buffered or played.
    pub duplicates: u64,
    /// Payloads that were not ours or not plausible Opus.
    pub malformed: u64,
    /// Packets with a frame length other than the one the chain is playing (dropped
    /// rather than misplaced; the length is learned again when the chain wakes).
    pub misframed: u64,
    /// Frames the decoder refused (played as concealment instead).
    pub decode_errors: u64,
    /// Samples asked for while awake that had no audio due yet (left silent).
    pub underrun_samples: u64,
    /// Times a packet woke the chain from dormancy (the first packet is not a wake).
    pub wakes: u64,
}

/// The capture stamp of a played frame and when it was played: capture-to-playout
/// latency is `played_at - captured`, on a clock the caller maps (`WallClock`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlayedStamp {
    /// The stamp the sender put in the payload.
    pub stamp: Stamp,
    /// The `now` of the pull that decoded it.
    pub played_at: Instant,
}

/// The receive chain of one remote sender: jitter buffer → Opus decoder → PCM queue.
pub struct AudioChain {
    decoder: AudioDecoder,
    jitter: JitterBuffer,
    ts_unwrap: TimestampUnwrap,
    /// The sender's frame length in samples, once learned.
    frame_samples: Option<usize>,
    last_arrival: Option<Instant>,
    /// Packets pushed since the chain last woke.
    since_wake: u64,
    /// Decoded audio not yet pulled (less than one frame beyond a pull).
    queue: VecDeque<i16>,
    /// Scratch for the decoder.
    pcm: Vec<i16>,
    /// Recently played audio, for [`Self::received_hz`].
    played_pcm: Vec<i16>,
    played_stamps: VecDeque<PlayedStamp>,
    stats: ChainStats,
}

impl std::fmt::Debug for AudioChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioChain")
            .field("frame_samples", &self.frame_samples)
            .field("last_arrival", &self.last_arrival)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// How long frames of `samples` last.
fn frame_of(samples: usize) -> Duration {
    Duration::from_micros(samples as u64 * 1_000_000 / u64::from(SAMPLE_RATE))
}

/// A jitter buffer for frames of `samples`, with the default least delay (a small margin:
/// it waits a frame more only after a loss, when FEC can use it).
fn jitter_for(samples: usize) -> JitterBuffer {
    JitterBuffer::new(JitterConfig {
        frame: frame_of(samples),
        ..JitterConfig::default()
    })
}

impl AudioChain {
    /// A dormant chain that has heard nothing yet.
    pub fn new() -> Result<Self, CodecError> {
        Ok(Self {
            decoder: AudioDecoder::new(DEFAULT_FRAME_SAMPLES)?,
            jitter: jitter_for(DEFAULT_FRAME_SAMPLES),
            ts_unwrap: TimestampUnwrap::default(),
            frame_samples: None,
            last_arrival: None,
            since_wake: 0,
            queue: VecDeque::new(),
            pcm: Vec::new(),
            played_pcm: Vec::new(),
            played_stamps: VecDeque::new(),
            stats: ChainStats::default(),
        })
    }

    /// Adds one decrypted payload ([`payload`] format: optional stamp, then Opus) that
    /// arrived at `now` with RTP timestamp `rtp_ts`. Wakes a dormant chain. Payloads that
    /// are not plausible Opus are counted and dropped.
    pub fn push(&mut self, rtp_ts: u32, plaintext: Vec<u8>, now: Instant) {
        let samples = payload::decode(&plaintext)
            .ok()
            .and_then(|(_, opus)| self.decoder.samples_in(opus));
        let Some(n) = samples else {
            self.stats.malformed += 1;
            return;
        };
        if self.is_dormant(now) {
            self.wake(n);
        } else if self.frame_samples != Some(n) {
            // The sender changed its framing mid-talk: drop rather than misplace.
            self.stats.misframed += 1;
            return;
        }
        self.last_arrival = Some(now);
        self.since_wake += 1;
        let index = self.ts_unwrap.unwrap(rtp_ts) / n as u64;
        match self.jitter.push(index, now, plaintext) {
            Pushed::Accepted => self.stats.received += 1,
            Pushed::Late => self.stats.late += 1,
            Pushed::Duplicate => self.stats.duplicates += 1,
        }
    }

    /// Starts a fresh schedule for frames of `n` samples (learning the sender's framing
    /// again: the pause is a safe place for it to have changed).
    fn wake(&mut self, n: usize) {
        if self.last_arrival.is_some() {
            self.stats.wakes += 1;
        }
        if self.frame_samples != Some(n) {
            self.frame_samples = Some(n);
            self.decoder.set_frame_samples(n);
        }
        // A new schedule, but the path's jitter and a recent loss still count.
        self.jitter.restart(frame_of(n));
        self.since_wake = 0;
        self.queue.clear();
    }

    /// Adds (saturating) `out.len()` samples of this sender's audio due at `now` into
    /// `out`. A dormant chain adds nothing; a shortfall while awake stays silent.
    pub fn pull(&mut self, now: Instant, out: &mut [i16]) {
        if self.is_dormant(now) {
            self.queue.clear();
            return;
        }
        while self.queue.len() < out.len() {
            let Some(p) = self.jitter.poll(now) else {
                break;
            };
            self.play(p, now);
        }
        let take = self.queue.len().min(out.len());
        self.stats.underrun_samples += (out.len() - take) as u64;
        let keep = self.stats.played > WARMUP_FRAMES;
        for (o, s) in out.iter_mut().zip(self.queue.drain(..take)) {
            *o = o.saturating_add(s);
            if keep {
                self.played_pcm.push(s);
            }
        }
        if self.played_pcm.len() > 2 * KEEP_PCM {
            self.played_pcm.drain(..self.played_pcm.len() - KEEP_PCM);
        }
    }

    /// Decodes or conceals one slot into the queue.
    fn play(&mut self, p: Playout, now: Instant) {
        match p {
            Playout::Frame { payload: data, .. } => match self.decode(&data) {
                Some(stamp) => {
                    self.stats.played += 1;
                    if let Some(stamp) = stamp {
                        self.record_stamp(stamp, now);
                    }
                }
                None => {
                    self.stats.decode_errors += 1;
                    self.conceal(None);
                }
            },
            Playout::Conceal { next, .. } => self.conceal(next.as_deref()),
        }
        self.queue.extend(self.pcm.iter().copied());
    }

    /// Decodes a payload into the scratch: its stamp, or `None` if the decoder refused.
    fn decode(&mut self, data: &[u8]) -> Option<Option<Stamp>> {
        let (stamp, opus) = payload::decode(data).ok()?;
        self.decoder.decode(opus, &mut self.pcm).ok()?;
        Some(stamp)
    }

    /// Fills the scratch with concealment for a lost slot, from `next`'s FEC if present.
    fn conceal(&mut self, next: Option<&[u8]>) {
        let next_opus = next.and_then(|n| payload::decode(n).ok()).map(|(_, o)| o);
        let fec_before = self.decoder.fec_recovered;
        if self.decoder.conceal(next_opus, &mut self.pcm).is_err() {
            // Not even concealment: the slot stays silent, but keeps its length.
            self.pcm.clear();
            self.pcm
                .resize(self.frame_samples.unwrap_or(DEFAULT_FRAME_SAMPLES), 0);
        }
        self.stats.concealed += 1;
        self.stats.fec_recovered += self.decoder.fec_recovered - fec_before;
    }

    fn record_stamp(&mut self, stamp: Stamp, played_at: Instant) {
        if self.played_stamps.len() >= MAX_PLAYED_STAMPS {
            self.played_stamps.pop_front();
        }
        self.played_stamps
            .push_back(PlayedStamp { stamp, played_at });
    }

    /// Whether the sender has been quiet for [`DORMANT_AFTER`] ([`LONE_PACKET_AFTER`] after
    /// a lone packet) with nothing left to play, or has sent nothing yet: the chain then
    /// adds nothing and conceals nothing.
    pub fn is_dormant(&self, now: Instant) -> bool {
        let Some(last) = self.last_arrival else {
            return true;
        };
        let j = self.jitter.stats();
        // Every accepted frame is either still buffered, played or dropped.
        let buffered = j.received.saturating_sub(j.played + j.dropped);
        let quiet = if self.since_wake > 1 {
            DORMANT_AFTER
        } else {
            LONE_PACKET_AFTER
        };
        now.saturating_duration_since(last) >= quiet && buffered == 0
    }

    /// The dominant frequency of the last 2 s played (after the first 25 frames), for
    /// tests and benches that send a tone.
    pub fn received_hz(&self) -> Option<f64> {
        let from = self.played_pcm.len().saturating_sub(KEEP_PCM);
        estimate_frequency(&self.played_pcm[from..])
    }

    /// The sender's frame length in samples (480 or 960), once a packet said it.
    pub fn frame_samples(&self) -> Option<usize> {
        self.frame_samples
    }

    /// Counters so far.
    pub fn stats(&self) -> ChainStats {
        self.stats
    }

    /// Stamps of played frames not yet taken (at most [`MAX_PLAYED_STAMPS`]).
    pub fn played_stamps(&self) -> impl Iterator<Item = &PlayedStamp> {
        self.played_stamps.iter()
    }

    /// Takes the stamps of played frames recorded so far, oldest first.
    pub fn take_played_stamps(&mut self) -> Vec<PlayedStamp> {
        self.played_stamps.drain(..).collect()
    }
}

/// Extends 32-bit RTP timestamps to 64 bits across wraps.
#[derive(Debug, Default)]
pub(crate) struct TimestampUnwrap {
    last: Option<u64>,
}

impl TimestampUnwrap {
    /// The 64-bit timestamp nearest to the highest seen so far that ends in `ts`.
    pub(crate) fn unwrap(&mut self, ts: u32) -> u64 {
        let v = match self.last {
            None => u64::from(ts) + (1 << 32),
            Some(last) => {
                let base = last & !0xffff_ffff;
                [base.wrapping_sub(1 << 32), base, base + (1 << 32)]
                    .iter()
                    .map(|b| b + u64::from(ts))
                    .min_by_key(|c| c.abs_diff(last))
                    .unwrap_or(base + u64::from(ts))
            }
        };
        self.last = Some(self.last.map_or(v, |l| l.max(v)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{
        Mixer, PULL_SAMPLES,
        testing::{Talker, at, run},
    };

    fn chain(m: &Mixer<usize>) -> &AudioChain {
        m.chain(0).expect("chain 0")
    }

    fn assert_hz(c: &AudioChain, want: f64) {
        let hz = c.received_hz().expect("a tone was played");
        assert!((hz - want).abs() < 5.0, "heard {hz} Hz, sent {want} Hz");
    }

    #[test]
    fn after_a_first_loss_the_next_is_recovered_from_fec_and_two_in_a_row_by_plc() {
        let t0 = Instant::now();
        let mut m = Mixer::new();
        let mut talkers = [Talker::new(440.0, 20, t0)];
        // On a clean path the delay is under a frame: the first loss has no next packet
        // to recover from yet, so it is concealed and one slot more (a stretch) gives
        // the buffer the frame of delay FEC needs.
        run(&mut m, &mut talkers, t0, at(t0, 1000), |_, id| id == 20);
        let s = chain(&m).stats();
        assert_eq!((s.concealed, s.fec_recovered), (2, 0), "{s:?}");
        assert_eq!(s.played, 48, "frames 0..=48 but the lost one");
        // Now a lost packet is rebuilt from the next one's FEC.
        run(&mut m, &mut talkers, at(t0, 1000), at(t0, 1500), |_, id| {
            id == 60
        });
        let s = chain(&m).stats();
        assert_eq!((s.concealed, s.fec_recovered), (3, 1), "{s:?}");
        // Two in a row: the first has no next packet to recover from.
        run(&mut m, &mut talkers, at(t0, 1500), at(t0, 2000), |_, id| {
            id == 90 || id == 91
        });
        let s = chain(&m).stats();
        assert_eq!((s.concealed, s.fec_recovered), (5, 2), "{s:?}");
        assert_eq!(s.decode_errors, 0);
        assert_hz(chain(&m), 440.0);
    }

    #[test]
    fn silence_makes_the_chain_dormant_and_the_next_packet_wakes_it_without_concealing_the_pause() {
        let t0 = Instant::now();
        let mut m = Mixer::new();
        let mut talkers = [Talker::new(440.0, 20, t0)];
        // Frames 25..45 (500 to 900 ms) never arrive: the sender paused for 400 ms.
        let paused = |_: usize, id: u64| (25..45).contains(&id);
        run(&mut m, &mut talkers, t0, at(t0, 690), paused);
        // Frame 24 arrived at 485 ms and played at 510 ms; up to 685 ms the chain
        // conceals, from then on it is dormant.
        assert!(!chain(&m).is_dormant(at(t0, 684)));
        assert!(chain(&m).is_dormant(at(t0, 685)));
        let before = chain(&m).stats();
        assert!(before.concealed <= 9, "{before:?}");
        let quiet = run(&mut m, &mut talkers, at(t0, 690), at(t0, 900), paused);
        assert!(
            quiet.iter().all(|&s| s == 0),
            "a dormant chain adds nothing"
        );
        assert_eq!(
            chain(&m).stats().concealed,
            before.concealed,
            "nor conceals"
        );
        assert_eq!(m.active(at(t0, 900)).count(), 0);
        // Pulled directly, it leaves what is there alone.
        let mut buf = [7i16; PULL_SAMPLES];
        m.chain_mut(0).expect("chain").pull(at(t0, 900), &mut buf);
        assert_eq!(buf, [7; PULL_SAMPLES]);

        // Frame 45 arrives at 905 ms: the chain wakes and plays it one frame later.
        run(&mut m, &mut talkers, at(t0, 900), at(t0, 1500), paused);
        let after = chain(&m).stats();
        assert_eq!(after.wakes, 1);
        assert_eq!(
            after.concealed, before.concealed,
            "the pause is not concealed"
        );
        assert_eq!(after.played, before.played + 29, "frames 45..=73");
        assert_eq!(m.active(at(t0, 1500)).collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn dtx_comfort_packets_wake_the_chain_only_briefly() {
        let t0 = Instant::now();
        let mut m = Mixer::new();
        let mut talkers = [Talker::new(440.0, 20, t0)];
        run(&mut m, &mut talkers, t0, at(t0, 1000), |_, _| false);
        // Three seconds of silence: the encoder's DTX sends (almost) nothing.
        talkers[0].silent = true;
        let (mut dormant_steps, mut steps) = (0, 0);
        for ms in (1000..4000).step_by(10) {
            run(&mut m, &mut talkers, at(t0, ms), at(t0, ms + 10), |_, _| {
                false
            });
            steps += 1;
            dormant_steps += usize::from(chain(&m).is_dormant(at(t0, ms + 10)));
        }
        let s = chain(&m).stats();
        assert!(s.wakes >= 2, "comfort packets woke the chain: {s:?}");
        assert!(
            dormant_steps * 3 >= steps * 2,
            "dormant {dormant_steps} of {steps} steps"
        );
        assert!(
            s.concealed <= 30,
            "silence is not concealed frame by frame: {s:?}"
        );
        // Speech again: heard at once, and the tone is intact.
        talkers[0].silent = false;
        run(&mut m, &mut talkers, at(t0, 4000), at(t0, 6500), |_, _| {
            false
        });
        assert!(!chain(&m).is_dormant(at(t0, 6500)));
        assert_hz(chain(&m), 440.0);
        assert_eq!(chain(&m).stats().decode_errors, 0);
    }

    #[test]
    fn a_lone_packet_wakes_the_chain_for_one_frame() {
        let t0 = Instant::now();
        let mut m = Mixer::new();
        let mut talkers = [Talker::new(440.0, 20, t0)];
        // Talk until frame 24, then only frame 35 (a comfort packet, 700 ms), then from 60.
        let gaps = |_: usize, id: u64| (25..35).contains(&id) || (36..60).contains(&id);
        run(&mut m, &mut talkers, t0, at(t0, 700), gaps);
        let before = chain(&m).stats();
        assert!(chain(&m).is_dormant(at(t0, 700)));
        // Frame 35 arrives at 705 ms, plays at 725 ms (pulled at 730 ms).
        let heard = run(&mut m, &mut talkers, at(t0, 700), at(t0, 800), gaps);
        let s = chain(&m).stats();
        assert_eq!((s.wakes, s.played), (1, before.played + 1));
        assert!(heard[..3 * PULL_SAMPLES].iter().all(|&v| v == 0));
        assert!(
            heard[3 * PULL_SAMPLES..5 * PULL_SAMPLES]
                .iter()
                .any(|&v| v != 0)
        );
        assert!(!chain(&m).is_dormant(at(t0, 764)));
        assert!(
            chain(&m).is_dormant(at(t0, 765)),
            "60 ms after the lone packet"
        );
        assert!(s.concealed <= before.concealed + 2, "{s:?}");
        // Speech resumes: the second packet keeps it awake as usual.
        run(&mut m, &mut talkers, at(t0, 800), at(t0, 1500), gaps);
        assert_eq!(chain(&m).stats().wakes, 2);
        assert!(!chain(&m).is_dormant(at(t0, 1500)));
    }

    #[test]
    fn a_sender_of_10_ms_frames_plays_without_gaps() {
        let t0 = Instant::now();
        let mut m = Mixer::new();
        let mut talkers = [Talker::new(523.0, 10, t0)];
        run(&mut m, &mut talkers, t0, at(t0, 500), |_, _| false);
        let warm = chain(&m).stats();
        run(&mut m, &mut talkers, at(t0, 500), at(t0, 2000), |_, _| {
            false
        });
        let s = chain(&m).stats();
        assert_eq!(chain(&m).frame_samples(), Some(480));
        assert_eq!(
            s.underrun_samples, warm.underrun_samples,
            "no gaps once playing"
        );
        assert_eq!(s.concealed, 0);
        assert_eq!(s.played, warm.played + 150);
        assert_hz(chain(&m), 523.0);
    }

    #[test]
    fn a_change_of_framing_mid_talk_is_dropped() {
        let t0 = Instant::now();
        let mut m = Mixer::new();
        let mut talkers = [Talker::new(440.0, 20, t0)];
        run(&mut m, &mut talkers, t0, at(t0, 300), |_, _| false);
        let mut ten = Talker::new(440.0, 10, t0);
        let (_, _, packet) = ten.next_packet();
        let (ts, payload) = packet.expect("a tone is sent");
        let c = m.chain_mut(0).expect("chain");
        c.push(ts, payload, at(t0, 300));
        assert_eq!((c.stats().misframed, c.frame_samples()), (1, Some(960)));
    }

    #[test]
    fn rtp_timestamps_wrapping_mid_call_are_seamless() {
        let t0 = Instant::now();
        let mut m = Mixer::new();
        let mut talkers = [Talker::new(440.0, 20, t0).starting_at(u32::MAX - 5 * 960 + 7)];
        run(&mut m, &mut talkers, t0, at(t0, 1000), |_, _| false);
        let s = chain(&m).stats();
        assert_eq!((s.played, s.concealed, s.late), (50, 0, 0), "{s:?}");
    }

    #[test]
    fn played_frames_report_their_stamps() {
        let t0 = Instant::now();
        let mut m = Mixer::new();
        let mut talkers = [Talker::new(440.0, 20, t0)];
        run(&mut m, &mut talkers, t0, at(t0, 500), |_, _| false);
        let c = m.chain_mut(0).expect("chain");
        let stamps = c.take_played_stamps();
        assert_eq!(
            stamps.iter().map(|p| p.stamp.id).collect::<Vec<_>>(),
            (0..25).collect::<Vec<_>>()
        );
        for p in &stamps {
            let captured = t0 + Duration::from_micros(p.stamp.captured_us);
            // 5 ms network and the 2 ms least delay: played at the next 10 ms pull.
            assert_eq!(p.played_at - captured, Duration::from_millis(10), "{p:?}");
        }
        assert_eq!(c.played_stamps().count(), 0, "taken");
    }

    #[test]
    fn garbage_is_counted_and_ignored() {
        let t0 = Instant::now();
        let mut c = AudioChain::new().expect("chain");
        for junk in [
            vec![],
            vec![0x80, 1, 2],
            vec![1, 2, 3],
            vec![0, 0xff, 0xff, 0xff],
        ] {
            c.push(0, junk, t0);
        }
        assert_eq!(c.stats().malformed, 4);
        assert!(c.is_dormant(t0), "garbage wakes nothing");
        let mut buf = [0i16; PULL_SAMPLES];
        c.pull(at(t0, 100), &mut buf);
        assert_eq!(buf, [0; PULL_SAMPLES]);
    }

    #[test]
    fn timestamps_unwrap_across_the_wrap_and_reordering() {
        let mut u = TimestampUnwrap::default();
        let base = 1u64 << 32;
        assert_eq!(u.unwrap(u32::MAX - 10), base + u64::from(u32::MAX - 10));
        assert_eq!(u.unwrap(5), 2 * base + 5, "wrapped forward");
        assert_eq!(
            u.unwrap(u32::MAX - 20),
            base + u64::from(u32::MAX - 20),
            "a reordered packet from before the wrap"
        );
        assert_eq!(u.unwrap(100), 2 * base + 100);
    }
}
