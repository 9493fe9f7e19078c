//! Numbers with units (durations, percentages, rates, byte counts): parsing and rendering.

use std::time::Duration;

/// Splits `40ms` into `(40.0, "ms")`: the longest leading run of digits and dots is the
/// number. `None` when there is no number or it is not finite.
fn split_number(s: &str) -> Option<(f64, &str)> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    let n: f64 = s[..end].parse().ok()?;
    n.is_finite().then_some((n, s[end..].trim()))
}

/// `n * scale` rounded to an integer, if it fits in a `u64`.
fn scaled(n: f64, scale: f64) -> Option<u64> {
    let v = (n * scale).round();
    (v >= 0.0 && v < u64::MAX as f64).then_some(v as u64)
}

/// A duration like `40ms`, `1.5s`, `500us`, `2min`; a unit is required.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let (n, unit) = split_number(s)?;
    let nanos_per_unit = match unit.to_ascii_lowercase().as_str() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        _ => return None,
    };
    scaled(n, nanos_per_unit).map(Duration::from_nanos)
}

/// A percentage like `5%` or `0.5%`, from 0% to 100%, as a probability.
pub(crate) fn parse_percent(s: &str) -> Option<f64> {
    let (n, unit) = split_number(s)?;
    (unit == "%" && n <= 100.0).then_some(n / 100.0)
}

/// Why a rate does not parse.
pub(crate) enum RateError {
    /// Not a number with a bit unit.
    Malformed,
    /// `bps`, `kbps`, …: bits for some tools, bytes for tc.
    Ambiguous,
}

/// A rate in bits per second like `300kbit`, `1.5mbit`, `64000bit`, at least 1 bit/s.
pub(crate) fn parse_rate(s: &str) -> Result<u64, RateError> {
    let (n, unit) = split_number(s).ok_or(RateError::Malformed)?;
    let unit = unit.to_ascii_lowercase();
    let scale = match unit.as_str() {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        _ if unit.ends_with("bps") => return Err(RateError::Ambiguous),
        _ => return Err(RateError::Malformed),
    };
    match scaled(n, scale) {
        Some(bps) if bps >= 1 => Ok(bps),
        _ => Err(RateError::Malformed),
    }
}

/// A byte count like `64kb`, `1500b`, `1mb` (decimal multiples).
pub(crate) fn parse_bytes(s: &str) -> Option<usize> {
    let (n, unit) = split_number(s)?;
    let scale = match unit.to_ascii_lowercase().as_str() {
        "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        _ => return None,
    };
    scaled(n, scale).and_then(|v| usize::try_from(v).ok())
}

/// A plain non-negative number like `3` or `2.5`.
pub(crate) fn parse_number(s: &str) -> Option<f64> {
    let (n, unit) = split_number(s)?;
    unit.is_empty().then_some(n)
}

/// A number with at most four decimals and no trailing zeros.
pub(crate) fn fmt_number(x: f64) -> String {
    let s = format!("{x:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

/// A probability as a percentage, e.g. `5%`.
pub(crate) fn fmt_percent(p: f64) -> String {
    format!("{}%", fmt_number(p * 100.0))
}

/// A duration in the largest unit that keeps it whole, e.g. `40ms`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    for (per, unit) in [(1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "us")] {
        if nanos.is_multiple_of(per) {
            return format!("{}{unit}", nanos / per);
        }
    }
    format!("{nanos}ns")
}

/// A rate in the largest unit that keeps it whole, e.g. `300kbit`.
pub(crate) fn fmt_rate(bps: u64) -> String {
    for (per, unit) in [
        (1_000_000_000, "gbit"),
        (1_000_000, "mbit"),
        (1_000, "kbit"),
    ] {
        if bps.is_multiple_of(per) {
            return format!("{}{unit}", bps / per);
        }
    }
    format!("{bps}bit")
}

/// A byte count in the largest unit that keeps it whole, e.g. `64kb`.
pub(crate) fn fmt_bytes(n: usize) -> String {
    for (per, unit) in [(1_000_000, "mb"), (1_000, "kb")] {
        if n.is_multiple_of(per) && n > 0 {
            return format!("{}{unit}", n / per);
        }
    }
    format!("{n}b")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("40ms"), Some(Duration::from_millis(40)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500us"), Some(Duration::from_micros(500)));
        assert_eq!(parse_duration("2min"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("40"), None);
        assert_eq!(parse_duration("ms"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(fmt_duration(Duration::from_millis(40)), "40ms");
        assert_eq!(fmt_duration(Duration::from_secs(10)), "10s");
        assert_eq!(fmt_duration(Duration::from_micros(1500)), "1500us");
    }

    #[test]
    fn percentages_rates_bytes() {
        assert_eq!(parse_percent("5%"), Some(0.05));
        assert_eq!(parse_percent("0.5%"), Some(0.005));
        assert_eq!(parse_percent("5"), None);
        assert_eq!(parse_percent("101%"), None);
        assert!(matches!(parse_rate("300kbit"), Ok(300_000)));
        assert!(matches!(parse_rate("1.5MBit"), Ok(1_500_000)));
        assert!(matches!(parse_rate("300kbps"), Err(RateError::Ambiguous)));
        assert!(matches!(parse_rate("300"), Err(RateError::Malformed)));
        assert!(matches!(parse_rate("0kbit"), Err(RateError::Malformed)));
        assert_eq!(parse_bytes("64kb"), Some(64_000));
        assert_eq!(parse_bytes("64"), None);
        assert_eq!(fmt_rate(300_000), "300kbit");
        assert_eq!(fmt_rate(1_500_000), "1500kbit");
        assert_eq!(fmt_bytes(64_000), "64kb");
        assert_eq!(fmt_percent(0.05), "5%");
        assert_eq!(fmt_number(2.5), "2.5");
    }
}
