//! On-the-fly compression (`compress`) over real sockets: negotiation by
//! q-values, bodies that decompress to the file byte for byte (cached
//! variants and files streamed with chunked framing), Vary and a distinct
//! ETag per variant, conditional requests against the variant's tag,
//! ranges, precompressed files, what is left alone, a file changing,
//! HEAD, and config errors.

mod common;

use std::io::{BufRead, BufReader, Read, Write};

use common::*;

/// A response whose body may be chunked (decoded here, framing checked).
fn read_any<R: BufRead>(r: &mut R, head: bool) -> Response {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).expect("header");
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').expect("header line");
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if head || status == 304 {
        return resp;
    }
    if resp.header("transfer-encoding") == Some("chunked") {
        assert_eq!(resp.header("content-length"), None);
        loop {
            let mut size = String::new();
            r.read_line(&mut size).expect("chunk size");
            let n = usize::from_str_radix(size.trim_end(), 16).expect("hex chunk size");
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).expect("chunk");
            assert_eq!(&chunk[n..], b"\r\n");
            if n == 0 {
                break;
            }
            resp.body.extend_from_slice(&chunk[..n]);
        }
    } else {
        let len: usize = resp
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .expect("content-length");
        resp.body = vec![0; len];
        r.read_exact(&mut resp.body).expect("body");
    }
    resp
}

fn send(port: u16, method: &str, path: &str, extra: &str) -> Response {
    let mut s = connect(port);
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n"
    )
    .expect("write");
    read_any(&mut BufReader::new(s), method == "HEAD")
}

fn get_ae(port: u16, path: &str, accept: &str) -> Response {
    send(port, "GET", path, &format!("Accept-Encoding: {accept}\r\n"))
}

fn decode(coding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .expect("gunzip");
        }
        "br" => {
            brotli::Decompressor::new(bytes, 4096)
                .read_to_end(&mut out)
                .expect("unbrotli");
        }
        "zstd" => out = zstd::stream::decode_all(bytes).expect("unzstd"),
        other => panic!("unexpected coding {other}"),
    }
    out
}

/// HTML that compresses like a real page: `n` bytes of varied lines.
fn page(n: usize, tag: &str) -> Vec<u8> {
    let mut t = Vec::with_capacity(n);
    let mut i = 0u64;
    while t.len() < n {
        t.extend_from_slice(
            format!("<li class=\"{tag}\">item {i}: {}</li>\n", i * 7919 % 10007).as_bytes(),
        );
        i += 1;
    }
    t.truncate(n);
    t
}

#[test]
fn negotiation_follows_q_values() {
    let env = Env::new();
    env.write_file("www/p.html", &page(20_000, "a"));
    let _s = env.start_config("", "compress = true");
    let ce = |accept: &str| {
        get_ae(env.port, "/p.html", accept)
            .header("content-encoding")
            .map(str::to_owned)
    };
    let cases: &[(&str, Option<&str>)] = &[
        // Server order (zstd, br, gzip) among equal weights.
        ("gzip, deflate, br, zstd", Some("zstd")),
        ("gzip, br", Some("br")),
        ("gzip", Some("gzip")),
        ("x-gzip", Some("gzip")),
        ("gzip;q=1, br;q=0.9, zstd;q=0.8", Some("gzip")),
        ("br;q=0.2, gzip;q=0.3", Some("gzip")),
        // q=0 refuses.
        ("zstd;q=0, br;q=0, gzip", Some("gzip")),
        ("gzip;q=0", None),
        // `*` stands for every coding not listed.
        ("*", Some("zstd")),
        ("*;q=0.5, zstd;q=0", Some("br")),
        ("*;q=0", None),
        // identity.
        ("identity", None),
        ("identity;q=0", None),
        ("gzip, identity;q=0", Some("gzip")),
        ("identity, gzip;q=0.5", None),
        ("deflate", None),
        ("", None),
        ("br;q=2", None),
    ];
    for (accept, expected) in cases {
        assert_eq!(
            ce(accept).as_deref(),
            *expected,
            "Accept-Encoding: {accept}"
        );
    }
    // No Accept-Encoding at all: identity.
    let r = send(env.port, "GET", "/p.html", "");
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body, page(20_000, "a"));

    // The site's own order and subset.
    let env = Env::new();
    env.write_file("www/p.html", &page(20_000, "a"));
    let _s = env.start_config("", "compress = { encodings = [\"gzip\", \"br\"] }");
    let r = get_ae(env.port, "/p.html", "zstd, br, gzip");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let r = get_ae(env.port, "/p.html", "zstd");
    assert_eq!(r.header("content-encoding"), None);
}

/// Cached small files and large files streamed with chunked framing:
/// every coding decodes to the file's bytes.
#[test]
fn every_coding_decompresses_byte_exact() {
    let env = Env::new();
    let small = page(30_000, "small");
    let large = page(700_000, "large");
    env.write_file("www/small.html", &small);
    env.write_file("www/large.json", &large);
    let _s = env.start_config("file_cache_max_file_size = \"64k\"\n", "compress = true");
    for coding in ["gzip", "br", "zstd"] {
        for _ in 0..2 {
            // The second time from the cache's variant.
            let r = get_ae(env.port, "/small.html", coding);
            assert_eq!(r.status, 200);
            assert_eq!(r.header("content-encoding"), Some(coding));
            assert!(r.header("content-length").is_some());
            assert!(r.body.len() < small.len() / 2, "{coding}: {}", r.body.len());
            assert_eq!(decode(coding, &r.body), small, "{coding}");
        }
        let r = get_ae(env.port, "/large.json", coding);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), Some(coding));
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert_eq!(
            r.header("content-type"),
            Some("application/json; charset=utf-8")
        );
        assert!(r.body.len() < large.len() / 2, "{coding}: {}", r.body.len());
        assert_eq!(decode(coding, &r.body), large, "{coding}");
    }
    // HTTP/1.0 has no chunked framing: a large file is sent as it is.
    let mut s = connect(env.port);
    s.write_all(b"GET /large.json HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n")
        .unwrap();
    let r = read_any(&mut BufReader::new(s), false);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert_eq!(r.body, large);
}

/// Streamed and cached compressed responses keep a keep-alive connection
/// in step: pipelined requests are each answered whole, in order.
#[test]
fn compressed_responses_keep_the_connection_in_step() {
    let env = Env::new();
    let small = page(5_000, "s");
    let large = page(300_000, "l");
    env.write_file("www/s.html", &small);
    env.write_file("www/l.html", &large);
    let _s = env.start_config("file_cache_max_file_size = \"16k\"\n", "compress = true");
    let mut s = connect(env.port);
    let mut batch = String::new();
    for (path, ae) in [
        ("/l.html", "br"),
        ("/s.html", "gzip"),
        ("/l.html", "zstd"),
        ("/l.html", "identity"),
        ("/s.html", "zstd"),
    ] {
        batch.push_str(&format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: {ae}\r\n\r\n"
        ));
    }
    s.write_all(batch.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let expect = [
        (&large, Some("br")),
        (&small, Some("gzip")),
        (&large, Some("zstd")),
        (&large, None),
        (&small, Some("zstd")),
    ];
    for (i, (body, coding)) in expect.iter().enumerate() {
        let resp = read_any(&mut r, false);
        assert_eq!(resp.status, 200, "{i}");
        assert_eq!(resp.header("content-encoding"), *coding, "{i}");
        let got = match coding {
            Some(c) => decode(c, &resp.body),
            None => resp.body.clone(),
        };
        assert_eq!(&&got, body, "{i}");
    }
}

#[test]
fn vary_and_a_distinct_etag_per_variant() {
    let env = Env::new();
    env.write_file("www/p.html", &page(10_000, "a"));
    env.write_file("www/big.css", &page(200_000, "b"));
    let _s = env.start_config("file_cache_max_file_size = \"64k\"\n", "compress = true");
    for path in ["/p.html", "/big.css"] {
        let identity = send(env.port, "GET", path, "");
        let id_tag = identity.header("etag").expect("etag").to_owned();
        assert_eq!(identity.header("vary"), Some("Accept-Encoding"), "{path}");
        let mut tags = vec![id_tag.clone()];
        for (coding, suffix) in [("gzip", "-gz"), ("br", "-br"), ("zstd", "-zst")] {
            let r = get_ae(env.port, path, coding);
            assert_eq!(r.header("vary"), Some("Accept-Encoding"), "{path} {coding}");
            let tag = r.header("etag").expect("etag").to_owned();
            assert_eq!(
                tag,
                format!("{}{suffix}\"", id_tag.trim_end_matches('"')),
                "{path}"
            );
            assert_eq!(r.header("last-modified"), identity.header("last-modified"));
            tags.push(tag.clone());
            // If-None-Match with the variant's tag: 304, with that tag.
            let r = send(
                env.port,
                "GET",
                path,
                &format!("Accept-Encoding: {coding}\r\nIf-None-Match: {tag}\r\n"),
            );
            assert_eq!(r.status, 304, "{path} {coding}");
            assert_eq!(r.header("etag"), Some(tag.as_str()));
            assert_eq!(r.header("vary"), Some("Accept-Encoding"));
            assert_eq!(r.header("content-encoding"), None);
            // The identity tag does not match the variant: a full 200.
            let r = send(
                env.port,
                "GET",
                path,
                &format!("Accept-Encoding: {coding}\r\nIf-None-Match: {id_tag}\r\n"),
            );
            assert_eq!(r.status, 200, "{path} {coding}");
            assert_eq!(r.header("content-encoding"), Some(coding));
            // Nor does the variant's tag match the identity body.
            let r = send(env.port, "GET", path, &format!("If-None-Match: {tag}\r\n"));
            assert_eq!(r.status, 200);
            assert_eq!(r.header("content-encoding"), None);
            // If-Match compares strongly with the variant's tag.
            let r = send(
                env.port,
                "GET",
                path,
                &format!("Accept-Encoding: {coding}\r\nIf-Match: {id_tag}\r\n"),
            );
            assert_eq!(r.status, 412, "{path} {coding}");
        }
        tags.sort();
        tags.dedup();
        assert_eq!(tags.len(), 4, "{tags:?}");
    }
}

#[test]
fn ranges_get_the_identity_representation() {
    let env = Env::new();
    let body = page(20_000, "r");
    env.write_file("www/p.html", &body);
    let _s = env.start_config("", "compress = true");
    let id_tag = send(env.port, "GET", "/p.html", "")
        .header("etag")
        .unwrap()
        .to_owned();
    let r = send(
        env.port,
        "GET",
        "/p.html",
        "Accept-Encoding: gzip, br\r\nRange: bytes=100-199\r\n",
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert_eq!(r.header("etag"), Some(id_tag.as_str()));
    assert_eq!(r.header("content-range"), Some("bytes 100-199/20000"));
    assert_eq!(r.body, &body[100..200]);
    // If-Range with the identity tag holds; with a variant's tag it does
    // not (that is not the representation ranges are taken from): 200,
    // the whole identity body.
    let r = send(
        env.port,
        "GET",
        "/p.html",
        &format!("Accept-Encoding: gzip\r\nRange: bytes=0-9\r\nIf-Range: {id_tag}\r\n"),
    );
    assert_eq!((r.status, r.body.as_slice()), (206, &body[..10]));
    let gz_tag = format!("{}-gz\"", id_tag.trim_end_matches('"'));
    let r = send(
        env.port,
        "GET",
        "/p.html",
        &format!("Accept-Encoding: gzip\r\nRange: bytes=0-9\r\nIf-Range: {gz_tag}\r\n"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body, body);
}

#[test]
fn precompressed_files_still_win() {
    let env = Env::new();
    let plain = page(20_000, "p");
    let gz = b"\x1f\x8b precompressed bytes, served as they are".to_vec();
    env.write_file("www/app.js", &plain);
    env.write_file("www/app.js.gz", &gz);
    let _s = env.start_config("", "compress = true\nprecompressed = true");
    let r = get_ae(env.port, "/app.js", "gzip");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.body, gz);
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    // Preferring br or zstd changes nothing while a variant on disk is
    // acceptable.
    let r = get_ae(env.port, "/app.js", "zstd, br, gzip");
    assert_eq!(r.body, gz);
    // A client that refuses gzip gets the file compressed on the fly.
    let r = get_ae(env.port, "/app.js", "br, gzip;q=0");
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(decode("br", &r.body), plain);
}

#[test]
fn other_types_and_tiny_files_are_left_alone() {
    let env = Env::new();
    let png = page(20_000, "png");
    env.write_file("www/a.png", &png);
    env.write_file("www/tiny.html", &page(255, "t"));
    env.write_file("www/edge.html", &page(256, "e"));
    env.write_file("www/d.bin", &page(20_000, "bin"));
    env.write_file("www/feed.atom", &page(20_000, "atom"));
    let _s = env.start_config("", "compress = true");
    for path in ["/a.png", "/tiny.html", "/d.bin"] {
        let r = get_ae(env.port, path, "gzip, br, zstd");
        assert_eq!(r.header("content-encoding"), None, "{path}");
        assert_eq!(r.header("vary"), None, "{path}");
        let tag = r.header("etag").unwrap();
        assert!(
            !["-gz\"", "-br\"", "-zst\""]
                .iter()
                .any(|s| tag.ends_with(s)),
            "{path}: {tag}"
        );
    }
    assert_eq!(get_ae(env.port, "/a.png", "gzip").body, png);
    // min_length is inclusive; +xml types compress.
    let r = get_ae(env.port, "/edge.html", "gzip");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(decode("gzip", &r.body), page(256, "e"));
    let r = get_ae(env.port, "/feed.atom", "gzip");
    assert_eq!(
        r.header("content-type"),
        Some("application/atom+xml; charset=utf-8")
    );
    assert_eq!(r.header("content-encoding"), Some("gzip"));

    // Configured types and threshold replace the defaults.
    let env = Env::new();
    env.write_file("www/a.png", &png);
    env.write_file("www/p.html", &page(2000, "p"));
    let _s = env.start_config(
        "",
        "compress = { types = [\"image/png\"], min_length = \"1k\" }",
    );
    assert_eq!(
        get_ae(env.port, "/a.png", "gzip").header("content-encoding"),
        Some("gzip")
    );
    assert_eq!(
        get_ae(env.port, "/p.html", "gzip").header("content-encoding"),
        None
    );
    // Off by default.
    let env = Env::new();
    env.write_file("www/p.html", &page(20_000, "p"));
    let _s = env.start_config("", "");
    let r = get_ae(env.port, "/p.html", "gzip");
    assert_eq!(
        (r.header("content-encoding"), r.header("vary")),
        (None, None)
    );
}

#[test]
fn a_changed_file_gets_a_new_compressed_variant() {
    let env = Env::new();
    let v1 = page(20_000, "one");
    env.write_file("www/p.html", &v1);
    let _s = env.start_config("", "compress = true");
    let r = get_ae(env.port, "/p.html", "br");
    let tag1 = r.header("etag").unwrap().to_owned();
    assert_eq!(decode("br", &r.body), v1);
    // Same request again: the cached variant, same tag.
    assert_eq!(
        get_ae(env.port, "/p.html", "br").header("etag"),
        Some(tag1.as_str())
    );
    let v2 = page(21_000, "two");
    env.write_file("www/p.html", &v2);
    let r = get_ae(env.port, "/p.html", "br");
    assert_ne!(r.header("etag"), Some(tag1.as_str()));
    assert!(r.header("etag").unwrap().ends_with("-br\""));
    assert_eq!(decode("br", &r.body), v2);
    // The old variant's tag no longer gives a 304.
    let r = send(
        env.port,
        "GET",
        "/p.html",
        &format!("Accept-Encoding: br\r\nIf-None-Match: {tag1}\r\n"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(decode("br", &r.body), v2);
}

#[test]
fn head_gets_the_headers_of_get() {
    let env = Env::new();
    env.write_file("www/small.html", &page(10_000, "s"));
    env.write_file("www/large.html", &page(200_000, "l"));
    let _s = env.start_config("file_cache_max_file_size = \"64k\"\n", "compress = true");
    for path in ["/small.html", "/large.html"] {
        for ae in ["", "Accept-Encoding: gzip\r\n", "Accept-Encoding: br\r\n"] {
            // HEAD first: it must not depend on a GET having filled
            // anything.
            let head = send(env.port, "HEAD", path, ae);
            let get = send(env.port, "GET", path, ae);
            let strip = |r: &Response| {
                r.headers
                    .iter()
                    .filter(|(k, _)| !k.eq_ignore_ascii_case("date"))
                    .cloned()
                    .collect::<Vec<_>>()
            };
            assert_eq!(strip(&head), strip(&get), "{path} {ae:?}");
            assert_eq!(head.status, 200);
        }
    }
}

#[test]
fn bad_compress_settings_are_located() {
    let env = Env::new();
    let text = env.config_with(
        "",
        "compress = { encodings = [\"gz\"], level = { br = 12 }, min_len = 5 }",
    );
    env.write_config(&text);
    let out = env.baton(&["-t"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .position(|l| l.starts_with("compress"))
        .unwrap()
        + 1;
    let file = env.config_path().display().to_string();
    for needle in [
        format!("{file}:{line}:27: unknown encoding \"gz\", did you mean \"gzip\"?"),
        format!("{file}:{line}:49: \"br\" must be a level from 0 to 11, not 12"),
        format!(
            "{file}:{line}:55: unknown key \"min_len\", did you mean \"min_length\"? (in \"compress\")"
        ),
    ] {
        assert!(stderr.contains(&needle), "{needle}\nnot in:\n{stderr}");
    }
}

/// The metrics' `baton_file_cache_bytes` on a one-worker server, once it
/// says `want` (workers report about once a second).
fn wait_cache_bytes(admin: &std::path::Path, want: u64) -> String {
    let mut m = String::new();
    let held = |m: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix("baton_file_cache_bytes "))
            .and_then(|n| n.parse::<u64>().ok())
    };
    let ok = wait_until(std::time::Duration::from_secs(5), || {
        m = admin_get(admin, "/metrics");
        held(&m) == Some(want)
    });
    assert!(ok, "wanted {want} bytes held:\n{m}");
    m
}

/// A cached file's compressed variant is kept beside its entry and
/// counted against file_cache_size; one that does not fit is still
/// served, from a fresh compression, and holds nothing.
#[test]
fn variants_count_against_the_file_cache_size() {
    let env = Env::new();
    let body = page(10_000, "c");
    env.write_file("www/p.html", &body);
    let text = env
        .config_with("", "compress = true")
        .replace("workers = 2", "workers = 1");
    env.write_config(&with_admin(&env, &text));
    let admin = env.path("admin.sock");
    let _s = env.start();
    assert_eq!(send(env.port, "GET", "/p.html", "").body, body);
    // The bytes, the key ("/p.html") and 256 per entry.
    let entry = 10_000 + 7 + 256;
    wait_cache_bytes(&admin, entry);
    let gz = get_ae(env.port, "/p.html", "gzip");
    assert_eq!(decode("gzip", &gz.body), body);
    wait_cache_bytes(&admin, entry + gz.body.len() as u64 + 256);
    // Asked again: the same bytes, nothing more held.
    assert_eq!(get_ae(env.port, "/p.html", "gzip").body, gz.body);
    let br = get_ae(env.port, "/p.html", "br");
    wait_cache_bytes(
        &admin,
        entry + gz.body.len() as u64 + 256 + br.body.len() as u64 + 256,
    );

    // Room for the file but not for a variant.
    let env = Env::new();
    env.write_file("www/p.html", &body);
    let text = env
        .config_with("file_cache_size = 10300\n", "compress = true")
        .replace("workers = 2", "workers = 1");
    env.write_config(&with_admin(&env, &text));
    let admin = env.path("admin.sock");
    let _s = env.start();
    for _ in 0..2 {
        let r = get_ae(env.port, "/p.html", "zstd");
        assert_eq!(r.header("content-encoding"), Some("zstd"));
        assert_eq!(decode("zstd", &r.body), body);
    }
    wait_cache_bytes(&admin, entry);
}

/// A large file streamed compressed to a client that reads slowly: the
/// worker reads the file only as fast as the client takes the output, so
/// its memory stays flat (no whole-body buffering).
#[test]
fn a_large_file_streams_in_bounded_memory() {
    let env = Env::new();
    // 48 MiB that compresses about 3:1.
    let body = page(48 << 20, "big");
    env.write_file("www/big.txt", &body);
    let text = env
        .config_with("", "compress = { encodings = [\"zstd\"] }")
        .replace("workers = 2", "workers = 1");
    env.write_config(&text);
    let s = env.start();
    let worker = *children_of(s.pid()).first().expect("a worker");
    // A field of /proc/PID/FILE ("VmHWM:", "rchar:"), as a number.
    let field = |file: &str, name: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/{worker}/{file}"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    };
    let before = field("status", "VmRSS:");
    let read_before = field("io", "rchar:");
    let c = connect(env.port);
    // A small receive window, so the client holds little in flight.
    let small: libc::c_int = 32 * 1024;
    // SAFETY: setsockopt on a socket this test owns, with an int option
    // value of the size given.
    unsafe {
        use std::os::fd::AsRawFd;
        libc::setsockopt(
            c.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let mut c = c;
    c.write_all(
        b"GET /big.txt HTTP/1.1\r\nHost: x\r\nAccept-Encoding: zstd\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut r = BufReader::with_capacity(4096, c);
    // Read a little, then stop reading: once the socket buffers are full
    // the worker must stop reading the file. Wait until its reads stop.
    let mut first = [0u8; 4096];
    r.read_exact(&mut first).unwrap();
    let mut last = u64::MAX;
    let settled = wait_until(std::time::Duration::from_secs(10), || {
        let now = field("io", "rchar:");
        std::mem::replace(&mut last, now) == now
    });
    assert!(settled, "the worker kept reading the file");
    let read_while_stalled = field("io", "rchar:").saturating_sub(read_before);
    assert!(
        read_while_stalled < 16 << 20,
        "{read_while_stalled} bytes of the file read for a client that reads nothing"
    );
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    let mut wire = first.to_vec();
    wire.extend_from_slice(&rest);
    // The peak over the whole response.
    let peak = field("status", "VmHWM:");
    // Unchunk and decode.
    let head_end = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&wire[..head_end]).to_string();
    assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
    let mut reader = BufReader::new(&wire[..]);
    let resp = read_any(&mut reader, false);
    assert_eq!(resp.header("content-encoding"), Some("zstd"));
    assert!(resp.body.len() < body.len() / 2);
    assert!(decode("zstd", &resp.body) == body, "body differs");
    // The body is 48 MiB (about 16 MiB compressed); the worker grew by a
    // few MiB at most (the coder's state and one chunk), not by either.
    assert!(
        peak < before + 8 * 1024,
        "worker peak RSS {peak} kB, {before} kB before"
    );
}

/// The access log records the compressed bytes a streamed response sent
/// (its length is not known up front), and the variant's for a cached one.
#[test]
fn the_access_log_counts_compressed_bytes() {
    let env = Env::new();
    env.write_file("www/big.html", &page(200_000, "b"));
    env.write_file("www/small.html", &page(10_000, "s"));
    let log = env.path("access.log");
    let _s = env.start_config(
        &format!(
            "access_log = \"{}\"\nfile_cache_max_file_size = \"64k\"\n",
            log.display()
        ),
        "compress = true",
    );
    // On the wire: the chunked body with its framing.
    let mut c = connect(env.port);
    c.write_all(
        b"GET /big.html HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut wire = Vec::new();
    c.read_to_end(&mut wire).unwrap();
    let head_end = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let body_on_wire = wire.len() - head_end;
    let small = get_ae(env.port, "/small.html", "br");
    let mut text = String::new();
    assert!(
        wait_until(std::time::Duration::from_secs(5), || {
            text = std::fs::read_to_string(&log).unwrap_or_default();
            text.lines().count() >= 2
        }),
        "{text}"
    );
    assert!(
        text.contains(&format!("\"GET /big.html HTTP/1.1\" 200 {body_on_wire} ")),
        "{body_on_wire} bytes not in:\n{text}"
    );
    assert!(
        text.contains(&format!(
            "\"GET /small.html HTTP/1.1\" 200 {} ",
            small.body.len()
        )),
        "{text}"
    );
}

/// Over TLS a streamed compressed body goes through rustls (no
/// sendfile): it arrives whole and decodes to the file.
#[test]
fn compressed_bodies_over_tls() {
    use common::tls::{ANY, client, ecdsa_cert, https_request};
    let env = Env::new();
    let large = page(300_000, "tls");
    let small = page(10_000, "tls");
    env.write_file("www/large.html", &large);
    env.write_file("www/small.html", &small);
    let (cert, key) = ecdsa_cert(&["a.test"]);
    env.write_file("tls/a.pem", cert.as_bytes());
    env.write_file("tls/a.key", key.as_bytes());
    let _s = env.start_config(
        "file_cache_max_file_size = \"64k\"\n",
        &format!(
            "compress = true\ntls = {{ cert = \"{}\", key = \"{}\" }}",
            env.path("tls/a.pem").display(),
            env.path("tls/a.key").display()
        ),
    );
    let config = client(ANY);
    for (path, body) in [("/large.html", &large), ("/small.html", &small)] {
        for coding in ["gzip", "br", "zstd"] {
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: a.test\r\nAccept-Encoding: {coding}\r\nConnection: close\r\n\r\n"
            );
            let seen = https_request(&config, env.port, Some("a.test"), &req).expect("https");
            let resp = read_any(&mut BufReader::new(&seen.response[..]), false);
            assert_eq!(resp.header("content-encoding"), Some(coding), "{path}");
            assert_eq!(&decode(coding, &resp.body), body, "{path} {coding}");
        }
    }
}
