//! ACME Renewal Information (ARI, RFC 9773): when the CA says to renew.
//!
//! A CA whose directory has `renewalInfo` answers, per certificate (named
//! by its Authority Key Identifier and serial), a suggested window; the
//! client renews at a random point inside it, chosen once per window (so
//! that instances and checks do not re-roll it), and asks again after the
//! `Retry-After` the CA sent (kept between an hour and a day). A CA may
//! move the window earlier (a mass revocation ahead): the next ask sees it.
//!
//! Without ARI (the directory has no `renewalInfo`: Debian's pebble 2.4,
//! for one) or when asking fails, the one-third rule applies: renew once a
//! third of the lifetime is left. Asking never blocks a renewal: a failure
//! is an info line and the rule.

use std::time::Duration;

use instant_acme::{Account, CertificateIdentifier};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The CA's window for one certificate and the point chosen in it
/// (seconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub end: i64,
    pub at: i64,
}

/// When to renew a certificate valid from `not_before` to `not_after`:
/// the ARI point if the CA gave one, else once a third of the lifetime
/// is left.
pub fn renew_at(not_before: i64, not_after: i64, ari: Option<&Window>) -> i64 {
    match ari {
        Some(w) => w.at,
        None => {
            let lifetime = not_after.saturating_sub(not_before).max(0);
            not_after.saturating_sub(lifetime / 3)
        }
    }
}

/// A point in `[start, end]`, `r` in `[0, 1]` (uniform random in use);
/// a window that ends before it starts is its start (RFC 9773 §4.2: the
/// client renews at once if the start has passed).
pub fn choose(start: i64, end: i64, r: f64) -> i64 {
    if end <= start {
        return start;
    }
    let span = end.saturating_sub(start) as f64;
    let offset = (span * r.clamp(0.0, 1.0)) as i64;
    start.saturating_add(offset).min(end)
}

/// What asking the CA gave.
pub enum Answer {
    /// The window, and when to ask again.
    Window {
        start: i64,
        end: i64,
        again: Duration,
    },
    /// The CA offers no renewal information.
    Unsupported,
    /// The certificate cannot be named to the CA (no Authority Key
    /// Identifier: not one a CA issued by ACME); the rule applies.
    Unnamed(String),
}

/// Asks the CA for `chain_pem`'s leaf's renewal window.
pub async fn ask(account: &Account, chain_pem: &[u8]) -> Result<Answer, String> {
    let der = CertificateDer::pem_slice_iter(chain_pem)
        .next()
        .ok_or("the chain holds no certificate")?
        .map_err(|e| e.to_string())?;
    let id = match CertificateIdentifier::try_from(&der) {
        Ok(id) => id,
        Err(e) => return Ok(Answer::Unnamed(e)),
    };
    match account.renewal_info(&id).await {
        Ok((info, again)) => Ok(Answer::Window {
            start: info.suggested_window.start.unix_timestamp(),
            end: info.suggested_window.end.unix_timestamp(),
            again: again.clamp(Duration::from_secs(3600), Duration::from_secs(86400)),
        }),
        Err(instant_acme::Error::Unsupported(_)) => Ok(Answer::Unsupported),
        Err(e) => Err(super::order::Failure::from(e).0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_ari_a_third_of_the_lifetime_is_left() {
        // 90 days: renewed 30 days before the end.
        let day = 86400;
        assert_eq!(renew_at(0, 90 * day, None), 60 * day);
        // Nonsense validity does not panic or go past the end.
        assert_eq!(renew_at(100, 50, None), 50);
        assert_eq!(renew_at(i64::MIN, i64::MAX, None), i64::MAX - i64::MAX / 3);
    }

    #[test]
    fn the_ca_window_wins_over_the_rule() {
        let w = Window {
            start: 10,
            end: 20,
            at: 15,
        };
        assert_eq!(renew_at(0, 90, Some(&w)), 15);
        // Even when it is earlier than the rule (a revocation ahead) or
        // later (the CA knows its own schedule).
        let late = Window {
            start: 80,
            end: 85,
            at: 82,
        };
        assert_eq!(renew_at(0, 90, Some(&late)), 82);
    }

    #[test]
    fn the_point_is_inside_the_window() {
        assert_eq!(choose(100, 200, 0.0), 100);
        assert_eq!(choose(100, 200, 1.0), 200);
        assert_eq!(choose(100, 200, 0.5), 150);
        for r in [-1.0, 2.0, f64::NAN] {
            let at = choose(100, 200, r);
            assert!((100..=200).contains(&at), "{r}: {at}");
        }
        // An inverted or empty window: its start.
        assert_eq!(choose(200, 100, 0.5), 200);
        assert_eq!(choose(0, i64::MAX, 1.0), i64::MAX);
        let _ = choose(i64::MIN, i64::MAX, 0.7);
    }
}
