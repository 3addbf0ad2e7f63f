//! Request path → segments under the root, safely.
//!
//! 1. The path (query already split off) is split on `/` *before* decoding,
//!    then each segment is percent-decoded exactly once. An invalid escape
//!    or a NUL byte is a 400.
//! 2. A segment that decodes to something containing `/` (`%2F`) is a 404:
//!    an encoded slash is never turned into a separator, and no file name
//!    can contain one, so no resource can match. (Treating it as a
//!    separator would let `..%2F..` slip past step 3.)
//! 3. Dot segments are resolved (RFC 3986 5.2.4: `.` and empty segments
//!    dropped, `..` drops the previous one); a `..` with nothing left to
//!    drop would leave the root, which is a 403. Because decoding came
//!    first, `%2e%2e` counts as `..` here and is resolved, not passed to the
//!    filesystem.
//!
//! What is left can only name something under the root, except through a
//! symlink, which `open` deals with per the site's policy.

use crate::http::response::Status;

/// A request path after decoding and dot-segment removal.
#[derive(Debug, PartialEq, Eq)]
pub struct UrlPath {
    /// Decoded segments, none empty, `.` or `..`.
    pub segments: Vec<Vec<u8>>,
    /// The path ended in `/` (or in a dot segment): a directory is meant.
    pub dir: bool,
}

impl UrlPath {
    /// Decodes and normalises `path`, which must start with `/`.
    pub fn parse(path: &str) -> Result<UrlPath, Status> {
        let Some(rest) = path.strip_prefix('/') else {
            return Err(Status::BadRequest);
        };
        let mut segments: Vec<Vec<u8>> = Vec::new();
        let mut dir = false;
        let mut escaped = false;
        for raw in rest.split('/') {
            let seg = percent_decode(raw).ok_or(Status::BadRequest)?;
            if seg.contains(&0) {
                return Err(Status::BadRequest);
            }
            if seg.contains(&b'/') {
                escaped = true; // reported after the 400s and 403s
            }
            dir = matches!(seg.as_slice(), b"" | b"." | b"..");
            match seg.as_slice() {
                b"" | b"." => {}
                b".." => {
                    if segments.pop().is_none() {
                        return Err(Status::Forbidden);
                    }
                }
                _ => segments.push(seg),
            }
        }
        if escaped {
            return Err(Status::NotFound);
        }
        Ok(UrlPath { segments, dir })
    }

    /// Whether a segment is hidden (a dotfile or dot-directory).
    pub fn hidden(&self) -> bool {
        self.segments.iter().any(|s| s.starts_with(b"."))
    }

    /// The same path with `name` appended (an index file).
    pub fn join(&self, name: &str) -> UrlPath {
        let mut segments = self.segments.clone();
        segments.push(name.as_bytes().to_vec());
        UrlPath {
            segments,
            dir: false,
        }
    }

    /// Where it is under `root`.
    #[cfg(test)]
    pub fn under(&self, root: &std::path::Path) -> std::path::PathBuf {
        use std::os::unix::ffi::OsStrExt;
        let mut p = root.to_path_buf();
        for s in &self.segments {
            p.push(std::ffi::OsStr::from_bytes(s));
        }
        p
    }

    /// The normalised path as a URL path, re-encoded, with a trailing slash
    /// when it names a directory.
    pub fn to_url(&self, dir: bool) -> String {
        let mut url = String::with_capacity(64);
        for s in &self.segments {
            url.push('/');
            percent_encode(s, &mut url);
        }
        if dir || self.segments.is_empty() {
            url.push('/');
        }
        url
    }
}

/// Decodes `%XX` escapes; `None` on a malformed one.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex(*bytes.get(i + 1)?)?;
            let lo = hex(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes one segment, leaving RFC 3986 `pchar`s as they are.
fn percent_encode(seg: &[u8], out: &mut String) {
    for &b in seg {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
            );
        if keep {
            out.push(b as char);
        } else {
            push_escape(b, out);
        }
    }
}

/// `%XX` for one byte, in uppercase hex (RFC 3986 2.1).
pub fn push_escape(b: u8, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 15)]));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(p: &str) -> Result<(Vec<String>, bool), Status> {
        UrlPath::parse(p).map(|u| {
            let segs = u
                .segments
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            (segs, u.dir)
        })
    }

    fn segs(list: &[&str], dir: bool) -> Result<(Vec<String>, bool), Status> {
        Ok((list.iter().map(|s| s.to_string()).collect(), dir))
    }

    #[test]
    fn paths_are_decoded_once_and_normalised() {
        assert_eq!(parse("/"), segs(&[], true));
        assert_eq!(parse("/a/b.txt"), segs(&["a", "b.txt"], false));
        assert_eq!(parse("/a//b/"), segs(&["a", "b"], true));
        assert_eq!(parse("/a/./b/../c"), segs(&["a", "c"], false));
        assert_eq!(parse("/a/b/.."), segs(&["a"], true));
        assert_eq!(parse("/a%20b/%41"), segs(&["a b", "A"], false));
        assert_eq!(parse("/%2541"), segs(&["%41"], false)); // once, not twice
        assert_eq!(parse("/a/%2e%2E/b"), segs(&["b"], false));
        assert_eq!(parse("/caf%C3%A9"), segs(&["café"], false));
    }

    #[test]
    fn escapes_from_the_root_are_refused() {
        assert_eq!(parse("/.."), Err(Status::Forbidden));
        assert_eq!(parse("/../etc/passwd"), Err(Status::Forbidden));
        assert_eq!(parse("/a/../../etc/passwd"), Err(Status::Forbidden));
        assert_eq!(parse("/%2e%2e/etc/passwd"), Err(Status::Forbidden));
        assert_eq!(parse("/..%2Fetc%2Fpasswd"), Err(Status::NotFound));
        assert_eq!(parse("/a%2f..%2f..%2fb"), Err(Status::NotFound));
    }

    #[test]
    fn malformed_paths() {
        assert_eq!(parse("a"), Err(Status::BadRequest));
        assert_eq!(parse("*"), Err(Status::BadRequest));
        assert_eq!(parse("/a%00b"), Err(Status::BadRequest));
        assert_eq!(parse("/a%zz"), Err(Status::BadRequest));
        assert_eq!(parse("/a%4"), Err(Status::BadRequest));
        assert_eq!(parse("/%"), Err(Status::BadRequest));
    }

    #[test]
    fn dotfiles_are_seen_after_decoding() {
        assert!(UrlPath::parse("/.git/config").unwrap().hidden());
        assert!(UrlPath::parse("/a/.env").unwrap().hidden());
        assert!(UrlPath::parse("/%2egit").unwrap().hidden());
        assert!(!UrlPath::parse("/a/b.c").unwrap().hidden());
    }

    #[test]
    fn urls_are_reencoded() {
        let u = UrlPath::parse("/a%20b/./c%3F/").unwrap();
        assert_eq!(u.to_url(true), "/a%20b/c%3F/");
        assert_eq!(UrlPath::parse("/").unwrap().to_url(false), "/");
        assert_eq!(u.under(Path::new("/srv")), Path::new("/srv/a b/c?"));
    }
}
