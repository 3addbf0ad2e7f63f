//! What the proxy changes in a response on its way through, besides
//! hop-by-hop fields: on-the-fly compression (`compress` on the route or
//! the site) and the `Via` field (`via = true` on the route).
//!
//! Compression follows the same rules as for files (`compress::plan`):
//! only a 200 answering GET or HEAD, only when the upstream did not encode
//! the body itself (no `Content-Encoding`) nor forbid it
//! (`Cache-Control: no-transform`, RFC 9110 7.7), only for compressible
//! types at or above `min_length` (an unknown length counts as above),
//! never for a request with a Range, never for `text/event-stream`
//! (its events would wait in the compressor). Whatever it decides for a
//! compressible 200, the response says `Vary: Accept-Encoding` (merged
//! into the upstream's own `Vary`). A compressed response drops the
//! upstream's `Content-Length`, is chunked (close-delimited for an
//! HTTP/1.0 client) and has the variant's ETag (`"x"` becomes `"x-gz"`),
//! so a cache never takes one representation for another. A HEAD gets
//! exactly the headers its GET would.

use std::io;

use baton_shared::config::compress::{Coding, Compress};

use super::head::ResponseHead;
use crate::compress::{self, BodyEncoder, Encoder};
use crate::http::request::Conditions;

/// What the request said that compression depends on, kept until the
/// response head comes.
#[derive(Debug)]
pub struct CompressRequest {
    pub setting: Compress,
    /// `Accept-Encoding` and `Range` (the rest is not used).
    pub conditions: Conditions,
}

impl CompressRequest {
    /// For a request with `method` under `setting` (`None`: off).
    pub fn new(
        setting: Option<&Compress>,
        method_get_or_head: bool,
        conditions: &Conditions,
    ) -> Option<CompressRequest> {
        let setting = setting.filter(|_| method_get_or_head)?;
        Some(CompressRequest {
            setting: setting.clone(),
            conditions: Conditions {
                accept_encoding: conditions.accept_encoding.clone(),
                range: conditions.range.clone(),
                ..Conditions::default()
            },
        })
    }
}

/// The value of the first field called `name`, as text.
fn field<'h>(resp: &'h ResponseHead, name: &str) -> Option<&'h [u8]> {
    resp.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// Whether a comma-separated field list holds `token` (any case).
fn lists(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Rewrites `resp`'s fields for compression and returns the coding to
/// compress its body with (`None`: sent as it came).
pub fn compress_head(req: &CompressRequest, resp: &mut ResponseHead) -> Option<Coding> {
    if resp.status != 200 {
        return None;
    }
    let encoded = field(resp, "content-encoding").is_some_and(|v| !v.trim_ascii().is_empty());
    let no_transform = resp
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cache-control"))
        .any(|(_, v)| lists(v, "no-transform"));
    if no_transform {
        return None;
    }
    let content_type = String::from_utf8_lossy(field(resp, "content-type")?).into_owned();
    // An event stream is text, but its events must reach the client as
    // they come: a compressor holds them until its block fills.
    if content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
    {
        return None;
    }
    let plan = compress::plan(
        Some(&req.setting),
        &req.conditions,
        &content_type,
        resp.length,
        encoded,
    );
    if plan.vary {
        add_vary(resp);
    }
    let coding = plan.coding?;
    for (name, value) in &mut resp.headers {
        if name.eq_ignore_ascii_case("etag") {
            let tag = String::from_utf8_lossy(value).trim().to_owned();
            *value = compress::variant_etag(&tag, coding).into_bytes();
        }
    }
    resp.headers.push((
        "Content-Encoding".to_owned(),
        coding.name().as_bytes().to_vec(),
    ));
    // The compressed length is not known before the end: the head never
    // states one (a HEAD's `Content-Length` is the identity body's).
    resp.length = None;
    Some(coding)
}

/// `Vary: Accept-Encoding`, merged into the upstream's `Vary` (left as it
/// is when it already lists it, or says `*`).
fn add_vary(resp: &mut ResponseHead) {
    let vary: Vec<&mut Vec<u8>> = resp
        .headers
        .iter_mut()
        .filter(|(n, _)| n.eq_ignore_ascii_case("vary"))
        .map(|(_, v)| v)
        .collect();
    if vary
        .iter()
        .any(|v| lists(v, "accept-encoding") || lists(v, "*"))
    {
        return;
    }
    match vary.into_iter().next() {
        Some(v) if !v.trim_ascii().is_empty() => v.extend_from_slice(b", Accept-Encoding"),
        Some(v) => *v = b"Accept-Encoding".to_vec(),
        None => resp
            .headers
            .push(("Vary".to_owned(), b"Accept-Encoding".to_vec())),
    }
}

/// The body's encoder for `coding` under `setting`: chunked framing, or
/// none for a close-delimited body.
pub fn body_encoder(
    setting: &Compress,
    coding: Coding,
    size_hint: Option<u64>,
    chunked: bool,
) -> io::Result<BodyEncoder> {
    let encoder = Encoder::new(coding, setting.level(coding), size_hint)?;
    Ok(BodyEncoder::new(encoder, chunked))
}

/// The `Via` value for a message received over HTTP/`version` ("1.0" or
/// "1.1") by this server, known as `pseudonym`.
pub fn via_value(version: &str, pseudonym: &str) -> Vec<u8> {
    format!("{version} {pseudonym}").into_bytes()
}

/// Adds a `Via` field at the end of a complete request head (after the
/// client's own `Via` fields, which together make one list: ours last).
pub fn add_via_to_request(head: &mut Vec<u8>, value: &[u8]) {
    if !head.ends_with(b"\r\n\r\n") {
        return;
    }
    head.truncate(head.len() - 2);
    head.extend_from_slice(b"Via: ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::head::{self};

    fn parse(text: &str) -> ResponseHead {
        head::response(text.as_bytes(), false, 65536)
            .unwrap()
            .unwrap()
    }

    fn req(accept: &str) -> CompressRequest {
        let c = Conditions {
            accept_encoding: Some(accept.to_owned()),
            ..Conditions::default()
        };
        CompressRequest::new(Some(&Compress::default()), true, &c).unwrap()
    }

    fn get<'a>(r: &'a ResponseHead, name: &str) -> Option<&'a str> {
        field(r, name).map(|v| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn a_compressible_200_is_rewritten() {
        let mut r = parse(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1000\r\n\
             ETag: \"abc\"\r\nVary: Cookie\r\n\r\n",
        );
        assert_eq!(compress_head(&req("gzip"), &mut r), Some(Coding::Gzip));
        assert_eq!(get(&r, "etag"), Some("\"abc-gz\""));
        assert_eq!(get(&r, "vary"), Some("Cookie, Accept-Encoding"));
        assert_eq!(get(&r, "content-encoding"), Some("gzip"));
        assert_eq!(r.length, None);
    }

    #[test]
    fn what_is_left_alone() {
        let html = "Content-Type: text/html\r\nContent-Length: 1000\r\n";
        for (head, vary) in [
            // Already encoded, or no-transform: untouched.
            (
                format!("HTTP/1.1 200 OK\r\n{html}Content-Encoding: br\r\n\r\n"),
                None,
            ),
            (
                format!("HTTP/1.1 200 OK\r\n{html}Cache-Control: public, no-transform\r\n\r\n"),
                None,
            ),
            // Not a 200, too short, or not compressible.
            (format!("HTTP/1.1 206 Partial\r\n{html}\r\n"), None),
            (
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 10\r\n\r\n".into(),
                None,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\n".into(),
                None,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n".into(),
                None,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".into(),
                None,
            ),
            // Already varying on it: kept as it is.
            (
                format!("HTTP/1.1 200 OK\r\n{html}Vary: accept-encoding\r\n\r\n"),
                Some("accept-encoding"),
            ),
        ] {
            let mut r = parse(&head);
            let c = compress_head(&req("identity"), &mut r);
            assert_eq!(c, None, "{head}");
            assert_eq!(get(&r, "vary"), vary, "{head}");
        }
        // A client that takes no coding: identity, but Vary.
        let mut r = parse(&format!("HTTP/1.1 200 OK\r\n{html}ETag: W/\"x\"\r\n\r\n"));
        assert_eq!(compress_head(&req("gzip;q=0"), &mut r), None);
        assert_eq!(get(&r, "vary"), Some("Accept-Encoding"));
        assert_eq!(get(&r, "etag"), Some("W/\"x\""));
        assert_eq!(r.length, Some(1000));
        // A weak tag stays weak, with the variant's suffix.
        let mut r = parse(&format!("HTTP/1.1 200 OK\r\n{html}ETag: W/\"x\"\r\n\r\n"));
        assert_eq!(
            compress_head(&req("br, gzip;q=0.5"), &mut r),
            Some(Coding::Br)
        );
        assert_eq!(get(&r, "etag"), Some("W/\"x-br\""));
    }

    #[test]
    fn only_get_and_head() {
        let c = Conditions::default();
        assert!(CompressRequest::new(Some(&Compress::default()), false, &c).is_none());
        assert!(CompressRequest::new(None, true, &c).is_none());
    }

    #[test]
    fn via_goes_last() {
        let mut head = b"GET / HTTP/1.1\r\nVia: 1.0 other\r\n\r\n".to_vec();
        add_via_to_request(&mut head, &via_value("1.1", "baton"));
        assert_eq!(
            head,
            b"GET / HTTP/1.1\r\nVia: 1.0 other\r\nVia: 1.1 baton\r\n\r\n"
        );
    }
}
