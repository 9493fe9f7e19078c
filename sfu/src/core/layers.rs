//! Simulcast: what each publisher's layers cost, which layer each subscriber gets, and
//! which layers nobody watches. Layers are told apart by their RTP stream (the RID
//! header extension's value, in the order the publisher's offer lists them: lowest
//! first); keyframes come from RFC 9626 frame marking, never from the payload.

use std::time::{Duration, Instant};

/// Most layers a publisher sends.
pub const MAX_LAYERS: usize = 3;
/// A layer that sent nothing for this long is not active (paused, or gone).
const INACTIVE_AFTER: Duration = Duration::from_secs(1);
/// A layer nobody has chosen for this long is paused at the publisher.
pub const PAUSE_AFTER: Duration = Duration::from_secs(2);
/// Weight of the newest interval in a layer's smoothed rate.
const SMOOTHING: f64 = 0.5;
/// What one subscriber's audio costs per heard speaker, bits per second (Opus + headers).
pub const AUDIO_BPS: u64 = 48_000;

/// One publisher's layers as the SFU sees them arrive.
#[derive(Debug, Clone, Default)]
pub struct LayerRates {
    bytes: [u64; MAX_LAYERS],
    /// Smoothed bitrate per layer, bits per second.
    pub bps: [f64; MAX_LAYERS],
    last_packet: [Option<Instant>; MAX_LAYERS],
    /// When someone last chose each layer.
    pub last_wanted: [Option<Instant>; MAX_LAYERS],
    /// The layers the publisher was last told to pause.
    pub paused: [bool; MAX_LAYERS],
}

impl LayerRates {
    /// One packet of `layer`, `len` bytes.
    pub fn observe(&mut self, layer: u8, len: usize, now: Instant) {
        let l = usize::from(layer).min(MAX_LAYERS - 1);
        self.bytes[l] += len as u64;
        self.last_packet[l] = Some(now);
    }

    /// Folds `interval`'s bytes into the smoothed rates.
    pub fn tick(&mut self, interval: Duration) {
        let secs = interval.as_secs_f64().max(1e-3);
        for l in 0..MAX_LAYERS {
            let bps = self.bytes[l] as f64 * 8.0 / secs;
            self.bps[l] = if self.bps[l] == 0.0 {
                bps
            } else {
                SMOOTHING * bps + (1.0 - SMOOTHING) * self.bps[l]
            };
            self.bytes[l] = 0;
        }
    }

    /// Which layers are sending now.
    pub fn active(&self, now: Instant) -> [bool; MAX_LAYERS] {
        self.last_packet
            .map(|t| t.is_some_and(|t| now.saturating_duration_since(t) < INACTIVE_AFTER))
    }

    /// Someone chose `layer` now.
    pub fn want(&mut self, layer: u8, now: Instant) {
        if let Some(w) = self.last_wanted.get_mut(usize::from(layer)) {
            *w = Some(now);
        }
    }

    /// The layers to pause: nobody chose them for [`PAUSE_AFTER`] (the lowest stays on
    /// while anyone watches this publisher at all). `None` when that did not change.
    pub fn pause_change(&mut self, now: Instant) -> Option<[bool; MAX_LAYERS]> {
        let watched = self
            .last_wanted
            .iter()
            .any(|t| t.is_some_and(|t| now.saturating_duration_since(t) < PAUSE_AFTER));
        let mut paused = self
            .last_wanted
            .map(|t| t.is_none_or(|t| now.saturating_duration_since(t) >= PAUSE_AFTER));
        if watched {
            paused[0] = false;
        }
        (paused != self.paused).then(|| {
            self.paused = paused;
            paused
        })
    }
}

/// The best layer for a subscriber with `budget` bits per second for this publisher's
/// video: the highest active layer up to `max_layer` that fits; the lowest active one if
/// none fits (a picture, however small, beats none).
pub fn choose(rates: &LayerRates, budget: f64, max_layer: u8, now: Instant) -> u8 {
    let active = rates.active(now);
    let lowest = active.iter().position(|a| *a).unwrap_or(0);
    let top = MAX_LAYERS.min(usize::from(max_layer) + 1);
    let best = (lowest..top)
        .rfind(|l| active[*l] && rates.bps[*l] <= budget)
        .unwrap_or(lowest);
    best as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(bps: [f64; 3], now: Instant) -> LayerRates {
        let mut r = LayerRates::default();
        for (l, b) in bps.iter().enumerate() {
            if *b > 0.0 {
                r.observe(l as u8, 1, now);
            }
        }
        r.bps = bps;
        r
    }

    #[test]
    fn the_highest_layer_that_fits_within_the_subscribers_maximum() {
        let now = Instant::now();
        let r = rates([150e3, 450e3, 1_500e3], now);
        assert_eq!(choose(&r, 300e3, 2, now), 0);
        assert_eq!(choose(&r, 600e3, 2, now), 1);
        assert_eq!(choose(&r, 5e6, 2, now), 2);
        assert_eq!(
            choose(&r, 5e6, 1, now),
            1,
            "the subscriber asked for at most 1"
        );
        assert_eq!(choose(&r, 10e3, 2, now), 0, "the lowest when nothing fits");
        // A paused (silent) high layer is never chosen.
        let later = now + Duration::from_secs(2);
        let mut r2 = r.clone();
        r2.observe(0, 1, later);
        assert_eq!(choose(&r2, 5e6, 2, later), 0);
    }

    #[test]
    fn unwatched_layers_pause_and_resume() {
        let t0 = Instant::now();
        let mut r = LayerRates::default();
        r.want(0, t0);
        r.want(2, t0);
        assert_eq!(r.pause_change(t0), Some([false, true, false]));
        assert_eq!(r.pause_change(t0), None, "no change, no message");
        // Nobody wants layer 2 any more: after PAUSE_AFTER it pauses; 0 stays while 0 is
        // watched.
        let t1 = t0 + Duration::from_secs(1);
        r.want(0, t1);
        let t2 = t0 + PAUSE_AFTER + Duration::from_millis(10);
        assert_eq!(r.pause_change(t2), Some([false, true, true]));
        // Nobody watches at all: everything pauses.
        let t3 = t2 + PAUSE_AFTER;
        assert_eq!(r.pause_change(t3), Some([true, true, true]));
    }

    #[test]
    fn rates_follow_the_bytes() {
        let t = Instant::now();
        let mut r = LayerRates::default();
        r.observe(1, 30_000, t);
        r.tick(Duration::from_millis(300));
        assert!((r.bps[1] - 800_000.0).abs() < 1.0);
        r.tick(Duration::from_millis(300));
        assert!((r.bps[1] - 400_000.0).abs() < 1.0);
    }
}
