//! An HTTP/2 request, as the HTTP/1.1 request head the proxy's exchange
//! sends up (the other way, `h1_response`): the pseudo-headers become the
//! request line and Host (from `:authority`), connection-specific fields
//! and `te` are left out (an HTTP/2 request may carry only `te: trailers`,
//! which means nothing to an HTTP/1.1 hop), the `cookie` fields are joined
//! with "; " (RFC 9113 8.2.3), and the body goes with its Content-Length
//! or chunked. A WebSocket over HTTP/2 (an extended CONNECT, RFC 8441)
//! becomes the HTTP/1.1 handshake, with a key of ours and the accept its
//! answer must carry.

use base64::prelude::{BASE64_STANDARD, Engine as _};

use super::engine::Head;
use crate::http::request::{BodyFraming, Method, Request};

/// Fields an HTTP/1.1 hop must not get from an HTTP/2 request: the ones
/// HTTP/2 forbids anyway, `te`, and those this translation writes itself.
fn left_out(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "host"
            | "content-length"
            | "cookie"
            | "sec-websocket-key"
    )
}

/// The HTTP/1.1 request head for `head`, and how its body is framed. A
/// WebSocket over HTTP/2 (an extended CONNECT, RFC 8441 5) goes up as
/// the HTTP/1.1 handshake: a GET with `Upgrade: websocket` and a key of
/// our own (an HTTP/2 client sends none), and no body framing: after the
/// 101 the bytes go both ways as they are.
pub fn http1_head(
    head: &Head,
    target: &str,
    body_follows: bool,
    websocket: Option<&str>,
) -> (Vec<u8>, BodyFraming) {
    let mut out = Vec::with_capacity(512);
    let method = if websocket.is_some() {
        "GET"
    } else {
        head.method.as_str()
    };
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    let host = head
        .uri
        .authority()
        .map(|a| a.as_str().as_bytes())
        .or_else(|| head.headers.get(http::header::HOST).map(|v| v.as_bytes()))
        .unwrap_or_default();
    out.extend_from_slice(host);
    out.extend_from_slice(b"\r\n");
    let mut cookies: Vec<&[u8]> = Vec::new();
    for (name, value) in &head.headers {
        let name = name.as_str();
        if name == "cookie" {
            cookies.push(value.as_bytes());
        }
        if left_out(name) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !cookies.is_empty() {
        out.extend_from_slice(b"cookie: ");
        out.extend_from_slice(&cookies.join(&b"; "[..]));
        out.extend_from_slice(b"\r\n");
    }
    let declared = head
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if let Some(key) = websocket {
        out.extend_from_slice(b"connection: upgrade\r\nupgrade: websocket\r\nsec-websocket-key: ");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        return (out, BodyFraming::None);
    }
    let framing = match declared {
        Some(0) => BodyFraming::None,
        Some(n) => BodyFraming::Length(n),
        None if body_follows => BodyFraming::Chunked,
        None => BodyFraming::None,
    };
    match framing {
        BodyFraming::Length(n) => {
            out.extend_from_slice(format!("content-length: {n}\r\n").as_bytes());
        }
        BodyFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        BodyFraming::None => {}
    }
    out.extend_from_slice(b"\r\n");
    (out, framing)
}

/// The proxied request `req` for the exchange: its head translated
/// (`websocket`: the key of the WebSocket handshake it stands for).
pub fn request_for(
    req: &mut Request,
    head: &Head,
    body_follows: bool,
    websocket: Option<&str>,
) -> Vec<u8> {
    let (raw, framing) = http1_head(head, &req.target, body_follows, websocket);
    req.body = framing;
    if websocket.is_some() {
        req.method = Method::Get;
    }
    raw
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes in base64 (RFC 6455
/// 4.1).
pub fn websocket_key() -> String {
    let mut raw = [0u8; 16];
    // SAFETY: `raw` is valid for writes of its 16 bytes; getrandom(2)
    // writes at most that many.
    let n = unsafe { libc::getrandom(raw.as_mut_ptr().cast(), raw.len(), 0) };
    if n != raw.len() as isize {
        // Never in practice (16 bytes from an initialised pool); the key
        // is a nonce against confused caches, not a secret.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        raw = t.to_le_bytes();
    }
    BASE64_STANDARD.encode(raw)
}

/// The `Sec-WebSocket-Accept` an upstream must answer `key` with (RFC
/// 6455 4.2.2): base64(SHA-1(key + the protocol's GUID)).
pub fn websocket_accept(key: &str) -> String {
    let mut input = key.as_bytes().to_vec();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    BASE64_STANDARD.encode(ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        &input,
    ))
}

/// A HEAD request: its response has no body.
pub fn is_head(req: &Request) -> bool {
    req.method == Method::Head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_websocket_handshake_of_an_extended_connect() {
        // RFC 6455 1.3's example.
        assert_eq!(
            websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let key = websocket_key();
        assert_eq!(key.len(), 24, "{key}");
        assert_ne!(key, websocket_key(), "a fresh key each time");
        let req = http::Request::builder()
            .method("CONNECT")
            .uri("https://example.test/chat")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-protocol", "chat")
            .header("sec-websocket-key", "from-the-client")
            .body(())
            .unwrap();
        let (head, _) = req.into_parts();
        let (raw, framing) = http1_head(&head, "/chat", true, Some("S2V5"));
        let text = String::from_utf8(raw).unwrap();
        assert_eq!(
            text,
            "GET /chat HTTP/1.1\r\nhost: example.test\r\nsec-websocket-version: 13\r\n\
             sec-websocket-protocol: chat\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
             sec-websocket-key: S2V5\r\n\r\n"
        );
        assert_eq!(framing, BodyFraming::None);
    }

    #[test]
    fn the_head_translates_to_http11() {
        let req = http::Request::builder()
            .method("POST")
            .uri("https://example.test:8443/a?b=c")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("te", "trailers")
            .header("accept", "*/*")
            .header("content-length", "3")
            .body(())
            .unwrap();
        let (head, _) = req.into_parts();
        let (raw, framing) = http1_head(&head, "/a?b=c", true, None);
        assert_eq!(framing, BodyFraming::Length(3));
        assert_eq!(
            String::from_utf8(raw).unwrap(),
            "POST /a?b=c HTTP/1.1\r\nhost: example.test:8443\r\naccept: */*\r\n\
             cookie: a=1; b=2\r\ncontent-length: 3\r\n\r\n"
        );
        let req = http::Request::builder()
            .method("PUT")
            .uri("https://h/x")
            .body(())
            .unwrap();
        let (head, _) = req.into_parts();
        let (raw, framing) = http1_head(&head, "/x", true, None);
        assert_eq!(framing, BodyFraming::Chunked);
        assert!(
            String::from_utf8(raw)
                .unwrap()
                .ends_with("transfer-encoding: chunked\r\n\r\n")
        );
    }
}
