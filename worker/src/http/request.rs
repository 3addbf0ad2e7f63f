//! Request heads: bytes → a `Request`, or the status to reject them with.
//!
//! Only what serving needs is kept; the head's bytes are released as soon as
//! it is parsed. Anything that makes the framing of the bytes that follow
//! uncertain (a malformed head, an unsupported body encoding, conflicting
//! lengths) is a `Reject`: it is answered and the connection closed, as the
//! next request could not be found reliably.

use std::mem::MaybeUninit;

use baton_shared::config::{HttpLimits, MAX_HEADERS_LIMIT};

use super::request_line::{refused_version, request_host, split_absolute_form};
use super::response::Status;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    /// A method the server recognises but does not allow here: the rest
    /// of RFC 9110's (POST, PUT, DELETE, CONNECT, OPTIONS, TRACE) and
    /// PATCH (RFC 5789). A 405 with `Allow`.
    Other,
    /// One it does not recognise: a 501 (RFC 9110 9.1). Methods are
    /// case-sensitive, so `get` is one of these.
    Unknown,
}

impl Method {
    pub(crate) fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH" => Method::Other,
            _ => Method::Unknown,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
    /// A stream of an HTTP/2 connection (`http2`): no head of ours to
    /// frame, and the connection's persistence is the protocol's.
    Http2,
}

impl Version {
    /// As the access log writes it.
    pub fn protocol(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
            Version::Http2 => "HTTP/2.0",
        }
    }
}

/// How the request's body is framed (RFC 9112 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// The request headers static files look at, kept as sent (trimmed).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Conditions {
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    pub if_unmodified_since: Option<String>,
    pub if_range: Option<String>,
    pub range: Option<String>,
    pub accept_encoding: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub version: Version,
    /// Path and query of the target as sent (still percent-encoded); for an
    /// absolute-form target, the part after the authority.
    pub target: String,
    /// From an absolute-form target, else from Host: lowercase, without
    /// port or trailing dot. `None` when absent or empty.
    pub host: Option<String>,
    /// The client asked to keep the connection (HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub keep_alive: bool,
    pub body: BodyFraming,
    /// `Expect: 100-continue` in HTTP/1.1: the client may hold its body
    /// back until it sees `100 Continue`.
    pub expects_continue: bool,
    pub conditions: Conditions,
    /// What the access log records besides the request line.
    pub log: LogHeaders,
    /// Bytes of the buffer the head took.
    pub head_len: usize,
}

/// The method as sent, Referer and User-Agent: for the access log only.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LogHeaders {
    pub method: String,
    pub referer: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per request, moved once: a Box would cost an allocation per request"
)]
pub enum Parsed {
    /// The head is not complete yet.
    Partial,
    Request(Request),
    /// Answer with this status and close.
    Reject(Status),
}

/// Parses the request head at the start of `buf`, within `limits`, with
/// the headers the access log records.
pub fn parse(buf: &[u8], limits: &HttpLimits) -> Parsed {
    parse_head(buf, limits, true)
}

/// `parse`, with `capture` false when no access log is written: the method,
/// Referer and User-Agent are then not copied (`LogHeaders` stays empty),
/// which saves allocations on every request.
pub fn parse_head(buf: &[u8], limits: &HttpLimits, capture: bool) -> Parsed {
    // Uninitialised slots: filling 100 headers' worth of memory for every
    // request would cost more than parsing most of them.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_LIMIT];
    let max_headers = limits.max_headers.clamp(1, MAX_HEADERS_LIMIT);
    let mut req = httparse::Request::new(&mut []);
    let max_head = limits.max_header_size;
    let head_len = match req.parse_with_uninit_headers(buf, &mut slots[..max_headers]) {
        Ok(httparse::Status::Complete(n)) if n <= max_head => n,
        Ok(httparse::Status::Complete(_)) => return too_large(buf, limits),
        Ok(httparse::Status::Partial) if buf.len() >= max_head => return too_large(buf, limits),
        Ok(httparse::Status::Partial) => {
            // A request line longer than any allowed target can be refused
            // before the rest of it arrives.
            if !buf.contains(&b'\n') && buf.len() > limits.max_uri_length + 32 {
                return Parsed::Reject(Status::UriTooLong);
            }
            return Parsed::Partial;
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Reject(Status::HeaderFieldsTooLarge);
        }
        Err(httparse::Error::Version) => return refused_version(buf),
        Err(_) => return Parsed::Reject(Status::BadRequest),
    };
    // httparse accepts a lone LF as a line end (RFC 9112 2.2 allows it); a
    // lone CR anywhere in the head is refused (2.2: "MUST NOT").
    if has_bare_cr(&buf[..head_len]) {
        return Parsed::Reject(Status::BadRequest);
    }
    let version = match req.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Parsed::Reject(Status::VersionNotSupported),
    };
    let method = Method::from_token(req.method.unwrap_or_default());
    let Some(raw_target) = req.path else {
        return Parsed::Reject(Status::BadRequest);
    };
    if raw_target.len() > limits.max_uri_length {
        return Parsed::Reject(Status::UriTooLong);
    }

    let mut host_header: Option<&[u8]> = None;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Option<Vec<u8>> = None;
    let mut expects_continue = false;
    let mut conditions = Conditions::default();
    let mut log = LogHeaders::default();
    if capture {
        log.method = req.method.unwrap_or("").to_owned();
    }
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            if host_header.is_some() {
                return Parsed::Reject(Status::BadRequest);
            }
            host_header = Some(h.value);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            // Repeated or comma-listed values must all agree (RFC 9112 6.3).
            for v in h.value.split(|&b| b == b',') {
                let Some(n) = parse_length(v.trim_ascii()) else {
                    return Parsed::Reject(Status::BadRequest);
                };
                if content_length.is_some_and(|c| c != n) {
                    return Parsed::Reject(Status::BadRequest);
                }
                content_length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Several fields are one list (RFC 9110 5.3).
            let te = transfer_encoding.get_or_insert_with(Vec::new);
            if !te.is_empty() {
                te.push(b',');
            }
            te.extend_from_slice(h.value);
        } else if name.eq_ignore_ascii_case("referer") {
            if !capture {
                continue;
            }
            log.referer = Some(String::from_utf8_lossy(h.value.trim_ascii()).into_owned());
        } else if name.eq_ignore_ascii_case("user-agent") {
            if !capture {
                continue;
            }
            log.user_agent = Some(String::from_utf8_lossy(h.value.trim_ascii()).into_owned());
        } else if name.eq_ignore_ascii_case("expect") {
            expects_continue = h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if let Some(slot) = condition_slot(&mut conditions, name) {
            // Each of these is meaningful once; a repeated one is a list
            // (If-Match, If-None-Match) or nonsense, so keep the lists whole.
            let v = String::from_utf8_lossy(h.value.trim_ascii());
            if let Some(prev) = slot.as_mut() {
                prev.push_str(", ");
                prev.push_str(&v);
            } else {
                *slot = Some(v.into_owned());
            }
        }
    }

    let body = match (transfer_encoding, content_length) {
        // Both is how request smuggling starts: refuse and close.
        (Some(_), Some(_)) => return Parsed::Reject(Status::BadRequest),
        // HTTP/1.0 has no transfer codings: the framing cannot be trusted
        // (RFC 9112 6.1).
        (Some(_), None) if version == Version::Http10 => {
            return Parsed::Reject(Status::BadRequest);
        }
        (Some(te), None) => match chunked_only(&te) {
            Ok(()) => BodyFraming::Chunked,
            Err(status) => return Parsed::Reject(status),
        },
        (None, Some(n)) if n > limits.max_body_size => {
            return Parsed::Reject(Status::PayloadTooLarge);
        }
        (None, Some(0) | None) => BodyFraming::None,
        (None, Some(n)) => BodyFraming::Length(n),
    };

    let (target, target_host) = match split_absolute_form(raw_target) {
        Some((authority, path)) => (path, Some(authority)),
        None => (raw_target.to_owned(), None),
    };
    if version == Version::Http11 && host_header.is_none() {
        return Parsed::Reject(Status::BadRequest); // RFC 9112 3.2
    }
    let Ok(host) = request_host(target_host, host_header) else {
        return Parsed::Reject(Status::BadRequest);
    };

    Parsed::Request(Request {
        method,
        version,
        target,
        host,
        keep_alive: match version {
            Version::Http11 | Version::Http2 => !close,
            Version::Http10 => keep_alive_token && !close,
        },
        body,
        expects_continue: expects_continue && version == Version::Http11,
        conditions,
        log,
        head_len,
    })
}

/// 414 if it is the request line that is too long, else 431.
fn too_large(buf: &[u8], limits: &HttpLimits) -> Parsed {
    let line = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    if line > limits.max_uri_length + 32 {
        Parsed::Reject(Status::UriTooLong)
    } else {
        Parsed::Reject(Status::HeaderFieldsTooLarge)
    }
}

/// A CR not followed by LF.
fn has_bare_cr(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\r' && head.get(i + 1) != Some(&b'\n'))
}

/// The only transfer coding a static server can undo is `chunked`, and it
/// must come last (RFC 9112 6.3): anything else is a 501, a malformed list
/// a 400.
fn chunked_only(te: &[u8]) -> Result<(), Status> {
    let codings: Vec<&[u8]> = te
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty())
        .collect();
    match codings.as_slice() {
        [] => Err(Status::BadRequest),
        [one] if one.eq_ignore_ascii_case(b"chunked") => Ok(()),
        [.., last] if !last.eq_ignore_ascii_case(b"chunked") => Err(Status::BadRequest),
        _ => Err(Status::NotImplemented),
    }
}

/// Where a conditional or negotiation header goes, if `name` is one.
pub(crate) fn condition_slot<'c>(
    c: &'c mut Conditions,
    name: &str,
) -> Option<&'c mut Option<String>> {
    let slot = match name.len() {
        5 if name.eq_ignore_ascii_case("range") => &mut c.range,
        8 if name.eq_ignore_ascii_case("if-match") => &mut c.if_match,
        8 if name.eq_ignore_ascii_case("if-range") => &mut c.if_range,
        13 if name.eq_ignore_ascii_case("if-none-match") => &mut c.if_none_match,
        15 if name.eq_ignore_ascii_case("accept-encoding") => &mut c.accept_encoding,
        17 if name.eq_ignore_ascii_case("if-modified-since") => &mut c.if_modified_since,
        19 if name.eq_ignore_ascii_case("if-unmodified-since") => &mut c.if_unmodified_since,
        _ => return None,
    };
    Some(slot)
}

/// A Content-Length value: digits only, no sign, no overflow.
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HttpLimits {
        HttpLimits::default()
    }

    fn parse(buf: &[u8]) -> Parsed {
        super::parse(buf, &limits())
    }

    fn req(text: &str) -> Request {
        match parse(text.as_bytes()) {
            Parsed::Request(r) => r,
            other => panic!("{text:?} → {other:?}"),
        }
    }

    fn reject(text: &[u8]) -> Status {
        match parse(text) {
            Parsed::Reject(s) => s,
            other => panic!("{:?} → {other:?}", String::from_utf8_lossy(text)),
        }
    }

    #[test]
    fn a_simple_get() {
        let text = "GET /a/b?c=d HTTP/1.1\r\nHost: Example.ORG:8080\r\n\r\nNEXT";
        let r = req(text);
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.version, Version::Http11);
        assert_eq!(r.target, "/a/b?c=d");
        assert_eq!(r.host.as_deref(), Some("example.org"));
        assert!(r.keep_alive);
        assert_eq!(r.body, BodyFraming::None);
        assert_eq!(r.head_len, text.len() - 4);
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n"), Parsed::Partial);
        assert_eq!(parse(b"GE"), Parsed::Partial);
    }

    #[test]
    fn keep_alive_rules() {
        assert!(!req("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(
            !req("GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n").keep_alive
        );
        assert!(!req("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
    }

    #[test]
    fn host_is_required_in_http11_only() {
        assert_eq!(reject(b"GET / HTTP/1.1\r\n\r\n"), Status::BadRequest);
        assert_eq!(req("GET / HTTP/1.0\r\n\r\n").host, None);
        assert_eq!(req("GET / HTTP/1.1\r\nHost:\r\n\r\n").host, None);
        assert_eq!(
            reject(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Status::BadRequest
        );
        assert_eq!(
            reject(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"),
            Status::BadRequest
        );
    }

    #[test]
    fn absolute_form_takes_its_host_from_the_target() {
        let r = req("GET http://B.example/x?y HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(r.host.as_deref(), Some("b.example"));
        assert_eq!(r.target, "/x?y");
        let r = req("GET HTTPS://b.example:443 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(
            (r.host.as_deref(), r.target.as_str()),
            (Some("b.example"), "/")
        );
        // An empty host is invalid (RFC 9110 4.2.1), whatever Host says.
        for bad in [
            "http:///f.txt",
            "https:///",
            "http://?q",
            "http://",
            "http://:80/",
            "http://u@h/",
        ] {
            let text = format!("GET {bad} HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(reject(text.as_bytes()), Status::BadRequest, "{bad}");
        }
    }

    #[test]
    fn methods_are_recognised_case_sensitively() {
        let m = |name: &str| req(&format!("{name} / HTTP/1.1\r\nHost: a\r\n\r\n")).method;
        assert_eq!(m("GET"), Method::Get);
        assert_eq!(m("HEAD"), Method::Head);
        for known in [
            "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ] {
            assert_eq!(m(known), Method::Other, "{known}");
        }
        for unknown in ["get", "Head", "BREW", "PROPFIND", "GETS"] {
            assert_eq!(m(unknown), Method::Unknown, "{unknown}");
        }
    }

    #[test]
    fn bodies() {
        let r = req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n");
        assert_eq!((r.method, r.body), (Method::Other, BodyFraming::Length(5)));
        let r =
            req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(r.body, BodyFraming::Length(5));
        for bad in [
            "Content-Length: 5\r\nContent-Length: 6",
            "Content-Length: -1",
            "Content-Length: +1",
            "Content-Length: 99999999999999999999",
            "Content-Length: 5\r\nTransfer-Encoding: chunked",
        ] {
            let text = format!("POST / HTTP/1.1\r\nHost: a\r\n{bad}\r\n\r\n");
            assert_eq!(reject(text.as_bytes()), Status::BadRequest, "{bad}");
        }
        let chunked = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(req(chunked).body, BodyFraming::Chunked);
        let te = |v: &str| format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {v}\r\n\r\n");
        assert_eq!(
            reject(te("gzip, chunked").as_bytes()),
            Status::NotImplemented
        );
        assert_eq!(reject(te("chunked, gzip").as_bytes()), Status::BadRequest);
        assert_eq!(reject(te("").as_bytes()), Status::BadRequest);
        let te10 = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(reject(te10), Status::BadRequest);
        let big = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1048577\r\n\r\n";
        assert_eq!(reject(big), Status::PayloadTooLarge);
        let r =
            req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n");
        assert!(r.expects_continue);
    }

    #[test]
    fn versions() {
        assert_eq!(
            reject(b"GET / HTTP/2.0\r\n\r\n"),
            Status::VersionNotSupported
        );
        assert_eq!(
            reject(b"GET / HTTP/1.2\r\n\r\n"),
            Status::VersionNotSupported
        );
        assert_eq!(reject(b"GET / FOO\r\n\r\n"), Status::BadRequest);
        assert_eq!(reject(b"\x00\x01garbage\r\n\r\n"), Status::BadRequest);
        assert_eq!(
            reject(b"\r\nBREW / HTTP/3.0\r\n\r\n"),
            Status::VersionNotSupported
        );
        // Not well formed: a 400 whatever the last word says.
        for bad in [
            &b"GET /sp ace.txt HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"xx GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
            b"GET / / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/2.0x\r\n\r\n",
            b"G(T / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/2.0x",
            b"GET / HTTPS",
        ] {
            assert_eq!(
                reject(bad),
                Status::BadRequest,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Until the line ends, it could still be well formed or not.
        for partial in [&b"GET / HTTP/2"[..], b"GET / HTTP/2.", b"GET / HTTP/2.0"] {
            assert_eq!(parse(partial), Parsed::Partial);
        }
    }

    #[test]
    fn oversized_heads() {
        let max_head = limits().max_header_size;
        let mut long = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        long.resize(max_head + 10, b'a');
        assert_eq!(reject(&long), Status::HeaderFieldsTooLarge);
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(reject(&long), Status::HeaderFieldsTooLarge);
        let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..limits().max_headers {
            many.push_str(&format!("X-{i}: y\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(reject(many.as_bytes()), Status::HeaderFieldsTooLarge);
    }

    #[test]
    fn long_targets_are_414() {
        let uri = "/".repeat(limits().max_uri_length + 1);
        let text = format!("GET {uri} HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(reject(text.as_bytes()), Status::UriTooLong);
        // Refused before the line is even complete.
        let partial = format!("GET {uri}{uri}");
        assert_eq!(reject(partial.as_bytes()), Status::UriTooLong);
    }

    #[test]
    fn malformed_heads_are_400() {
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: y\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n: y\r\n\r\n",
            b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"G\x01T / HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(
                reject(bad),
                Status::BadRequest,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn conditions_are_kept() {
        let r = req(
            "GET / HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"a\"\r\nif-none-match: \"b\"\r\nRange: bytes=0-1\r\nAccept-Encoding: br\r\n\r\n",
        );
        assert_eq!(r.conditions.if_none_match.as_deref(), Some("\"a\", \"b\""));
        assert_eq!(r.conditions.range.as_deref(), Some("bytes=0-1"));
        assert_eq!(r.conditions.accept_encoding.as_deref(), Some("br"));
    }
}
