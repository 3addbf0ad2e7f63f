//! Which coding a client gets, from its Accept-Encoding (RFC 9110 12.5.3).
//!
//! - Each entry is `coding` or `coding;q=W` (W from 0 to 1, up to three
//!   decimals); an entry with a malformed weight is ignored.
//! - A coding's weight is its own entry's (`x-gzip` counts as `gzip`),
//!   else `*`'s, else 0: not acceptable.
//! - `q=0` refuses: a refused coding is never sent.
//! - Among the codings the server offers, the highest weight wins; on a
//!   tie, the server's order (`encodings`).
//! - `identity` only competes when it is listed (or `*` stands for it):
//!   a client that writes `identity;q=1, gzip;q=0.5` prefers the body as
//!   it is. Unlisted, identity is acceptable but has no weight of its own,
//!   so it never outranks an accepted coding. (A client that refuses
//!   identity and every offered coding still gets identity: nginx and
//!   Caddy do the same rather than a 406.)
//! - No Accept-Encoding at all: identity (RFC 9110 allows any coding, but
//!   a client that says nothing is best served what everyone can read).

use baton_shared::config::compress::Coding;

/// The coding to send, or `None` for identity.
pub fn negotiate(accept: Option<&str>, offered: &[Coding]) -> Option<Coding> {
    let accept = accept?;
    let mut identity = None;
    let mut star = None;
    let mut weights = [None::<u16>; 3];
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or_default().trim();
        if name.is_empty() {
            continue;
        }
        let mut q = Some(1000);
        for p in parts {
            let p = p.trim();
            if let Some(v) = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) {
                q = parse_q(v);
            }
        }
        let Some(q) = q else {
            continue; // malformed weight: the entry is ignored
        };
        if name == "*" {
            star = Some(q);
        } else if name.eq_ignore_ascii_case("identity") {
            identity = Some(q);
        } else if let Some(i) = Coding::ALL.iter().position(|c| {
            name.eq_ignore_ascii_case(c.name())
                || (*c == Coding::Gzip && name.eq_ignore_ascii_case("x-gzip"))
        }) {
            // The first entry for a coding counts, as for duplicates in
            // any list RFC 9110 leaves undefined.
            weights[i].get_or_insert(q);
        }
    }
    let weight = |c: Coding| {
        let i = Coding::ALL.iter().position(|x| *x == c).unwrap_or(0);
        weights[i].or(star).unwrap_or(0)
    };
    let mut best: Option<(Coding, u16)> = None;
    for &c in offered {
        let w = weight(c);
        if w > 0 && best.is_none_or(|(_, b)| w > b) {
            best = Some((c, w));
        }
    }
    let (coding, w) = best?;
    match identity.or(star) {
        Some(id) if id > w => None,
        _ => Some(coding),
    }
}

/// `q` value → thousandths; `None` if malformed (RFC 9110 12.4.2).
fn parse_q(s: &str) -> Option<u16> {
    let s = s.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths = 0u16;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Coding::*;

    const ALL: &[Coding] = &[Zstd, Br, Gzip];

    fn n(a: &str) -> Option<Coding> {
        negotiate(Some(a), ALL)
    }

    #[test]
    fn server_order_on_ties() {
        assert_eq!(negotiate(None, ALL), None);
        assert_eq!(n("gzip, br, zstd"), Some(Zstd));
        assert_eq!(n("gzip, br"), Some(Br));
        assert_eq!(n("gzip"), Some(Gzip));
        assert_eq!(negotiate(Some("gzip, br, zstd"), &[Gzip, Br]), Some(Gzip));
        assert_eq!(n("deflate"), None);
        assert_eq!(n(""), None);
    }

    #[test]
    fn q_values() {
        assert_eq!(n("gzip;q=1, br;q=0.5"), Some(Gzip));
        assert_eq!(n("gzip;q=0.5, br;q=0.501"), Some(Br));
        assert_eq!(n("br;q=0, gzip"), Some(Gzip));
        assert_eq!(n("br;q=0, gzip;q=0, zstd;q=0"), None);
        assert_eq!(n("gzip ; q=0.8"), Some(Gzip));
        assert_eq!(n("GZIP;Q=0.8"), Some(Gzip));
        assert_eq!(n("x-gzip"), Some(Gzip));
        // Malformed weights drop their entry.
        assert_eq!(n("br;q=2, gzip;q=0.1"), Some(Gzip));
        assert_eq!(n("br;q=0.0001"), None);
        assert_eq!(n("br;q=abc"), None);
    }

    #[test]
    fn star_and_identity() {
        assert_eq!(n("*"), Some(Zstd));
        assert_eq!(n("*;q=0.5, zstd;q=0"), Some(Br));
        assert_eq!(n("*;q=0"), None);
        assert_eq!(n("identity"), None);
        assert_eq!(n("identity;q=0"), None);
        assert_eq!(n("gzip, identity;q=0"), Some(Gzip));
        assert_eq!(n("identity;q=1, gzip;q=0.5"), None);
        assert_eq!(n("identity;q=0.5, gzip;q=0.5"), Some(Gzip));
        assert_eq!(n("gzip;q=0.5"), Some(Gzip));
        assert_eq!(n("*;q=0.9, identity;q=1"), None);
    }
}
