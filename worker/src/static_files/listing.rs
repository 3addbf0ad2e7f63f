//! Directory listings (off unless `directory_listing = true`): an HTML page
//! with every name escaped for HTML in its text, and in its link
//! percent-encoded down to RFC 3986's unreserved characters: so a file
//! called `<script>` is shown, not run, and one called
//! `javascript:alert(1)` links to itself, not to a scheme (a `:` before
//! the first `/` would make the link absolute, RFC 3986 4.2). Every byte
//! a name can hold, non-UTF-8 included, survives the encoding, so each
//! link leads back to its file. Hidden files are left out unless the site
//! serves dotfiles. Directories come first, then files, each sorted by
//! name.

use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::path::push_escape;

/// The listing of `dir` (at URL `url`, ending in `/`), or `None` if it
/// cannot be read.
pub fn render(dir: &Path, url: &str, show_hidden: bool) -> Option<String> {
    let mut entries: Vec<(bool, Vec<u8>, u64)> = Vec::new();
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name().as_bytes().to_vec();
        if !show_hidden && name.starts_with(b".") {
            continue;
        }
        // Follows symlinks for the kind, as a click on it would.
        let meta = std::fs::metadata(entry.path()).ok();
        let is_dir = meta.as_ref().is_some_and(|m| m.is_dir());
        entries.push((is_dir, name, meta.map_or(0, |m| m.len())));
    }
    entries.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let title = escape(url);
    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n\
         <body><h1>Index of {title}</h1>\n<ul>\n"
    );
    if url != "/" {
        html.push_str("<li><a href=\"../\">../</a></li>\n");
    }
    for (is_dir, name, len) in entries {
        // Nothing but unreserved characters and escapes: no HTML escaping
        // is needed either.
        let mut href = String::with_capacity(name.len() * 3);
        href_encode(&name, &mut href);
        let shown = escape(&String::from_utf8_lossy(&name));
        let slash = if is_dir { "/" } else { "" };
        let size = if is_dir {
            String::new()
        } else {
            format!(" ({len} bytes)")
        };
        let _ = writeln!(
            html,
            "<li><a href=\"{href}{slash}\">{shown}{slash}</a>{size}</li>"
        );
    }
    html.push_str("</ul></body></html>\n");
    Some(html)
}

/// Percent-encodes a name for a relative link: every byte but RFC 3986's
/// unreserved ones (`A-Z a-z 0-9 - . _ ~`). The looser `pchar` set a path
/// allows keeps `:`, which in a link's first segment starts a scheme.
fn href_encode(name: &[u8], out: &mut String) {
    for &b in name {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            push_escape(b, out);
        }
    }
}

/// HTML text escaping, for element content and quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_and_encoded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("<img src=x onerror=alert(1)>"), "x").unwrap();
        std::fs::write(dir.path().join("a b&c"), "xy").unwrap();
        std::fs::write(dir.path().join(".hidden"), "").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let html = render(dir.path(), "/d/<x>/", false).unwrap();
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(html.contains("href=\"%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E\""));
        assert!(html.contains("href=\"a%20b%26c\">a b&amp;c</a> (2 bytes)"));
        assert!(html.contains("Index of /d/&lt;x&gt;/"));
        assert!(!html.contains("hidden"));
        assert!(html.find("sub/").unwrap() < html.find("a b").unwrap());
        assert!(render(dir.path(), "/", true).unwrap().contains(".hidden"));
    }

    #[test]
    fn hrefs_are_never_schemes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("javascript:alert(document.domain)"), "x").unwrap();
        std::fs::create_dir(dir.path().join("data:x")).unwrap();
        let html = render(dir.path(), "/", false).unwrap();
        assert!(
            html.contains("href=\"javascript%3Aalert%28document.domain%29\">javascript:alert(document.domain)</a>"),
            "{html}"
        );
        assert!(html.contains("href=\"data%3Ax/\">data:x/</a>"), "{html}");
        let mut out = String::new();
        href_encode(b"\xff\n\"'<>&%~._-aZ9", &mut out);
        assert_eq!(out, "%FF%0A%22%27%3C%3E%26%25~._-aZ9");
    }
}
