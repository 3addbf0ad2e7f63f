//! HTTP/2 in front, HTTP/1.1 to the upstream: bodies of every framing the
//! upstream uses (length, chunked, close-delimited) streamed down with
//! flow control, request bodies streamed up (with a length, and without
//! one: chunked), the head translated (request line and Host from the
//! pseudo-headers, cookies joined, no `te` or connection fields), a
//! failed upstream's 502, many proxied streams at once, pooling kept when
//! another stream's upstream closes, and WebSocket over HTTP/2 (RFC 8441:
//! an extended CONNECT proxied as the HTTP/1.1 handshake).

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::backend::{Backend, pattern, proxy_config, quoted, route, upstream};
use common::h2::{Held, h2tool, sha256_hex};
use common::tls::ecdsa_cert;
use common::websocket::WsBackend;
use common::*;
use serde_json::Value;

/// A TLS site proxying `/app/` to `backend` (prefix stripped).
fn start(env: &Env, backend: &Backend) -> Server {
    start_to(env, &quoted(backend))
}

/// The same to the server address `server` (a quoted TOML string).
fn start_to(env: &Env, server: &str) -> Server {
    start_with(env, server, "")
}

/// A certificate for localhost in `env`, and the site's `tls` line for it.
fn tls_line(env: &Env) -> String {
    let (cert, key) = ecdsa_cert(&["localhost"]);
    env.write_file("tls/cert.pem", cert.as_bytes());
    env.write_file("tls/key.pem", key.as_bytes());
    format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}\n",
        env.path("tls/cert.pem").display(),
        env.path("tls/key.pem").display()
    )
}

/// The same with more top-level settings.
fn start_with(env: &Env, server: &str, global: &str) -> Server {
    let tls = tls_line(env);
    let config = proxy_config(
        env,
        global,
        &upstream("app", &[server.to_owned()], ""),
        &format!("{tls}{}", route("/app/", "app")),
    );
    env.write_config(&config);
    env.start()
}

fn streams(v: &Value) -> &Vec<Value> {
    v["streams"].as_array().expect("streams")
}

fn expected_sha(n: u64) -> String {
    let body: Vec<u8> = (0..n).map(pattern).collect();
    sha256_hex(&body)
}

#[test]
fn responses_of_every_framing_stream_down_byte_exact() {
    let backend = Backend::start("b1");
    let env = Env::new();
    let _server = start(&env, &backend);
    let sizes = [0u64, 1, 16_385, 100_000, 1_048_576];
    let mut paths = Vec::new();
    for kind in ["cl", "chunked", "close"] {
        for n in sizes {
            paths.push(format!("/app/{kind}/{n}"));
        }
    }
    let port = env.port.to_string();
    let mut args = vec!["--tls", port.as_str(), "get"];
    args.extend(paths.iter().map(String::as_str));
    let got = h2tool(&args);
    assert_eq!(got["alpn"], "h2");
    for s in streams(&got) {
        let path = s["path"].as_str().unwrap_or_default();
        let n: u64 = path.rsplit('/').next().unwrap_or("0").parse().unwrap_or(0);
        assert_eq!(s["status"], 200, "{path}: {s}");
        assert_eq!(s["done"], true, "{path}: {s}");
        assert_eq!(s["len"], n, "{path}");
        assert_eq!(s["sha256"], expected_sha(n).as_str(), "{path}: wrong bytes");
        assert_eq!(s["headers"]["x-backend"], "b1", "{path}");
        for h in ["connection", "transfer-encoding", "keep-alive"] {
            assert!(s["headers"].get(h).is_none(), "{path}: {h} in {s}");
        }
    }
}

#[test]
fn the_request_head_is_translated_for_http11() {
    let backend = Backend::start("b1");
    let env = Env::new();
    let _server = start(&env, &backend);
    let got = h2tool(&[
        "--tls",
        &env.port.to_string(),
        "get",
        "/app/echo?q=1",
        "H:cookie: a=1",
        "H:cookie: b=2",
        "H:te: trailers",
        "H:x-custom: yes",
    ]);
    let s = &streams(&got)[0];
    assert_eq!(s["status"], 200, "{s}");
    let echoed = s["body"].as_str().unwrap_or_default().to_ascii_lowercase();
    assert!(echoed.starts_with("get /echo?q=1 http/1.1\r\n"), "{echoed}");
    assert!(echoed.contains("host: localhost\r\n"), "{echoed}");
    assert!(echoed.contains("cookie: a=1; b=2\r\n"), "{echoed}");
    assert!(echoed.contains("x-custom: yes\r\n"), "{echoed}");
    assert!(!echoed.contains("\r\nte:"), "{echoed}");
    assert!(!echoed.contains(":authority"), "{echoed}");
    assert!(echoed.contains("x-forwarded-for: 127.0.0.1"), "{echoed}");
}

#[test]
fn request_bodies_stream_up_with_and_without_a_length() {
    let backend = Backend::start("b1");
    let env = Env::new();
    let _server = start(&env, &backend);
    let port = env.port.to_string();
    for (len, how) in [(0u64, ""), (5, ""), (300_000, ""), (300_000, "chunked")] {
        let mut args = vec!["--tls", port.as_str(), "post", "/app/echo"];
        let l = len.to_string();
        args.push(&l);
        if !how.is_empty() {
            args.push(how);
        }
        let got = h2tool(&args);
        let s = &streams(&got)[0];
        assert_eq!(s["status"], 200, "{len} {how}: {got}");
        assert_eq!(
            s["headers"]["x-body-len"],
            len.to_string().as_str(),
            "{len} {how}"
        );
        let body: Vec<u8> = (0..len).map(pattern).collect();
        let sum = common::backend::checksum(&body, common::backend::FNV_START);
        assert_eq!(
            s["headers"]["x-body-sum"],
            format!("{sum:x}").as_str(),
            "{len} {how}"
        );
    }
}

#[test]
fn many_proxied_streams_at_once() {
    let backend = Backend::start("b1");
    let env = Env::new();
    let _server = start(&env, &backend);
    let port = env.port.to_string();
    let got = h2tool(&[
        "--tls",
        &port,
        "many",
        "60",
        "/app/cl/70000",
        "/app/chunked/5000",
        "/index.html",
    ]);
    for s in streams(&got) {
        assert_eq!(s["status"], 200, "{s}");
        assert_eq!(s["done"], true, "{s}");
    }
    assert!(streams(&got).iter().filter(|s| s["len"] == 70_000).count() == 20);
    let sixty = streams(&got)
        .iter()
        .filter(|s| s["path"] == "/app/cl/70000");
    assert!(
        sixty
            .clone()
            .all(|s| s["sha256"] == expected_sha(70_000).as_str())
    );
}

#[test]
fn an_upstream_closing_does_not_keep_other_streams_connections_from_the_pool() {
    // Streams of one HTTP/2 connection to two upstreams: one answers
    // close-delimited (it closes after each response), the other with a
    // length (its connections go back to the pool). A FIN belongs to the
    // stream whose upstream sent it: the other upstream's connections are
    // reused round after round.
    let closing = Backend::start("closing");
    let pooled = Backend::start("pooled");
    let env = Env::new();
    let tls = tls_line(&env);
    let upstreams =
        upstream("closing", &[quoted(&closing)], "") + &upstream("pooled", &[quoted(&pooled)], "");
    let routes = tls + &route("/c/", "closing") + &route("/p/", "pooled");
    env.write_config(&proxy_config(&env, "", &upstreams, &routes));
    let _server = env.start();
    let port = env.port.to_string();
    let rounds = 10;
    for _ in 0..rounds {
        let mut args = vec!["--tls", &port, "get"];
        for _ in 0..5 {
            args.extend(["/c/close/3000", "/p/cl/3000"]);
        }
        let got = h2tool(&args);
        for s in streams(&got) {
            assert_eq!(s["status"], 200, "{s}");
            assert_eq!(s["done"], true, "{s}");
            assert_eq!(s["len"], 3000, "{s}");
        }
    }
    assert_eq!(closing.connections(), 5 * rounds);
    // At most one per concurrent stream in each of the 2 workers' pools
    // (a round's connection lands on either worker), made in their first
    // rounds: 10, where a FIN told to every stream made about 30.
    let made = pooled.connections();
    assert!(
        made <= 5 * 2,
        "{made} connections for {} requests to a keep-alive upstream: \
         its pool lost them to the other upstream's FINs",
        5 * rounds
    );
}

#[test]
fn an_upstream_that_refuses_gets_a_502_over_http2() {
    let env = Env::new();
    // Nothing listens there.
    let _server = start_to(&env, &format!("\"127.0.0.1:{}\"", free_port()));
    let got = h2tool(&[
        "--tls",
        &env.port.to_string(),
        "get",
        "/app/cl/10",
        "/index.html",
    ]);
    assert_eq!(streams(&got)[0]["status"], 502, "{got}");
    assert_eq!(streams(&got)[0]["done"], true, "{got}");
    // The connection goes on: the other stream is served.
    assert_eq!(streams(&got)[1]["status"], 200, "{got}");
}

/// An upstream's 103 Early Hints reaches the HTTP/2 client as an interim
/// head before the final 200, as it reaches HTTP/1.1 clients.
#[test]
fn interim_responses_are_passed_on_over_http2() {
    let backend = Backend::start("b1");
    let env = Env::new();
    let _server = start(&env, &backend);
    let got = h2tool(&["--tls", &env.port.to_string(), "get", "/app/hints"]);
    let s = &streams(&got)[0];
    assert_eq!(s["status"], 200, "{s}");
    assert_eq!(s["interim"], serde_json::json!([103]), "{s}");
    assert_eq!(s["done"], true, "{s}");
}

/// A proxied stream whose request body stops arriving is ended after
/// `body_timeout`, as an HTTP/1.1 request is, not after the (longer)
/// `send_timeout`.
#[test]
fn a_stalled_request_body_is_ended_after_the_body_timeout() {
    let backend = Backend::start("b1");
    let env = Env::new();
    let server = start_with(
        &env,
        &quoted(&backend),
        "body_timeout = \"1s\"\nsend_timeout = \"60s\"\n",
    );
    let got = h2tool(&[
        "--tls",
        &env.port.to_string(),
        "stall-body",
        "/app/echo",
        "10000",
        "30",
    ]);
    let s = &streams(&got)[0];
    let after = got["ended_after"].as_f64().unwrap_or(99.0);
    assert!(
        s["reset"].is_number() || s["done"] == true,
        "the stream was not ended: {got}; {}",
        server.log_text()
    );
    assert!(
        after < 10.0,
        "ended after {after:.1} s, not body_timeout: {got}"
    );
}

/// A TLS site whose `/ws/` route goes to the WebSocket echo `ws`, with
/// `route_extra` on the route and `grace`.
fn start_ws(env: &Env, ws: &WsBackend, route_extra: &str, grace: &str) -> Server {
    let tls = tls_line(env);
    let upstreams = upstream("ws", &[format!("\"127.0.0.1:{}\"", ws.port)], "");
    let routes = format!("{tls}{}{route_extra}", route("/ws/", "ws"));
    let config = proxy_config(env, "", &upstreams, &routes)
        .replace("grace = \"5s\"", &format!("grace = \"{grace}\""));
    env.write_config(&config);
    env.start()
}

#[test]
fn websocket_over_http2_is_proxied_as_the_http11_handshake() {
    let ws = WsBackend::start();
    let env = Env::new();
    let _server = start_ws(&env, &ws, "", "5s");
    let port = env.port.to_string();
    let got = h2tool(&["--tls", &port, "ws", "/ws/chat", "hello", "wörld", "third"]);
    assert_eq!(
        got["connect_protocol"], true,
        "SETTINGS_ENABLE_CONNECT_PROTOCOL: {got}"
    );
    assert_eq!(got["status"], 200, "{got}");
    assert!(
        got["headers"].get("sec-websocket-accept").is_none(),
        "the upstream's accept is for our key, not the client's: {got}"
    );
    let echoes: Vec<&str> = got["echoes"]
        .as_array()
        .expect("echoes")
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    // Latin-1 on the tool's side: the bytes of "wörld" come back as sent.
    assert_eq!(echoes, ["hello", "w\u{c3}\u{b6}rld", "third"], "{got}");
    // The client ended its side; the upstream's end follows.
    assert_eq!(got["done"], true, "{got}");
    assert_eq!(ws.upgraded.load(Ordering::SeqCst), 1);
}

#[test]
fn extended_connect_without_a_websocket_route_gets_501() {
    let ws = WsBackend::start();
    let env = Env::new();
    let _server = start_ws(&env, &ws, "websocket = false\n", "5s");
    let port = env.port.to_string();
    // A route that does not allow WebSockets, and a static path.
    for path in ["/ws/chat", "/index.html"] {
        let got = h2tool(&["--tls", &port, "ws", path, "hello"]);
        assert_eq!(got["status"], 501, "{path}: {got}");
    }
    assert_eq!(ws.upgraded.load(Ordering::SeqCst), 0);
    assert_eq!(ws.plain.load(Ordering::SeqCst), 0, "nothing went up");
    // A plain CONNECT (a TCP tunnel, not offered) is answered at once,
    // not after a request body that never ends.
    let got = h2tool(&["--tls", &port, "connect", "example.test:443"]);
    assert_eq!(got["status"], 405, "{got}");
    assert!(got["after"].as_f64().is_some_and(|t| t < 5.0), "{got}");
}

#[test]
fn a_websocket_over_http2_gets_close_1001_when_its_worker_drains() {
    let ws = WsBackend::start();
    let env = Env::new();
    let _server = start_ws(&env, &ws, "", "3s");
    let port = env.port.to_string();
    let held = Held::start(&["--tls", &port, "ws", "/ws/chat", "first", "second", "hold"]);
    let started = Instant::now();
    assert!(env.reload().status.success());
    let got = held.finish();
    assert_eq!(got["echoes"][0], "first", "{got}");
    // Before the grace period (3 s) is over: a close frame 1001 (going
    // away), at a frame boundary, then the end of the stream.
    let frames = got["frames"].as_array().expect("frames");
    let close = frames.iter().find(|f| f[0] == 8);
    assert!(
        close.is_some_and(|f| f[1].as_str().is_some_and(|p| p.starts_with("\u{3}\u{e9}"))),
        "no close frame 1001: {got}"
    );
    assert_eq!(got["done"], true, "{got}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The new generation takes new WebSockets.
    let got = h2tool(&["--tls", &port, "ws", "/ws/chat", "again"]);
    assert_eq!(got["echoes"][0], "again", "{got}");
}

#[test]
fn an_upstream_that_does_not_complete_the_websocket_handshake_resets_the_stream() {
    use std::io::{BufRead, BufReader, Write};
    // An upstream that answers `/wrong` with a 101 whose accept is not for
    // the key, and `/plain` with a 200 that switches nothing: neither may
    // reach the client as an open tunnel (a 200 to its CONNECT).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(s);
                let mut first = String::new();
                let mut line = String::new();
                r.read_line(&mut first).ok();
                while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let answer: &[u8] = if first.contains("/wrong") {
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                      Connection: Upgrade\r\nSec-WebSocket-Accept: bm90IGZvciB5b3U=\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                };
                let _ = r.get_mut().write_all(answer);
                std::thread::sleep(Duration::from_secs(5));
            });
        }
    });
    let env = Env::new();
    let tls = tls_line(&env);
    let upstreams = upstream("ws", &[format!("\"127.0.0.1:{port}\"")], "");
    let routes = format!("{tls}{}", route("/ws/", "ws"));
    env.write_config(&proxy_config(&env, "", &upstreams, &routes));
    let _server = env.start();
    for path in ["/ws/wrong", "/ws/plain"] {
        let got = h2tool(&["--tls", &env.port.to_string(), "ws", path, "hello"]);
        assert_ne!(got["status"], 200, "{path}: {got}");
        assert_eq!(got["reset"], 2, "{path}: INTERNAL_ERROR expected: {got}");
    }
}
