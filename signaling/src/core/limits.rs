//! Limits: token buckets for request rates, and the hard caps of [`Limits`].

use std::time::{Duration, Instant};

/// Caps and rates. Every limit hit returns a typed error and is logged.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Sessions (connections) at once.
    pub max_sessions: usize,
    /// Devices per account.
    pub max_devices: usize,
    /// One-use KeyPackages stored per device.
    pub max_key_packages: usize,
    /// Bytes of one KeyPackage.
    pub max_key_package_len: usize,
    /// A claim that leaves a device with fewer one-use KeyPackages than this tells the
    /// device to upload more (`Event::KeyPackagesLow`).
    pub key_package_low_water: usize,
    /// Stored messages waiting per device.
    pub max_pending: usize,
    /// Handles one session may watch.
    pub max_watch: usize,
    /// Handles in one room invitation.
    pub max_invite: usize,
    /// Requests per second per session (sustained), and burst. A member letting 50
    /// joiners in makes about 100 requests at once (a lookup and a claim each); a room of
    /// 500 filling at once is ten such batches.
    pub session_rate: (f64, f64),
    /// Call invites per second per account, and burst.
    pub account_rate: (f64, f64),
    /// KeyPackage claims per second per account, and burst. A member letting a join
    /// storm in claims one per joiner (at most 50 per commit), so a room of 500 filling
    /// at once must not be throttled; draining someone's one-use packages only makes
    /// their last-resort package be used.
    pub claim_rate: (f64, f64),
    /// How long a new connection may take to log in.
    pub login_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sessions: 20_000,
            max_devices: 8,
            max_key_packages: 100,
            max_key_package_len: 16 * 1024,
            key_package_low_water: 8,
            max_pending: 1_000,
            max_watch: 500,
            max_invite: 100,
            session_rate: (200.0, 500.0),
            account_rate: (10.0, 20.0),
            claim_rate: (100.0, 500.0),
            login_timeout: Duration::from_secs(30),
        }
    }
}

/// A token bucket: `rate` tokens per second up to `burst`.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new((rate, burst): (f64, f64), now: Instant) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.rate.max(f64::MIN_POSITIVE),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new((10.0, 3.0), t0);
        assert!((0..3).all(|_| b.take(t0).is_ok()));
        let wait = b.take(t0).expect_err("empty");
        assert!(wait <= Duration::from_millis(100));
        assert!(b.take(t0 + Duration::from_millis(100)).is_ok());
    }
}
