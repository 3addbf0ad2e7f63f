//! Content-Type: the site's `types` first, then the full table of
//! `mime_types.txt` (mime_guess's: the IANA and Apache lists), then the
//! site's `default_type`; the site's `charset` is added to text types,
//! which browsers would otherwise decode by guesswork.
//!
//! The table is compiled by `worker/build.rs` into strings and offsets
//! rather than used through mime_guess: mime_guess's 1,400 `&str` pairs
//! are relocated when the program starts, a private 60 KiB copy in every
//! process, master and workers alike. A unit test keeps the two equal.

use std::borrow::Cow;
use std::path::Path;

use baton_shared::config::FileOptions;

/// The Content-Type of the file at `path` (the name asked for, not a
/// precompressed variant's).
pub fn content_type(path: &Path, files: &FileOptions) -> String {
    let ext = path.extension().map(|e| e.to_string_lossy());
    // Lowercased only when it has to be (it rarely does): one allocation
    // fewer per response.
    let ext = ext.map(|e| match e {
        Cow::Borrowed(b) if !b.bytes().any(|c| c.is_ascii_uppercase()) => Cow::Borrowed(b),
        other => Cow::Owned(other.to_ascii_lowercase()),
    });
    let configured = ext
        .as_deref()
        .and_then(|e| files.types.iter().find(|(x, _)| x == e))
        .map(|(_, t)| t.as_str());
    let essence = configured
        .or_else(|| ext.as_deref().and_then(guess))
        .unwrap_or(files.default_type.as_str());
    match &files.charset {
        Some(cs) if wants_charset(essence) => {
            let mut t = String::with_capacity(essence.len() + 10 + cs.len());
            t.push_str(essence);
            t.push_str("; charset=");
            t.push_str(cs);
            t
        }
        _ => essence.to_owned(),
    }
}

include!(concat!(env!("OUT_DIR"), "/mime_table.rs"));

/// The table's type for a lowercase extension: a binary search of byte
/// strings, about eleven short comparisons.
fn guess(ext: &str) -> Option<&'static str> {
    let name = |&(at, len, _, _): &(u16, u8, u16, u8)| {
        EXTENSIONS
            .as_bytes()
            .get(usize::from(at)..usize::from(at) + usize::from(len))
            .unwrap_or_default()
    };
    let i = ENTRIES
        .binary_search_by(|e| name(e).cmp(ext.as_bytes()))
        .ok()?;
    let (_, _, at, len) = ENTRIES[i];
    TYPES.get(usize::from(at)..usize::from(at) + usize::from(len))
}

/// Text types without a charset parameter of their own.
fn wants_charset(t: &str) -> bool {
    if t.contains(';') {
        return false;
    }
    t.starts_with("text/")
        || matches!(
            t,
            "application/javascript"
                | "application/json"
                | "application/xml"
                | "application/rss+xml"
                | "application/atom+xml"
                | "application/manifest+json"
                | "image/svg+xml"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_overrides_and_charset() {
        let mut files = FileOptions::default();
        let ct = |p: &str, f: &FileOptions| content_type(Path::new(p), f);
        assert_eq!(ct("a.html", &files), "text/html; charset=utf-8");
        assert_eq!(ct("a.JS", &files), "text/javascript; charset=utf-8");
        assert_eq!(ct("a.png", &files), "image/png");
        assert_eq!(ct("b.png", &files), "image/png");
        assert_eq!(ct("a.html", &files), "text/html; charset=utf-8");
        assert_eq!(ct("a.woff2", &files), "font/woff2");
        assert_eq!(ct("noext", &files), "application/octet-stream");
        files.types.push(("md".into(), "text/markdown".into()));
        files.types.push(("png".into(), "image/x-mine".into()));
        files.default_type = "text/plain".into();
        files.charset = None;
        assert_eq!(ct("a.md", &files), "text/markdown");
        assert_eq!(ct("a.png", &files), "image/x-mine");
        assert_eq!(ct("README", &files), "text/plain");
        files.charset = Some("iso-8859-1".into());
        assert_eq!(ct("a.txt", &files), "text/plain; charset=iso-8859-1");
    }

    /// Every line of mime_types.txt is mime_guess's first type for the
    /// extension, and every entry of the compiled table is found.
    #[test]
    fn the_table_is_mime_guess_s() {
        let lines: Vec<(&str, &str)> = include_str!("mime_types.txt")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| l.split_once(' '))
            .collect();
        assert_eq!(lines.len(), ENTRIES.len());
        assert!(lines.len() > 1000);
        for (ext, ty) in lines {
            assert_eq!(mime_guess::from_ext(ext).first_raw(), Some(ty), "{ext}");
            assert_eq!(guess(ext), Some(ty), "{ext}");
        }
        for missing in ["", "zzzz", "HTML", "a", "~", "0000000000000000000000000000"] {
            assert_eq!(guess(missing), None, "{missing:?}");
        }
    }
}
