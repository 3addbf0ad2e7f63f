//! Responses: status, headers, and the head's bytes.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::outgoing::Body;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    PartialContent,
    MovedPermanently,
    NotModified,
    BadRequest,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    PreconditionFailed,
    PayloadTooLarge,
    UriTooLong,
    RangeNotSatisfiable,
    HeaderFieldsTooLarge,
    InternalServerError,
    NotImplemented,
    VersionNotSupported,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::PartialContent => 206,
            Status::MovedPermanently => 301,
            Status::NotModified => 304,
            Status::BadRequest => 400,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::PreconditionFailed => 412,
            Status::PayloadTooLarge => 413,
            Status::UriTooLong => 414,
            Status::RangeNotSatisfiable => 416,
            Status::HeaderFieldsTooLarge => 431,
            Status::InternalServerError => 500,
            Status::NotImplemented => 501,
            Status::VersionNotSupported => 505,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::PartialContent => "Partial Content",
            Status::MovedPermanently => "Moved Permanently",
            Status::NotModified => "Not Modified",
            Status::BadRequest => "Bad Request",
            Status::Forbidden => "Forbidden",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::RequestTimeout => "Request Timeout",
            Status::PreconditionFailed => "Precondition Failed",
            Status::PayloadTooLarge => "Content Too Large",
            Status::UriTooLong => "URI Too Long",
            Status::RangeNotSatisfiable => "Range Not Satisfiable",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::InternalServerError => "Internal Server Error",
            Status::NotImplemented => "Not Implemented",
            Status::VersionNotSupported => "HTTP Version Not Supported",
        }
    }
}

/// A response before it is put on the wire.
#[derive(Debug)]
pub struct Response {
    pub status: Status,
    /// Headers besides the ones every response gets (Server, Date,
    /// Content-Length, Connection).
    pub headers: Vec<(Cow<'static, str>, String)>,
    pub body: Body,
}

impl Response {
    /// A status with a small text body saying what it is.
    pub fn status(status: Status) -> Response {
        let text = format!("{} {}\n", status.code(), status.reason());
        Response {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: Body::Bytes(text.into_bytes()),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((Cow::Borrowed(name), value));
        self
    }

    /// Sets a header from the config, replacing one of the same name.
    pub fn set_header(&mut self, name: &str, value: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers
            .push((Cow::Owned(name.to_owned()), value.to_owned()));
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the Connection header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// HTTP/1.1 keep-alive: the default, no header.
    Default,
    /// HTTP/1.0 keep-alive has to be said.
    KeepAlive,
    Close,
}

/// Appends the status line and headers (and the blank line) to `out`.
/// `server` is the Server header's value, if one is sent.
pub fn write_head(
    out: &mut Vec<u8>,
    response: &Response,
    date: &str,
    server: Option<&str>,
    persistence: Persistence,
) {
    let mut head = String::with_capacity(256);
    let status = response.status;
    // Writing to a String cannot fail.
    let _ = write!(head, "HTTP/1.1 {} {}\r\n", status.code(), status.reason());
    if let Some(server) = server {
        let _ = write!(head, "Server: {server}\r\n");
    }
    let _ = write!(head, "Date: {date}\r\n");
    // A 304 describes the representation the client already has: a length
    // here would claim a body of that size (RFC 9110 8.6).
    if status != Status::NotModified {
        let _ = write!(head, "Content-Length: {}\r\n", response.body.len());
    }
    for (name, value) in &response.headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    match persistence {
        Persistence::Default => {}
        Persistence::KeepAlive => head.push_str("Connection: keep-alive\r\n"),
        Persistence::Close => head.push_str("Connection: close\r\n"),
    }
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
}

/// The Date header's value, formatted once per second.
#[derive(Debug, Default)]
pub struct DateCache {
    secs: u64,
    text: String,
}

impl DateCache {
    pub fn update(&mut self, now: SystemTime) {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if secs != self.secs || self.text.is_empty() {
            self.secs = secs;
            self.text = httpdate::fmt_http_date(now);
        }
    }

    pub fn get(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_head_with_its_text_body() {
        let mut out = Vec::new();
        let r = Response::status(Status::MethodNotAllowed).with_header("Allow", "GET, HEAD".into());
        write_head(
            &mut out,
            &r,
            "Thu, 01 Jan 1970 00:00:00 GMT",
            Some("baton"),
            Persistence::Close,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 405 Method Not Allowed\r\nServer: baton\r\n\
             Date: Thu, 01 Jan 1970 00:00:00 GMT\r\nContent-Length: 23\r\n\
             Content-Type: text/plain; charset=utf-8\r\nAllow: GET, HEAD\r\n\
             Connection: close\r\n\r\n"
        );
        assert_eq!(r.body.len(), "405 Method Not Allowed\n".len() as u64);
    }

    #[test]
    fn date_is_cached_per_second() {
        let mut d = DateCache::default();
        d.update(UNIX_EPOCH);
        assert_eq!(d.get(), "Thu, 01 Jan 1970 00:00:00 GMT");
        d.update(UNIX_EPOCH + std::time::Duration::from_millis(999));
        assert_eq!(d.get(), "Thu, 01 Jan 1970 00:00:00 GMT");
        d.update(UNIX_EPOCH + std::time::Duration::from_secs(1));
        assert_eq!(d.get(), "Thu, 01 Jan 1970 00:00:01 GMT");
    }
}
