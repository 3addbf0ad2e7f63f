//! Durations as written in the config: `"30s"`, `"500ms"`, `"2m"`, `"1h"`,
//! `"1m30s"`, or a bare number of seconds.

use std::time::Duration;

/// Parses `"1h"`, `"2m"`, `"30s"`, `"500ms"` and sums of them (`"1m30s"`).
/// A string of digits alone means seconds. `None` if it is anything else.
pub(crate) fn parse(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok().map(Duration::from_secs);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.checked_mul(60)?),
            "h" => Duration::from_secs(number.checked_mul(3600)?),
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(part)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse("1h2m3s4ms"), Some(Duration::from_millis(3_723_004)));
        assert_eq!(parse("0s"), Some(Duration::ZERO));
        assert_eq!(parse("45"), Some(Duration::from_secs(45)));
        assert_eq!(parse(" 5s "), Some(Duration::from_secs(5)));
    }

    #[test]
    fn not_durations() {
        for bad in [
            "", "soon", "s", "5x", "5 s", "-5s", "1.5s", "5S", "ms5", "30sec", "1m 30s",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        // Too big to add up.
        assert_eq!(parse("99999999999999999999s"), None);
        assert_eq!(parse(&format!("{}h", u64::MAX)), None);
    }
}
