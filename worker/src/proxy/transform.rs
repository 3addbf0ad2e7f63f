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
//!
//! Revalidation: a client's `If-None-Match` that holds such a variant tag
//! goes up with the upstream's own tag beside it (`"x-gz"` also asks for
//! `"x"`), so the upstream can answer 304; the 304 then comes down with
//! the variant's tag the client holds and `Vary: Accept-Encoding`.

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
    /// `If-None-Match` variant tags translated for the upstream: (the
    /// upstream's tag, the variant's tag the client sent).
    pub translated: Vec<(String, String)>,
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
            translated: Vec::new(),
        })
    }
}

/// The entity tags of an `If-None-Match` value, as written (`W/"x"` or
/// `"x"`); `*` and anything malformed are skipped.
fn entity_tags(value: &str) -> Vec<&str> {
    let mut tags = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return tags;
        }
        let start = rest;
        let body = rest.strip_prefix("W/").unwrap_or(rest);
        let Some(inner) = body.strip_prefix('"') else {
            // `*` or junk: up to the next comma.
            rest = rest.find(',').map_or("", |i| &rest[i..]);
            continue;
        };
        let Some(end) = inner.find('"') else {
            return tags;
        };
        let len = (start.len() - inner.len()) + end + 1;
        tags.push(&start[..len]);
        rest = &start[len..];
    }
}

/// The upstream's tag and the coding of a variant tag Baton made
/// (`"x-gz"` is `"x"` gzipped, `W/"x-br"` is `W/"x"` in brotli).
fn split_variant(tag: &str) -> Option<(String, Coding)> {
    let open = tag.strip_suffix('"')?;
    Coding::ALL.into_iter().find_map(|c| {
        let base = open.strip_suffix(c.etag_suffix())?;
        // Something must be left inside the quotes.
        (!base.ends_with('"')).then(|| (format!("{base}\""), c))
    })
}

/// Adds, in a request head's `If-None-Match` fields, the upstream's own
/// tag after each variant tag of a compressed response (unless already
/// listed). Returns the pairs added: (upstream's tag, variant tag).
pub fn translate_if_none_match(head: &mut Vec<u8>) -> Vec<(String, String)> {
    let Ok(text) = std::str::from_utf8(head) else {
        return Vec::new();
    };
    let mut pairs = Vec::new();
    let mut out = String::with_capacity(text.len() + 32);
    for line in text.split_inclusive("\r\n") {
        let (content, end) = match line.strip_suffix("\r\n") {
            Some(c) => (c, "\r\n"),
            None => (line, ""),
        };
        let is_inm = content
            .split_once(':')
            .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case("if-none-match"));
        if !is_inm {
            out.push_str(line);
            continue;
        }
        let value = content.split_once(':').map_or("", |(_, v)| v);
        let tags = entity_tags(value);
        let mut added = String::new();
        for tag in &tags {
            let Some((base, _)) = split_variant(tag) else {
                continue;
            };
            if tags.contains(&base.as_str()) || pairs.iter().any(|(b, _)| *b == base) {
                continue;
            }
            added.push_str(", ");
            added.push_str(&base);
            pairs.push((base, (*tag).to_owned()));
        }
        out.push_str(content);
        out.push_str(&added);
        out.push_str(end);
    }
    if !pairs.is_empty() {
        *head = out.into_bytes();
    }
    pairs
}

/// Opaque tags compare weakly for `If-None-Match` (RFC 9110 13.1.2).
fn weak_eq(a: &str, b: &str) -> bool {
    a.strip_prefix("W/").unwrap_or(a) == b.strip_prefix("W/").unwrap_or(b)
}

/// A 304 answering a translated `If-None-Match`: its `ETag` (the
/// upstream's tag) becomes the variant's the client holds, and it varies
/// on `Accept-Encoding` as the 200 did.
pub fn not_modified_head(req: &CompressRequest, resp: &mut ResponseHead) {
    if resp.status != 304 || req.translated.is_empty() {
        return;
    }
    for (name, value) in &mut resp.headers {
        if !name.eq_ignore_ascii_case("etag") {
            continue;
        }
        let tag = String::from_utf8_lossy(value).trim().to_owned();
        let variant = req
            .translated
            .iter()
            .find(|(base, _)| weak_eq(base, &tag))
            .and_then(|(_, variant)| split_variant(variant));
        if let Some((_, coding)) = variant {
            *value = compress::variant_etag(&tag, coding).into_bytes();
        }
    }
    add_vary(resp);
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
    fn variant_tags_are_translated_for_the_upstream() {
        let mut head =
            b"GET / HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"v1-gz\", W/\"v2-br\", \"v3\"\r\n\r\n"
                .to_vec();
        let pairs = translate_if_none_match(&mut head);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET / HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"v1-gz\", W/\"v2-br\", \"v3\", \"v1\", \
             W/\"v2\"\r\n\r\n"
        );
        assert_eq!(
            pairs,
            [
                ("\"v1\"".to_owned(), "\"v1-gz\"".to_owned()),
                ("W/\"v2\"".to_owned(), "W/\"v2-br\"".to_owned())
            ]
        );
        // Nothing to translate (no variant, `*`, already listed, a tag
        // with nothing before its suffix): the head is left alone.
        for value in [
            "\"v1\"",
            "*",
            "\"v1-zst\", \"v1\"",
            "\"-gz\"",
            "\"unterminated",
        ] {
            let text = format!("GET / HTTP/1.1\r\nif-none-match:{value}\r\n\r\n");
            let mut head = text.clone().into_bytes();
            assert!(translate_if_none_match(&mut head).is_empty(), "{value}");
            assert_eq!(head, text.as_bytes());
        }
        // A comma inside a tag is part of it.
        assert_eq!(entity_tags(" \"a,b\" ,W/\"c\""), ["\"a,b\"", "W/\"c\""]);
    }

    #[test]
    fn a_304_gets_the_variant_tag_back() {
        let mut req = req("gzip");
        req.translated = vec![("\"v1\"".into(), "\"v1-gz\"".into())];
        let mut r = parse("HTTP/1.1 304 Not Modified\r\nETag: W/\"v1\"\r\n\r\n");
        not_modified_head(&req, &mut r);
        assert_eq!(get(&r, "etag"), Some("W/\"v1-gz\""));
        assert_eq!(get(&r, "vary"), Some("Accept-Encoding"));
        // Another tag (the upstream matched one the client sent as is).
        let mut r = parse("HTTP/1.1 304 Not Modified\r\nETag: \"v0\"\r\n\r\n");
        not_modified_head(&req, &mut r);
        assert_eq!(get(&r, "etag"), Some("\"v0\""));
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
