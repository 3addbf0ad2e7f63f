//! HTTPS upstreams through the real binary: `tls` on an `[[upstream]]` and
//! `https://` route URLs, against TLS backends the tests start (rustls, a
//! CA made at test time). Certificates are always verified: a wrong CA, a
//! wrong name or an expired certificate is a connect failure (the next
//! server, else a 502), logged with rustls's reason.

mod common;

use std::io::{BufReader, Write};
use std::time::Duration;

use common::backend::{self, Backend, proxy_config, read_reply, route, upstream};
use common::load::Load;
use common::pki::{self, Ca};
use common::{Env, Server, connect, wait_until};

fn send(port: u16, raw: &[u8]) -> backend::Reply {
    let mut s = connect(port);
    s.write_all(raw).unwrap();
    let mut r = BufReader::new(s);
    read_reply(&mut r, false, &mut Vec::new()).unwrap()
}

fn get(port: u16, path: &str) -> backend::Reply {
    send(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// A TLS backend presenting a certificate for `names` signed by `ca`.
fn tls_backend(name: &str, ca: &Ca, names: &[&str]) -> Backend {
    Backend::start_tls(name, pki::server_config(&ca.leaf(names)))
}

/// The `tls` line of an upstream: `server_name` and the CA's file.
fn tls_line(env: &Env, ca: &Ca, file: &str, server_name: &str) -> String {
    let path = env.write_file(file, ca.pem().as_bytes());
    format!(
        "tls = {{ server_name = \"{server_name}\", ca = \"{}\" }}\n",
        path.display()
    )
}

fn start(env: &Env, upstreams: &str, routes: &str) -> Server {
    env.write_config(&proxy_config(
        env,
        "max_body_size = \"1g\"",
        upstreams,
        routes,
    ));
    env.start()
}

#[test]
fn requests_and_bodies_pass_byte_exact_over_tls_and_connections_are_reused() {
    let env = Env::new();
    let ca = Ca::new("test CA");
    let b = tls_backend("tls", &ca, &["app.internal"]);
    let ups = upstream(
        "app",
        &[format!("\"{}\"", b.address())],
        &tls_line(&env, &ca, "ca.pem", "app.internal"),
    );
    let _server = start(&env, &ups, &route("/api/", "app"));
    // Every response framing, byte exact.
    for kind in ["cl", "chunked", "close"] {
        let r = get(env.port, &format!("/api/{kind}/300000"));
        assert_eq!(r.status, 200, "{kind}");
        assert!(r.complete, "{kind}");
        assert_eq!(r.body.len(), 300_000, "{kind}");
        assert!(backend::is_pattern(&r.body), "{kind}");
    }
    // A request body, by length and chunked.
    let body: Vec<u8> = (0..1_000_000u64).map(backend::pattern).collect();
    let sum = format!("{:x}", backend::checksum(&body, backend::FNV_START));
    let mut raw = format!(
        "POST /api/echo HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let r = send(env.port, &raw);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-body-len"), Some("1000000"));
    assert_eq!(r.header("x-body-sum"), Some(sum.as_str()));
    let mut raw = b"POST /api/echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\
                    Connection: close\r\n\r\n"
        .to_vec();
    for piece in body.chunks(70_001) {
        raw.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        raw.extend_from_slice(piece);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let r = send(env.port, &raw);
    assert_eq!(r.header("x-body-sum"), Some(sum.as_str()));
    // Keep-alive over TLS: one client connection's 30 requests (one worker)
    // go over the pooled TLS connection(s) that worker already has.
    let before = b.connections();
    let mut s = connect(env.port);
    let mut reader = BufReader::new(s.try_clone().unwrap());
    for i in 0..30 {
        s.write_all(b"GET /api/ HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap();
        let r = read_reply(&mut reader, false, &mut Vec::new()).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, backend::BODY), "{i}");
    }
    // At most one new connection per worker (2): not one per request.
    assert!(
        b.connections() <= before + 2,
        "{} upstream connections for 30 requests",
        b.connections() - before
    );
}

#[test]
fn a_certificate_that_does_not_verify_is_a_502_logged_with_the_reason() {
    let env = Env::new();
    let ca = Ca::new("test CA");
    let other = Ca::new("another CA");
    let good = tls_backend("good", &ca, &["app.internal"]);
    let expired = Backend::start_tls(
        "expired",
        pki::server_config(&ca.expired_leaf(&["app.internal"])),
    );
    let server_line = |b: &Backend| format!("\"{}\"", b.address());
    let ups = [
        upstream(
            "wrongca",
            &[server_line(&good)],
            &tls_line(&env, &other, "other.pem", "app.internal"),
        ),
        upstream(
            "wrongname",
            &[server_line(&good)],
            &tls_line(&env, &ca, "ca.pem", "db.internal"),
        ),
        upstream(
            "expired",
            &[server_line(&expired)],
            &tls_line(&env, &ca, "ca.pem", "app.internal"),
        ),
        // A failed handshake is a connect failure: even a POST goes on to
        // the next server, as nothing of it was sent.
        upstream(
            "next",
            &[server_line(&expired), server_line(&good)],
            &format!(
                "max_fails = 0\n{}",
                tls_line(&env, &ca, "ca.pem", "app.internal")
            ),
        ),
    ]
    .concat();
    let routes = [
        route("/wrongca/", "wrongca"),
        route("/wrongname/", "wrongname"),
        route("/expired/", "expired"),
        route("/next/", "next"),
    ]
    .concat();
    env.write_config(&common::with_admin(
        &env,
        &proxy_config(&env, "", &ups, &routes),
    ));
    let server = env.start();
    for path in ["/wrongca/", "/wrongname/", "/expired/"] {
        let r = get(env.port, path);
        assert_eq!(r.status, 502, "{path}");
    }
    assert_eq!(good.requests() + expired.requests(), 0, "a request went up");
    let r = send(
        env.port,
        b"POST /next/echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-backend"), Some("good"));
    assert_eq!(r.header("x-body-len"), Some("3"));
    // Each failure logged once, with the server and rustls's reason.
    let log_has = |needle: &str| server.log_text().contains(needle);
    let good_addr = good.address();
    let expired_addr = expired.address();
    assert!(
        wait_until(Duration::from_secs(5), || {
            log_has(&format!(
                "upstream \"wrongca\" server {good_addr}: connect: TLS handshake: invalid peer \
                 certificate: UnknownIssuer"
            )) && log_has(&format!(
                "upstream \"wrongname\" server {good_addr}: connect: TLS handshake: invalid peer \
                 certificate: certificate not valid for name"
            )) && log_has(&format!(
                "upstream \"expired\" server {expired_addr}: connect: TLS handshake: invalid \
                 peer certificate: certificate expired"
            ))
        }),
        "{}",
        server.log_text()
    );
    let count = server
        .log_text()
        .matches(format!("upstream \"wrongca\" server {good_addr}: connect:").as_str())
        .count();
    assert_eq!(count, 1, "{}", server.log_text());
    // Counted per server in /metrics.
    let line =
        format!("baton_upstream_failures_total{{upstream=\"wrongca\",server=\"{good_addr}\"}} 1");
    let mut metrics = String::new();
    let shown = wait_until(Duration::from_secs(5), || {
        metrics = common::admin_get(&env.path("admin.sock"), "/metrics");
        metrics.lines().any(|l| l == line)
    });
    assert!(shown, "{line} in\n{metrics}");
}
