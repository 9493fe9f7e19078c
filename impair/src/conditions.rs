//! What one direction of a path does to datagrams, and its comma form
//! (`delay=40ms,jitter=10ms,loss=5%,burst=3,rate=1mbit,queue=50`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{ConditionsError, ParseError};
use crate::units::{
    RateError, fmt_bytes, fmt_duration, fmt_number, fmt_percent, fmt_rate, parse_bytes,
    parse_duration, parse_number, parse_percent, parse_rate,
};

/// The queue limit in front of a rate cap when none is given: 50 packets.
pub const DEFAULT_QUEUE: QueueLimit = QueueLimit::Packets(50);

/// The extra delay of a reordered datagram when none is given: 30 ms (so that at 50
/// datagrams a second, an audio stream's packet still lands after its successor).
pub const DEFAULT_REORDER_GAP: Duration = Duration::from_millis(30);

/// How much the queue in front of a rate cap holds; a datagram that does not fit is
/// dropped (tail drop, [`DropReason::Queue`](crate::DropReason::Queue)). The datagram being
/// serialized counts as queued until its last bit is out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueLimit {
    /// At most this many datagrams (`queue=50`).
    Packets(usize),
    /// At most this many bytes of datagrams (`queue=64kb`).
    Bytes(usize),
}

/// The Gilbert–Elliott two-state loss model: a Markov chain over datagrams with a good
/// and a bad state, each with its own loss probability. Before each datagram the chain
/// takes one step, then the datagram is lost with the new state's probability. The chain
/// starts in the good state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Probability of moving from good to bad at a datagram.
    pub p_good_to_bad: f64,
    /// Probability of moving from bad to good at a datagram.
    pub p_bad_to_good: f64,
    /// Loss probability in the bad state.
    pub loss_in_bad: f64,
    /// Loss probability in the good state.
    pub loss_in_good: f64,
}

impl GilbertElliott {
    /// The simple Gilbert model (everything lost in bad, nothing in good) with this mean
    /// loss (a probability) and mean burst length (in datagrams): `p_bad_to_good =
    /// 1 / burst` and `p_good_to_bad = loss * p_bad_to_good / (1 - loss)`. `loss=5%,burst=3`
    /// in the comma form is `from_loss_and_burst(0.05, 3.0)`.
    pub fn from_loss_and_burst(mean_loss: f64, mean_burst: f64) -> Result<Self, ConditionsError> {
        if !(mean_loss > 0.0 && mean_loss < 1.0) {
            return Err(ConditionsError::BurstLoss(mean_loss));
        }
        if !(mean_burst >= 1.0 && mean_burst.is_finite()) {
            return Err(ConditionsError::BurstTooShort(mean_burst));
        }
        let p_bad_to_good = 1.0 / mean_burst;
        let p_good_to_bad = mean_loss * p_bad_to_good / (1.0 - mean_loss);
        if p_good_to_bad > 1.0 {
            return Err(ConditionsError::BurstUnreachable {
                loss: mean_loss,
                burst: mean_burst,
            });
        }
        Ok(Self {
            p_good_to_bad,
            p_bad_to_good,
            loss_in_bad: 1.0,
            loss_in_good: 0.0,
        })
    }

    /// The long-run fraction of datagrams in the bad state.
    pub fn bad_fraction(&self) -> f64 {
        let sum = self.p_good_to_bad + self.p_bad_to_good;
        if sum > 0.0 {
            self.p_good_to_bad / sum
        } else {
            0.0
        }
    }

    /// The long-run loss probability.
    pub fn mean_loss(&self) -> f64 {
        let bad = self.bad_fraction();
        bad * self.loss_in_bad + (1.0 - bad) * self.loss_in_good
    }

    /// The mean number of consecutive datagrams spent in the bad state (the mean burst
    /// length of the simple model); `None` if the chain never leaves it.
    pub fn mean_bad_run(&self) -> Option<f64> {
        (self.p_bad_to_good > 0.0).then(|| 1.0 / self.p_bad_to_good)
    }

    /// Whether this is the simple Gilbert model [`from_loss_and_burst`](Self::from_loss_and_burst)
    /// builds.
    pub fn is_simple(&self) -> bool {
        self.loss_in_bad == 1.0 && self.loss_in_good == 0.0
    }

    /// Checks that every field is a probability.
    pub fn validate(&self) -> Result<(), ConditionsError> {
        probability("p_good_to_bad", self.p_good_to_bad)?;
        probability("p_bad_to_good", self.p_bad_to_good)?;
        probability("loss_in_bad", self.loss_in_bad)?;
        probability("loss_in_good", self.loss_in_good)
    }
}

/// What one direction of a path does to the datagrams sent into it. [`Conditions::free`]
/// (the default) does nothing. The effects apply in this order: black-hole, burst loss,
/// random loss, the queue and rate cap, then delay and jitter, reordering and duplication.
#[derive(Debug, Clone, PartialEq)]
pub struct Conditions {
    /// One-way delay added to every datagram.
    pub delay: Duration,
    /// Each datagram's delay is `delay` plus an offset drawn uniformly from
    /// `[-jitter, +jitter]` (never below zero in total). Jitter alone never reorders: a
    /// datagram is held until its predecessor is out (FIFO), so all datagrams stay within
    /// `delay ± jitter` when sent in order; only `reorder` reorders.
    pub jitter: Duration,
    /// Probability that a datagram is lost at random, independently of the others.
    pub loss: f64,
    /// Gilbert–Elliott burst loss, on top of `loss`.
    pub burst: Option<GilbertElliott>,
    /// Probability that a datagram is held back by `reorder_gap` beyond its FIFO delivery
    /// time, so that the datagrams sent after it within that gap overtake it.
    pub reorder: f64,
    /// The extra delay of a reordered datagram.
    pub reorder_gap: Duration,
    /// Probability that a datagram is delivered twice (the copy right after it).
    pub duplicate: f64,
    /// Rate cap in bits per second: datagrams are serialized one after the other, each
    /// taking `len * 8 / rate`, behind a queue of `queue`.
    pub rate: Option<u64>,
    /// The queue in front of the rate cap (unused without one).
    pub queue: QueueLimit,
    /// Drop everything.
    pub blackhole: bool,
}

impl Default for Conditions {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            burst: None,
            reorder: 0.0,
            reorder_gap: DEFAULT_REORDER_GAP,
            duplicate: 0.0,
            rate: None,
            queue: DEFAULT_QUEUE,
            blackhole: false,
        }
    }
}

impl Conditions {
    /// An unimpaired path.
    pub fn free() -> Self {
        Self::default()
    }

    /// A path that drops everything.
    pub fn blackhole() -> Self {
        Self {
            blackhole: true,
            ..Self::default()
        }
    }

    /// Whether these conditions do nothing at all.
    pub fn is_free(&self) -> bool {
        self.parts().is_empty()
    }

    /// Checks probabilities, the rate and the queue limit. The impairment core also copes
    /// with invalid values (probabilities are clamped, a zero rate counts as 1 bit/s), but
    /// the parsers reject them with this.
    pub fn validate(&self) -> Result<(), ConditionsError> {
        probability("loss", self.loss)?;
        probability("reorder", self.reorder)?;
        probability("duplicate", self.duplicate)?;
        if let Some(ge) = &self.burst {
            ge.validate()?;
        }
        if self.rate == Some(0) {
            return Err(ConditionsError::ZeroRate);
        }
        match self.queue {
            QueueLimit::Packets(0) | QueueLimit::Bytes(0) => Err(ConditionsError::ZeroQueue),
            _ => Ok(()),
        }
    }

    /// The comma-form tokens of the settings that do something.
    fn parts(&self) -> Vec<String> {
        let mut parts = Vec::new();
        if !self.delay.is_zero() {
            parts.push(format!("delay={}", fmt_duration(self.delay)));
        }
        if !self.jitter.is_zero() {
            parts.push(format!("jitter={}", fmt_duration(self.jitter)));
        }
        self.loss_parts(&mut parts);
        if self.reorder > 0.0 {
            parts.push(format!("reorder={}", fmt_percent(self.reorder)));
            if self.reorder_gap != DEFAULT_REORDER_GAP {
                parts.push(format!("gap={}", fmt_duration(self.reorder_gap)));
            }
        }
        if self.duplicate > 0.0 {
            parts.push(format!("duplicate={}", fmt_percent(self.duplicate)));
        }
        if let Some(rate) = self.rate {
            parts.push(format!("rate={}", fmt_rate(rate)));
            if self.queue != DEFAULT_QUEUE {
                parts.push(format!("queue={}", fmt_queue(self.queue)));
            }
        }
        if self.blackhole {
            parts.push("blackhole".to_owned());
        }
        parts
    }

    /// The loss tokens: `loss=` alone, `loss=,burst=` for a simple burst model without
    /// random loss, or `ge=` (plus `loss=`) otherwise.
    fn loss_parts(&self, parts: &mut Vec<String>) {
        let simple = self
            .burst
            .as_ref()
            .filter(|ge| ge.is_simple() && self.loss <= 0.0)
            .and_then(|ge| ge.mean_bad_run().map(|run| (ge.mean_loss(), run)));
        if let Some((loss, run)) = simple {
            parts.push(format!("loss={}", fmt_percent(loss)));
            parts.push(format!("burst={}", fmt_number(run)));
            return;
        }
        if self.loss > 0.0 {
            parts.push(format!("loss={}", fmt_percent(self.loss)));
        }
        if let Some(ge) = &self.burst {
            parts.push(format!(
                "ge={}/{}/{}/{}",
                fmt_percent(ge.p_good_to_bad),
                fmt_percent(ge.p_bad_to_good),
                fmt_percent(ge.loss_in_bad),
                fmt_percent(ge.loss_in_good)
            ));
        }
    }
}

/// Renders the comma form (`free` when nothing is impaired); it parses back to the same
/// conditions up to rounding (percentages to four decimals).
impl fmt::Display for Conditions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = self.parts();
        if parts.is_empty() {
            f.write_str("free")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

/// Parses the comma form, the `--impair` grammar. Tokens are separated by commas (or
/// whitespace), in any order, each at most once:
///
/// - `delay=<duration>`, `jitter=<duration>`, `gap=<duration>` (the reorder gap); a
///   duration is a number with `ns`, `us`, `ms`, `s`, `min` or `h`, e.g. `40ms`, `1.5s`;
/// - `loss=<percent>`, `reorder=<percent>`, `duplicate=<percent>`; a percentage is a number
///   with `%`, e.g. `5%`, `0.5%`;
/// - `burst=<mean burst length in datagrams>` (needs `loss=`, which becomes the mean loss
///   of a simple Gilbert model instead of random loss), or
///   `ge=<p_good_to_bad>/<p_bad_to_good>/<loss_in_bad>/<loss_in_good>` in percentages for
///   the full Gilbert–Elliott model (on top of any `loss=`);
/// - `rate=<rate>` with `bit`, `kbit`, `mbit` or `gbit` (decimal), e.g. `300kbit`; a bare
///   rate token (`300kbit`) means the same; `…bps` is refused as ambiguous;
/// - `queue=<datagrams>` or `queue=<bytes>` with `b`, `kb` or `mb` (needs `rate=`;
///   default 50 datagrams);
/// - `blackhole`; `free` (alone: no impairment).
///
/// Names are case-insensitive; `reorder_gap` and `dup` are accepted for `gap` and
/// `duplicate`.
impl FromStr for Conditions {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parser = Parser::default();
        for token in s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
        {
            parser.token(token)?;
        }
        parser.finish()
    }
}

/// The state of parsing one comma form.
#[derive(Default)]
struct Parser<'a> {
    conditions: Conditions,
    seen: Vec<&'static str>,
    loss: Option<f64>,
    burst: Option<(f64, &'a str)>,
    ge: Option<&'a str>,
    queue: Option<&'a str>,
    free: Option<&'a str>,
    first_setting: Option<&'a str>,
}

impl<'a> Parser<'a> {
    /// Applies one token.
    fn token(&mut self, token: &'a str) -> Result<(), ParseError> {
        let Some((key, value)) = token.split_once('=') else {
            return self.bare(token);
        };
        let key = canonical_key(&key.trim().to_ascii_lowercase()).ok_or_else(|| {
            ParseError::UnknownSetting {
                token: token.to_owned(),
            }
        })?;
        self.mark(key, token)?;
        self.setting(key, value.trim(), token)
    }

    /// A token without `=`: `free`, `blackhole` or a bare rate.
    fn bare(&mut self, token: &'a str) -> Result<(), ParseError> {
        match token.to_ascii_lowercase().as_str() {
            "free" => {
                self.mark("free", token)?;
                self.free = Some(token);
            }
            "blackhole" => {
                self.mark("blackhole", token)?;
                self.conditions.blackhole = true;
            }
            _ => {
                let rate = parse_rate(token).map_err(|_| ParseError::UnknownSetting {
                    token: token.to_owned(),
                })?;
                self.mark("rate", token)?;
                self.conditions.rate = Some(rate);
            }
        }
        Ok(())
    }

    /// Notes that `key` was given, refusing repeats.
    fn mark(&mut self, key: &'static str, token: &'a str) -> Result<(), ParseError> {
        if self.seen.contains(&key) {
            return Err(ParseError::Repeated {
                key: key.to_owned(),
            });
        }
        self.seen.push(key);
        if key != "free" && self.first_setting.is_none() {
            self.first_setting = Some(token);
        }
        Ok(())
    }

    /// Applies `key=value`.
    fn setting(
        &mut self,
        key: &'static str,
        value: &str,
        token: &'a str,
    ) -> Result<(), ParseError> {
        let c = &mut self.conditions;
        match key {
            "delay" => c.delay = duration(key, value, token)?,
            "jitter" => c.jitter = duration(key, value, token)?,
            "gap" => c.reorder_gap = duration(key, value, token)?,
            "loss" => {
                let loss = percent(key, value, token)?;
                c.loss = loss;
                self.loss = Some(loss);
            }
            "reorder" => c.reorder = percent(key, value, token)?,
            "duplicate" => c.duplicate = percent(key, value, token)?,
            "burst" => self.burst = Some((burst_length(value, token)?, token)),
            "ge" => {
                c.burst = Some(gilbert_elliott(value, token)?);
                self.ge = Some(token);
            }
            "rate" => c.rate = Some(rate(value, token)?),
            "queue" => {
                c.queue = queue(value, token)?;
                self.queue = Some(token);
            }
            _ => {
                return Err(bad(token, format!("no value: write `{key}` alone")));
            }
        }
        Ok(())
    }

    /// Checks the combination and builds the conditions.
    fn finish(mut self) -> Result<Conditions, ParseError> {
        match (self.free, self.first_setting) {
            (Some(free), Some(other)) => {
                return Err(ParseError::Conflict {
                    first: free.to_owned(),
                    second: other.to_owned(),
                });
            }
            (None, None) => return Err(ParseError::Empty),
            _ => {}
        }
        match (self.burst, self.ge) {
            (Some((_, burst)), Some(ge)) => {
                return Err(ParseError::Conflict {
                    first: burst.to_owned(),
                    second: ge.to_owned(),
                });
            }
            (Some((length, token)), None) => {
                let loss = self.loss.ok_or_else(|| ParseError::BurstWithoutLoss {
                    token: token.to_owned(),
                })?;
                self.conditions.burst = Some(GilbertElliott::from_loss_and_burst(loss, length)?);
                self.conditions.loss = 0.0;
            }
            _ => {}
        }
        if let Some(token) = self.queue
            && self.conditions.rate.is_none()
        {
            return Err(ParseError::QueueWithoutRate {
                token: token.to_owned(),
            });
        }
        self.conditions.validate()?;
        Ok(self.conditions)
    }
}

/// The canonical name of a setting, or `None` for an unknown one.
fn canonical_key(key: &str) -> Option<&'static str> {
    Some(match key {
        "delay" => "delay",
        "jitter" => "jitter",
        "gap" | "reorder_gap" => "gap",
        "loss" => "loss",
        "reorder" => "reorder",
        "duplicate" | "dup" => "duplicate",
        "burst" => "burst",
        "ge" | "gilbert" => "ge",
        "rate" => "rate",
        "queue" => "queue",
        "blackhole" => "blackhole",
        "free" => "free",
        _ => return None,
    })
}

/// A value error for `token`.
fn bad(token: &str, expected: String) -> ParseError {
    ParseError::BadValue {
        token: token.to_owned(),
        expected,
    }
}

fn duration(key: &str, value: &str, token: &str) -> Result<Duration, ParseError> {
    parse_duration(value).ok_or_else(|| bad(token, format!("a duration like `{key}=40ms`")))
}

fn percent(key: &str, value: &str, token: &str) -> Result<f64, ParseError> {
    parse_percent(value).ok_or_else(|| {
        if value.ends_with('%') {
            bad(
                token,
                format!("a percentage from 0% to 100% like `{key}=5%`"),
            )
        } else {
            bad(token, format!("a percentage like `{key}=5%`"))
        }
    })
}

fn burst_length(value: &str, token: &str) -> Result<f64, ParseError> {
    match parse_number(value) {
        Some(n) if n >= 1.0 => Ok(n),
        _ => Err(bad(
            token,
            "a mean burst length of at least one datagram like `burst=3`".to_owned(),
        )),
    }
}

fn gilbert_elliott(value: &str, token: &str) -> Result<GilbertElliott, ParseError> {
    let expected = || {
        bad(
            token,
            "four percentages P(good→bad)/P(bad→good)/loss-in-bad/loss-in-good like \
             `ge=1%/30%/100%/0%`"
                .to_owned(),
        )
    };
    let fields: Vec<f64> = value
        .split('/')
        .map(|f| parse_percent(f.trim()))
        .collect::<Option<_>>()
        .ok_or_else(expected)?;
    let [p_good_to_bad, p_bad_to_good, loss_in_bad, loss_in_good] = fields[..] else {
        return Err(expected());
    };
    Ok(GilbertElliott {
        p_good_to_bad,
        p_bad_to_good,
        loss_in_bad,
        loss_in_good,
    })
}

fn rate(value: &str, token: &str) -> Result<u64, ParseError> {
    const EXPECTED: &str = "a rate in bits per second like `rate=300kbit` or `rate=1.5mbit`";
    parse_rate(value).map_err(|e| match e {
        RateError::Malformed => bad(token, EXPECTED.to_owned()),
        RateError::Ambiguous => bad(
            token,
            format!("{EXPECTED} (`bps` units are ambiguous: bits or bytes?)"),
        ),
    })
}

fn queue(value: &str, token: &str) -> Result<QueueLimit, ParseError> {
    let limit = match value.parse::<usize>() {
        Ok(n) => Some(QueueLimit::Packets(n)),
        Err(_) => parse_bytes(value).map(QueueLimit::Bytes),
    };
    limit
        .filter(|l| !matches!(l, QueueLimit::Packets(0) | QueueLimit::Bytes(0)))
        .ok_or_else(|| {
            bad(
                token,
                "a queue limit in datagrams like `queue=50` or in bytes like `queue=64kb`"
                    .to_owned(),
            )
        })
}

/// A queue limit in the comma form.
fn fmt_queue(limit: QueueLimit) -> String {
    match limit {
        QueueLimit::Packets(n) => n.to_string(),
        QueueLimit::Bytes(n) => fmt_bytes(n),
    }
}

/// Checks that `value` is a probability.
fn probability(what: &'static str, value: f64) -> Result<(), ConditionsError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(ConditionsError::Probability { what, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn parse(s: &str) -> Result<Conditions, ParseError> {
        s.parse()
    }

    fn message(s: &str) -> String {
        parse(s).expect_err("should not parse").to_string()
    }

    #[test]
    fn the_bench_form_parses() {
        let c =
            parse("delay=40ms,jitter=10ms,loss=5%,burst=3,rate=1mbit,queue=50").expect("parses");
        assert_eq!(c.delay, ms(40));
        assert_eq!(c.jitter, ms(10));
        assert_eq!(c.loss, 0.0, "the loss goes into the burst model");
        let ge = c.burst.expect("burst model");
        assert!((ge.mean_loss() - 0.05).abs() < 1e-12);
        assert!((ge.mean_bad_run().expect("leaves bad") - 3.0).abs() < 1e-12);
        assert_eq!(c.rate, Some(1_000_000));
        assert_eq!(c.queue, QueueLimit::Packets(50));
        assert!(!c.blackhole);
    }

    #[test]
    fn other_settings_parse() {
        let c = parse("Loss=0.5%, reorder=5% gap=10ms dup=1% 300kbit queue=64kb").expect("parses");
        assert_eq!(c.loss, 0.005);
        assert_eq!(c.reorder, 0.05);
        assert_eq!(c.reorder_gap, ms(10));
        assert_eq!(c.duplicate, 0.01);
        assert_eq!(c.rate, Some(300_000));
        assert_eq!(c.queue, QueueLimit::Bytes(64_000));
        assert_eq!(parse("free").expect("free"), Conditions::free());
        assert_eq!(
            parse("blackhole").expect("blackhole"),
            Conditions::blackhole()
        );
        let ge = parse("ge=1%/30%/90%/0.1%")
            .expect("ge")
            .burst
            .expect("model");
        assert_eq!(ge.p_good_to_bad, 0.01);
        assert_eq!(ge.loss_in_good, 0.001);
    }

    #[test]
    fn errors_name_the_token_and_what_is_expected() {
        assert_eq!(
            message("loss=5"),
            "`loss=5` needs a percentage like `loss=5%`"
        );
        assert_eq!(
            message("delay=40"),
            "`delay=40` needs a duration like `delay=40ms`"
        );
        assert_eq!(
            message("loss=150%"),
            "`loss=150%` needs a percentage from 0% to 100% like `loss=5%`"
        );
        assert!(message("rate=300kbps").contains("ambiguous"));
        assert!(message("rate=300").starts_with("`rate=300` needs a rate in bits per second"));
        assert!(message("speed=1").starts_with("`speed=1` is not a setting"));
        assert_eq!(message("loss=1%,loss=2%"), "`loss` is given twice");
        assert!(message("burst=3").starts_with("`burst=3` needs `loss=N%` too"));
        assert!(message("burst=0.5,loss=1%").contains("at least one datagram"));
        assert!(message("queue=50").starts_with("`queue=50` needs `rate=` too"));
        assert!(message("rate=1mbit,queue=0").contains("queue limit"));
        assert_eq!(
            message("free,delay=1ms"),
            "`free` and `delay=1ms` cannot be combined"
        );
        assert!(matches!(parse(" , "), Err(ParseError::Empty)));
        assert!(message("loss=5%,burst=3,ge=1%/2%/3%/4%").contains("cannot be combined"));
        assert!(message("ge=1%/2%").contains("four percentages"));
        assert!(message("loss=90%,burst=1").contains("out of reach"));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "delay=40ms,jitter=10ms,loss=5%,burst=3,rate=1mbit,queue=50",
            "delay=40ms,loss=1%,ge=1%/30%/90%/0.1%,reorder=5%,gap=10ms,duplicate=2%,rate=300kbit,queue=64kb",
            "blackhole",
            "free",
        ] {
            let c = parse(s).expect("parses");
            let again = parse(&c.to_string()).expect("rendering parses");
            assert_eq!(again.to_string(), c.to_string(), "{s}");
        }
        assert_eq!(
            parse("rate=1mbit,queue=50,delay=40ms")
                .expect("parses")
                .to_string(),
            "delay=40ms,rate=1mbit"
        );
        assert_eq!(Conditions::free().to_string(), "free");
    }

    #[test]
    fn gilbert_from_loss_and_burst() {
        let ge = GilbertElliott::from_loss_and_burst(0.05, 3.0).expect("valid");
        assert!((ge.p_bad_to_good - 1.0 / 3.0).abs() < 1e-12);
        assert!((ge.p_good_to_bad - 0.05 / 3.0 / 0.95).abs() < 1e-12);
        assert!(ge.is_simple());
        assert!(GilbertElliott::from_loss_and_burst(0.0, 3.0).is_err());
        assert!(GilbertElliott::from_loss_and_burst(0.05, 0.5).is_err());
    }
}
