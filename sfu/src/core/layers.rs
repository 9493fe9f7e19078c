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
            // A silent layer (paused, or not sending) keeps the rate it was last measured
            // at: that is what resuming it would cost.
            if self.bytes[l] == 0 {
                continue;
            }
            let bps = self.bytes[l] as f64 * 8.0 / secs;
            self.bps[l] = if self.bps[l] == 0.0 {
                bps
            } else {
                SMOOTHING * bps + (1.0 - SMOOTHING) * self.bps[l]
            };
            self.bytes[l] = 0;
        }
    }

    /// Which layers can be had: sending now, or paused by us (resumed on demand).
    pub fn active(&self, now: Instant) -> [bool; MAX_LAYERS] {
        let mut out = [false; MAX_LAYERS];
        for (l, a) in out.iter_mut().enumerate() {
            let sending = self.last_packet[l]
                .is_some_and(|t| now.saturating_duration_since(t) < INACTIVE_AFTER);
            *a = sending || (self.paused[l] && self.bps[l] > 0.0);
        }
        out
    }

    /// The layers whose packets are arriving now.
    pub fn sending(&self, now: Instant) -> [bool; MAX_LAYERS] {
        self.last_packet
            .map(|t| t.is_some_and(|t| now.saturating_duration_since(t) < INACTIVE_AFTER))
    }

    /// Someone chose `layer` now.
    pub fn want(&mut self, layer: u8, now: Instant) {
        if let Some(w) = self.last_wanted.get_mut(usize::from(layer)) {
            *w = Some(now);
        }
    }

    /// The layers to pause: nobody chose them for [`PAUSE_AFTER`]. The lowest stays on
    /// while anyone watches this publisher, or `could_watch` (someone else is in its
    /// room): a subscriber gets a slot for a publisher only when its packets arrive, so a
    /// publisher paused entirely would never be seen by anyone who joins later. `None`
    /// when nothing changed.
    pub fn pause_change(&mut self, now: Instant, could_watch: bool) -> Option<[bool; MAX_LAYERS]> {
        let watched = could_watch
            || self
                .last_wanted
                .iter()
                .any(|t| t.is_some_and(|t| now.saturating_duration_since(t) < PAUSE_AFTER));
        let mut paused = self
            .last_wanted
            .map(|t| t.is_none_or(|t| now.saturating_duration_since(t) >= PAUSE_AFTER));
        if watched {
            paused[0] = false;
        }
        // A layer whose rate was never measured stays on until it is: paused first, it
        // would never be chosen (an unmeasured layer does not fit any budget), so a
        // publisher that joined an empty room would never be seen above its lowest
        // layer, or at all.
        for (p, bps) in paused.iter_mut().zip(self.bps) {
            *p &= bps > 0.0;
        }
        (paused != self.paused).then(|| {
            self.paused = paused;
            paused
        })
    }
}

/// A layer above the current one is chosen only when the budget exceeds its rate by this
/// factor, so an estimate hovering at a layer's rate does not flap between two layers.
pub const UP_HEADROOM: f64 = 1.25;
/// After a step down, how long before stepping up again.
pub const UP_BACKOFF: Duration = Duration::from_secs(3);

/// The best layer for a subscriber with `budget` bits per second for this publisher's
/// video: the highest active layer up to `max_layer` whose measured rate fits; the lowest
/// active one if none fits (a picture, however small, beats none). A layer whose rate is
/// not measured yet does not fit.
pub fn choose(rates: &LayerRates, budget: f64, max_layer: u8, now: Instant) -> u8 {
    choose_among(rates.active(now), rates, budget, max_layer)
}

/// [`choose`] among the layers arriving now only: for a slot that starts carrying this
/// publisher, which must start on a layer it can take a keyframe of. A paused layer
/// counts as available elsewhere (resuming it is a request away), but a free slot aimed
/// at one would wait for ever: the layer resumes only once a slot wants it.
pub fn choose_arriving(rates: &LayerRates, budget: f64, max_layer: u8, now: Instant) -> u8 {
    choose_among(rates.sending(now), rates, budget, max_layer)
}

fn choose_among(active: [bool; MAX_LAYERS], rates: &LayerRates, budget: f64, max_layer: u8) -> u8 {
    let lowest = active.iter().position(|a| *a).unwrap_or(0);
    let top = MAX_LAYERS.min(usize::from(max_layer) + 1);
    let best = (lowest..top)
        .rfind(|l| active[*l] && rates.bps[*l] > 0.0 && rates.bps[*l] <= budget)
        .unwrap_or(lowest);
    best as u8
}

/// [`choose`] with hysteresis for a slot now on `current` (stepped down last at
/// `last_down`): up only with [`UP_HEADROOM`] and not within [`UP_BACKOFF`] of a step
/// down; down as soon as the current layer no longer fits.
pub fn choose_from(
    rates: &LayerRates,
    budget: f64,
    max_layer: u8,
    current: Option<u8>,
    last_down: Option<Instant>,
    now: Instant,
) -> u8 {
    let fits = choose(rates, budget, max_layer, now);
    let Some(current) = current else {
        return fits;
    };
    if fits <= current {
        return fits;
    }
    let backing_off = last_down.is_some_and(|t| now.saturating_duration_since(t) < UP_BACKOFF);
    if backing_off {
        return current;
    }
    choose(rates, budget / UP_HEADROOM, max_layer, now).max(current)
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
        // A high layer that went silent by itself is never chosen; one we paused is.
        let later = now + Duration::from_secs(2);
        let mut r2 = r.clone();
        r2.observe(0, 1, later);
        assert_eq!(choose(&r2, 5e6, 2, later), 0);
        r2.paused = [false, true, true];
        assert_eq!(choose(&r2, 5e6, 2, later), 2);
    }

    #[test]
    fn stepping_up_needs_headroom_and_waits_after_a_step_down() {
        let now = Instant::now();
        let r = rates([150e3, 450e3, 1_500e3], now);
        // 500 kbit/s fits layer 1 (450k) but not with 25 % headroom: stay on 0.
        assert_eq!(choose_from(&r, 500e3, 2, Some(0), None, now), 0);
        assert_eq!(choose_from(&r, 600e3, 2, Some(0), None, now), 1);
        // Down at once.
        assert_eq!(choose_from(&r, 400e3, 2, Some(1), None, now), 0);
        // Just stepped down: no step up for a while, even with room.
        assert_eq!(choose_from(&r, 5e6, 2, Some(0), Some(now), now), 0);
        let later = now + UP_BACKOFF;
        let still_sending = rates([150e3, 450e3, 1_500e3], later);
        assert_eq!(
            choose_from(&still_sending, 5e6, 2, Some(0), Some(now), later),
            2
        );
        // A layer not measured yet is not chosen.
        let mut unknown = r.clone();
        unknown.bps = [150e3, 0.0, 0.0];
        assert_eq!(choose(&unknown, 5e6, 2, now), 0);
    }

    #[test]
    fn a_new_slot_starts_on_a_layer_that_is_arriving() {
        // A publisher that was alone: its upper layers are paused (measured before), only
        // the lowest arrives. A free slot must start on the lowest; the allocation then
        // raises it (and so unpauses the layer it wants).
        let now = Instant::now();
        let mut r = LayerRates {
            bps: [150e3, 500e3, 1.5e6],
            paused: [false, true, true],
            ..LayerRates::default()
        };
        r.observe(0, 1000, now);
        assert_eq!(choose(&r, 5e6, 2, now), 2, "available once resumed");
        assert_eq!(
            choose_arriving(&r, 5e6, 2, now),
            0,
            "but only the lowest arrives"
        );
    }

    #[test]
    fn unwatched_layers_pause_and_resume() {
        let t0 = Instant::now();
        let mut r = LayerRates::default();
        // Nothing measured yet: nothing pauses, watched or not.
        assert_eq!(r.pause_change(t0, false), None);
        r.bps = [100e3, 300e3, 900e3];
        r.want(0, t0);
        r.want(2, t0);
        assert_eq!(r.pause_change(t0, false), Some([false, true, false]));
        assert_eq!(r.pause_change(t0, false), None, "no change, no message");
        // Nobody wants layer 2 any more: after PAUSE_AFTER it pauses; 0 stays while 0 is
        // watched.
        let t1 = t0 + Duration::from_secs(1);
        r.want(0, t1);
        let t2 = t0 + PAUSE_AFTER + Duration::from_millis(10);
        assert_eq!(r.pause_change(t2, false), Some([false, true, true]));
        // Nobody watches at all: everything pauses.
        let t3 = t2 + PAUSE_AFTER;
        assert_eq!(r.pause_change(t3, false), Some([true, true, true]));
        // Someone joins the room: the lowest layer resumes so they get a slot for it.
        assert_eq!(r.pause_change(t3, true), Some([false, true, true]));
    }

    #[test]
    fn rates_follow_the_bytes() {
        let t = Instant::now();
        let mut r = LayerRates::default();
        r.observe(1, 30_000, t);
        r.tick(Duration::from_millis(300));
        assert!((r.bps[1] - 800_000.0).abs() < 1.0);
        r.observe(1, 10_000, t);
        r.tick(Duration::from_millis(300));
        assert!((r.bps[1] - 533_333.3).abs() < 1.0);
        // A silent interval keeps the last rate (what resuming would cost).
        r.tick(Duration::from_millis(300));
        assert!((r.bps[1] - 533_333.3).abs() < 1.0);
    }
}
