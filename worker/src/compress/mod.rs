//! On-the-fly compression (`compress`): gzip, brotli and zstd, negotiated
//! from Accept-Encoding, for compressible types above a minimum length.
//!
//! - `negotiate`: which coding a request gets (q-values, `*`, identity).
//! - `encoder`: the streaming encoders. `Encoder` compresses chunks;
//!   `BodyEncoder` frames them (chunked or raw) and holds at most one
//!   chunk of output, with `wants_input` as the back-pressure. This is
//!   the API a proxied body uses too (see `BodyEncoder`).
//! - `file`: a file body compressed while it is sent (files the file
//!   cache does not hold).
//! - Small files: the file cache keeps each compressed variant beside its
//!   entry, made once per file version (`FileCache::variant`), counted
//!   against `file_cache_size`.
//!
//! Rules every response follows (`plan`): never for a request with a
//! Range (the identity representation answers it, so If-Range and
//! Content-Range keep meaning the file's bytes), never on top of an
//! existing `Content-Encoding` (a precompressed `.br`/`.gz` wins), only
//! for 200s (304, 206, 412 and errors are made elsewhere), and a
//! compressible resource says `Vary: Accept-Encoding` whichever
//! representation it sends. Each coding has its own ETag, the identity
//! tag with a suffix inside the quotes (`"65-1a-br"`), so a cache never
//! takes one representation for another and If-None-Match compares with
//! the variant's tag.

pub mod encoder;
pub(crate) mod file;
pub mod negotiate;

use baton_shared::config::compress::{Coding, Compress};

pub use encoder::{BodyEncoder, Encoder, MAX_INPUT, encode_all};
pub use negotiate::negotiate;

use crate::http::request::Conditions;

/// What compression does to one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Plan {
    /// Add `Vary: Accept-Encoding`: the representation depends on it.
    pub vary: bool,
    /// The coding to send, `None` for identity.
    pub coding: Option<Coding>,
}

/// The plan for a response body of `content_type` and `len` bytes
/// (`None`: unknown), under `setting`, for a request with `conditions`.
/// `encoded`: the body already has a Content-Encoding.
pub fn plan(
    setting: Option<&Compress>,
    conditions: &Conditions,
    content_type: &str,
    len: Option<u64>,
    encoded: bool,
) -> Plan {
    let Some(c) = setting else {
        return Plan::default();
    };
    if encoded || !c.compresses_type(content_type) || len.is_some_and(|n| n < c.min_length) {
        return Plan::default();
    }
    let coding = if conditions.range.is_some() {
        None
    } else {
        negotiate(conditions.accept_encoding.as_deref(), &c.encodings)
    };
    Plan { vary: true, coding }
}

/// The ETag of `coding`'s variant of the representation tagged `etag`:
/// the suffix goes inside the quotes (`"a-1"` → `"a-1-gz"`); a weak tag
/// stays weak.
pub fn variant_etag(etag: &str, coding: Coding) -> String {
    match etag.strip_suffix('"') {
        Some(open) => format!("{open}{}\"", coding.etag_suffix()),
        None => format!("{etag}{}", coding.etag_suffix()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(accept: Option<&str>, range: Option<&str>) -> Conditions {
        Conditions {
            accept_encoding: accept.map(str::to_owned),
            range: range.map(str::to_owned),
            ..Conditions::default()
        }
    }

    #[test]
    fn plans() {
        let c = Compress::default();
        let br = cond(Some("br"), None);
        let html = "text/html; charset=utf-8";
        assert_eq!(plan(None, &br, html, Some(1000), false), Plan::default());
        assert_eq!(
            plan(Some(&c), &br, html, Some(1000), false),
            Plan {
                vary: true,
                coding: Some(Coding::Br)
            }
        );
        // Too small, not compressible, or already encoded: no Vary either.
        assert_eq!(plan(Some(&c), &br, html, Some(255), false), Plan::default());
        assert_eq!(
            plan(Some(&c), &br, "image/png", Some(1000), false),
            Plan::default()
        );
        assert_eq!(plan(Some(&c), &br, html, Some(1000), true), Plan::default());
        // A range, or a client that takes nothing: identity, with Vary.
        let ranged = cond(Some("br"), Some("bytes=0-9"));
        let none = cond(None, None);
        for c2 in [&ranged, &none] {
            assert_eq!(
                plan(Some(&c), c2, html, Some(1000), false),
                Plan {
                    vary: true,
                    coding: None
                }
            );
        }
        // Unknown length (a proxied body): compressed.
        assert_eq!(
            plan(Some(&c), &br, html, None, false).coding,
            Some(Coding::Br)
        );
    }

    #[test]
    fn variant_etags() {
        assert_eq!(variant_etag("\"65-1a\"", Coding::Gzip), "\"65-1a-gz\"");
        assert_eq!(variant_etag("W/\"x\"", Coding::Br), "W/\"x-br\"");
        assert_eq!(variant_etag("\"x\"", Coding::Zstd), "\"x-zst\"");
    }
}
