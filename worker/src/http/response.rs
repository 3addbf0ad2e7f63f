//! Responses: status, headers, and the head's bytes.

use std::borrow::Cow;
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
    BadGateway,
    ServiceUnavailable,
    GatewayTimeout,
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
            Status::BadGateway => 502,
            Status::ServiceUnavailable => 503,
            Status::GatewayTimeout => 504,
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
            Status::BadGateway => "Bad Gateway",
            Status::ServiceUnavailable => "Service Unavailable",
            Status::GatewayTimeout => "Gateway Timeout",
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
    /// Values are `Cow` so that fixed ones (`Accept-Ranges: bytes`) cost
    /// no allocation per response.
    pub headers: Vec<(Cow<'static, str>, Cow<'static, str>)>,
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

    pub fn with_header(
        mut self,
        name: &'static str,
        value: impl Into<Cow<'static, str>>,
    ) -> Response {
        self.headers.push((Cow::Borrowed(name), value.into()));
        self
    }

    /// Sets a header from the config, replacing one of the same name.
    pub fn set_header(&mut self, name: &str, value: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers
            .push((Cow::Owned(name.to_owned()), Cow::Owned(value.to_owned())));
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
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
///
/// Written byte by byte rather than with `write!`: the formatting machinery
/// was a tenth of a keep-alive request's instructions.
pub fn write_head(
    out: &mut Vec<u8>,
    response: &Response,
    date: &str,
    server: Option<&str>,
    persistence: Persistence,
) {
    let status = response.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status.code()));
    out.push(b' ');
    out.extend_from_slice(status.reason().as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(server) = server {
        push_header(out, "Server", server);
    }
    push_header(out, "Date", date);
    // A 304 describes the representation the client already has: a length
    // here would claim a body of that size (RFC 9110 8.6), and its
    // metadata is left out (15.4.5), whoever added it to the response.
    let not_modified = status == Status::NotModified;
    if !not_modified && response.body.chunked() {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    } else if !not_modified {
        out.extend_from_slice(b"Content-Length: ");
        push_decimal(out, response.body.len());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &response.headers {
        if not_modified && is_representation_metadata(name) {
            continue;
        }
        push_header(out, name, value);
    }
    match persistence {
        Persistence::Default => {}
        Persistence::KeepAlive => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        Persistence::Close => out.extend_from_slice(b"Connection: close\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Headers that describe a representation's content, which a 304 does
/// not carry (RFC 9110 15.4.5: it sends ETag, Vary, Cache-Control,
/// Expires, Content-Location and Date, and Last-Modified may guide the
/// cache's update). Content-Location stays; so does any other header,
/// Content-Security-Policy among them, which the cache updates from a 304.
pub(crate) fn is_representation_metadata(name: &str) -> bool {
    [
        "Content-Type",
        "Content-Encoding",
        "Content-Language",
        "Content-Range",
    ]
    .iter()
    .any(|m| name.eq_ignore_ascii_case(m))
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal.
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `n` in lowercase hexadecimal.
pub(crate) fn push_hex(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n & 15) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    // Hex digits are ASCII.
    out.extend(digits[i..].iter().map(|&b| char::from(b)));
}

/// An HTTP date (IMF-fixdate, RFC 9110 5.6.7) for `secs` since the epoch:
/// `Sun, 06 Nov 1994 08:49:37 GMT`. The same text as
/// `httpdate::fmt_http_date` without its formatting machinery: it is
/// written for every file response (Last-Modified).
pub fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let mut out = Vec::with_capacity(29);
    out.extend_from_slice(DAYS[(days % 7) as usize].as_bytes());
    out.extend_from_slice(b", ");
    push_two(&mut out, day);
    out.push(b' ');
    out.extend_from_slice(MONTHS[(month - 1) as usize].as_bytes());
    out.push(b' ');
    // Four digits, as httpdate writes them (it refuses years past 9999).
    for d in [1000, 100, 10, 1] {
        out.push(b'0' + (year / d % 10) as u8);
    }
    out.push(b' ');
    push_two(&mut out, rem / 3600);
    out.push(b':');
    push_two(&mut out, rem / 60 % 60);
    out.push(b':');
    push_two(&mut out, rem % 60);
    out.extend_from_slice(b" GMT");
    // Only ASCII was written.
    String::from_utf8(out).unwrap_or_default()
}

fn push_two(out: &mut Vec<u8>, n: u64) {
    out.push(b'0' + (n / 10 % 10) as u8);
    out.push(b'0' + (n % 10) as u8);
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
            self.text = http_date(secs);
        }
    }

    pub fn get(&self) -> &str {
        &self.text
    }

    /// The second `get` names, since the epoch: what a Last-Modified date
    /// may not be later than (RFC 9110 8.8.2.1).
    pub fn secs(&self) -> u64 {
        self.secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_head_with_its_text_body() {
        let mut out = Vec::new();
        let r = Response::status(Status::MethodNotAllowed).with_header("Allow", "GET, HEAD");
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
    fn a_304_head_carries_validators_not_metadata() {
        let mut out = Vec::new();
        let mut r = Response {
            status: Status::NotModified,
            headers: Vec::new(),
            body: Body::Empty,
        };
        for (name, value) in [
            ("Content-Type", "text/css"),
            ("Vary", "Accept-Encoding"),
            ("content-encoding", "gzip"),
            ("ETag", "\"1-2\""),
            ("Last-Modified", "Thu, 01 Jan 1970 00:00:01 GMT"),
            ("Content-Language", "en"),
            ("Cache-Control", "max-age=60"),
            ("Content-Location", "/a.css"),
            ("Content-Security-Policy", "default-src 'none'"),
        ] {
            r.set_header(name, value);
        }
        write_head(&mut out, &r, "D", None, Persistence::Default);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 304 Not Modified\r\nDate: D\r\nVary: Accept-Encoding\r\n\
             ETag: \"1-2\"\r\nLast-Modified: Thu, 01 Jan 1970 00:00:01 GMT\r\n\
             Cache-Control: max-age=60\r\nContent-Location: /a.css\r\n\
             Content-Security-Policy: default-src 'none'\r\n\r\n"
        );
    }

    #[test]
    fn http_date_is_httpdates() {
        let mut secs = 0u64;
        // Every day from 1970 to past 2100 at a varying time of day, and
        // the edges of leap years and centuries among them.
        while secs < 4_200_000_000 {
            let t = UNIX_EPOCH + std::time::Duration::from_secs(secs);
            assert_eq!(http_date(secs), httpdate::fmt_http_date(t), "{secs}");
            secs += 86_400 + 3_607;
        }
        for secs in [951_782_400, 951_868_799, 4_107_542_400, 253_402_300_799] {
            let t = UNIX_EPOCH + std::time::Duration::from_secs(secs);
            assert_eq!(http_date(secs), httpdate::fmt_http_date(t), "{secs}");
        }
    }

    #[test]
    fn numbers() {
        let mut v = Vec::new();
        for n in [0, 7, 10, 1024, u64::MAX] {
            v.clear();
            push_decimal(&mut v, n);
            assert_eq!(v, n.to_string().as_bytes());
            let mut h = String::new();
            push_hex(&mut h, n);
            assert_eq!(h, format!("{n:x}"));
        }
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
