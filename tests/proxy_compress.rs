//! Compression of proxied responses and the `Via` field, through the real
//! binary, in front of a backend this file starts (the shared test
//! backend sends no Content-Type; this one sends typed, tagged bodies):
//!
//! - `/text/N/FRAMING`: N bytes of HTML (`text_body`), `ETag: "v1"`,
//!   `Vary: Cookie`, framed by `cl`, `chunked` or `close`;
//! - `/gzipped`: a body the backend gzipped itself (`Content-Encoding`);
//! - `/range`: honours `Range: bytes=A-B` with a 206, else 200;
//! - `/png/N`: N bytes of `image/png`;
//! - `/sse`: a `text/event-stream`;
//! - `/notransform`: HTML with `Cache-Control: no-transform`;
//! - `/noise/N`: N bytes of `noise_body` (text that compresses only to
//!   about half), chunked, counting what was written in `NOISE_WRITTEN`;
//! - `/echo`: the request head as a `text/plain` body.
//!
//! Every response says `Via: 1.0 backend` (so a proxy's `Via` is seen
//! merged after it).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use common::backend::{Reply, read_reply, rss_kib};
use common::{Env, Server, connect, wait_until};

/// Bytes of `/noise` bodies the backend has written (one test uses it).
static NOISE_WRITTEN: AtomicU64 = AtomicU64::new(0);

/// Letters from a xorshift generator: text that compresses to about half.
fn noise_body(n: usize) -> Vec<u8> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            b'a' + (seed % 16) as u8
        })
        .collect()
}

/// Byte `i` of every text body: numbered lines of HTML, which compress
/// (but not to nothing).
fn text_body(n: usize) -> Vec<u8> {
    let mut t = Vec::with_capacity(n + 64);
    let mut i = 0u64;
    while t.len() < n {
        t.extend_from_slice(format!("<p>line {i}, {}</p>\n", i * 7919 % 1000).as_bytes());
        i += 1;
    }
    t.truncate(n);
    t
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn decode(coding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .unwrap();
        }
        "br" => {
            brotli::Decompressor::new(bytes, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        "zstd" => out = zstd::stream::decode_all(bytes).unwrap(),
        other => panic!("unexpected coding {other:?}"),
    }
    out
}

/// A backend on a free loopback port; returns its address.
fn backend() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { return };
            thread::spawn(move || {
                let mut r = BufReader::new(s);
                while serve(&mut r).is_some() {}
            });
        }
    });
    addr
}

/// One request (bodies are not sent to this backend); `None` closes.
fn serve(r: &mut BufReader<std::net::TcpStream>) -> Option<()> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let header = |n: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(n)
                .then(|| v.trim().to_owned())
        })
    };
    let mut first = head.split_whitespace();
    let is_head = first.next()? == "HEAD";
    let path = first.next()?.to_owned();
    let mut seg = path.trim_start_matches('/').split('/');
    let kind = seg.next().unwrap_or_default();
    let n: usize = seg.next().and_then(|a| a.parse().ok()).unwrap_or(4000);
    let framing = seg.next().unwrap_or("cl");
    let s = r.get_mut();
    // `/text` is version "v1": a request that holds its tag gets a 304.
    if kind == "text"
        && header("if-none-match").is_some_and(|v| v.split(',').any(|t| t.trim() == "\"v1\""))
    {
        s.write_all(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n")
            .ok()?;
        return Some(());
    }
    let via = "Via: 1.0 backend\r\n";
    let (status, fields, body): (&str, String, Vec<u8>) = match kind {
        "text" => (
            "200 OK",
            "Content-Type: text/html; charset=utf-8\r\nETag: \"v1\"\r\nVary: Cookie\r\n".into(),
            text_body(n),
        ),
        "gzipped" => (
            "200 OK",
            "Content-Type: text/html\r\nContent-Encoding: gzip\r\nETag: \"g\"\r\n".into(),
            gzip(&text_body(n)),
        ),
        "range" => match header("range").and_then(|v| {
            let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
            Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?))
        }) {
            Some((a, b)) => (
                "206 Partial Content",
                format!("Content-Type: text/html\r\nContent-Range: bytes {a}-{b}/{n}\r\n"),
                text_body(n)[a..=b].to_vec(),
            ),
            None => ("200 OK", "Content-Type: text/html\r\n".into(), text_body(n)),
        },
        "png" => ("200 OK", "Content-Type: image/png\r\n".into(), text_body(n)),
        "noise" => {
            let body = noise_body(n);
            s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
            )
            .ok()?;
            for c in body.chunks(1 << 16) {
                s.write_all(format!("{:x}\r\n", c.len()).as_bytes()).ok()?;
                s.write_all(c).ok()?;
                s.write_all(b"\r\n").ok()?;
                NOISE_WRITTEN.fetch_add(c.len() as u64, Ordering::SeqCst);
            }
            s.write_all(b"0\r\n\r\n").ok()?;
            return Some(());
        }
        "sse" => (
            "200 OK",
            "Content-Type: text/event-stream\r\n".into(),
            text_body(n),
        ),
        "notransform" => (
            "200 OK",
            "Content-Type: text/html\r\nCache-Control: public, no-transform\r\n".into(),
            text_body(n),
        ),
        _ => (
            "200 OK",
            "Content-Type: text/plain\r\n".into(),
            head.clone().into_bytes(),
        ),
    };
    let framing_field = match framing {
        "chunked" => "Transfer-Encoding: chunked\r\n".to_owned(),
        "close" => "Connection: close\r\n".to_owned(),
        _ => format!("Content-Length: {}\r\n", body.len()),
    };
    let out = format!("HTTP/1.1 {status}\r\n{via}{fields}{framing_field}\r\n");
    s.write_all(out.as_bytes()).ok()?;
    if is_head {
        return (framing != "close").then_some(());
    }
    match framing {
        "chunked" => {
            for c in body.chunks(10_000) {
                s.write_all(format!("{:x}\r\n", c.len()).as_bytes()).ok()?;
                s.write_all(c).ok()?;
                s.write_all(b"\r\n").ok()?;
            }
            s.write_all(b"0\r\n\r\n").ok()?;
        }
        _ => s.write_all(&body).ok()?,
    }
    (framing != "close").then_some(())
}

/// Baton with `/c/` compressed (the site's `compress`), `/off/` not (the
/// route turns it off), `/gz/` gzip only from 100 bytes (the route's own
/// setting), `/via/` with `via = true`; one worker.
fn start(env: &Env, upstream: &str) -> (Server, i32) {
    let text = format!(
        "{}\n[[site]]\nlisten = [\"127.0.0.1:{}\"]\nroot = \"{}\"\ncompress = true\n\
         [[site.route]]\npath = \"/c/\"\nproxy = \"http://{upstream}\"\nstrip_prefix = true\n\
         [[site.route]]\npath = \"/off/\"\nproxy = \"http://{upstream}\"\nstrip_prefix = true\n\
         compress = false\n\
         [[site.route]]\npath = \"/gz/\"\nproxy = \"http://{upstream}\"\nstrip_prefix = true\n\
         compress = {{ encodings = [\"gzip\"], min_length = 100 }}\n\
         [[site.route]]\npath = \"/via/\"\nproxy = \"http://{upstream}\"\nstrip_prefix = true\n\
         compress = false\nvia = true\n",
        env.globals().replace("workers = 2", "workers = 1"),
        env.port,
        env.path("www").display()
    );
    env.write_config(&text);
    let server = env.start();
    let pids = env.status().serving_pids();
    assert_eq!(pids.len(), 1);
    (server, pids[0])
}

/// `method path` with `extra` header lines, over HTTP/`version`.
fn ask(port: u16, method: &str, path: &str, extra: &str, version: &str) -> Reply {
    let mut s = connect(port);
    write!(
        s,
        "{method} {path} HTTP/{version}\r\nHost: h\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    read_reply(&mut r, method == "HEAD", &mut Vec::new()).unwrap()
}

fn get(port: u16, path: &str, accept: &str) -> Reply {
    ask(
        port,
        "GET",
        path,
        &format!("Accept-Encoding: {accept}\r\n"),
        "1.1",
    )
}

#[test]
fn negotiated_per_q_values_and_byte_exact_in_every_framing() {
    let env = Env::new();
    let up = backend();
    let (_server, _) = start(&env, &up);
    for (accept, want) in [
        ("gzip", Some("gzip")),
        ("br", Some("br")),
        ("zstd", Some("zstd")),
        ("gzip;q=0.5, br;q=0.9", Some("br")),
        ("br;q=0.1, zstd;q=0.2, gzip;q=1", Some("gzip")),
        // Equal weights: the server's order (zstd, br, gzip).
        ("gzip, br", Some("br")),
        ("*", Some("zstd")),
        ("*;q=0, gzip;q=0", None),
        ("identity", None),
        ("", None),
    ] {
        for framing in ["cl", "chunked", "close"] {
            for n in [300usize, 100_000] {
                let path = format!("/c/text/{n}/{framing}");
                let r = get(env.port, &path, accept);
                let what = format!("{accept:?} {path}");
                assert_eq!(r.status, 200, "{what}");
                assert!(r.complete, "{what}");
                assert_eq!(r.header("content-encoding"), want, "{what}");
                assert_eq!(r.header("vary"), Some("Cookie, Accept-Encoding"), "{what}");
                let body = match want {
                    Some(c) => {
                        assert!(r.chunked, "{what}");
                        assert_eq!(r.header("content-length"), None, "{what}");
                        let suffix = match c {
                            "gzip" => "gz",
                            "zstd" => "zst",
                            _ => "br",
                        };
                        assert_eq!(r.header("etag"), Some(format!("\"v1-{suffix}\"").as_str()));
                        if n > 1000 {
                            assert!(r.body.len() < n / 2, "{what}: {}", r.body.len());
                        }
                        decode(c, &r.body)
                    }
                    None => {
                        assert_eq!(r.header("etag"), Some("\"v1\""), "{what}");
                        r.body
                    }
                };
                assert_eq!(body, text_body(n), "{what}");
            }
        }
    }
}

#[test]
fn a_compressed_variants_tag_revalidates_to_a_304() {
    let env = Env::new();
    let up = backend();
    let (_server, _) = start(&env, &up);
    let r = get(env.port, "/c/text/5000", "gzip");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("etag"), Some("\"v1-gz\""));
    // The client revalidates its gzip copy: the upstream is asked about
    // its own tag too, answers 304, and the 304 names the client's variant.
    let r = ask(
        env.port,
        "GET",
        "/c/text/5000",
        "Accept-Encoding: gzip\r\nIf-None-Match: \"v1-gz\"\r\n",
        "1.1",
    );
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some("\"v1-gz\""));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert!(r.body.is_empty());
    // The same for brotli, among other tags.
    let r = ask(
        env.port,
        "GET",
        "/c/text/5000",
        "Accept-Encoding: br\r\nIf-None-Match: \"old\", \"v1-br\"\r\n",
        "1.1",
    );
    assert_eq!((r.status, r.header("etag")), (304, Some("\"v1-br\"")));
    // A tag of another version: a full, compressed 200.
    let r = ask(
        env.port,
        "GET",
        "/c/text/5000",
        "Accept-Encoding: gzip\r\nIf-None-Match: \"v0-gz\"\r\n",
        "1.1",
    );
    assert_eq!(r.status, 200);
    assert_eq!(decode("gzip", &r.body), text_body(5000));
    // Where Baton does not compress it makes no variant tags, and
    // translates none: the upstream sees the tag as sent (a 200).
    let r = ask(
        env.port,
        "GET",
        "/off/text/5000",
        "Accept-Encoding: gzip\r\nIf-None-Match: \"v1-gz\"\r\n",
        "1.1",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, text_body(5000));
}

#[test]
fn what_is_left_alone() {
    let env = Env::new();
    let up = backend();
    let (_server, _) = start(&env, &up);
    let all = "gzip, br, zstd";
    // Encoded by the upstream: passed as it came, byte for byte.
    let r = get(env.port, "/c/gzipped/5000", all);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("etag"), Some("\"g\""));
    assert_eq!(r.header("vary"), None);
    assert_eq!(r.body, gzip(&text_body(5000)));
    // A range: the upstream's 206, untouched.
    let r = ask(
        env.port,
        "GET",
        "/c/range/5000",
        "Accept-Encoding: gzip\r\nRange: bytes=10-19\r\n",
        "1.1",
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body, text_body(5000)[10..20]);
    // Not compressible, an event stream, no-transform, the route's
    // compress = false: identity.
    for path in [
        "/c/png/5000",
        "/c/sse/5000",
        "/c/notransform/5000",
        "/off/text/5000",
    ] {
        let r = get(env.port, path, all);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-encoding"), None, "{path}");
        assert_eq!(r.body, text_body(5000), "{path}");
    }
    // Below min_length: identity, with its length.
    let r = get(env.port, "/c/text/200", all);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("content-length"), Some("200"));
    // The route's own setting: gzip only, from 100 bytes.
    let r = get(env.port, "/gz/text/150", "br, zstd, gzip;q=0.1");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(decode("gzip", &r.body), text_body(150));
    let r = get(env.port, "/gz/text/150", "br, zstd");
    assert_eq!(r.header("content-encoding"), None);
    // A POST's answer is not compressed.
    let r = ask(
        env.port,
        "POST",
        "/c/text/5000",
        "Accept-Encoding: gzip\r\nContent-Length: 0\r\n",
        "1.1",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), None);
}

#[test]
fn head_has_the_headers_of_get() {
    let env = Env::new();
    let up = backend();
    let (_server, _) = start(&env, &up);
    for accept in ["br", "identity"] {
        for framing in ["cl", "chunked"] {
            let path = format!("/c/text/5000/{framing}");
            let extra = format!("Accept-Encoding: {accept}\r\n");
            let g = ask(env.port, "GET", &path, &extra, "1.1");
            let h = ask(env.port, "HEAD", &path, &extra, "1.1");
            // The proxy never states an identity HEAD's framing
            // (Transfer-Encoding) when the upstream's HEAD did not give a
            // length (RFC 9110 9.3.2 lets a HEAD omit it); a compressed
            // one says exactly what its GET says.
            let ignored = |k: &str| {
                k.eq_ignore_ascii_case("date")
                    || (accept == "identity" && k.eq_ignore_ascii_case("transfer-encoding"))
            };
            let strip = |r: &Reply| {
                let mut v: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .filter(|(k, _)| !ignored(k))
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                    .collect();
                v.sort();
                v
            };
            assert_eq!(strip(&g), strip(&h), "{accept} {framing}");
            assert!(h.body.is_empty());
        }
    }
}

#[test]
fn an_http10_client_gets_a_close_delimited_compressed_body() {
    let env = Env::new();
    let up = backend();
    let (_server, _) = start(&env, &up);
    for framing in ["cl", "chunked", "close"] {
        let path = format!("/c/text/100000/{framing}");
        let r = ask(env.port, "GET", &path, "Accept-Encoding: gzip\r\n", "1.0");
        assert_eq!(r.status, 200, "{framing}");
        assert_eq!(r.header("content-encoding"), Some("gzip"), "{framing}");
        assert_eq!(r.header("transfer-encoding"), None, "{framing}");
        assert_eq!(r.header("content-length"), None, "{framing}");
        assert_eq!(decode("gzip", &r.body), text_body(100_000), "{framing}");
    }
}

#[test]
fn keep_alive_survives_compressed_responses() {
    let env = Env::new();
    let up = backend();
    let (_server, _) = start(&env, &up);
    let s = connect(env.port);
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    for (i, coding) in ["gzip", "br", "zstd", "identity", "gzip"]
        .iter()
        .enumerate()
    {
        let n = 1000 + i * 5000;
        write!(
            w,
            "GET /c/text/{n}/chunked HTTP/1.1\r\nHost: h\r\nAccept-Encoding: {coding}\r\n\r\n"
        )
        .unwrap();
        let reply = read_reply(&mut r, false, &mut Vec::new()).unwrap();
        assert!(reply.complete);
        let body = match reply.header("content-encoding") {
            Some(c) => decode(c, &reply.body),
            None => reply.body,
        };
        assert_eq!(body, text_body(n), "{coding}");
    }
}

#[test]
fn via_on_requests_and_responses() {
    let env = Env::new();
    let up = backend();
    let (_server, _) = start(&env, &up);
    let r = ask(env.port, "GET", "/via/echo", "Via: 1.1 front\r\n", "1.1");
    let seen = String::from_utf8(r.body.clone()).unwrap();
    // The request: the client's Via kept, ours after it, naming the
    // protocol the client used.
    let vias: Vec<&str> = seen
        .lines()
        .filter_map(|l| l.strip_prefix("Via: "))
        .collect();
    assert_eq!(vias, ["1.1 front", "1.1 baton"], "{seen}");
    // The response: the upstream's Via, then ours.
    let vias: Vec<&str> = r
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("via"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(vias, ["1.0 backend", "1.1 baton"]);
    let r = ask(env.port, "GET", "/via/echo", "", "1.0");
    let seen = String::from_utf8(r.body).unwrap();
    assert!(seen.contains("\r\nVia: 1.0 baton\r\n"), "{seen}");
    // Off by default.
    let r = ask(env.port, "GET", "/off/echo", "", "1.1");
    let seen = String::from_utf8(r.body.clone()).unwrap();
    assert!(!seen.contains("Via:"), "{seen}");
    assert_eq!(r.header("via"), Some("1.0 backend"));
}

#[test]
fn a_64_mib_streamed_body_compresses_with_flat_memory() {
    const SIZE: usize = 64 << 20;
    let env = Env::new();
    let up = backend();
    let (_server, pid) = start(&env, &up);
    for coding in ["gzip", "br", "zstd"] {
        // Warm-up (the first use of a coder allocates its tables).
        let r = get(env.port, "/c/text/100000/chunked", coding);
        assert_eq!(r.header("content-encoding"), Some(coding));
        let before = rss_kib(pid);
        let mut s = connect(env.port);
        write!(
            s,
            "GET /c/text/{SIZE}/chunked HTTP/1.1\r\nHost: h\r\nAccept-Encoding: {coding}\r\n\
             Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut r = BufReader::with_capacity(1 << 16, s);
        // The head, then the chunked body, the worker's memory sampled
        // while it streams.
        let reply = read_reply(&mut r, true, &mut Vec::new()).unwrap();
        assert_eq!(reply.header("content-encoding"), Some(coding));
        let mut peak = before;
        let mut wire = Vec::new();
        let mut raw = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            // Sampled as it streams (every 64 reads or so).
            if raw.len() % (64 << 16) < n {
                peak = peak.max(rss_kib(pid));
            }
        }
        peak = peak.max(rss_kib(pid));
        // Undo the chunking.
        let mut at = 0;
        loop {
            let end = at + raw[at..].windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&raw[at..end]).unwrap(), 16).unwrap();
            at = end + 2;
            if size == 0 {
                break;
            }
            wire.extend_from_slice(&raw[at..at + size]);
            at += size + 2;
        }
        let body = decode(coding, &wire);
        assert_eq!(body.len(), SIZE, "{coding}");
        assert!(body == text_body(SIZE), "{coding}: not byte-exact");
        let grew = peak.saturating_sub(before);
        eprintln!(
            "{coding}: {SIZE} bytes -> {} on the wire, worker RSS +{grew} KiB",
            wire.len()
        );
        assert!(grew < 16 * 1024, "{coding}: the worker grew {grew} KiB");
    }
}

#[test]
fn a_client_that_does_not_read_holds_the_upstream_back() {
    const SIZE: usize = 32 << 20;
    let env = Env::new();
    let up = backend();
    let (_server, pid) = start(&env, &up);
    let r = get(env.port, "/c/text/100000/chunked", "gzip");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let before = rss_kib(pid);
    let mut s = connect(env.port);
    write!(
        s,
        "GET /c/noise/{SIZE} HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    // Nothing is read: the backend's writing stops once the buffers on
    // the way are full (unchanged over 10 polls, 200 ms).
    let (mut last, mut same) = (u64::MAX, 0);
    let stalled = wait_until(Duration::from_secs(60), || {
        let now = NOISE_WRITTEN.load(Ordering::SeqCst);
        same = if now == last { same + 1 } else { 0 };
        last = now;
        same >= 10 && now > 0
    });
    let written = NOISE_WRITTEN.load(Ordering::SeqCst);
    let held = rss_kib(pid);
    eprintln!(
        "client not reading: the backend wrote {} KiB of {} KiB, worker RSS {before} KiB -> {held} KiB",
        written >> 10,
        SIZE >> 10
    );
    assert!(
        stalled,
        "the backend never stopped writing ({written} bytes)"
    );
    assert!(
        written < (SIZE as u64) / 2,
        "the upstream was read on: {written}"
    );
    assert!(
        held < before + 16 * 1024,
        "worker RSS {before} KiB -> {held} KiB"
    );
    // Then the whole body, byte-exact.
    let mut r = BufReader::new(s);
    let reply = read_reply(&mut r, false, &mut Vec::new()).unwrap();
    assert!(reply.complete);
    assert!(decode("gzip", &reply.body) == noise_body(SIZE));
}
