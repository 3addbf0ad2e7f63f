//! Static files: a GET or HEAD → the response a file, directory or error
//! makes, as nginx's static module would give it.
//!
//! The pipeline, in the order it runs:
//!
//! 1. `path`: percent-decode once, remove dot segments, refuse NUL and
//!    encoded slashes; nothing left can name a place above the root.
//! 2. Dotfiles (any segment starting with `.`) are a 404 unless the site
//!    has `dotfiles = "allow"`.
//! 3. `open`: the file is opened under the root with the site's symlink
//!    policy, and `fstat`ed on the fd.
//! 4. A directory: without a trailing slash, a 301 to it (query kept);
//!    with one, the first index file that exists, else a listing when
//!    `directory_listing` is on (`listing`), else 403.
//! 5. Not found (404), with a `fallback`: the fallback path instead (an
//!    SPA's `index.html`), through the same steps.
//! 6. `precompressed`: `x.br` / `x.gz` in the client's order of preference.
//! 7. `conditional`: ETag and Last-Modified (never after the Date), then
//!    If-Match, If-Unmodified-Since (412), If-None-Match,
//!    If-Modified-Since (304).
//! 8. `range`: one range → 206 (the whole file → 200), unsatisfiable →
//!    416, If-Range checked.
//! 9. `mime`: Content-Type; then the site's and the path's `headers` on
//!    successful and redirect responses, and the site's `error_pages` for
//!    errors.
//!
//! A body is the open file, which the connection sends with sendfile(2) as
//! the socket drains, except for small files in the worker's `cache`
//! (`file_cache_size`, `file_cache_max_file_size`): those are held in
//! memory, watched with inotify, and a hit skips steps 1 to 6 and every
//! file system call. Large files are never read into memory.

mod cache;
mod conditional;
mod listing;
mod mime;
mod open;
mod path;
mod precompressed;
mod range;

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use baton_shared::config::Site;

use crate::compress::{self, file::EncodedFile};
use crate::http::request::{Request, Version};
use crate::http::response::{DateCache, Response, Status, http_date};
use crate::outgoing::{Body, FileBody};
pub use cache::FileCache;
use cache::{Entry, Key, Lookup};
use conditional::Validators;
use open::{open_under, open_url};
use path::UrlPath;
use range::Ranged;

/// A regular file found for a request.
struct Found {
    file: File,
    meta: Metadata,
    /// Its segments under the root: its type comes from the last (an index
    /// file's own name, not the URL's), and precompressed variants are
    /// found beside it.
    segments: Vec<Vec<u8>>,
}

impl Found {
    /// The name its Content-Type is chosen by.
    fn type_name<'a>(&'a self, root: &'a Path) -> &'a Path {
        self.segments
            .last()
            .map_or(root, |s| Path::new(OsStr::from_bytes(s)))
    }
}

enum Outcome {
    File(Found),
    Listing(String),
    Redirect(String),
    Error(Status),
}

/// Answers a GET or HEAD of `target` (path and query, percent-encoded),
/// in a response whose Date is `date`.
pub fn serve(req: &Request, site: &Site, cache: &mut FileCache, date: &DateCache) -> Response {
    // A site made of routes only: what no route takes is not found.
    if site.root.is_none() {
        return Response::status(Status::NotFound);
    }
    let (path, query) = match req.target.find('?') {
        Some(i) => req.target.split_at(i),
        None => (req.target.as_str(), ""),
    };
    // A fragment is never sent by a client; if it is, it is not the path.
    let path = path.split('#').next().unwrap_or_default();
    let pref = if site.files.precompressed {
        precompressed::preference_key(req.conditions.accept_encoding.as_deref())
    } else {
        0
    };
    let key = Key { site, pref, path };
    let mut fill = match cache.get(key) {
        Lookup::Hit(entry) => {
            let mut response = cached_response(req, site, &entry, date, cache);
            add_configured_headers(&mut response, site, path);
            return response;
        }
        Lookup::Refused => None,
        Lookup::Miss => Some(Fill { cache, key }),
    };
    let mut outcome = resolve(site, path, query);
    if let (Outcome::Error(Status::NotFound), Some(fallback)) = (&outcome, &site.files.fallback) {
        outcome = resolve(site, fallback, "");
        // What a missing path falls back to depends on its absence, which
        // no watch covers: not cached.
        fill = None;
    }
    let mut response = match outcome {
        Outcome::File(found) => file_response(req, site, found, fill, date),
        Outcome::Listing(html) => Response {
            status: Status::Ok,
            headers: vec![("Content-Type".into(), "text/html; charset=utf-8".into())],
            body: Body::Bytes(html.into_bytes()),
        },
        Outcome::Redirect(location) => {
            Response::status(Status::MovedPermanently).with_header("Location", location)
        }
        Outcome::Error(status) => error_response(site, status),
    };
    add_configured_headers(&mut response, site, path);
    response
}

/// Steps 1 to 4 for one URL path.
fn resolve(site: &Site, path: &str, query: &str) -> Outcome {
    let files = &site.files;
    let url = match UrlPath::parse(path) {
        Ok(u) => u,
        Err(status) => return Outcome::Error(status),
    };
    if !files.dotfiles && url.hidden() {
        return Outcome::Error(Status::NotFound);
    }
    let (file, meta) = match open_url(site_root(site), &url, files.symlinks) {
        Ok(f) => f,
        Err(status) => return Outcome::Error(status),
    };
    if meta.is_file() {
        if url.dir && !url.segments.is_empty() {
            return Outcome::Error(Status::NotFound); // `/file.txt/`
        }
        return Outcome::File(Found {
            file,
            meta,
            segments: url.segments,
        });
    }
    if !meta.is_dir() {
        return Outcome::Error(Status::Forbidden); // device, FIFO, socket
    }
    if !url.dir {
        return Outcome::Redirect(format!("{}{query}", url.to_url(true)));
    }
    for name in &site.index {
        let candidate = url.join(name);
        match open_url(site_root(site), &candidate, files.symlinks) {
            Ok((file, meta)) if meta.is_file() => {
                return Outcome::File(Found {
                    file,
                    meta,
                    segments: candidate.segments,
                });
            }
            Ok(_) | Err(Status::NotFound) => {}
            Err(status) => return Outcome::Error(status),
        }
    }
    if files.directory_listing {
        // Listed through the fd opened under the symlink policy, not by
        // path again.
        let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        if let Some(html) = listing::render(&fd_path, &url.to_url(true), files.dotfiles) {
            return Outcome::Listing(html);
        }
    }
    Outcome::Error(Status::Forbidden)
}

/// A cache miss that may be filled: the cache, and the key the response
/// is filed under.
struct Fill<'c, 'k> {
    cache: &'c mut FileCache,
    key: Key<'k>,
}

/// What a file response's headers are made of, from the disk or the
/// cache.
struct Described<'a> {
    content_type: String,
    /// `Vary: Accept-Encoding`: the site has precompressed files on.
    vary: bool,
    encoding: Option<&'static str>,
    len: u64,
    validators: &'a Validators,
    /// The mtime as an HTTP date (`respond` sends the Date instead when
    /// the mtime is in the future).
    last_modified: Option<String>,
}

/// Steps 6 to 9 for a found file; the file goes into the cache on the way
/// when it is small enough.
fn file_response(
    req: &Request,
    site: &Site,
    found: Found,
    fill: Option<Fill>,
    date: &DateCache,
) -> Response {
    let files = &site.files;
    let content_type = mime::content_type(found.type_name(site_root(site)), files);
    let (mut file, mut meta, mut encoding) = (found.file, found.meta, None);
    let mut segments = found.segments;
    if files.precompressed
        && let Some((coding, f, m, segs)) =
            variant(site, &segments, req.conditions.accept_encoding.as_deref())
    {
        (file, meta, encoding, segments) = (f, m, Some(coding), segs);
    }
    if let Some(Fill { cache, key }) = fill
        && cache.wants(key, meta.len())
        && let Some(entry) = cache.fill(key, &segments, &file, &content_type, encoding)
    {
        return cached_response(req, site, &entry, date, cache);
    }
    let len = meta.len();
    let validators = Validators::new(len, meta.modified().ok());
    let last_modified = validators.modified.map(http_date);
    let plan = compress::plan(
        files.compress.as_ref(),
        &req.conditions,
        &content_type,
        Some(len),
        encoding.is_some(),
    );
    // Compressed while sent, with chunked framing (HTTP/2: in DATA
    // frames): HTTP/1.0 has neither, so it gets the identity body (still
    // with Vary).
    if let (Some(coding), Some(setting), Version::Http11 | Version::Http2) =
        (plan.coding, &files.compress, req.version)
    {
        let level = setting.level(coding);
        let variant = Validators {
            etag: compress::variant_etag(&validators.etag, coding),
            modified: validators.modified,
        };
        let described = Described {
            content_type,
            vary: true,
            encoding: Some(coding.name()),
            len,
            validators: &variant,
            last_modified,
        };
        return respond(req, described, date, |_, _| {
            Body::Encoded(Box::new(EncodedFile::new(file, len, coding, level)))
        });
    }
    let described = Described {
        content_type,
        vary: files.precompressed || plan.vary,
        encoding,
        len,
        validators: &validators,
        last_modified,
    };
    respond(req, described, date, |offset, remaining| {
        Body::File(FileBody {
            file,
            offset,
            remaining,
        })
    })
}

/// Steps 7 to 9 from a cache entry: no file is touched. A compressed
/// variant comes from the cache too, made on the first request for it.
fn cached_response(
    req: &Request,
    site: &Site,
    entry: &Rc<Entry>,
    date: &DateCache,
    cache: &mut FileCache,
) -> Response {
    let plan = compress::plan(
        site.files.compress.as_ref(),
        &req.conditions,
        &entry.content_type,
        Some(entry.bytes.len() as u64),
        entry.encoding.is_some(),
    );
    if let (Some(coding), Some(setting)) = (plan.coding, &site.files.compress) {
        let variant = Validators {
            etag: compress::variant_etag(&entry.validators.etag, coding),
            modified: entry.validators.modified,
        };
        // A 304 or 412 needs no body: nothing is compressed for it. A HEAD
        // is: its Content-Length is the variant's.
        let body_needed = conditional::evaluate(&req.conditions, &variant, date.secs()).is_none();
        let bytes = if body_needed {
            cache.variant(entry, coding, setting.level(coding))
        } else {
            None
        };
        // (A coder that failed leaves the identity response below.)
        if !body_needed || bytes.is_some() {
            let described = Described {
                content_type: entry.content_type.clone(),
                vary: true,
                encoding: Some(coding.name()),
                len: bytes.as_ref().map_or(0, |b| b.len() as u64),
                validators: &variant,
                last_modified: entry.last_modified.clone(),
            };
            return respond(req, described, date, |_, _| match bytes {
                Some(bytes) => Body::Shared {
                    len: bytes.len(),
                    bytes,
                    start: 0,
                },
                None => Body::Empty,
            });
        }
    }
    let described = Described {
        content_type: entry.content_type.clone(),
        vary: site.files.precompressed || plan.vary,
        encoding: entry.encoding,
        len: entry.bytes.len() as u64,
        validators: &entry.validators,
        last_modified: entry.last_modified.clone(),
    };
    respond(req, described, date, |offset, remaining| Body::Shared {
        bytes: entry.bytes.clone(),
        // Both within the entry's length, which is a usize.
        start: offset as usize,
        len: remaining as usize,
    })
}

/// Validators, preconditions and ranges: the response for a described
/// file whose body (from an offset, so many bytes) `body` makes, and
/// whose Date is `date`.
fn respond(
    req: &Request,
    d: Described,
    date: &DateCache,
    body: impl FnOnce(u64, u64) -> Body,
) -> Response {
    let c = &req.conditions;
    let mut headers: Vec<(Cow<'static, str>, Cow<'static, str>)> = Vec::with_capacity(8);
    headers.push(("Content-Type".into(), d.content_type.into()));
    if d.vary {
        // The response depends on Accept-Encoding whichever is sent.
        headers.push(("Vary".into(), "Accept-Encoding".into()));
    }
    if let Some(coding) = d.encoding {
        headers.push(("Content-Encoding".into(), coding.into()));
    }
    let (len, v, now) = (d.len, d.validators, date.secs());
    headers.push(("ETag".into(), v.etag.clone().into()));
    // Never later than the Date: a future mtime is replaced by the Date
    // itself (RFC 9110 8.8.2.1), and `conditional` compares with that.
    let last_modified = match v.modified {
        Some(m) if m > now => Some(date.get().to_owned()),
        _ => d.last_modified,
    };
    if let Some(lm) = last_modified {
        headers.push(("Last-Modified".into(), lm.into()));
    }
    match conditional::evaluate(c, v, now) {
        Some(Status::NotModified) => {
            // `write_head` leaves Content-Type and Content-Encoding out of
            // a 304, and any configured metadata with them.
            return Response {
                status: Status::NotModified,
                headers,
                body: Body::Empty,
            };
        }
        Some(status) => return Response::status(status),
        None => {}
    }
    headers.push(("Accept-Ranges".into(), "bytes".into()));
    let ranged = if conditional::if_range_holds(c, v, now) {
        range::select(c.range.as_deref(), len)
    } else {
        Ranged::Full
    };
    let (status, offset, remaining) = match ranged {
        Ranged::Full => (Status::Ok, 0, len),
        Ranged::Part { start, end } => {
            headers.push((
                "Content-Range".into(),
                format!("bytes {start}-{end}/{len}").into(),
            ));
            (Status::PartialContent, start, end - start + 1)
        }
        Ranged::Unsatisfiable => {
            return Response::status(Status::RangeNotSatisfiable)
                .with_header("Content-Range", format!("bytes */{len}"));
        }
    };
    Response {
        status,
        headers,
        body: body(offset, remaining),
    }
}

/// The best precompressed variant the client accepts that exists as a
/// regular file: its coding, file, metadata and segments.
fn variant(
    site: &Site,
    segments: &[Vec<u8>],
    accept: Option<&str>,
) -> Option<(&'static str, File, Metadata, Vec<Vec<u8>>)> {
    let (last, parents) = segments.split_last()?;
    for (coding, suffix) in precompressed::preferred(accept) {
        let mut segs = parents.to_vec();
        segs.push([last.as_slice(), suffix.as_bytes()].concat());
        if let Ok((f, m)) = open_under(site_root(site), &segs, site.files.symlinks)
            && m.is_file()
        {
            return Some((coding, f, m, segs));
        }
    }
    None
}

/// An error status, with the site's page for it if it has one that can be
/// served.
fn error_response(site: &Site, status: Status) -> Response {
    let page = site
        .files
        .error_pages
        .iter()
        .find(|(code, _)| *code == status.code());
    if let Some((_, page)) = page
        && let Outcome::File(found) = resolve(site, page, "")
    {
        return Response {
            status,
            headers: vec![(
                "Content-Type".into(),
                mime::content_type(found.type_name(site_root(site)), &site.files).into(),
            )],
            body: Body::File(FileBody {
                remaining: found.meta.len(),
                file: found.file,
                offset: 0,
            }),
        };
    }
    Response::status(status)
}

/// The site's `headers`, then those of every `path_headers` prefix the
/// normalised path is under, on the statuses nginx's `add_header` uses
/// (success and redirects: a 404 must not be cached for an hour).
fn add_configured_headers(response: &mut Response, site: &Site, path: &str) {
    if !matches!(
        response.status,
        Status::Ok | Status::PartialContent | Status::MovedPermanently | Status::NotModified
    ) {
        return;
    }
    for (name, value) in &site.files.headers {
        response.set_header(name, value);
    }
    if site.files.path_headers.is_empty() {
        return;
    }
    let Ok(url) = UrlPath::parse(path) else {
        return;
    };
    let normal = url.to_url(url.dir);
    for (prefix, headers) in &site.files.path_headers {
        if normal.starts_with(prefix.as_str()) || format!("{normal}/") == *prefix {
            for (name, value) in headers {
                response.set_header(name, value);
            }
        }
    }
}

/// The site's root. Only called once `serve` saw there is one; an empty
/// path (which opens nothing) otherwise.
pub(crate) fn site_root(site: &Site) -> &std::path::Path {
    site.root.as_deref().unwrap_or(std::path::Path::new(""))
}
