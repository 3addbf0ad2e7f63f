//! The worker's `Response` → an HTTP/2 response head and a body source.
//! The response is the one the HTTP/1.1 path would send (`handler`,
//! `static_files`); only its framing differs: no Connection or
//! Transfer-Encoding (RFC 9113 8.2.2), a Content-Length only where the
//! length is known, and the body in DATA frames.

use std::fs::File;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::compress::file::EncodedFile;
use crate::http::response::{Response, Status, is_representation_metadata};
use crate::outgoing::Body;

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

/// Fields that mean something only to one HTTP/1.1 connection.
fn connection_specific(name: &str) -> bool {
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
    date: &str,
    server: Option<&str>,
    head_only: bool,
) -> (http::Response<()>, Source) {
    let status = response.status;
    let not_modified = status == Status::NotModified;
    let mut head = http::Response::new(());
    *head.status_mut() = http::StatusCode::from_u16(status.code())
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = head.headers_mut();
    if let Some(server) = server
        && let Ok(v) = HeaderValue::from_str(server)
    {
        headers.insert(http::header::SERVER, v);
    }
    if let Ok(v) = HeaderValue::from_str(date) {
        headers.insert(http::header::DATE, v);
    }
    if !not_modified && !response.body.chunked() {
        headers.insert(
            http::header::CONTENT_LENGTH,
            HeaderValue::from(response.body.len()),
        );
    }
    for (name, value) in &response.headers {
        if connection_specific(name) || (not_modified && is_representation_metadata(name)) {
            continue;
        }
        // Names and values come from the config (checked there) or from
        // this code: one that HTTP/2 cannot carry is left out.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
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
        Body::Shared { bytes, start, len } => {
            let part = bytes
                .get(start..start.saturating_add(len))
                .unwrap_or_default();
            if part.is_empty() {
                Source::Empty
            } else {
                Source::Bytes(Bytes::copy_from_slice(part))
            }
        }
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
