//! The mixer: sums the audio of every active receive chain into what the speaker plays.
//!
//! The speaker's callback drives it ([`Mixer::pull`], 10 ms at a time), so playout follows
//! the device clock. Chains are keyed by whatever names a sender to the caller (its MLS
//! leaf in a room); dormant chains (silent senders) cost nothing.

use std::{
    collections::{BTreeMap, btree_map::Entry},
    time::{Duration, Instant},
};

use super::recv::AudioChain;
use crate::codec::CodecError;

/// Samples in one pull: 10 ms at 48 kHz.
pub const PULL_SAMPLES: usize = 480;
/// The duration of [`PULL_SAMPLES`].
const PULL: Duration = Duration::from_millis(10);

/// Receive chains by sender key, and their sum.
#[derive(Debug)]
pub struct Mixer<K: Ord + Copy> {
    chains: BTreeMap<K, AudioChain>,
}

impl<K: Ord + Copy> Default for Mixer<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + Copy> Mixer<K> {
    /// A mixer with no chains.
    pub fn new() -> Self {
        Self {
            chains: BTreeMap::new(),
        }
    }

    /// The chain of `key`, created (dormant) on first use; creating a decoder can fail.
    pub fn chain_mut(&mut self, key: K) -> Result<&mut AudioChain, CodecError> {
        match self.chains.entry(key) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => Ok(e.insert(AudioChain::new()?)),
        }
    }

    /// The chain of `key`, if it exists.
    pub fn chain(&self, key: K) -> Option<&AudioChain> {
        self.chains.get(&key)
    }

    /// Drops the chain of `key` (the sender left); returns it, for its last stats.
    pub fn remove(&mut self, key: K) -> Option<AudioChain> {
        self.chains.remove(&key)
    }

    /// Fills `out` with the sum of every awake chain, starting at `now`. Taken
    /// [`PULL_SAMPLES`] at a time: the `i`-th 10 ms of `out` is asked of the chains at
    /// `now + i * 10 ms`, when it will be played.
    pub fn pull(&mut self, now: Instant, out: &mut [i16]) {
        out.fill(0);
        let mut at = now;
        for chunk in out.chunks_mut(PULL_SAMPLES) {
            for chain in self.chains.values_mut() {
                // A dormant chain adds nothing (it checks itself, at `at`).
                chain.pull(at, chunk);
            }
            at += PULL;
        }
    }

    /// The keys of the chains that are not dormant at `now`: who may be heard.
    pub fn active(&self, now: Instant) -> impl Iterator<Item = K> + '_ {
        self.chains
            .iter()
            .filter(move |(_, c)| !c.is_dormant(now))
            .map(|(k, _)| *k)
    }

    /// Every chain with its key, for stats.
    pub fn chains(&self) -> impl Iterator<Item = (K, &AudioChain)> {
        self.chains.iter().map(|(k, c)| (*k, c))
    }

    /// How many chains there are.
    pub fn len(&self) -> usize {
        self.chains.len()
    }

    /// Whether there are no chains.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::testing::{Talker, amplitude, at, run};

    /// The amplitude of the synthetic tones (half of full scale).
    const TONE: f64 = 0.5 * i16::MAX as f64;

    #[test]
    fn two_senders_are_each_heard_and_summed() {
        let t0 = Instant::now();
        let mut m = Mixer::new();
        let mut talkers = [Talker::new(440.0, 20, t0), Talker::new(660.0, 20, t0)];
        let mixed = run(&mut m, &mut talkers, t0, at(t0, 1500), |_, _| false);
        for (key, hz) in [(0, 440.0), (1, 660.0)] {
            let c = m.chain(key).expect("chain");
            let heard = c.received_hz().expect("a tone");
            assert!(
                (heard - hz).abs() < 5.0,
                "sender {key}: {heard} Hz, sent {hz}"
            );
            assert_eq!(c.stats().concealed, 0);
        }
        // The last second of the mix holds both tones at nearly full strength, and not
        // much in between.
        let last = &mixed[mixed.len() - 48_000..];
        for hz in [440.0, 660.0] {
            let a = amplitude(last, hz);
            assert!(a > 0.9 * TONE, "{hz} Hz at {a}");
        }
        let between = amplitude(last, 550.0);
        assert!(between < 0.05 * TONE, "550 Hz at {between}");
        assert_eq!(m.active(at(t0, 1500)).collect::<Vec<_>>(), [0, 1]);
    }

    #[test]
    fn a_dormant_sender_leaves_the_mix_to_the_others() {
        let t0 = Instant::now();
        let mut m = Mixer::new();
        let mut talkers = [Talker::new(440.0, 20, t0), Talker::new(660.0, 20, t0)];
        // Sender 1 stops after 300 ms.
        let stops = |key: usize, id: u64| key == 1 && id >= 15;
        run(&mut m, &mut talkers, t0, at(t0, 1000), stops);
        assert_eq!(m.active(at(t0, 1000)).collect::<Vec<_>>(), [0]);
        let mixed = run(&mut m, &mut talkers, at(t0, 1000), at(t0, 2000), stops);
        assert!(amplitude(&mixed, 440.0) > 0.9 * TONE);
        assert!(
            amplitude(&mixed, 660.0) < 0.01 * TONE,
            "nothing of sender 1"
        );
        let concealed = m.chain(1).expect("chain").stats().concealed;
        assert!(concealed <= 10, "only until it went dormant: {concealed}");
    }

    #[test]
    fn chains_are_made_once_and_removed() {
        let t0 = Instant::now();
        let mut m = Mixer::new();
        let mut talkers = [Talker::new(440.0, 20, t0), Talker::new(660.0, 10, t0)];
        run(&mut m, &mut talkers, t0, at(t0, 200), |_, _| false);
        assert_eq!(m.len(), 2);
        let received = m.chain_mut(0).expect("chain").stats().received;
        assert_eq!(received, 10, "the same chain as the packets went to");
        let gone = m.remove(1).expect("chain 1");
        assert_eq!(gone.frame_samples(), Some(480));
        assert_eq!(m.chains().map(|(k, _)| k).collect::<Vec<_>>(), [0]);
        assert!(m.remove(1).is_none());
        // A pull of any length is filled, 10 ms at a time, from a zeroed buffer.
        let mut out = vec![123i16; 3 * PULL_SAMPLES + 17];
        m.pull(at(t0, 200), &mut out);
        assert!(out.iter().any(|&v| v != 123 && v != 0), "sender 0 is heard");
        let mut empty = Mixer::<u32>::default();
        let mut out = [5i16; PULL_SAMPLES];
        empty.pull(t0, &mut out);
        assert_eq!((out, empty.is_empty()), ([0; PULL_SAMPLES], true));
    }
}
