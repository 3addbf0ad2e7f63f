//! Directory listings (off unless `directory_listing = true`): an HTML page
//! with every name escaped for HTML and percent-encoded in its link, so a
//! file called `<script>` is shown, not run. Hidden files are left out
//! unless the site serves dotfiles. Directories come first, then files,
//! each sorted by name.

use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::path::percent_encode;

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
        let mut href = String::new();
        percent_encode(&name, &mut href);
        let href = escape(&href);
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
        assert!(html.contains("href=\"%3Cimg%20src=x%20onerror=alert(1)%3E\""));
        assert!(html.contains("href=\"a%20b&amp;c\">a b&amp;c</a> (2 bytes)"));
        assert!(html.contains("Index of /d/&lt;x&gt;/"));
        assert!(!html.contains("hidden"));
        assert!(html.find("sub/").unwrap() < html.find("a b").unwrap());
        assert!(render(dir.path(), "/", true).unwrap().contains(".hidden"));
    }
}
