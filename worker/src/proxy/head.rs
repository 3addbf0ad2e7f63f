//! Heads crossing the proxy: the client's request rewritten for the
//! upstream, and the upstream's response parsed and rewritten for the
//! client. Hop-by-hop fields (RFC 9110 7.6.1) never cross; framing is
//! always the proxy's own on each side.

use std::mem::MaybeUninit;
use std::net::IpAddr;

use crate::http::request::BodyFraming;

/// Most header fields accepted in an upstream's response head.
const MAX_RESPONSE_HEADERS: usize = 128;

/// Fields that describe one connection, not the message (and `Proxy-*`,
/// by prefix): removed in both directions.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
    "content-length",
];

/// Whether `name` is hop-by-hop, given the tokens the message's
/// `Connection` field listed.
fn hop_by_hop(name: &str, listed: &[String]) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
        || name
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case("proxy-"))
        || listed.iter().any(|l| l.eq_ignore_ascii_case(name))
}

fn connection_tokens<'h>(headers: impl Iterator<Item = (&'h str, &'h [u8])>) -> Vec<String> {
    let mut out = Vec::new();
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("connection") {
            for t in value.split(|&b| b == b',') {
                let t = String::from_utf8_lossy(t.trim_ascii()).into_owned();
                if !t.is_empty() {
                    out.push(t);
                }
            }
        }
    }
    out
}

/// What the request rewrite needs besides the head itself.
pub struct Forwarding<'a> {
    pub peer: Option<IpAddr>,
    /// The client may set `X-Forwarded-*` (it is a trusted proxy).
    pub trusted: bool,
    pub tls: bool,
    /// The target to send (already without the stripped prefix).
    pub target: &'a str,
    pub body: BodyFraming,
    /// Ask the upstream to keep the connection (we would pool it).
    pub keep_alive: bool,
    /// An `Upgrade` (WebSocket) the client asks for may pass.
    pub allow_upgrade: bool,
}

/// What a request needs known about itself.
pub struct RequestInfo {
    pub head: Vec<u8>,
    pub idempotent: bool,
    pub is_head: bool,
    /// A `header:NAME` balance key's value.
    pub hash_value: Option<Vec<u8>>,
    /// The protocol the upstream was asked to switch to (`Upgrade`, when
    /// the client's `Connection` lists it and the route allows it).
    pub upgrade: Option<String>,
}

/// The upstream's request head for the client's `raw` head (already
/// parsed and accepted by the HTTP engine, so it is well-formed).
pub fn request(raw: &[u8], f: &Forwarding<'_>, hash_header: Option<&str>) -> Option<RequestInfo> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() };
        baton_shared::config::MAX_HEADERS_LIMIT];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(raw, &mut slots) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    let method = req.method?;
    let listed = connection_tokens(req.headers.iter().map(|h| (h.name, h.value)));
    let mut head = Vec::with_capacity(raw.len() + 128);
    head.extend_from_slice(method.as_bytes());
    head.push(b' ');
    head.extend_from_slice(f.target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    let mut host: Option<&[u8]> = None;
    let mut xff: Option<Vec<u8>> = None;
    let mut upgrade_asked: Option<String> = None;
    let mut hash_value = None;
    for h in req.headers.iter() {
        let name = h.name;
        if hash_header.is_some_and(|k| k.eq_ignore_ascii_case(name)) && hash_value.is_none() {
            hash_value = Some(h.value.to_vec());
        }
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade_asked = Some(String::from_utf8_lossy(h.value.trim_ascii()).into_owned());
        }
        if name.eq_ignore_ascii_case("host") {
            host = Some(h.value);
        }
        if hop_by_hop(name, &listed) {
            continue;
        }
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            // Several fields are one list; only a trusted proxy's count.
            if f.trusted {
                let v = xff.get_or_insert_with(Vec::new);
                if !v.is_empty() {
                    v.extend_from_slice(b", ");
                }
                v.extend_from_slice(h.value.trim_ascii());
            }
            continue;
        }
        if !f.trusted
            && (name.eq_ignore_ascii_case("x-forwarded-proto")
                || name.eq_ignore_ascii_case("x-forwarded-host"))
        {
            continue;
        }
        // A header the client kept but we set ourselves below.
        if f.trusted
            && (name.eq_ignore_ascii_case("x-forwarded-proto")
                || name.eq_ignore_ascii_case("x-forwarded-host"))
        {
            header(&mut head, name, h.value);
            continue;
        }
        header(&mut head, name, h.value);
    }
    let trusted_has =
        |n: &str| f.trusted && req.headers.iter().any(|h| h.name.eq_ignore_ascii_case(n));
    if !trusted_has("x-forwarded-proto") {
        header(
            &mut head,
            "X-Forwarded-Proto",
            if f.tls { b"https" } else { b"http" },
        );
    }
    if !trusted_has("x-forwarded-host")
        && let Some(h) = host
    {
        header(&mut head, "X-Forwarded-Host", h);
    }
    let mut xff = xff.unwrap_or_default();
    if let Some(ip) = f.peer {
        if !xff.is_empty() {
            xff.extend_from_slice(b", ");
        }
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        xff.extend_from_slice(ip.to_string().as_bytes());
    }
    if !xff.is_empty() {
        header(&mut head, "X-Forwarded-For", &xff);
    }
    match f.body {
        BodyFraming::None => {}
        BodyFraming::Length(n) => header(&mut head, "Content-Length", n.to_string().as_bytes()),
        BodyFraming::Chunked => header(&mut head, "Transfer-Encoding", b"chunked"),
    }
    let upgrade = upgrade_asked.filter(|u| {
        f.allow_upgrade
            && !u.is_empty()
            && method == "GET"
            && req.version == Some(1)
            && listed.iter().any(|l| l.eq_ignore_ascii_case("upgrade"))
    });
    if let Some(u) = &upgrade {
        header(&mut head, "Connection", b"upgrade");
        header(&mut head, "Upgrade", u.as_bytes());
    } else if !f.keep_alive {
        header(&mut head, "Connection", b"close");
    }
    head.extend_from_slice(b"\r\n");
    Some(RequestInfo {
        head,
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
        ),
        is_head: method == "HEAD",
        hash_value,
        upgrade,
    })
}

fn header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How an upstream's response body is framed (RFC 9112 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the upstream closes.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    /// End-to-end fields, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    pub head_len: usize,
    pub framing: Framing,
    /// The upstream will close after it (`Connection: close`, HTTP/1.0
    /// without keep-alive).
    pub closes: bool,
    /// Its `Content-Length`, passed on for HEAD and 304 answers.
    pub length: Option<u64>,
    pub upgrade: Option<Vec<u8>>,
    /// The upstream answered in HTTP/1.0 (for `Via`).
    pub http10: bool,
}

/// The response head at the start of `buf`: `Ok(None)` until complete,
/// `Err` if malformed (a 502).
pub fn response(buf: &[u8], is_head: bool, max: usize) -> Result<Option<ResponseHead>, String> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= max => n,
        Ok(httparse::Status::Partial) if buf.len() < max => return Ok(None),
        Ok(_) => return Err("response head too large".into()),
        Err(e) => return Err(format!("malformed response head ({e})")),
    };
    let status = resp.code.unwrap_or(0);
    let version11 = resp.version == Some(1);
    let listed = connection_tokens(resp.headers.iter().map(|h| (h.name, h.value)));
    let mut closes = !version11;
    for t in &listed {
        if t.eq_ignore_ascii_case("close") {
            closes = true;
        } else if t.eq_ignore_ascii_case("keep-alive") && !version11 {
            closes = false;
        }
    }
    let mut length: Option<u64> = None;
    let mut te: Option<Vec<u8>> = None;
    let mut upgrade = None;
    let mut headers = Vec::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            for v in h.value.split(|&b| b == b',') {
                let v = v.trim_ascii();
                let n = std::str::from_utf8(v)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or("invalid Content-Length")?;
                if length.is_some_and(|l| l != n) {
                    return Err("conflicting Content-Length".into());
                }
                length = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let t = te.get_or_insert_with(Vec::new);
            if !t.is_empty() {
                t.push(b',');
            }
            t.extend_from_slice(h.value);
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = Some(h.value.to_vec());
        }
        if hop_by_hop(h.name, &listed) {
            continue;
        }
        headers.push((h.name.to_owned(), h.value.to_vec()));
    }
    let framing = if is_head || (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::None
    } else if let Some(te) = te {
        // Transfer-Encoding wins over Content-Length (RFC 9112 6.3 3.);
        // chunked must be last, else the body runs to the close.
        let last = te.rsplit(|&b| b == b',').next().unwrap_or_default();
        if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            Framing::Chunked
        } else {
            closes = true;
            Framing::Close
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        closes = true;
        Framing::Close
    };
    Ok(Some(ResponseHead {
        status,
        reason: resp.reason.unwrap_or("").to_owned(),
        headers,
        head_len,
        framing,
        closes,
        length,
        upgrade,
        http10: !version11,
    }))
}

/// How the client gets the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFraming {
    None,
    Length(u64),
    Chunked,
    Close,
}

/// The client's response head.
pub fn client_head(
    resp: &ResponseHead,
    framing: ClientFraming,
    route_headers: &[(String, String)],
    date: &str,
    close: bool,
    http10: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + resp.headers.len() * 32);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(resp.status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(resp.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_date = false;
    for (name, value) in &resp.headers {
        if route_headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            continue;
        }
        has_date |= name.eq_ignore_ascii_case("date");
        header(&mut out, name, value);
    }
    for (name, value) in route_headers {
        header(&mut out, name, value.as_bytes());
    }
    if !has_date {
        header(&mut out, "Date", date.as_bytes());
    }
    match framing {
        ClientFraming::None => {
            if let Some(n) = resp.length
                && resp.status != 204
                && !(100..200).contains(&resp.status)
            {
                header(&mut out, "Content-Length", n.to_string().as_bytes());
            }
        }
        ClientFraming::Length(n) => header(&mut out, "Content-Length", n.to_string().as_bytes()),
        ClientFraming::Chunked => header(&mut out, "Transfer-Encoding", b"chunked"),
        ClientFraming::Close => {}
    }
    if resp.status == 101 {
        header(&mut out, "Connection", b"upgrade");
        if let Some(u) = &resp.upgrade {
            header(&mut out, "Upgrade", u);
        }
    } else if close {
        header(&mut out, "Connection", b"close");
    } else if http10 {
        header(&mut out, "Connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// An interim (1xx) head, passed on as the upstream sent it, less its
/// hop-by-hop fields.
pub fn interim_head(resp: &ResponseHead) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(resp.status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(resp.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &resp.headers {
        header(&mut out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(trusted: bool) -> Forwarding<'static> {
        Forwarding {
            peer: Some("192.0.2.7".parse().unwrap()),
            trusted,
            tls: false,
            target: "/x?y",
            body: BodyFraming::Length(3),
            keep_alive: true,
            allow_upgrade: false,
        }
    }

    const RAW: &[u8] = b"POST /api/x?y HTTP/1.1\r\nHost: a.example\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: x\r\nUpgrade: h2c\r\nContent-Length: 3\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nX-Keep: yes\r\n\r\n";

    #[test]
    fn hop_by_hop_fields_are_removed_and_forwarding_set() {
        let info = request(RAW, &fwd(false), None).unwrap();
        let head = String::from_utf8(info.head).unwrap();
        assert!(head.starts_with("POST /x?y HTTP/1.1\r\n"), "{head}");
        for gone in [
            "X-Drop",
            "Keep-Alive",
            "TE:",
            "Proxy-",
            "Upgrade",
            "10.0.0.1",
            "https",
        ] {
            assert!(!head.contains(gone), "{gone} in {head}");
        }
        assert!(head.contains("Host: a.example\r\n"));
        assert!(head.contains("X-Keep: yes\r\n"));
        assert!(head.contains("X-Forwarded-For: 192.0.2.7\r\n"));
        assert!(head.contains("X-Forwarded-Proto: http\r\n"));
        assert!(head.contains("X-Forwarded-Host: a.example\r\n"));
        assert!(head.contains("Content-Length: 3\r\n"));
        assert!(!info.idempotent);
        // From a trusted proxy its forwarding fields are kept.
        let head = String::from_utf8(request(RAW, &fwd(true), None).unwrap().head).unwrap();
        assert!(
            head.contains("X-Forwarded-For: 10.0.0.1, 192.0.2.7\r\n"),
            "{head}"
        );
        assert!(head.contains("X-Forwarded-Proto: https\r\n"));
    }

    #[test]
    fn upgrades_pass_only_when_allowed_and_asked() {
        let raw = b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n";
        let mut f = fwd(false);
        f.body = BodyFraming::None;
        let info = request(raw, &f, None).unwrap();
        assert_eq!(info.upgrade, None);
        assert!(!String::from_utf8(info.head).unwrap().contains("pgrade"));
        f.allow_upgrade = true;
        let info = request(raw, &f, None).unwrap();
        assert_eq!(info.upgrade.as_deref(), Some("websocket"));
        let head = String::from_utf8(info.head).unwrap();
        assert!(
            head.contains("Connection: upgrade\r\nUpgrade: websocket\r\n"),
            "{head}"
        );
        assert!(head.contains("Sec-WebSocket-Key: k\r\n"));
        // Upgrade without Connection: upgrade is not an upgrade.
        let raw = b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(request(raw, &f, None).unwrap().upgrade, None);
    }

    #[test]
    fn response_framing() {
        let r = |s: &str| response(s.as_bytes(), false, 8192);
        let f = |s: &str| r(s).unwrap().unwrap().framing;
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
            Framing::Length(5)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"),
            Framing::Chunked
        );
        assert_eq!(f("HTTP/1.1 200 OK\r\n\r\n"), Framing::Close);
        assert_eq!(
            f("HTTP/1.1 204 No\r\nContent-Length: 5\r\n\r\n"),
            Framing::None
        );
        assert!(r("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n").is_err());
        assert!(r("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n").is_err());
        assert!(r("HTTP/1.1 200 OK\r\n").unwrap().is_none());
        assert!(r("garbage\r\n\r\n").is_err());
        let head = r("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(head.closes);
    }
}
