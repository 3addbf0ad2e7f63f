//! The HTTP/1.1 engine over raw sockets: pipelining, keep-alive limits,
//! HTTP/1.0, 100-continue, bodies, limits, timeouts, malformed input, and a
//! slow client that must not hold up anyone else.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use common::*;

const GET: &str = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";

/// Connections the server's workers hold open, from `baton -s status`.
fn open_connections(env: &Env) -> u64 {
    let out = env.baton(&["-s", "status"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("worker:"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix("connections="))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum()
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let env = Env::new();
    env.write_file("www/a.txt", b"A");
    env.write_file("www/b.txt", b"BB");
    let _s = env.start_config("", "");
    let out = exchange(
        env.port,
        b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\nHEAD /b.txt HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /b.txt HTTP/1.1\r\nHost: a\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    let mut reader = BufReader::new(out.as_slice());
    let a = read_response(&mut reader, false).unwrap();
    let head = read_response(&mut reader, true).unwrap();
    let b = read_response(&mut reader, false).unwrap();
    let last = read_response(&mut reader, false).unwrap();
    assert_eq!(a.body, b"A");
    assert_eq!(head.header("content-length"), Some("2"));
    assert_eq!(b.body, b"BB");
    assert_eq!(last.body, b"A");
    assert!(last.closes());
}

#[test]
fn keepalive_requests_and_idle_timeout() {
    let env = Env::new();
    let _s = env.start_config("keepalive_requests = 3\nkeepalive_timeout = \"1s\"", "");
    let mut s = connect(env.port);
    let mut reader = BufReader::new(s.try_clone().unwrap());
    for i in 1..=3 {
        s.write_all(GET.as_bytes()).unwrap();
        let r = read_response(&mut reader, false).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.closes(), i == 3, "request {i}");
    }
    assert!(closed_by_server(&mut s));

    // Idle past keepalive_timeout: closed by the server.
    let mut s = connect(env.port);
    let mut reader = BufReader::new(s.try_clone().unwrap());
    s.write_all(GET.as_bytes()).unwrap();
    assert!(!read_response(&mut reader, false).unwrap().closes());
    let started = Instant::now();
    assert!(closed_by_server(&mut s));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(700), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

#[test]
fn http10_with_and_without_keep_alive() {
    let env = Env::new();
    let _s = env.start_config("", "");
    let out = exchange(env.port, b"GET / HTTP/1.0\r\n\r\n");
    let r = parse_responses(&out, false);
    assert_eq!(r.len(), 1);
    assert!(r[0].closes());
    assert!(out.starts_with(b"HTTP/1.1 200"));

    let mut s = connect(env.port);
    let mut reader = BufReader::new(s.try_clone().unwrap());
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let r = read_response(&mut reader, false).unwrap();
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
}

#[test]
fn expect_100_continue_and_request_bodies() {
    let env = Env::new();
    env.write_file("www/a.txt", b"A");
    let _s = env.start_config("", "");
    let mut s = connect(env.port);
    let mut reader = BufReader::new(s.try_clone().unwrap());
    s.write_all(
        b"GET /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
    reader.read_line(&mut line).unwrap();
    s.write_all(b"hello").unwrap();
    let r = read_response(&mut reader, false).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"A"[..]));
    assert!(!r.closes());

    // A chunked body is read and discarded, and the next request found.
    s.write_all(
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n3;ext=x\r\nabc\r\n0\r\nTrailer: 1\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .unwrap();
    let r = read_response(&mut reader, false).unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert_eq!(read_response(&mut reader, false).unwrap().body, b"A");
    // And a Content-Length one, sent in pieces.
    s.write_all(b"GET /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234")
        .unwrap();
    s.flush().unwrap();
    s.write_all(b"56789GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut reader, false).unwrap().body, b"A");
    assert_eq!(read_response(&mut reader, false).unwrap().body, b"A");
}

#[test]
fn malformed_input_is_refused_and_closed() {
    let env = Env::new();
    let _s = env.start_config("max_body_size = 100", "");
    let cases: &[(&[u8], u16)] = &[
        (b"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", 400), // bare CR
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n  folded\r\n\r\n", 400), // obs-fold
        (b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: y\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX(: y\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ), // smuggling
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX", 400),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400), // NUL
        (b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400), // no Host in 1.1
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"GET / HTTP/1.7\r\nHost: a\r\n\r\n", 505),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400), // TLS hello
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n", 413),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n",
            413,
        ),
    ];
    for (raw, status) in cases {
        let out = exchange(env.port, raw);
        let shown = String::from_utf8_lossy(raw);
        assert_eq!(first_status(&out), Some(*status), "{shown:?}");
        let r = parse_responses(&out, false);
        assert_eq!(r.len(), 1, "{shown:?}: exactly one response, then closed");
        assert!(r[0].closes(), "{shown:?}");
    }
    // The server is still fine.
    assert_eq!(get(env.port, "/").unwrap().status, 200);
}

#[test]
fn configured_limits_give_431_414_413() {
    let env = Env::new();
    let _s = env.start_config(
        "max_header_size = 2048\nmax_headers = 10\nmax_uri_length = 100\nmax_body_size = 10",
        "",
    );
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
        "a".repeat(3000)
    );
    assert_eq!(
        first_status(&exchange(env.port, big_header.as_bytes())),
        Some(431)
    );
    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..10 {
        many.push_str(&format!("X-{i}: y\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(
        first_status(&exchange(env.port, many.as_bytes())),
        Some(431)
    );
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(200));
    assert_eq!(
        first_status(&exchange(env.port, long_uri.as_bytes())),
        Some(414)
    );
    let body = b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n";
    assert_eq!(first_status(&exchange(env.port, body)), Some(413));
    // Just within every limit: served.
    let ok = format!(
        "GET /?{} HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789",
        "q".repeat(90)
    );
    assert_eq!(first_status(&exchange(env.port, ok.as_bytes())), Some(200));
}

#[test]
fn header_and_body_timeouts() {
    let env = Env::new();
    let _s = env.start_config("header_timeout = \"1s\"\nbody_timeout = \"1s\"", "");
    // Slowloris: a head that never ends gets a 408 and is closed.
    let mut s = connect(env.port);
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-1: a\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert_eq!(first_status(&out), Some(408));
    // A body that stops coming: the connection is dropped.
    let mut s = connect(env.port);
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc")
        .unwrap();
    let started = Instant::now();
    assert!(closed_by_server(&mut s));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_slow_reader_neither_blocks_others_nor_stays_forever() {
    let env = Env::new();
    let big = vec![b'x'; 64 << 20];
    env.write_file("www/big.bin", &big);
    let one_worker = "send_timeout = \"2s\"";
    let text = env
        .config_with(one_worker, "")
        .replace("workers = 2", "workers = 1");
    env.write_config(&text);
    let _s = env.start();
    // A client that asks for 64 MiB and reads none of it: the worker's
    // socket buffer fills, and it must go on serving everyone else.
    let mut slow = connect(env.port);
    slow.write_all(b"GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    slow.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let started = Instant::now();
    for _ in 0..20 {
        let r = get(env.port, "/").unwrap();
        assert_eq!(r.status, 200);
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // The one worker's RSS did not swallow the file.
    let status = env.status();
    let worker = status.serving_pids()[0];
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{worker}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(rss_kib < 32 * 1024, "worker RSS {rss_kib} KiB");
    // Past send_timeout without reading, the connection is dropped.
    assert!(wait_until(Duration::from_secs(10), || open_connections(
        &env
    ) == 0));
    drop(slow);
}

#[test]
fn max_connections_leaves_the_rest_queued() {
    let env = Env::new();
    let text = env
        .config_with("max_connections = 2", "")
        .replace("workers = 2", "workers = 1");
    env.write_config(&text);
    let _s = env.start();
    let a = connect(env.port);
    let b = connect(env.port);
    assert!(wait_until(Duration::from_secs(5), || open_connections(
        &env
    ) == 2));
    let mut c = connect(env.port);
    c.set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    c.write_all(GET.as_bytes()).unwrap();
    let mut buf = [0u8; 1];
    assert!(c.read(&mut buf).is_err(), "served past max_connections");
    drop(a);
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = read_response(&mut BufReader::new(c), false).unwrap();
    assert_eq!(r.status, 200);
    drop(b);
}

#[test]
fn date_and_server_headers() {
    let env = Env::new();
    {
        let _s = env.start_config("", "");
        let r = get(env.port, "/").unwrap();
        assert_eq!(r.header("server"), Some("baton"));
        assert!(httpdate::parse_http_date(r.header("date").unwrap()).is_ok());
    }
    let env = Env::new();
    {
        let _s = env.start_config("server_token = false", "");
        let r = get(env.port, "/").unwrap();
        assert_eq!(r.header("server"), None);
        assert!(r.header("date").is_some());
    }
    let env = Env::new();
    let _s = env.start_config("server_token = \"web\"", "");
    assert_eq!(get(env.port, "/").unwrap().header("server"), Some("web"));
}

/// The TCP state (as /proc/net/tcp numbers it: 1 established, 3 SYN-RECV)
/// of the server's end of `client`, a connection to 127.0.0.1:`port`.
fn server_end_state(port: u16, client: &std::net::TcpStream) -> Option<u8> {
    let client_port = client.local_addr().ok()?.port();
    // 127.0.0.1 in /proc/net/tcp's byte order, then the port in hex.
    let local = format!("0100007F:{port:04X}");
    let remote = format!("0100007F:{client_port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .ok()?
        .lines()
        .skip(1)
        .find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.get(1) == Some(&local.as_str()) && f.get(2) == Some(&remote.as_str()))
                .then(|| u8::from_str_radix(f.get(3)?, 16).ok())
                .flatten()
        })
}

#[test]
fn defer_accept_leaves_silent_connections_to_the_kernel() {
    // On by default (1 s): a connection is handed to a worker with its
    // first bytes, not when the handshake completes.
    let env = Env::new();
    let _s = env.start_config("header_timeout = \"2s\"", "");
    let mut silent = connect(env.port);
    // Its server end is a half-open request in the listener (SYN-RECV),
    // though the client sees it established: no worker can have it. Read
    // at once, well inside the second.
    assert_eq!(server_end_state(env.port, &silent), Some(3));
    // One that speaks is handed over at once.
    let mut talking = connect(env.port);
    talking.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    assert!(wait_until(Duration::from_secs(5), || open_connections(
        &env
    ) >= 1));
    assert_eq!(server_end_state(env.port, &talking), Some(1));
    // When the second is up, the kernel hands the silent one over anyway;
    // then header_timeout applies as to any other.
    assert!(wait_until(Duration::from_secs(5), || open_connections(
        &env
    ) == 2));
    assert_eq!(server_end_state(env.port, &silent), Some(1));
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    assert!(closed_by_server(&mut silent));
    assert!(started.elapsed() < Duration::from_secs(8));
    drop(talking);

    // "0s", by a reload: handed over as soon as the handshake completes.
    // The new generation's workers set it on the same listen socket before
    // they report ready, and `-s reload` returns after that.
    env.write_config(&env.config_with("defer_accept = \"0s\"", ""));
    assert!(env.reload().status.success());
    let silent = connect(env.port);
    assert_eq!(server_end_state(env.port, &silent), Some(1));
    assert!(wait_until(Duration::from_secs(5), || open_connections(
        &env
    ) >= 1));
}

// ---- Issue 11: request lines, absolute form, methods ----

#[test]
fn a_malformed_request_line_is_400_and_only_a_wrong_version_505() {
    let env = Env::new();
    env.write_file("www/sp ace.txt", b"x");
    let _s = env.start_config("", "");
    let cases: &[(&[u8], u16)] = &[
        (b"GET /sp ace.txt HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"xx GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"\x01GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET / / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
        (b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET /sp ace.txt HTTP/2.0\r\nHost: a\r\n\r\n", 400),
        // Well-formed, with a version this server does not speak.
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
        (b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
        (b"BREW /pot HTTP/3.1\r\nHost: a\r\n\r\n", 505),
    ];
    for (raw, status) in cases {
        let out = exchange(env.port, raw);
        let shown = String::from_utf8_lossy(raw);
        assert_eq!(first_status(&out), Some(*status), "{shown:?}");
        let r = parse_responses(&out, false);
        assert_eq!(r.len(), 1, "{shown:?}: one response, then closed");
        assert!(r[0].closes(), "{shown:?}");
    }
    // The encoded form is the way to ask for it.
    assert_eq!(get(env.port, "/sp%20ace.txt").unwrap().body, b"x");
}

#[test]
fn an_absolute_form_target_with_an_empty_host_is_400() {
    let env = Env::new();
    env.write_file("www/f.txt", b"f");
    let _s = env.start_config("", "");
    for target in [
        "http:///f.txt",
        "HTTP:///f.txt",
        "https:///f.txt",
        "http://?x",
        "http://",
    ] {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let out = exchange(env.port, raw.as_bytes());
        assert_eq!(first_status(&out), Some(400), "{target}");
        assert!(parse_responses(&out, false)[0].closes(), "{target}");
    }
    // With a host it is served, and an empty Host header beside an
    // origin-form target is still allowed (RFC 9112 3.2).
    let r = request(
        env.port,
        "GET http://localhost/f.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"f"[..]));
    let r = request(
        env.port,
        "GET /f.txt HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn unknown_methods_are_501_and_known_ones_405() {
    let env = Env::new();
    env.write_file("www/f.txt", b"f");
    std::fs::create_dir_all(env.path("logs")).unwrap();
    let log = env.path("logs/access.log");
    let _s = env.start_config(&format!("access_log = \"{}\"", log.display()), "");
    let mut s = connect(env.port);
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let cases: &[(&str, u16)] = &[
        ("BREW", 501),
        ("get", 501), // methods are case-sensitive (RFC 9110 9.1)
        ("PROPFIND", 501),
        ("POST", 405),
        ("PUT", 405),
        ("DELETE", 405),
        ("PATCH", 405),
        ("OPTIONS", 405),
        ("TRACE", 405),
        ("GET", 200),
    ];
    // On one connection, each with a body: the connection goes on.
    for (method, status) in cases {
        write!(
            s,
            "{method} /f.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
        )
        .unwrap();
        let r = read_response(&mut reader, false).unwrap();
        assert_eq!(r.status, *status, "{method}");
        assert!(!r.closes(), "{method}");
        match status {
            405 => assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method}"),
            _ => assert_eq!(r.header("allow"), None, "{method}"),
        }
    }
    // OPTIONS for the whole server is answered the same way.
    s.write_all(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let r = read_response(&mut reader, false).unwrap();
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    // The access log records what was sent back.
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(3), || logged().lines().count()
            == cases.len() + 1),
        "{}",
        logged()
    );
    for (method, status) in cases {
        let line = logged()
            .lines()
            .find(|l| l.contains(&format!("\"{method} /f.txt HTTP/1.1\"")))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no line for {method}:\n{}", logged()));
        assert!(
            line.contains(&format!("\"{method} /f.txt HTTP/1.1\" {status} ")),
            "{line}"
        );
    }
}

// ---- Error closes: a response, then a lingering close (issue 11) ----

/// After the server's answer and its FIN, whether it still reads (and
/// throws away) what the client sends, for a while: a lingering close. A
/// socket closed outright answers the first bytes with a reset, which is
/// what can destroy a response the client has not read yet.
fn server_lingers(s: &mut std::net::TcpStream) -> bool {
    let chunk = [b'x'; 1024];
    // Well inside the server's lingering close (1 s).
    !wait_until(Duration::from_millis(300), || s.write_all(&chunk).is_err())
}

/// A chunked body refused as malformed (400) or too large (413) is answered
/// and then closed the way a refused Content-Length body is: lingering, so
/// the client's unread input never turns into a reset.
#[test]
fn chunked_body_errors_close_lingering() {
    let env = Env::new();
    let _s = env.start_config("max_body_size = 100", "");
    for (chunk, status) in [("zz\r\n", 400), ("1000\r\n", 413)] {
        let mut s = connect(env.port);
        let req =
            format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}");
        s.write_all(req.as_bytes()).unwrap();
        let mut reader = BufReader::new(s.try_clone().unwrap());
        let r = read_response(&mut reader, false).unwrap();
        assert_eq!(r.status, status, "{chunk:?}");
        assert!(r.closes());
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        assert!(
            server_lingers(&mut s),
            "{chunk:?}: closed without lingering"
        );
    }
}

/// A request body that stops coming is answered with a 408 before the
/// connection is closed (lingering), like a head that stops coming.
#[test]
fn a_body_timeout_is_answered_with_408() {
    let env = Env::new();
    let _s = env.start_config("body_timeout = \"1s\"", "");
    let mut s = connect(env.port);
    s.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc")
        .unwrap();
    let started = Instant::now();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let r = read_response(&mut reader, false).expect("a response before the close");
    assert_eq!(r.status, 408);
    assert!(r.closes());
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(server_lingers(&mut s), "closed without lingering");
}
