//! The worker's `Response` → an HTTP/2 response head and a body source.
//! The response is the one the HTTP/1.1 path would send (`handler`,
//! `static_files`); only its framing differs: no Connection or
//! Transfer-Encoding (RFC 9113 8.2.2), a Content-Length only where the
//! length is known, and the body in DATA frames.

use std::borrow::Cow;
use std::fs::File;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::compress::file::EncodedFile;
use crate::http::response::{DateCache, Response, Status, is_representation_metadata};
use crate::outgoing::Body;

/// The fields every response of a connection carries, made once (Date:
/// once a second) instead of for each stream. A `HeaderValue` made from
/// text is an allocation and a copy, and a clone of one is a reference
/// count: at small-file rates these were a tenth of the worker's time.
pub struct FixedFields {
    server: Option<HeaderValue>,
    date: Option<(u64, HeaderValue)>,
}

impl FixedFields {
    pub fn new(server: Option<&str>) -> FixedFields {
        FixedFields {
            server: server.and_then(|s| HeaderValue::from_str(s).ok()),
            date: None,
        }
    }

    fn date(&mut self, now: &DateCache) -> Option<HeaderValue> {
        match &self.date {
            Some((secs, value)) if *secs == now.secs() => Some(value.clone()),
            _ => {
                let value = HeaderValue::from_str(now.get()).ok()?;
                self.date = Some((now.secs(), value.clone()));
                Some(value)
            }
        }
    }
}

/// A field's text as a value, without a copy: fixed texts (`Cow::Borrowed`)
/// are referred to, owned ones handed over.
fn value_of(text: Cow<'static, str>) -> Option<HeaderValue> {
    let bytes = match text {
        Cow::Borrowed(s) => Bytes::from_static(s.as_bytes()),
        Cow::Owned(s) => Bytes::from(s.into_bytes()),
    };
    HeaderValue::from_maybe_shared(bytes).ok()
}

/// Where a response body's bytes come from, read as the windows open.
pub enum Source {
    Empty,
    Bytes(Bytes),
    /// A file from `offset`, never read whole: chunk by chunk.
    File {
        file: File,
        offset: u64,
        remaining: u64,
    },
    /// Compressed as it is sent.
    Encoded(Box<EncodedFile>),
}

/// Fields that mean something only to one HTTP/1.1 connection (RFC 9113
/// 8.2.2): never in an HTTP/2 response, ours or an upstream's.
pub(super) fn connection_specific(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
    ]
    .iter()
    .any(|n| name.eq_ignore_ascii_case(n))
}

/// The head and the body source of `response`; `head_only` for HEAD.
pub fn split(
    response: Response,
    fixed: &mut FixedFields,
    now: &DateCache,
    head_only: bool,
) -> (http::Response<()>, Source) {
    let status = response.status;
    let not_modified = status == Status::NotModified;
    let mut head = http::Response::new(());
    *head.status_mut() = http::StatusCode::from_u16(status.code())
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = head.headers_mut();
    headers.reserve(response.headers.len() + 3);
    if let Some(server) = &fixed.server {
        headers.insert(http::header::SERVER, server.clone());
    }
    if let Some(date) = fixed.date(now) {
        headers.insert(http::header::DATE, date);
    }
    if !not_modified && !response.body.chunked() {
        headers.insert(
            http::header::CONTENT_LENGTH,
            HeaderValue::from(response.body.len()),
        );
    }
    for (name, value) in response.headers {
        if connection_specific(&name) || (not_modified && is_representation_metadata(&name)) {
            continue;
        }
        // Names and values come from the config (checked there) or from
        // this code: one that HTTP/2 cannot carry is left out.
        if let (Ok(n), Some(v)) = (HeaderName::from_bytes(name.as_bytes()), value_of(value)) {
            headers.append(n, v);
        }
    }
    if head_only || not_modified {
        return (head, Source::Empty);
    }
    let source = match response.body {
        Body::Empty => Source::Empty,
        Body::Bytes(b) if b.is_empty() => Source::Empty,
        Body::Bytes(b) => Source::Bytes(Bytes::from(b)),
        // The cached file's bytes themselves, not a copy.
        Body::Shared { bytes, start, len } => match start.checked_add(len) {
            Some(end) if len > 0 && end <= bytes.len() => Source::Bytes(bytes.slice(start..end)),
            _ => Source::Empty,
        },
        Body::File(f) if f.remaining == 0 => Source::Empty,
        Body::File(f) => Source::File {
            file: f.file,
            offset: f.offset,
            remaining: f.remaining,
        },
        Body::Encoded(e) => Source::Encoded(e),
    };
    (head, source)
}
