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
    // Every handshake named server_name (SNI).
    let names = b.sni();
    assert!(!names.is_empty());
    assert!(
        names.iter().all(|n| n.as_deref() == Some("app.internal")),
        "{names:?}"
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

/// `baton -t` on `text`: (accepted, stderr).
fn check(env: &Env, text: &str) -> (bool, String) {
    env.write_config(text);
    let out = env.baton(&["-t"]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tls_files_are_checked_when_the_config_loads_with_located_errors() {
    let env = Env::new();
    let ca = Ca::new("test CA");
    let file = env.config_path().display().to_string();
    let config = |tls: &str| {
        proxy_config(
            &env,
            "",
            &upstream("app", &["\"127.0.0.1:9\"".into()], &format!("tls = {tls}")),
            &route("/api/", "app"),
        )
    };
    // The line of `tls = ...` in `config`.
    let line = config("{}")
        .lines()
        .position(|l| l.starts_with("tls = "))
        .unwrap()
        + 1;
    let missing = env.path("missing-ca.pem");
    let (ok, err) = check(
        &env,
        &config(&format!("{{ ca = \"{}\" }}", missing.display())),
    );
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{file}:{line}:14: the ca file {} cannot be read: No such file or directory",
            missing.display()
        )),
        "{err}"
    );
    let empty = env.write_file("empty.pem", b"not a certificate\n");
    let (ok, err) = check(
        &env,
        &config(&format!("{{ ca = \"{}\" }}", empty.display())),
    );
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{file}:{line}:14: the ca file {} holds no certificate",
            empty.display()
        )),
        "{err}"
    );
    // Misspelt keys get a suggestion; a cert needs its key.
    let (ok, err) = check(&env, &config("{ server_nme = \"a.b\" }"));
    assert!(!ok);
    assert!(err.contains("did you mean \"server_name\"?"), "{err}");
    let cert = env.write_file("client.pem", ca.leaf(&["client"]).cert_pem.as_bytes());
    let (ok, err) = check(
        &env,
        &config(&format!("{{ cert = \"{}\" }}", cert.display())),
    );
    assert!(!ok);
    assert!(err.contains("\"cert\" needs a \"key\" beside it"), "{err}");
    let (ok, err) = check(&env, &config("{ server_name = \"not a name\" }"));
    assert!(!ok);
    assert!(err.contains("\"server_name\" must be a host name"), "{err}");
    // A unix socket has no name to verify: server_name is required.
    let sock_path = env.path("app.sock");
    let _sock = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    let ca_file = env.write_file("ca.pem", ca.pem().as_bytes());
    let unix = proxy_config(
        &env,
        "",
        &upstream(
            "app",
            &[format!("\"unix:{}\"", sock_path.display())],
            &format!("tls = {{ ca = \"{}\" }}", ca_file.display()),
        ),
        &route("/", "app"),
    );
    let (ok, err) = check(&env, &unix);
    assert!(!ok);
    assert!(
        err.contains("has no host name to verify its certificate against"),
        "{err}"
    );
    let fixed = unix.replace("tls = {", "tls = { server_name = \"app.internal\",");
    let (ok, err) = check(&env, &fixed);
    assert!(ok, "{err}");
    // The same checks refuse a reload, which keeps the running generation.
    let good = config(&format!("{{ ca = \"{}\" }}", ca_file.display()));
    env.write_config(&good);
    let server = env.start();
    env.write_config(&config(&format!("{{ ca = \"{}\" }}", missing.display())));
    let out = env.reload();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be read"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(get(env.port, "/index.html").status, 200);
    drop(server);
}

#[test]
fn an_https_url_route_verifies_against_the_system_store_and_the_url_host() {
    let env = Env::new();
    let ca = Ca::new("system CA");
    let b = tls_backend("tls", &ca, &["localhost"]);
    let ip = tls_backend("ip", &ca, &["127.0.0.1"]);
    let routes = [
        route("/name/", &format!("https://localhost:{}", b.port)),
        route("/ip/", &format!("https://127.0.0.1:{}", ip.port)),
    ]
    .concat();
    env.write_config(&proxy_config(&env, "", "", &routes));
    // The system's store is SSL_CERT_FILE when set (as OpenSSL reads it):
    // here, the test CA.
    let store = env.write_file("store.pem", ca.pem().as_bytes());
    let mut command = std::process::Command::new(common::BIN);
    command
        .arg("-c")
        .arg(env.config_path())
        .env("SSL_CERT_FILE", &store)
        .stdin(std::process::Stdio::null());
    let server = env.spawn_command(command).wait_ready();
    let r = get(env.port, "/name/cl/1000");
    assert_eq!(r.status, 200, "{}", server.log_text());
    assert!(backend::is_pattern(&r.body) && r.body.len() == 1000);
    // An IP address is verified as an IP SAN, and sent no SNI (RFC 6066);
    // a name is the SNI.
    let r = get(env.port, "/ip/");
    assert_eq!((r.status, r.body.as_slice()), (200, backend::BODY));
    assert_eq!(ip.sni(), [None]);
    assert_eq!(b.sni(), [Some("localhost".to_owned())]);
    drop(server);
    let before = b.requests();
    // Without it, the system's own roots do not know the test CA: a 502.
    env.write_config(&proxy_config(&env, "", "", &routes));
    let server = env.start();
    let r = get(env.port, "/name/");
    assert_eq!(r.status, 502);
    assert!(
        wait_until(Duration::from_secs(5), || server
            .log_text()
            .contains("invalid peer certificate: UnknownIssuer")),
        "{}",
        server.log_text()
    );
    assert_eq!(b.requests(), before);
}

#[test]
fn a_client_certificate_is_presented_when_configured() {
    let env = Env::new();
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let b = Backend::start_tls(
        "mtls",
        pki::server_config_mtls(&ca.leaf(&["app.internal"]), &clients),
    );
    let id = clients.leaf(&["baton.client"]);
    let cert = env.write_file("client.pem", id.cert_pem.as_bytes());
    let key = env.write_file("client.key", id.key_pem.as_bytes());
    let ca_line = tls_line(&env, &ca, "ca.pem", "app.internal");
    let with_cert = ca_line.replace(
        " }\n",
        &format!(
            ", cert = \"{}\", key = \"{}\" }}\n",
            cert.display(),
            key.display()
        ),
    );
    let ups = [
        upstream("with", &[format!("\"{}\"", b.address())], &with_cert),
        upstream("without", &[format!("\"{}\"", b.address())], &ca_line),
    ]
    .concat();
    let routes = [route("/with/", "with"), route("/without/", "without")].concat();
    let server = start(&env, &ups, &routes);
    let r = get(env.port, "/with/");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, backend::BODY),
        "{}",
        server.log_text()
    );
    // Without one, the server refuses the handshake (TLS 1.3: after the
    // client's Finished, so it shows as a failure before the response).
    let r = get(env.port, "/without/");
    assert_eq!(r.status, 502);
    assert_eq!(b.requests(), 1);
}

#[test]
fn reloads_under_load_with_an_https_upstream_lose_nothing() {
    let env = Env::new();
    let ca = Ca::new("test CA");
    let b = tls_backend("tls", &ca, &["app.internal"]);
    let ups = upstream(
        "app",
        &[format!("\"{}\"", b.address())],
        &tls_line(&env, &ca, "ca.pem", "app.internal"),
    );
    let server = start(&env, &ups, &route("/", "app"));
    let load = Load::start(env.port, 3, 3, backend::BODY);
    for i in 0..20 {
        let out = env.reload();
        assert!(
            out.status.success(),
            "reload {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let counts = load.finish();
    assert_eq!(
        counts.failed, 0,
        "failed requests across 20 reloads ({} ok): {:?}",
        counts.ok, counts.errors
    );
    assert!(counts.ok >= 100, "the load barely ran: {}", counts.ok);
    let log = server.log_text();
    assert!(!log.contains("[WARN] baton worker"), "{log}");
}

#[test]
fn health_checks_of_an_https_upstream_speak_tls_and_verify() {
    let env = Env::new();
    let ca = Ca::new("test CA");
    let other = Ca::new("another CA");
    let good = tls_backend("good", &ca, &["app.internal"]);
    let health = "health = { path = \"/healthz\", interval = \"200ms\", timeout = \"1s\" }\n";
    let ups = [
        upstream(
            "app",
            &[format!("\"{}\"", good.address())],
            &format!("{health}{}", tls_line(&env, &ca, "ca.pem", "app.internal")),
        ),
        upstream(
            "untrusted",
            &[format!("\"{}\"", good.address())],
            &format!(
                "{health}{}",
                tls_line(&env, &other, "other.pem", "app.internal")
            ),
        ),
    ]
    .concat();
    let _server = start(&env, &ups, &route("/", "app"));
    let shows = |line: &str| env.status().raw.lines().any(|l| l.starts_with(line));
    let up = format!("upstream_health: app {} up", good.address());
    assert!(
        wait_until(Duration::from_secs(5), || shows(&up)
            && good.health_checks() > 0),
        "{}",
        env.status().raw
    );
    // The same server, not trusted by the other upstream's CA: down, and
    // why.
    let down = format!(
        "upstream_health: untrusted {} down (cannot read the answer: TLS handshake: invalid \
         peer certificate: UnknownIssuer)",
        good.address()
    );
    assert!(
        wait_until(Duration::from_secs(5), || shows(&down)),
        "{}",
        env.status().raw
    );
    good.set_health(503);
    let down = format!(
        "upstream_health: app {} down (status 503, expected 200)",
        good.address()
    );
    assert!(
        wait_until(Duration::from_secs(5), || shows(&down)),
        "{}",
        env.status().raw
    );
}

#[test]
fn new_connections_resume_the_tls_session() {
    let env = Env::new();
    let ca = Ca::new("test CA");
    let b = tls_backend("tls", &ca, &["app.internal"]);
    // No pooling: every request makes a connection, and a handshake.
    let ups = upstream(
        "app",
        &[format!("\"{}\"", b.address())],
        &format!(
            "keepalive = 0\n{}",
            tls_line(&env, &ca, "ca.pem", "app.internal")
        ),
    );
    let _server = start(&env, &ups, &route("/", "app"));
    for i in 0..10 {
        let r = get(env.port, "/");
        assert_eq!((r.status, r.body.as_slice()), (200, backend::BODY), "{i}");
    }
    assert_eq!(b.connections(), 10);
    // A full handshake per worker (2) at most; the rest resume.
    assert!(b.resumed() >= 8, "{} of 10 resumed", b.resumed());
}

#[test]
fn a_server_that_never_finishes_the_handshake_or_speaks_plain_http_fails_in_time() {
    let env = Env::new();
    let ca = Ca::new("test CA");
    // Accepts and says nothing: the handshake waits on it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().flatten() {
            held.push(s);
        }
    });
    // Plain HTTP where TLS is expected: a server that answers the
    // ClientHello as the bad request it is.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let plain_addr = plain.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in plain.incoming().flatten() {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
        }
    });
    let ups = [
        upstream(
            "silent",
            &[format!("\"{silent_addr}\"")],
            &format!(
                "connect_timeout = \"500ms\"\n{}",
                tls_line(&env, &ca, "ca.pem", "app.internal")
            ),
        ),
        upstream(
            "plain",
            &[format!("\"{plain_addr}\"")],
            &tls_line(&env, &ca, "ca.pem", "app.internal"),
        ),
    ]
    .concat();
    let routes = [route("/silent/", "silent"), route("/plain/", "plain")].concat();
    let server = start(&env, &ups, &routes);
    // connect_timeout covers the handshake: a 504, in about that time.
    let started = std::time::Instant::now();
    let r = get(env.port, "/silent/");
    assert_eq!(r.status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let r = get(env.port, "/plain/");
    assert_eq!(r.status, 502);
    assert!(
        wait_until(Duration::from_secs(5), || {
            let log = server.log_text();
            log.contains(&format!(
                "upstream \"silent\" server {silent_addr}: timed out"
            )) && log.contains(&format!(
                "upstream \"plain\" server {plain_addr}: connect: TLS handshake:"
            ))
        }),
        "{}",
        server.log_text()
    );
}

#[test]
fn a_websocket_tunnel_runs_over_an_https_upstream() {
    let env = Env::new();
    let ca = Ca::new("test CA");
    let ws =
        common::websocket::WsBackend::start_tls(pki::server_config(&ca.leaf(&["app.internal"])));
    let ups = upstream(
        "ws",
        &[format!("\"127.0.0.1:{}\"", ws.port)],
        &tls_line(&env, &ca, "ca.pem", "app.internal"),
    );
    let _server = start(
        &env,
        &ups,
        "[[site.route]]\npath = \"/ws\"\nproxy = \"ws\"\n",
    );
    let mut c = common::websocket::WsClient::connect(env.port, "/ws").unwrap();
    for i in 0..20 {
        assert!(c.echo(&format!("message {i}")));
    }
    // Bigger than a TLS record and than the tunnel's buffer.
    assert!(c.echo(&"x".repeat(300_000)));
    assert_eq!(ws.upgraded.load(std::sync::atomic::Ordering::SeqCst), 1);
}
