//! Durations as operators write them: `30s`, `5m`, `24h`, `30d` (DESIGN §6).

use std::time::Duration;

/// A duration that could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a duration: write a number and a unit, e.g. 30s, 5m, 24h or 30d")]
pub struct BadDuration(pub String);

/// Parses a number followed by `s`, `m`, `min`, `h` or `d` (a bare number is seconds).
///
/// ```
/// use std::time::Duration;
/// use smsgate_ca::duration::parse;
///
/// assert_eq!(parse("30d").unwrap(), Duration::from_secs(30 * 86_400));
/// assert!(parse("1.5h").is_err());
/// ```
pub fn parse(s: &str) -> Result<Duration, BadDuration> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| BadDuration(s.to_owned()))?;
    let scale = match unit.trim() {
        "" | "s" | "sec" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(BadDuration(s.to_owned())),
    };
    n.checked_mul(scale)
        .filter(|secs| *secs <= 100 * 365 * 86_400)
        .map(Duration::from_secs)
        .ok_or_else(|| BadDuration(s.to_owned()))
}

/// Formats a duration the way [`parse`] reads it, in the largest whole unit.
pub fn format(d: Duration) -> String {
    let s = d.as_secs();
    if s != 0 && s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s != 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s != 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse("7").unwrap(), Duration::from_secs(7));
        for bad in ["", "d", "5x", "-5s", "1.5h", "999999999999999999d"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(format(Duration::from_secs(86_400 * 30)), "30d");
        assert_eq!(format(Duration::from_secs(90)), "90s");
    }
}
