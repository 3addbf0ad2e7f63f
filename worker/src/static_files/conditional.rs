//! Validators and conditional requests (RFC 9110 8.8, 13).
//!
//! The ETag is nginx's: `"<mtime hex>-<size hex>"`, from the modification
//! time in seconds and the size, with no inode, so every host that serves
//! the same files (same mtimes, as rsync and most deploys keep them) gives
//! the same tag and caches behind a load balancer agree. It is a strong
//! tag, as nginx's is.
//!
//! The preconditions are evaluated in RFC 9110 13.2.2's order:
//!
//! 1. If-Match present: false → 412.
//! 2. Else If-Unmodified-Since (a valid date): modified since → 412.
//! 3. If-None-Match present: matches → 304 (GET/HEAD).
//! 4. Else If-Modified-Since (GET/HEAD, a valid date): not modified → 304.
//! 5. Range is honoured only if If-Range (when present) still matches
//!    (`if_range_holds`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::http::request::Conditions;
use crate::http::response::{Status, push_hex};

/// A file's validators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    pub etag: String,
    /// Whole seconds: HTTP dates have no finer resolution.
    pub modified: Option<SystemTime>,
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
            modified: modified.map(|_| UNIX_EPOCH + Duration::from_secs(secs)),
        }
    }
}

/// The status a precondition turns the response into, if any.
pub fn evaluate(c: &Conditions, v: &Validators) -> Option<Status> {
    if let Some(im) = &c.if_match {
        if !matches_list(im, &v.etag, false) {
            return Some(Status::PreconditionFailed);
        }
    } else if let Some(since) = c.if_unmodified_since.as_deref().and_then(date)
        && v.modified.is_some_and(|m| m > since)
    {
        return Some(Status::PreconditionFailed);
    }
    if let Some(inm) = &c.if_none_match {
        if matches_list(inm, &v.etag, true) {
            return Some(Status::NotModified);
        }
    } else if let Some(since) = c.if_modified_since.as_deref().and_then(date)
        && v.modified.is_some_and(|m| m <= since)
    {
        return Some(Status::NotModified);
    }
    None
}

/// Whether a Range may be served: no If-Range, or one that still names
/// this version (a strong ETag match, or exactly the Last-Modified date).
pub fn if_range_holds(c: &Conditions, v: &Validators) -> bool {
    let Some(ir) = c.if_range.as_deref() else {
        return true;
    };
    if ir.starts_with('"') {
        return ir == v.etag;
    }
    if ir.starts_with("W/") {
        return false; // weak tags never validate a range
    }
    match (date(ir), v.modified) {
        (Some(d), Some(m)) => d == m,
        _ => false,
    }
}

fn date(s: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(s.trim()).ok()
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

    fn v() -> Validators {
        Validators::new(
            0x10,
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_500)),
        )
    }

    fn cond(f: impl FnOnce(&mut Conditions)) -> Conditions {
        let mut c = Conditions::default();
        f(&mut c);
        c
    }

    #[test]
    fn etag_is_mtime_and_size() {
        assert_eq!(v().etag, "\"6553f100-10\"");
        assert_eq!(
            v().modified,
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
    }

    #[test]
    fn precedence() {
        let v = v();
        let lm = httpdate::fmt_http_date(v.modified.unwrap());
        let earlier = "Sat, 01 Jan 2000 00:00:00 GMT".to_string();
        let s = |c: Conditions| evaluate(&c, &v);
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
    fn if_range() {
        let v = v();
        let lm = httpdate::fmt_http_date(v.modified.unwrap());
        let h = |s: &str| if_range_holds(&cond(|c| c.if_range = Some(s.into())), &v);
        assert!(if_range_holds(&Conditions::default(), &v));
        assert!(h(&v.etag));
        assert!(!h("\"old\""));
        assert!(!h(&format!("W/{}", v.etag)));
        assert!(h(&lm));
        assert!(!h("Sat, 01 Jan 2000 00:00:00 GMT"));
    }
}
