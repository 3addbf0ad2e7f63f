//! `Range: bytes=...` (RFC 9110 14.2); the unit is case-insensitive
//! (14.1), as every range unit is.
//!
//! One range is served as a 206 with Content-Range, unless it covers the
//! whole file (`bytes=0-`, `bytes=-LEN`, `bytes=0-LEN-1`): that is the
//! plain 200 a cache expects, not a 206 whose part is the full length
//! (REDbot's RANGE_CL_FULL). Several ranges are
//! answered with the whole file (200), which RFC 9110 14.2 allows ("a
//! server MAY ignore the Range header field"): multipart/byteranges is
//! rarely used by real clients (browsers and download tools ask for one
//! range at a time), and it is the usual amplification vector (many
//! overlapping ranges of one large file). A header that is not valid
//! `bytes` ranges is ignored the same way; one whose ranges all start past
//! the end is a 416 with `Content-Range: bytes */len`.

/// What to send of a file of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranged {
    /// The whole file (no Range, an ignored one, several ranges, or one
    /// that covers it all).
    Full,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// 416.
    Unsatisfiable,
}

/// Most ranges parsed from one header before it is ignored as abusive.
const MAX_RANGES: usize = 16;

pub fn select(header: Option<&str>, len: u64) -> Ranged {
    let Some(h) = header else {
        return Ranged::Full;
    };
    let Some((unit, set)) = h.trim().split_once('=') else {
        return Ranged::Full;
    };
    if !unit.eq_ignore_ascii_case("bytes") {
        return Ranged::Full; // another unit: ignored
    }
    let mut satisfiable: Option<(u64, u64)> = None;
    let mut count = 0;
    for spec in set.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        count += 1;
        if count > MAX_RANGES {
            return Ranged::Full;
        }
        let Some(r) = parse_spec(spec) else {
            return Ranged::Full; // invalid syntax: the header is ignored
        };
        if let Some(bounds) = resolve(r, len) {
            if satisfiable.is_some() {
                return Ranged::Full; // several ranges: see the module note
            }
            satisfiable = Some(bounds);
        }
    }
    match (count, satisfiable) {
        (0, _) => Ranged::Full,
        (_, Some((0, end))) if end.checked_add(1) == Some(len) => Ranged::Full,
        (_, Some((start, end))) => Ranged::Part { start, end },
        (_, None) => Ranged::Unsatisfiable,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `a-b` or `a-` (`None`: to the end).
    From(u64, Option<u64>),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

fn parse_spec(spec: &str) -> Option<Spec> {
    let (a, b) = spec.split_once('-')?;
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        // A number too large for u64 is still a valid, huge position.
        Some(s.parse().unwrap_or(u64::MAX))
    };
    match (a.trim(), b.trim()) {
        ("", b) => num(b).map(Spec::Suffix),
        (a, "") => num(a).map(|a| Spec::From(a, None)),
        (a, b) => {
            let (a, b) = (num(a)?, num(b)?);
            (a <= b).then_some(Spec::From(a, Some(b)))
        }
    }
}

/// The bytes `start..=end` a spec selects of `len`, if any.
fn resolve(spec: Spec, len: u64) -> Option<(u64, u64)> {
    match spec {
        Spec::From(a, _) if a >= len => None,
        Spec::From(a, b) => Some((a, b.map_or(len - 1, |b| b.min(len - 1)))),
        Spec::Suffix(0) => None,
        Spec::Suffix(_) if len == 0 => None,
        Spec::Suffix(n) => Some((len.saturating_sub(n), len - 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(h: &str, len: u64) -> Ranged {
        select(Some(h), len)
    }

    fn part(start: u64, end: u64) -> Ranged {
        Ranged::Part { start, end }
    }

    #[test]
    fn single_suffix_and_open_ranges() {
        assert_eq!(select(None, 10), Ranged::Full);
        assert_eq!(s("bytes=0-0", 10), part(0, 0));
        assert_eq!(s("bytes=2-5", 10), part(2, 5));
        assert_eq!(s("bytes=2-", 10), part(2, 9));
        assert_eq!(s("bytes=-3", 10), part(7, 9));
        assert_eq!(s("bytes=5-100", 10), part(5, 9));
        assert_eq!(s("bytes=5-99999999999999999999999", 10), part(5, 9));
        // An unsatisfiable one beside a satisfiable one is dropped.
        assert_eq!(s("bytes=50-60, 1-2", 10), part(1, 2));
    }

    #[test]
    fn the_unit_is_case_insensitive() {
        assert_eq!(s("Bytes=2-5", 10), part(2, 5));
        assert_eq!(s("BYTES=-3", 10), part(7, 9));
        assert_eq!(s(" bYtEs=2-", 10), part(2, 9));
    }

    #[test]
    fn the_whole_file_is_no_part() {
        for h in [
            "bytes=0-9",
            "bytes=0-",
            "bytes=-10",
            "bytes=-30",
            "bytes=0-100",
        ] {
            assert_eq!(s(h, 10), Ranged::Full, "{h}");
        }
        assert_eq!(s("bytes=0-8", 10), part(0, 8));
        assert_eq!(s("bytes=1-", 10), part(1, 9));
        assert_eq!(s("bytes=-9", 10), part(1, 9));
        assert_eq!(s("bytes=0-0", 1), Ranged::Full);
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(s("bytes=10-", 10), Ranged::Unsatisfiable);
        assert_eq!(s("bytes=10-20", 10), Ranged::Unsatisfiable);
        assert_eq!(s("bytes=-0", 10), Ranged::Unsatisfiable);
        assert_eq!(s("bytes=0-", 0), Ranged::Unsatisfiable);
        assert_eq!(s("bytes=-5", 0), Ranged::Unsatisfiable);
    }

    #[test]
    fn ignored() {
        for h in [
            "items=0-1",
            "bytes=",
            "bytes=a-b",
            "bytes=5-2",
            "bytes=1",
            "bytes=0-1,2-3",
            "bytes=--1",
            "bytes=+1-2",
            "bytes 0-1",
            "byte=0-1",
            "bytes =0-1",
        ] {
            assert_eq!(s(h, 10), Ranged::Full, "{h}");
        }
        let many = format!("bytes={}", vec!["0-0"; 17].join(","));
        assert_eq!(s(&many, 10), Ranged::Full);
    }
}
