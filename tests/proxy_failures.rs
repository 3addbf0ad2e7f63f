//! When upstreams fail: truncation never passes for a whole response,
//! retries follow nginx's rules, 502/503/504, passive health, and every
//! failure is logged once with the server and the reason.

mod common;

use std::io::{BufReader, Write};

use common::backend::{self, Backend, proxy_config, quoted, read_reply, route, upstream};
use common::{Env, Server, connect, free_port};

fn start(env: &Env, upstreams: &str) -> Server {
    let text = proxy_config(env, "", upstreams, &route("/api/", "app"))
        .replace("workers = 2", "workers = 1");
    env.write_config(&text);
    env.start()
}

fn send(port: u16, raw: &[u8]) -> backend::Reply {
    let mut s = connect(port);
    s.write_all(raw).unwrap();
    let mut r = BufReader::new(s);
    read_reply(&mut r, false, &mut Vec::new()).unwrap()
}

fn get(port: u16, path: &str) -> backend::Reply {
    send(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn post(port: u16, path: &str) -> backend::Reply {
    send(
        port,
        format!(
            "POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
        )
        .as_bytes(),
    )
}

/// A server address nothing listens on.
fn dead() -> String {
    format!("\"127.0.0.1:{}\"", free_port())
}

#[test]
fn a_backend_dying_mid_response_truncates_never_completes() {
    let env = Env::new();
    let b = Backend::start("b");
    let server = start(&env, &upstream("app", &[quoted(&b)], ""));
    let r = get(env.port, "/api/die/200000");
    assert_eq!(r.status, 200);
    assert!(!r.complete, "a cut response passed as complete");
    assert!(r.body.len() < 200_000);
    assert!(
        backend::is_pattern(&r.body),
        "the bytes that came are right"
    );
    // Chunked to the client (HTTP/1.1 and a close-delimited upstream is
    // fine, but a cut Content-Length must never become a clean end).
    let log = server.log_text();
    assert_eq!(
        log.matches("response body cut short").count(),
        1,
        "logged once:\n{log}"
    );
    assert!(log.contains(&format!(
        "server 127.0.0.1:{}: response body cut short",
        b.port
    )));
}

#[test]
fn a_cut_or_malformed_response_head_is_502() {
    let env = Env::new();
    let b = Backend::start("b");
    let server = start(&env, &upstream("app", &[quoted(&b)], "max_fails = 0"));
    // Nothing of either reached the client, and the only server was
    // tried: 502.
    for path in ["/api/cuthead", "/api/badhead"] {
        let r = get(env.port, path);
        assert_eq!(r.status, 502, "{path}");
    }
    let log = server.log_text();
    assert_eq!(log.matches("response head cut short").count(), 1, "{log}");
    assert_eq!(
        log.matches("conflicting Content-Length").count(),
        1,
        "{log}"
    );
    // The server is fine otherwise.
    assert_eq!(get(env.port, "/api/cl/3").status, 200);
}

#[test]
fn no_server_left_is_502_then_all_down_is_503_with_retry_after() {
    let env = Env::new();
    let addr = dead();
    let server = start(
        &env,
        &upstream("app", std::slice::from_ref(&addr), "fail_timeout = \"30s\""),
    );
    let r = get(env.port, "/api/x");
    assert_eq!(r.status, 502);
    let r = get(env.port, "/api/x");
    assert_eq!(r.status, 503);
    // When the server's fail_timeout ends, rounded up: the 30 s began a
    // moment ago.
    let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((25..=30).contains(&after), "{after}");
    let log = server.log_text();
    let addr = addr.trim_matches('"');
    assert_eq!(
        log.matches(&format!("server {addr}: connect: Connection refused"))
            .count(),
        1,
        "{log}"
    );
    assert!(
        log.contains(&format!("server {addr} marked down for 30s")),
        "{log}"
    );
}

#[test]
fn a_slow_upstream_is_504() {
    let env = Env::new();
    let b = Backend::start("b");
    let server = start(
        &env,
        &upstream(
            "app",
            &[quoted(&b)],
            "read_timeout = \"300ms\"\nmax_fails = 0",
        ),
    );
    let r = get(env.port, "/api/delay/3000");
    assert_eq!(r.status, 504);
    assert!(server.log_text().contains("timed out"));
    // A fast one on the same upstream still works.
    assert_eq!(get(env.port, "/api/cl/3").status, 200);
}

#[test]
fn get_is_retried_on_the_next_server_post_is_not() {
    let env = Env::new();
    let b = Backend::start("good");
    // The first server hangs up on every request after reading it; the
    // backup only serves when the first fails.
    let closer = Backend::start("closer");
    let servers = [
        quoted(&closer),
        format!("{{ address = \"{}\", backup = true }}", b.address()),
    ];
    let server = start(&env, &upstream("app", &servers, "max_fails = 0"));
    let r = get(env.port, "/api/hangup");
    assert_eq!(
        (r.status, r.header("x-backend")),
        (200, Some("good")),
        "{}",
        server.log_text()
    );
    assert_eq!(b.requests(), 1);
    // The POST's bytes reached the first server: never sent again.
    let r = post(env.port, "/api/hangup");
    assert_eq!(r.status, 502);
    assert_eq!(b.requests(), 1, "the POST was sent twice");
    // Refused before anything was sent: a POST goes to the next server.
    let servers = [
        dead(),
        format!("{{ address = \"{}\", backup = true }}", b.address()),
    ];
    let env2 = Env::new();
    let _server2 = start(&env2, &upstream("app", &servers, "max_fails = 0"));
    let r = post(env2.port, "/api/echo");
    assert_eq!((r.status, r.header("x-body-len")), (200, Some("5")));
}

#[test]
fn passive_health_marks_a_failing_server_down() {
    let env = Env::new();
    let b = Backend::start("good");
    let bad = dead();
    let server = start(
        &env,
        &upstream(
            "app",
            &[bad.clone(), quoted(&b)],
            "max_fails = 2\nfail_timeout = \"60s\"",
        ),
    );
    for _ in 0..20 {
        assert_eq!(get(env.port, "/api/cl/1").status, 200);
    }
    // Two failures (each retried on the good server), then down: the
    // dead server is not tried again within fail_timeout.
    let log = server.log_text();
    let bad = bad.trim_matches('"');
    assert_eq!(
        log.matches(&format!("server {bad}: connect")).count(),
        2,
        "{log}"
    );
    assert_eq!(log.matches("marked down").count(), 1, "{log}");
    assert_eq!(b.requests(), 20);
}

#[test]
fn pooled_connections_are_reused_and_stale_ones_retried() {
    let env = Env::new();
    let b = Backend::start("b");
    let server = start(&env, &upstream("app", &[quoted(&b)], "max_fails = 1"));
    for _ in 0..20 {
        assert_eq!(get(env.port, "/api/cl/10").status, 200);
    }
    assert_eq!(
        b.connections(),
        1,
        "one upstream connection for 20 requests"
    );
    // The server closed the idle connection: seen before reuse.
    let c = Backend::start("c");
    let env2 = Env::new();
    let _server2 = start(&env2, &upstream("app", &[quoted(&c)], ""));
    for _ in 0..5 {
        assert_eq!(get(env2.port, "/api/closeidle").status, 200);
    }
    assert_eq!(c.connections(), 5);
    // The server drops the kept-alive connection as it is reused: retried
    // on a fresh one, not a failure (max_fails = 1 would mark it down).
    for _ in 0..5 {
        let r = get(env.port, "/api/stale");
        assert_eq!(r.status, 200);
    }
    let log = server.log_text();
    assert!(!log.contains("marked down"), "{log}");
    assert!(!log.contains("[WARN] baton worker"), "{log}");
    // keepalive_requests: a pooled connection serves that many, then
    // closes.
    let e = Backend::start("e");
    let env4 = Env::new();
    let _server4 = start(
        &env4,
        &upstream("app", &[quoted(&e)], "keepalive_requests = 3"),
    );
    for _ in 0..9 {
        assert_eq!(get(env4.port, "/api/cl/1").status, 200);
    }
    assert_eq!(e.connections(), 3);
    // keepalive = 0: a connection per request.
    let d = Backend::start("d");
    let env3 = Env::new();
    let _server3 = start(&env3, &upstream("app", &[quoted(&d)], "keepalive = 0"));
    for _ in 0..5 {
        assert_eq!(get(env3.port, "/api/cl/1").status, 200);
    }
    assert_eq!(d.connections(), 5);
}

#[test]
fn smuggling_attempts_are_refused_at_the_front() {
    let env = Env::new();
    let b = Backend::start("b");
    let _server = start(&env, &upstream("app", &[quoted(&b)], ""));
    for attack in [
        // CL.TE and TE.CL: both framings.
        &b"POST /api/echo HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"[..],
        b"POST /api/echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
        // Two lengths.
        b"POST /api/echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        // obs-fold.
        b"POST /api/echo HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n 5\r\n\r\nhello",
        b"GET /api/echo HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n",
        // A transfer coding other than chunked, and TE in HTTP/1.0.
        b"POST /api/echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"POST /api/echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        // A bad chunk size.
        b"POST /api/echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
    ] {
        let r = send(env.port, attack);
        assert!(
            (400..=501).contains(&r.status) && r.status != 404,
            "{}: {}",
            String::from_utf8_lossy(attack),
            r.status
        );
    }
    // Nothing reached the upstream framed differently (the bad chunk is
    // found before any byte of the body goes up, so nothing at all).
    assert_eq!(b.requests(), 0);
}

#[test]
fn metrics_count_requests_and_failures_per_server() {
    let env = Env::new();
    let b = Backend::start("good");
    let bad = dead();
    let text = common::with_admin(
        &env,
        &proxy_config(
            &env,
            "",
            &upstream(
                "app",
                &[bad.clone(), quoted(&b)],
                "max_fails = 1\nfail_timeout = \"60s\"",
            ),
            &route("/api/", "app"),
        )
        .replace("workers = 2", "workers = 1"),
    );
    env.write_config(&text);
    let _server = env.start();
    for _ in 0..4 {
        assert_eq!(get(env.port, "/api/cl/1").status, 200);
    }
    let sock = env.path("admin.sock");
    let bad = bad.trim_matches('"');
    let good = format!("{{upstream=\"app\",server=\"{}\"}}", b.address());
    let dead_labels = format!("{{upstream=\"app\",server=\"{bad}\"}}");
    let mut metrics = String::new();
    let shown = common::wait_until(std::time::Duration::from_secs(5), || {
        metrics = common::admin_get(&sock, "/metrics");
        metrics.contains(&format!("baton_upstream_requests_total{good} 4"))
    });
    assert!(shown, "{metrics}");
    for line in [
        format!("baton_upstream_failures_total{dead_labels} 1"),
        format!("baton_upstream_failures_total{good} 0"),
        format!("baton_upstream_down_workers{dead_labels} 1"),
        format!("baton_upstream_idle_connections{good} 1"),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}

/// A loopback listener whose accept queue is full: new connections hang
/// in SYN_SENT (their SYNs are dropped) until the connecting side gives up.
fn black_hole() -> (std::os::fd::OwnedFd, u16, Vec<std::net::TcpStream>) {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, getsockname, listen, socket,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::new(127, 0, 0, 1, 0),
    )
    .unwrap();
    listen(&fd, Backlog::new(0).unwrap()).unwrap();
    let port = getsockname::<SockaddrIn>(std::os::fd::AsRawFd::as_raw_fd(&fd))
        .unwrap()
        .port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    // Fill the queue; the connects that hang are given up on.
    let fillers = (0..3)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)).ok()
        })
        .collect();
    (fd, port, fillers)
}

#[test]
fn a_connect_timeout_goes_to_the_next_server_then_504() {
    let (_hole, port, _fillers) = black_hole();
    let b = Backend::start("good");
    let env = Env::new();
    let servers = [
        format!("\"127.0.0.1:{port}\""),
        format!("{{ address = \"{}\", backup = true }}", b.address()),
    ];
    let server = start(
        &env,
        &upstream(
            "app",
            &servers,
            "connect_timeout = \"300ms\"\nmax_fails = 0",
        ),
    );
    let t = std::time::Instant::now();
    let r = post(env.port, "/api/echo");
    // Nothing was sent: even a POST goes to the next server.
    assert_eq!((r.status, r.header("x-backend")), (200, Some("good")));
    assert!(t.elapsed() >= std::time::Duration::from_millis(300));
    assert!(
        server
            .log_text()
            .contains(&format!("server 127.0.0.1:{port}: timed out"))
    );
    // With no other server: 504.
    let env2 = Env::new();
    let _server2 = start(
        &env2,
        &upstream(
            "app",
            &[format!("\"127.0.0.1:{port}\"")],
            "connect_timeout = \"300ms\"",
        ),
    );
    assert_eq!(get(env2.port, "/api/x").status, 504);
}

#[test]
fn http10_clients_keep_alive_through_the_proxy() {
    let env = Env::new();
    let b = Backend::start("b");
    let _server = start(&env, &upstream("app", &[quoted(&b)], ""));
    let mut s = connect(env.port);
    let mut r = BufReader::new(s.try_clone().unwrap());
    for n in [10, 20] {
        write!(
            s,
            "GET /api/cl/{n} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        )
        .unwrap();
        let reply = read_reply(&mut r, false, &mut Vec::new()).unwrap();
        assert_eq!(reply.body.len(), n);
        assert_eq!(reply.header("connection"), Some("keep-alive"));
    }
    // A chunked upstream body ends with the connection for HTTP/1.0.
    s.write_all(b"GET /api/chunked/30 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let reply = read_reply(&mut r, false, &mut Vec::new()).unwrap();
    assert_eq!((reply.body.len(), reply.chunked), (30, false));
    assert_eq!(reply.header("connection"), Some("close"));
}

#[test]
fn a_pooled_connection_the_server_closes_is_closed_at_once() {
    let env = Env::new();
    let b = Backend::start("b");
    let _server = start(
        &env,
        &upstream("app", &[quoted(&b)], "keepalive_timeout = \"1h\""),
    );
    let pids = env.status().serving_pids();
    assert_eq!(pids.len(), 1);
    let before = common::fd_count(pids[0]);
    // Answered as if kept alive, then closed by the server while idle in
    // the pool: the worker closes its end then, not an hour later.
    assert_eq!(get(env.port, "/api/closeidle").status, 200);
    let mut now = 0;
    let closed = common::wait_until(std::time::Duration::from_secs(5), || {
        now = common::fd_count(pids[0]);
        now == before
    });
    assert!(closed, "worker fds: {before} before, {now} after");
    // A connection the server keeps stays pooled (and is reused).
    assert_eq!(get(env.port, "/api/cl/1").status, 200);
    assert_eq!(get(env.port, "/api/cl/1").status, 200);
    assert_eq!(b.connections(), 2);
}
