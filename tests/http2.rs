//! HTTP/2: ALPN selection (h2, http/1.1, none; `http2 = false`), static
//! files of every size over one connection with many concurrent streams
//! (every byte checked), the HTTP/1.1 path's semantics per stream (HEAD,
//! conditional, ranges, precompressed and compressed variants, error
//! pages, site headers, host routing by :authority, the access log), a
//! slow reader, a file truncated while it is sent, h2c with prior knowledge, config errors, and interop:
//! `nghttp` and the h2spec conformance suite.
//!
//! The client is `tests/h2/h2tool.py` (Python's `h2`), see common/h2.rs.

mod common;

use std::process::Command;

use std::time::Duration;

use common::h2::*;
use common::tls::*;
use common::*;
use serde_json::Value;

/// Deterministic bytes of `len` (no repeating period a bug could hide in).
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn streams(v: &Value) -> &Vec<Value> {
    v["streams"].as_array().expect("streams")
}

fn header<'a>(s: &'a Value, name: &str) -> Option<&'a str> {
    s["headers"][name].as_str()
}

#[test]
fn alpn_prefers_h2_falls_back_to_http11_and_http2_false_turns_it_off() {
    let env = Env::new();
    let off_port = free_port();
    let mut config = tls_config(&env, "", "");
    config.push_str(&format!(
        "\n[[site]]\nlisten = [\"127.0.0.1:{off_port}\"]\nroot = \"{}\"\nhttp2 = false\n\
         tls = {{ cert = \"{}\", key = \"{}\" }}\n",
        env.path("www").display(),
        env.path("tls/cert.pem").display(),
        env.path("tls/key.pem").display(),
    ));
    env.write_config(&config);
    let _server = env.start();
    let port = env.port.to_string();
    let alpn = |port: &str, offer: &str| -> Value {
        h2tool(&["--tls", "--alpn", offer, port, "alpn"])["alpn"].clone()
    };
    assert_eq!(alpn(&port, "h2,http/1.1"), "h2");
    // Our order wins: h2 even when the client lists it last.
    assert_eq!(alpn(&port, "http/1.1,h2"), "h2");
    assert_eq!(alpn(&port, "http/1.1"), "http/1.1");
    assert_eq!(alpn(&port, ""), Value::Null);
    // No ALPN at all: HTTP/1.1, as before.
    let mut no_alpn = (*client(&[rustls::SignatureScheme::ECDSA_NISTP256_SHA256])).clone();
    no_alpn.alpn_protocols.clear();
    let seen = https_get(
        &std::sync::Arc::new(no_alpn),
        env.port,
        Some("localhost"),
        "/",
    )
    .expect("https");
    assert_eq!(seen.alpn, None);
    assert!(
        seen.response.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&seen.response)
    );
    // http2 = false: h2 is never chosen.
    let off = off_port.to_string();
    assert_eq!(alpn(&off, "h2,http/1.1"), "http/1.1");
    // A real request over h2.
    let got = h2tool(&["--tls", &port, "get", "/index.html"]);
    assert_eq!(got["alpn"], "h2");
    assert_eq!(streams(&got)[0]["status"], 200);
    assert_eq!(streams(&got)[0]["body"], "<h1>hello from baton</h1>\n");
}

#[test]
fn every_size_over_one_connection_with_many_concurrent_streams_is_byte_exact() {
    let env = Env::new();
    // Around every boundary that matters: empty, the default frame size
    // (16 KiB), the initial window (64 KiB), the file cache's limit
    // (64 KiB), the engine's send buffer, and files many windows long.
    let sizes = [
        0usize, 1, 100, 1023, 16_383, 16_384, 16_385, 65_535, 65_536, 65_537, 100_000, 262_144,
        1_048_576, 3_000_001,
    ];
    let mut expected = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let data = bytes(n, i as u64 + 1);
        env.write_file(&format!("www/f{n}.bin"), &data);
        expected.push((format!("/f{n}.bin"), n, sha256_hex(&data)));
    }
    env.write_config(&tls_config(&env, "", ""));
    let _server = env.start();
    let paths: Vec<String> = expected.iter().map(|(p, _, _)| p.clone()).collect();
    let port = env.port.to_string();
    let mut args = vec!["--tls", &port, "many", "100"];
    args.extend(paths.iter().map(String::as_str));
    let got = h2tool(&args);
    let all = streams(&got);
    assert_eq!(all.len(), 100);
    for s in all {
        let (path, len, sha) = expected
            .iter()
            .find(|(p, _, _)| s["path"] == p.as_str())
            .expect("a path we asked for");
        assert_eq!(s["status"], 200, "{path}: {s}");
        assert_eq!(s["done"], true, "{path} did not end: {s}");
        assert_eq!(s["len"], *len as u64, "{path}");
        assert_eq!(s["sha256"], sha.as_str(), "{path}: wrong bytes");
        assert_eq!(header(s, "content-length"), Some(len.to_string().as_str()));
    }
    assert_eq!(got["goaways"].as_array().map(Vec::len), Some(0), "{got}");
}

#[test]
fn per_stream_semantics_are_the_http11_paths() {
    let env = Env::new();
    let text = "hello compressible world\n".repeat(20_000);
    env.write_file("www/big.txt", text.as_bytes());
    env.write_file("www/small.css", b"body { color: red }\n");
    env.write_file("www/pre.js", b"console.log('plain')\n");
    env.write_file("www/pre.js.gz", b"GZIPPED-BYTES");
    env.write_file("www/404.html", b"custom not found\n");
    env.write_file("other/index.html", b"the other site\n");
    let log = env.path("access.log");
    let globals = format!("access_log = \"{}\"", log.display());
    let site = "precompressed = true\ncompress = true\nerror_pages = { 404 = \"/404.html\" }\n\
                headers = { \"X-Site\" = \"main\" }\nnames = [\"localhost\"]\n";
    let mut config = tls_config(&env, &globals, site);
    config.push_str(&format!(
        "\n[[site]]\nlisten = [\"127.0.0.1:{}\"]\nnames = [\"other.test\"]\nroot = \"{}\"\n\
         tls = {{ cert = \"{}\", key = \"{}\" }}\n",
        env.port,
        env.path("other").display(),
        env.path("tls/cert.pem").display(),
        env.path("tls/key.pem").display(),
    ));
    env.write_config(&config);
    let _server = env.start();
    let port = env.port.to_string();

    // HEAD: GET's headers, no body.
    let head = h2tool(&["--tls", &port, "get", "/small.css", "H:method: HEAD"]);
    let s = &streams(&head)[0];
    assert_eq!(s["status"], 200);
    assert_eq!(header(s, "content-length"), Some("20"));
    assert_eq!(s["len"], 0);
    // Conditional: the ETag back gets a 304 without a body or length.
    let get = h2tool(&["--tls", &port, "get", "/small.css"]);
    let etag = header(&streams(&get)[0], "etag").expect("etag").to_owned();
    assert_eq!(header(&streams(&get)[0], "x-site"), Some("main"));
    let cond = h2tool(&[
        "--tls",
        &port,
        "get",
        "/small.css",
        &format!("H:if-none-match: {etag}"),
    ]);
    let s = &streams(&cond)[0];
    assert_eq!(s["status"], 304, "{s}");
    assert_eq!(s["len"], 0);
    assert_eq!(header(s, "content-length"), None);
    // A range.
    let range = h2tool(&["--tls", &port, "get", "/small.css", "H:range: bytes=5-9"]);
    let s = &streams(&range)[0];
    assert_eq!(s["status"], 206);
    assert_eq!(s["body"], "{ col");
    assert_eq!(header(s, "content-range"), Some("bytes 5-9/20"));
    // Precompressed variant.
    let pre = h2tool(&["--tls", &port, "get", "/pre.js", "H:accept-encoding: gzip"]);
    let s = &streams(&pre)[0];
    assert_eq!(header(s, "content-encoding"), Some("gzip"));
    assert_eq!(s["body"], "GZIPPED-BYTES");
    // Compressed while sent (too big for the file cache): no length, and
    // the decoded body is the file.
    let comp = h2tool(&["--tls", &port, "get", "/big.txt", "H:accept-encoding: gzip"]);
    let s = &streams(&comp)[0];
    assert_eq!(s["status"], 200);
    assert_eq!(header(s, "content-encoding"), Some("gzip"));
    assert_eq!(header(s, "content-length"), None);
    assert!(s["len"].as_u64().unwrap() < text.len() as u64 / 10, "{s}");
    assert_eq!(s["done"], true);
    // An error page, with its status.
    let missing = h2tool(&["--tls", &port, "get", "/nope"]);
    let s = &streams(&missing)[0];
    assert_eq!(s["status"], 404);
    assert_eq!(s["body"], "custom not found\n");
    // Host routing by :authority.
    let other = h2tool(&["--tls", "--authority", "other.test", &port, "get", "/"]);
    assert_eq!(streams(&other)[0]["body"], "the other site\n");
    // Methods the static path refuses, as on HTTP/1.1.
    let post = h2tool(&["--tls", &port, "get", "/small.css", "H:method: POST"]);
    assert_eq!(streams(&post)[0]["status"], 405);
    // The access log says HTTP/2.0, with the sizes sent.
    assert!(
        wait_until(Duration::from_secs(5), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("\"GET /small.css HTTP/2.0\" 304 0")
                && text.contains("\"GET /pre.js HTTP/2.0\" 200 13")
                && text.contains("\"HEAD /small.css HTTP/2.0\" 200 0")
        }),
        "access log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[test]
fn a_slow_reader_with_a_small_window_gets_every_byte() {
    let env = Env::new();
    let data = bytes(600_000, 7);
    env.write_file("www/slow.bin", &data);
    env.write_config(&tls_config(&env, "", ""));
    let _server = env.start();
    let got = h2tool(&["--tls", &env.port.to_string(), "slow", "/slow.bin"]);
    let s = &streams(&got)[0];
    assert_eq!(s["done"], true, "{got}");
    assert_eq!(s["len"], data.len() as u64);
    assert_eq!(s["sha256"], sha256_hex(&data).as_str());
}

#[test]
fn a_file_truncated_while_it_is_sent_resets_its_stream() {
    let env = Env::new();
    // Past the file cache: read from the file chunk by chunk as the
    // windows open.
    let data = bytes(1_000_000, 11);
    env.write_file("www/shrinks.bin", &data);
    env.write_file("www/after.txt", b"still serving\n");
    env.write_config(&tls_config(&env, "", ""));
    let _server = env.start();
    // The head (with its Content-Length) goes out while the window is
    // shut; the file shrinks before a byte of the body is read.
    let held = Held::start(&["--tls", &env.port.to_string(), "hold", "1", "/shrinks.bin"]);
    std::fs::write(env.path("www/shrinks.bin"), &data[..100_000]).unwrap();
    let got = held.finish();
    let s = &streams(&got)[0];
    assert_eq!(s["status"], 200, "{got}");
    assert_eq!(s["done"], false, "a cut body passed for a whole one: {got}");
    // INTERNAL_ERROR, after no more than the bytes the file still had.
    assert_eq!(s["reset"], 2, "{got}");
    assert!(s["len"].as_u64().unwrap_or(u64::MAX) <= 100_000, "{got}");
    // The worker goes on serving.
    let got = h2tool(&["--tls", &env.port.to_string(), "get", "/after.txt"]);
    assert_eq!(streams(&got)[0]["body"], "still serving\n", "{got}");
}

#[test]
fn h2c_with_prior_knowledge_beside_http11_on_one_listener() {
    let env = Env::new();
    let plain = free_port();
    env.write_file("www/a.txt", b"over h2c\n");
    env.write_config(&format!(
        "{}\n[[site]]\nlisten = [{{ address = \"127.0.0.1:{}\", h2c = true }}]\nroot = \"{}\"\n\
         \n[[site]]\nlisten = [\"127.0.0.1:{plain}\"]\nroot = \"{}\"\n",
        env.globals(),
        env.port,
        env.path("www").display(),
        env.path("www").display(),
    ));
    let _server = env.start();
    let got = h2tool(&[&env.port.to_string(), "get", "/a.txt", "/index.html"]);
    assert_eq!(streams(&got)[0]["body"], "over h2c\n");
    assert_eq!(streams(&got)[1]["status"], 200);
    // HTTP/1.1 still works there.
    let r = get(env.port, "/a.txt").expect("HTTP/1.1 on the h2c listener");
    assert_eq!(r.status, 200);
    // Without h2c, the preface is an HTTP/1.1 request line it refuses.
    let answer = exchange(plain, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    assert!(
        answer.starts_with(b"HTTP/1.1 505"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
fn http2_config_errors_are_located() {
    let env = Env::new();
    let (cert, key) = ecdsa_cert(&["localhost"]);
    env.write_file("c.pem", cert.as_bytes());
    env.write_file("k.pem", key.as_bytes());
    let tls = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}",
        env.path("c.pem").display(),
        env.path("k.pem").display()
    );
    let www = env.path("www").display().to_string();
    let p = env.port;
    let cases = [
        (
            format!(
                "[[site]]\nlisten = [\"127.0.0.1:{p}\"]\nroot = \"{www}\"\nnames = [\"a\"]\n\n\
                 [[site]]\nlisten = [\"127.0.0.1:{p}\"]\nroot = \"{www}\"\nnames = [\"b\"]\nhttp2 = false\n"
            ),
            "has HTTP/2 off for the site on line",
        ),
        (
            format!(
                "[[site]]\nlisten = [{{ address = \"127.0.0.1:{p}\", h2c = true }}]\nroot = \"{www}\"\n{tls}\n"
            ),
            "\"h2c\" is cleartext HTTP/2",
        ),
        (
            format!(
                "[[site]]\nlisten = [{{ address = \"127.0.0.1:{p}\", h2c = true }}]\nroot = \"{www}\"\nhttp2 = false\n"
            ),
            "this site has \"http2 = false\"",
        ),
        (
            format!(
                "[[site]]\nlisten = [{{ address = \"127.0.0.1:{p}\", h2c = true }}]\nroot = \"{www}\"\nnames = [\"a\"]\n\n\
                 [[site]]\nlisten = [\"127.0.0.1:{p}\"]\nroot = \"{www}\"\nnames = [\"b\"]\n"
            ),
            "an address has one h2c setting",
        ),
        (
            format!(
                "http2_max_concurrent_streams = 0\n[[site]]\nlisten = [\"127.0.0.1:{p}\"]\nroot = \"{www}\"\n"
            ),
            "http2_max_concurrent_streams",
        ),
        (
            format!(
                "http2_window_size = \"1k\"\n[[site]]\nlisten = [\"127.0.0.1:{p}\"]\nroot = \"{www}\"\n"
            ),
            "http2_window_size",
        ),
        (
            format!(
                "[[site]]\nlisten = [{{ address = \"127.0.0.1:{p}\", h2c = \"yes\" }}]\nroot = \"{www}\"\n"
            ),
            "h2c",
        ),
    ];
    for (text, wanted) in cases {
        env.write_config(&text);
        let out = env.baton(&["-t"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{text}");
        assert!(
            stderr.contains(wanted),
            "{wanted:?} not in:\n{stderr}\nfor:\n{text}"
        );
        // Located: FILE:LINE:COL.
        let located = format!("{}:", env.config_path().display());
        assert!(stderr.contains(&located), "not located: {stderr}");
    }
    // And the settings that are fine pass.
    env.write_config(&format!(
        "http2_max_concurrent_streams = 16\nhttp2_max_send_buffer = \"32k\"\n\
         [[site]]\nlisten = [{{ address = \"127.0.0.1:{p}\", h2c = true }}]\nroot = \"{www}\"\n"
    ));
    let out = env.baton(&["-t"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn nghttp_interoperates() {
    assert!(
        have("nghttp"),
        "the HTTP/2 interop test needs nghttp: apt-get install nghttp2-client (.ci/run installs it)"
    );
    let env = Env::new();
    let data = bytes(500_000, 3);
    env.write_file("www/n.bin", &data);
    env.write_config(&tls_config(&env, "", ""));
    let _server = env.start();
    env.write_file("www/m.bin", &data[..1000]);
    let url = format!("https://localhost:{}/n.bin", env.port);
    let url2 = format!("https://localhost:{}/m.bin", env.port);
    let url3 = format!("https://localhost:{}/index.html", env.port);
    let out = Command::new("nghttp")
        .args(["-n", "-s", &url, &url2, &url3])
        .output()
        .expect("nghttp");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches(" 200 ").count(), 3, "{stdout}");
    let body = Command::new("nghttp").arg(&url).output().expect("nghttp");
    assert!(
        body.stdout == data,
        "nghttp got {} bytes",
        body.stdout.len()
    );
}

/// h2spec, found by `BATON_H2SPEC` or at `../shared/bin/h2spec` beside
/// the repository (CI has it there).
fn h2spec() -> Option<std::path::PathBuf> {
    if let Ok(p) = std::env::var("BATON_H2SPEC") {
        return Some(p.into());
    }
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bin/h2spec");
    p.exists().then_some(p)
}

#[test]
fn h2spec_passes_every_case() {
    let Some(h2spec) = h2spec() else {
        eprintln!(
            "\n\n*** SKIPPED: h2spec not found (set BATON_H2SPEC or put it at ../shared/bin/h2spec) ***\n\n"
        );
        return;
    };
    let env = Env::new();
    let h2c = free_port();
    let mut config = tls_config(&env, "", "");
    config.push_str(&format!(
        "\n[[site]]\nlisten = [{{ address = \"127.0.0.1:{h2c}\", h2c = true }}]\nroot = \"{}\"\n",
        env.path("www").display()
    ));
    env.write_config(&config);
    let _server = env.start();
    let run = |args: &[&str]| -> String {
        let out = Command::new(&h2spec).args(args).output().expect("h2spec");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tls = run(&["-h", "127.0.0.1", "-p", &env.port.to_string(), "-t", "-k"]);
    assert!(
        tls.contains("146 tests, 146 passed, 0 skipped, 0 failed"),
        "h2spec over TLS:\n{tls}"
    );
    // h2c: the one case that fails is by design (docs/configuration.md,
    // "HTTP/2"): a listener with h2c serves HTTP/1.1 too, so a connection
    // that does not open with the preface gets an HTTP/1.1 answer, not
    // GOAWAY PROTOCOL_ERROR.
    let plain = run(&["-h", "127.0.0.1", "-p", &h2c.to_string()]);
    assert!(
        plain.contains("146 tests, 146 passed")
            || (plain.contains("146 tests, 145 passed")
                && plain.contains("× 2: Sends invalid connection preface")),
        "h2spec over h2c:\n{plain}"
    );
}
