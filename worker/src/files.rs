//! Static files: a request path → a file under the site's root, or why not.
//!
//! The steps, in order:
//!
//! 1. The path (query already split off) is split on `/` *before* decoding,
//!    then each segment is percent-decoded exactly once. An invalid escape
//!    or a NUL byte is a 400.
//! 2. A segment that decodes to something containing `/` (`%2F`) is a 404:
//!    an encoded slash is never turned into a separator, and no file name
//!    can contain one, so no resource can match. (Treating it as a
//!    separator would let `..%2F..` slip past step 3.)
//! 3. Dot segments are resolved (`.` and empty segments dropped, `..` drops
//!    the previous one); a `..` with nothing left to drop would leave the
//!    root, which is a 403. Because decoding came first, `%2e%2e` counts as
//!    `..` here and is resolved, not passed to the filesystem.
//! 4. A remaining segment that starts with `.` (dotfiles: `.git`, `.env`)
//!    is a 404. (ACME's `/.well-known/` will need an exception later.)
//! 5. The file is opened (`O_NONBLOCK`, so a FIFO cannot hang the worker)
//!    and `fstat`ed on the open fd: a regular file is served; a directory
//!    asked for with a trailing slash serves its first existing index file
//!    (403 when none: there are no listings); a directory without the slash
//!    is a 301 to the slash URL; anything else (device, FIFO, socket) 403.
//!
//! Symlinks are followed, as nginx does by default: the root's owner
//! decides what it links to.

use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use log::debug;

use crate::http::response::Status;

/// A request path after decoding and dot-segment removal.
#[derive(Debug, PartialEq, Eq)]
pub struct UrlPath {
    /// Decoded segments, none empty, `.` or `..`.
    segments: Vec<Vec<u8>>,
    /// The path ended in `/` (or in a dot segment): a directory is meant.
    dir: bool,
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
        if escaped || segments.iter().any(|s| s.starts_with(b".")) {
            return Err(Status::NotFound);
        }
        Ok(UrlPath { segments, dir })
    }

    /// Where it is under `root`.
    pub fn under(&self, root: &Path) -> PathBuf {
        let mut p = root.to_path_buf();
        for s in &self.segments {
            p.push(OsStr::from_bytes(s));
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
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

/// An open file ready to be served.
#[derive(Debug)]
pub struct StaticFile {
    pub file: File,
    pub len: u64,
    pub modified: Option<SystemTime>,
    pub content_type: &'static str,
}

#[derive(Debug)]
pub enum Found {
    File(StaticFile),
    /// 301 to this location.
    Redirect(String),
    Error(Status),
}

/// Looks `path` (percent-encoded, no query) up under `root`; `query` (with
/// its `?`, or empty) is kept on a redirect.
pub fn lookup(root: &Path, index: &[String], path: &str, query: &str) -> Found {
    let url = match UrlPath::parse(path) {
        Ok(u) => u,
        Err(status) => return Found::Error(status),
    };
    let fs_path = url.under(root);
    let (file, meta) = match open(&fs_path) {
        Ok(f) => f,
        Err(status) => return Found::Error(status),
    };
    if meta.is_file() {
        if url.dir && !url.segments.is_empty() {
            return Found::Error(Status::NotFound); // `/file.txt/`
        }
        return Found::File(static_file(file, &meta, &fs_path));
    }
    if !meta.is_dir() {
        return Found::Error(Status::Forbidden);
    }
    drop(file);
    if !url.dir {
        return Found::Redirect(format!("{}{query}", url.to_url(true)));
    }
    for name in index {
        let candidate = fs_path.join(name);
        match open(&candidate) {
            Ok((file, meta)) if meta.is_file() => {
                return Found::File(static_file(file, &meta, &candidate));
            }
            Ok(_) | Err(Status::NotFound) => {}
            Err(status) => return Found::Error(status),
        }
    }
    Found::Error(Status::Forbidden)
}

fn static_file(file: File, meta: &Metadata, path: &Path) -> StaticFile {
    StaticFile {
        file,
        len: meta.len(),
        modified: meta.modified().ok(),
        content_type: mime_guess::from_path(path)
            .first_raw()
            .unwrap_or("application/octet-stream"),
    }
}

/// Opens for reading without blocking (FIFOs) or acquiring a terminal, and
/// stats the open fd (not the path, which could change in between).
fn open(path: &Path) -> Result<(File, Metadata), Status> {
    let result = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .and_then(|f| f.metadata().map(|m| (f, m)));
    result.map_err(|e| status_for(&e, path))
}

fn status_for(e: &io::Error, path: &Path) -> Status {
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR | libc::ENAMETOOLONG | libc::ELOOP) => Status::NotFound,
        Some(libc::EACCES | libc::EPERM) => Status::Forbidden,
        _ => {
            debug!("open {}: {e}", path.display());
            Status::InternalServerError
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn dotfiles_are_hidden() {
        assert_eq!(parse("/.git/config"), Err(Status::NotFound));
        assert_eq!(parse("/a/.env"), Err(Status::NotFound));
        assert_eq!(parse("/%2egit"), Err(Status::NotFound));
    }

    #[test]
    fn urls_are_reencoded() {
        let u = UrlPath::parse("/a%20b/./c%3F/").unwrap();
        assert_eq!(u.to_url(true), "/a%20b/c%3F/");
        assert_eq!(UrlPath::parse("/").unwrap().to_url(false), "/");
        assert_eq!(u.under(Path::new("/srv")), Path::new("/srv/a b/c?"));
    }

    #[test]
    fn lookup_on_a_real_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::write(root.join("index.html"), "<p>hi</p>").unwrap();
        std::fs::write(root.join("sub/index.html"), "sub").unwrap();
        std::fs::write(root.join("a.css"), "x{}").unwrap();
        std::fs::write(dir.path().join("secret"), "no").unwrap();
        nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let index = vec!["index.html".to_string()];
        let look = |p: &str, q: &str| lookup(&root, &index, p, q);

        match look("/", "") {
            Found::File(f) => {
                assert_eq!((f.len, f.content_type), (9, "text/html"));
                assert!(f.modified.is_some());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(look("/a.css", ""), Found::File(f) if f.content_type == "text/css"));
        assert!(matches!(look("/sub/", ""), Found::File(f) if f.len == 3));
        assert!(matches!(look("/sub", "?x=1"), Found::Redirect(l) if l == "/sub/?x=1"));
        assert!(matches!(
            look("/empty/", ""),
            Found::Error(Status::Forbidden)
        ));
        assert!(matches!(
            look("/missing", ""),
            Found::Error(Status::NotFound)
        ));
        assert!(matches!(
            look("/a.css/", ""),
            Found::Error(Status::NotFound)
        ));
        assert!(matches!(
            look("/a.css/x", ""),
            Found::Error(Status::NotFound)
        ));
        assert!(matches!(
            look("/../secret", ""),
            Found::Error(Status::Forbidden)
        ));
        assert!(matches!(look("/fifo", ""), Found::Error(Status::Forbidden)));
    }
}
