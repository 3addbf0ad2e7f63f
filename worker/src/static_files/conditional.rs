//! Validators and conditional requests (RFC 9110 8.8, 13).
//!
//! The ETag is nginx's: `"<mtime hex>-<size hex>"`, from the modification
//! time in seconds and the size, with no inode, so every host that serves
//! the same files (same mtimes, as rsync and most deploys keep them) gives
//! the same tag and caches behind a load balancer agree. It is a strong
//! tag, as nginx's is.
//!
//! `Last-Modified` is the modification time, but never later than the
//! response's `Date` (RFC 9110 8.8.2.1): a file whose mtime is in the
//! future (a clock skew, an archive's dates) is last modified "now", and
//! every date comparison below uses that clamped value, the one the
//! client was sent. The ETag keeps the real mtime, so it stays the same
//! from one second to the next and still names this version.
//!
//! The preconditions are evaluated in RFC 9110 13.2.2's order:
//!
//! 1. If-Match present: false → 412.
//! 2. Else If-Unmodified-Since (a valid date): modified since → 412.
//! 3. If-None-Match present: matches → 304 (GET/HEAD).
//! 4. Else If-Modified-Since (GET/HEAD, a valid date): not modified → 304.
//! 5. Range is honoured only if If-Range (when present) still matches
//!    (`if_range_holds`): the same strong ETag, or the same date when that
//!    date is a strong validator, at least a second before now (8.8.2.2).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::http::request::Conditions;
use crate::http::response::{Status, push_hex};

/// A file's validators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    pub etag: String,
    /// The mtime in whole seconds since the epoch (HTTP dates have no
    /// finer resolution), as it is: see `last_modified` for what is sent.
    pub modified: Option<u64>,
}

impl Validators {
    pub fn new(len: u64, modified: Option<SystemTime>) -> Validators {
        let secs = modified
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let mut etag = String::with_capacity(24);
        etag.push('"');
        push_hex(&mut etag, secs);
        etag.push('-');
        push_hex(&mut etag, len);
        etag.push('"');
        Validators {
            etag,
            modified: modified.map(|_| secs),
        }
    }

    /// The Last-Modified date of a response whose Date is `now` (seconds
    /// since the epoch): the mtime, or `now` if that is earlier.
    pub fn last_modified(&self, now: u64) -> Option<u64> {
        self.modified.map(|m| m.min(now))
    }
}

/// The status a precondition turns the response into, if any, for a
/// response whose Date is `now`.
pub fn evaluate(c: &Conditions, v: &Validators, now: u64) -> Option<Status> {
    let last_modified = v.last_modified(now);
    if let Some(im) = &c.if_match {
        if !matches_list(im, &v.etag, false) {
            return Some(Status::PreconditionFailed);
        }
    } else if let Some(since) = c.if_unmodified_since.as_deref().and_then(date)
        && last_modified.is_some_and(|m| m > since)
    {
        return Some(Status::PreconditionFailed);
    }
    if let Some(inm) = &c.if_none_match {
        if matches_list(inm, &v.etag, true) {
            return Some(Status::NotModified);
        }
    } else if let Some(since) = c.if_modified_since.as_deref().and_then(date)
        && last_modified.is_some_and(|m| m <= since)
    {
        return Some(Status::NotModified);
    }
    None
}

/// Whether a Range may be served: no If-Range, or one that still names
/// this version (a strong ETag match, or exactly the Last-Modified date
/// when that is strong: a date no later than a second before `now` may
/// have seen a second change in the same second, 8.8.2.2).
pub fn if_range_holds(c: &Conditions, v: &Validators, now: u64) -> bool {
    let Some(ir) = c.if_range.as_deref() else {
        return true;
    };
    if ir.starts_with('"') {
        return ir == v.etag;
    }
    if ir.starts_with("W/") {
        return false; // weak tags never validate a range
    }
    match (date(ir), v.last_modified(now)) {
        (Some(d), Some(m)) => d == m && m < now,
        _ => false,
    }
}

/// An HTTP date as seconds since the epoch (`None`: not a date, or one
/// before 1970, which no file here is last modified at).
fn date(s: &str) -> Option<u64> {
    let t: SystemTime = httpdate::parse_http_date(s.trim()).ok()?;
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Whether `etag` is in an If-Match / If-None-Match list (`*` matches any
/// existing file). `weak` comparison (If-None-Match) ignores `W/`.
fn matches_list(list: &str, etag: &str, weak: bool) -> bool {
    let list = list.trim();
    if list == "*" {
        return true;
    }
    list.split(',').map(str::trim).any(|tag| {
        let (is_weak, bare) = match tag.strip_prefix("W/") {
            Some(b) => (true, b),
            None => (false, tag),
        };
        (weak || !is_weak) && bare == etag
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// 2023-11-14T22:13:20Z, and half a second.
    const MTIME: u64 = 1_700_000_000;
    /// A day later: the clock when these requests are answered.
    const NOW: u64 = MTIME + 86_400;

    fn v() -> Validators {
        Validators::new(
            0x10,
            Some(UNIX_EPOCH + Duration::from_millis(MTIME * 1000 + 500)),
        )
    }

    fn fmt(secs: u64) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
    }

    fn cond(f: impl FnOnce(&mut Conditions)) -> Conditions {
        let mut c = Conditions::default();
        f(&mut c);
        c
    }

    #[test]
    fn etag_is_mtime_and_size() {
        assert_eq!(v().etag, "\"6553f100-10\"");
        assert_eq!(v().modified, Some(MTIME));
        assert_eq!(v().last_modified(NOW), Some(MTIME));
    }

    #[test]
    fn precedence() {
        let v = v();
        let lm = fmt(MTIME);
        let earlier = "Sat, 01 Jan 2000 00:00:00 GMT".to_string();
        let s = |c: Conditions| evaluate(&c, &v, NOW);
        assert_eq!(s(Conditions::default()), None);
        assert_eq!(
            s(cond(|c| c.if_none_match = Some(v.etag.clone()))),
            Some(Status::NotModified)
        );
        let weak = format!("\"x\", W/{}", v.etag);
        assert_eq!(
            s(cond(|c| c.if_none_match = Some(weak))),
            Some(Status::NotModified)
        );
        assert_eq!(
            s(cond(|c| c.if_none_match = Some("*".into()))),
            Some(Status::NotModified)
        );
        assert_eq!(
            s(cond(|c| c.if_none_match = Some("\"other\"".into()))),
            None
        );
        assert_eq!(
            s(cond(|c| c.if_modified_since = Some(lm.clone()))),
            Some(Status::NotModified)
        );
        assert_eq!(
            s(cond(|c| c.if_modified_since = Some(earlier.clone()))),
            None
        );
        assert_eq!(
            s(cond(|c| c.if_modified_since = Some("garbage".into()))),
            None
        );
        // If-None-Match wins over If-Modified-Since.
        assert_eq!(
            s(cond(|c| {
                c.if_none_match = Some("\"other\"".into());
                c.if_modified_since = Some(lm.clone());
            })),
            None
        );
        assert_eq!(
            s(cond(|c| c.if_match = Some("\"other\"".into()))),
            Some(Status::PreconditionFailed)
        );
        assert_eq!(
            s(cond(|c| c.if_match = Some(format!("W/{}", v.etag)))),
            Some(Status::PreconditionFailed)
        );
        assert_eq!(s(cond(|c| c.if_match = Some(v.etag.clone()))), None);
        assert_eq!(
            s(cond(|c| c.if_unmodified_since = Some(earlier.clone()))),
            Some(Status::PreconditionFailed)
        );
        assert_eq!(s(cond(|c| c.if_unmodified_since = Some(lm.clone()))), None);
        // If-Match wins over If-Unmodified-Since.
        assert_eq!(
            s(cond(|c| {
                c.if_match = Some("*".into());
                c.if_unmodified_since = Some(earlier.clone());
            })),
            None
        );
    }

    #[test]
    fn a_future_mtime_is_compared_as_now() {
        // The file says it changes a day from now; it is last modified
        // now as far as any client was told.
        let v = v();
        let now = MTIME - 86_400;
        assert_eq!(v.last_modified(now), Some(now));
        let s = |c: Conditions| evaluate(&c, &v, now);
        // The date the client was sent is current, a second later is not.
        assert_eq!(
            s(cond(|c| c.if_modified_since = Some(fmt(now)))),
            Some(Status::NotModified)
        );
        let a_second_ago = fmt(now - 1);
        assert_eq!(
            s(cond(|c| c.if_modified_since = Some(a_second_ago.clone()))),
            None
        );
        assert_eq!(
            s(cond(|c| c.if_unmodified_since = Some(a_second_ago))),
            Some(Status::PreconditionFailed)
        );
        assert_eq!(s(cond(|c| c.if_unmodified_since = Some(fmt(now)))), None);
        // The ETag is the real mtime's, stable from second to second.
        assert_eq!(
            evaluate(
                &cond(|c| c.if_none_match = Some(v.etag.clone())),
                &v,
                now + 1
            ),
            Some(Status::NotModified)
        );
    }

    #[test]
    fn if_range() {
        let v = v();
        let lm = fmt(MTIME);
        let h = |s: &str, now| if_range_holds(&cond(|c| c.if_range = Some(s.into())), &v, now);
        assert!(if_range_holds(&Conditions::default(), &v, NOW));
        assert!(h(&v.etag, NOW));
        assert!(!h("\"old\"", NOW));
        assert!(!h(&format!("W/{}", v.etag), NOW));
        assert!(h(&lm, NOW));
        assert!(!h("Sat, 01 Jan 2000 00:00:00 GMT", NOW));
        // A date is strong only a second after it: not in its own second,
        // and never when it is a clamped future mtime (it is then now).
        assert!(h(&lm, MTIME + 1));
        assert!(!h(&lm, MTIME));
        assert!(!h(&fmt(MTIME - 5), MTIME - 5));
    }
}
