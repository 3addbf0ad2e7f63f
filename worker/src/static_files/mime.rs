//! Content-Type: the site's `types` first, then mime_guess's full table
//! (the IANA and Apache lists), then the site's `default_type`; the
//! site's `charset` is added to text types, which browsers would otherwise
//! decode by guesswork.

use std::borrow::Cow;
use std::cell::RefCell;
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

/// mime_guess's type for a lowercase extension, remembering the last
/// answer: a site serves a handful of extensions, and the table search
/// (a binary search of about 1,500 names, case-insensitively) was a tenth
/// of a keep-alive request's instructions. The table is static, so the
/// memo can never be stale.
fn guess(ext: &str) -> Option<&'static str> {
    thread_local! {
        static LAST: RefCell<(String, Option<&'static str>)> = const { RefCell::new((String::new(), None)) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != ext || last.0.is_empty() {
            last.0.clear();
            last.0.push_str(ext);
            last.1 = mime_guess::from_ext(ext).first_raw();
        }
        last.1
    })
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
}
