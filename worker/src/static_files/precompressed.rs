//! Precompressed variants: `x.br` or `x.gz` beside `x`, served to clients
//! whose Accept-Encoding allows them (q-values honoured, RFC 9110 12.5.3),
//! with `Content-Encoding` and `Vary: Accept-Encoding`.

/// The encodings Baton can serve precompressed: name, file suffix, in the
/// order preferred when the client weighs them the same (brotli is
/// smaller).
pub const ENCODINGS: &[(&str, &str)] = &[("br", ".br"), ("gzip", ".gz")];

/// The client's weight for `coding` (0 to 1000) from an Accept-Encoding
/// value: its own entry, else `*`, else 0. An absent header means no
/// preference for anything but identity, so nothing precompressed.
pub fn weight(accept: Option<&str>, coding: &str) -> u16 {
    let Some(accept) = accept else {
        return 0;
    };
    let mut star = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or_default().trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
            .next()
            .map_or(Some(1000), parse_q);
        let Some(q) = q else {
            continue; // malformed weight: the entry is ignored
        };
        if name.eq_ignore_ascii_case(coding)
            || (coding == "gzip" && name.eq_ignore_ascii_case("x-gzip"))
        {
            return q;
        }
        if name == "*" {
            star = Some(q);
        }
    }
    star.unwrap_or(0)
}

/// The encodings the client accepts, best first (ties in `ENCODINGS`
/// order).
pub fn preferred(accept: Option<&str>) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<_> = ENCODINGS
        .iter()
        .map(|&(name, suffix)| (weight(accept, name), name, suffix))
        .filter(|&(q, _, _)| q > 0)
        .collect();
    out.sort_by_key(|e| std::cmp::Reverse(e.0)); // stable: ties keep ENCODINGS order
    out.into_iter().map(|(_, n, s)| (n, s)).collect()
}

/// A small number that is the same for two Accept-Encoding values exactly
/// when `preferred` gives the same list: the file cache's key for which
/// variant a client gets.
pub fn preference_key(accept: Option<&str>) -> u8 {
    preferred(accept).iter().fold(0, |key, (name, _)| {
        let i = ENCODINGS.iter().position(|(n, _)| n == name).unwrap_or(0);
        key * 3 + i as u8 + 1
    })
}

/// `q` value → thousandths; `None` if malformed (RFC 9110 12.4.2).
fn parse_q(s: &str) -> Option<u16> {
    let s = s.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_val: u16 = format!("{frac:0<3}").parse().ok()?;
    match int {
        "0" => Some(frac_val),
        "1" if frac_val == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_values() {
        assert_eq!(weight(None, "br"), 0);
        assert_eq!(weight(Some("gzip, br"), "br"), 1000);
        assert_eq!(weight(Some("gzip;q=0.5, br;q=0"), "br"), 0);
        assert_eq!(weight(Some("gzip;q=0.5, br;q=0"), "gzip"), 500);
        assert_eq!(weight(Some("*;q=0.2"), "gzip"), 200);
        assert_eq!(weight(Some("*;q=0.2, gzip;q=0"), "gzip"), 0);
        assert_eq!(weight(Some("x-gzip"), "gzip"), 1000);
        assert_eq!(weight(Some("br;q=2"), "br"), 0);
        assert_eq!(weight(Some("identity"), "br"), 0);
    }

    #[test]
    fn preference_order() {
        let names = |a: &str| preferred(Some(a)).iter().map(|p| p.0).collect::<Vec<_>>();
        assert_eq!(names("gzip, br"), ["br", "gzip"]);
        assert_eq!(names("gzip, br;q=0.9"), ["gzip", "br"]);
        assert_eq!(names("gzip"), ["gzip"]);
        assert!(names("identity").is_empty());
    }

    #[test]
    fn preference_keys_tell_the_lists_apart() {
        let keys: Vec<u8> = [
            None,
            Some("br"),
            Some("gzip"),
            Some("br, gzip"),
            Some("gzip, br;q=0.9"),
        ]
        .iter()
        .map(|a| preference_key(*a))
        .collect();
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:?}");
        assert_eq!(
            preference_key(Some("gzip;q=0.5, br")),
            preference_key(Some("br, gzip"))
        );
    }
}
