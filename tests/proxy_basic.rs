//! The proxy's basics through the real binary: every framing both ways,
//! HEAD, interim responses, pipelining, header rewriting, unix sockets.

mod common;

use std::io::{BufReader, Write};

use common::backend::{self, Backend, read_reply};
use common::{Env, Server, connect};

/// A server proxying `/api/` (prefix stripped) and `/keep/` to `servers`,
/// other paths from `www/`; `upstream` and `global` add lines.
fn start(env: &Env, servers: &[String], upstream: &str, global: &str) -> Server {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    let text = format!(
        "{}{global}\n[[upstream]]\nname = \"app\"\nservers = [{}]\n{upstream}\n\
         [[site]]\nlisten = [\"127.0.0.1:{}\"]\nroot = \"{}\"\n\
         headers = {{ \"X-Site\" = \"s\", \"X-Route\" = \"site\" }}\n\
         [[site.route]]\npath = \"/api/\"\nproxy = \"app\"\nstrip_prefix = true\n\
         headers = {{ \"X-Route\" = \"api\" }}\n\
         [[site.route]]\npath = \"/keep/\"\nproxy = \"app\"\n",
        env.globals(),
        list.join(", "),
        env.port,
        env.path("www").display()
    );
    env.write_config(&text);
    env.start()
}

fn send(port: u16, raw: &[u8]) -> backend::Reply {
    let mut s = connect(port);
    s.write_all(raw).unwrap();
    let mut r = BufReader::new(s);
    read_reply(&mut r, raw.starts_with(b"HEAD "), &mut Vec::new()).unwrap()
}

fn get(port: u16, path: &str) -> backend::Reply {
    send(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

#[test]
fn every_response_framing_reaches_the_client() {
    let env = Env::new();
    let b = Backend::start("b");
    let _server = start(&env, &[b.address()], "", "");
    for kind in ["cl", "chunked", "close"] {
        for n in [0u64, 1, 100_000] {
            let r = get(env.port, &format!("/api/{kind}/{n}"));
            assert_eq!(r.status, 200, "{kind} {n}");
            assert!(r.complete, "{kind} {n}");
            assert_eq!(r.body.len() as u64, n, "{kind} {n}");
            assert!(backend::is_pattern(&r.body), "{kind} {n}");
            // The site's headers, and the route's over them.
            assert_eq!(r.header("x-route"), Some("api"));
            assert_eq!(r.header("x-site"), Some("s"));
            // A close-delimited upstream body is chunked to an HTTP/1.1
            // client, so its connection can stay open.
            if kind != "cl" && n > 0 {
                assert!(r.chunked, "{kind} {n}");
            }
        }
    }
    // An HTTP/1.0 client gets no chunks: the close delimits.
    let r = send(env.port, b"GET /api/chunked/5000 HTTP/1.0\r\n\r\n");
    assert!(!r.chunked && r.body.len() == 5000 && backend::is_pattern(&r.body));
    // CONNECT is not forwarded, whatever its target.
    let r = send(env.port, b"CONNECT /api/x HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 405);
    let r = send(
        env.port,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    );
    assert!(r.status == 405 || r.status == 400, "{}", r.status);
    // 9 framings and the HTTP/1.0 request, no CONNECT.
    assert_eq!(b.requests(), 10, "a CONNECT reached the upstream");
    // The static site still serves the rest.
    let r = get(env.port, "/");
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("hello from baton"));
}

#[test]
fn request_bodies_are_streamed_and_reframed() {
    let env = Env::new();
    let b = Backend::start("b");
    let _server = start(&env, &[b.address()], "", "max_body_size = \"1g\"");
    let body: Vec<u8> = (0..300_000u64).map(backend::pattern).collect();
    let sum = format!("{:x}", backend::checksum(&body, backend::FNV_START));
    // Content-Length.
    let mut raw = format!(
        "POST /api/echo HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let r = send(env.port, &raw);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-body-len"), Some("300000"));
    assert_eq!(r.header("x-body-sum"), Some(sum.as_str()));
    let head = String::from_utf8_lossy(&r.body);
    assert!(head.starts_with("POST /echo HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("Content-Length: 300000\r\n"), "{head}");
    // Chunked, in odd pieces with an extension and a trailer.
    let mut raw =
        b"POST /api/echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    for piece in body.chunks(70_001) {
        raw.extend_from_slice(format!("{:x};x=y\r\n", piece.len()).as_bytes());
        raw.extend_from_slice(piece);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\nX-Trailer: 1\r\n\r\n");
    let r = send(env.port, &raw);
    assert_eq!(r.header("x-body-len"), Some("300000"));
    assert_eq!(r.header("x-body-sum"), Some(sum.as_str()));
    let head = String::from_utf8_lossy(&r.body);
    assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
}

#[test]
fn hop_by_hop_fields_go_and_forwarding_fields_come() {
    let env = Env::new();
    let b = Backend::start("b");
    let _server = start(&env, &[b.address()], "", "");
    let r = send(
        env.port,
        b"GET /api/echo HTTP/1.1\r\nHost: shop.example\r\nConnection: close, X-Secret\r\n\
          X-Secret: 1\r\nKeep-Alive: 300\r\nTE: trailers\r\nProxy-Authorization: basic x\r\n\
          X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\n\
          X-App: kept\r\n\r\n",
    );
    let head = String::from_utf8_lossy(&r.body).into_owned();
    for gone in [
        "X-Secret",
        "Keep-Alive",
        "TE:",
        "Proxy-Authorization",
        "6.6.6.6",
        "evil",
        "https",
    ] {
        assert!(!head.contains(gone), "{gone} reached the upstream:\n{head}");
    }
    assert!(head.contains("Host: shop.example\r\n"), "{head}");
    assert!(head.contains("X-App: kept\r\n"));
    assert!(head.contains("X-Forwarded-For: 127.0.0.1\r\n"), "{head}");
    assert!(head.contains("X-Forwarded-Proto: http\r\n"));
    assert!(head.contains("X-Forwarded-Host: shop.example\r\n"));
    // Upstream hop-by-hop fields do not reach the client either.
    assert_eq!(r.header("keep-alive"), None);
    assert_eq!(r.header("x-upstream-only"), Some("yes"));
}

#[test]
fn trusted_proxies_keep_their_forwarding_fields() {
    let env = Env::new();
    let b = Backend::start("b");
    let _server = start(
        &env,
        &[b.address()],
        "",
        "trusted_proxies = [\"127.0.0.0/8\"]",
    );
    let r = send(
        env.port,
        b"GET /api/echo HTTP/1.1\r\nHost: h\r\nConnection: close\r\nX-Forwarded-For: 203.0.113.9\r\n\
          X-Forwarded-Proto: https\r\nX-Forwarded-Host: shop.example\r\n\r\n",
    );
    let head = String::from_utf8_lossy(&r.body).into_owned();
    assert!(
        head.contains("X-Forwarded-For: 203.0.113.9, 127.0.0.1\r\n"),
        "{head}"
    );
    assert!(head.contains("X-Forwarded-Proto: https\r\n"), "{head}");
    assert!(
        head.contains("X-Forwarded-Host: shop.example\r\n"),
        "{head}"
    );
    assert_eq!(head.matches("X-Forwarded-Proto").count(), 1, "{head}");
}

#[test]
fn head_interim_responses_and_pipelining() {
    let env = Env::new();
    let b = Backend::start("b");
    let _server = start(&env, &[b.address()], "", "");
    // HEAD: the upstream's length, no body.
    let r = send(
        env.port,
        b"HEAD /api/cl/1234 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1234"));
    // 103 then 200; 100-continue from the upstream.
    let mut s = connect(env.port);
    s.write_all(b"GET /api/hints HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut interim = Vec::new();
    let reply = read_reply(&mut r, false, &mut interim).unwrap();
    assert_eq!((interim.as_slice(), reply.status), (&[103][..], 200));
    s.write_all(b"POST /api/continue HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        .unwrap();
    let mut interim = Vec::new();
    // The client waits for the 100 before sending its body.
    let mut line = String::new();
    std::io::BufRead::read_line(&mut r, &mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "{line}");
    let mut blank = String::new();
    std::io::BufRead::read_line(&mut r, &mut blank).unwrap();
    s.write_all(b"abc").unwrap();
    let reply = read_reply(&mut r, false, &mut interim).unwrap();
    assert_eq!(reply.header("x-body-len"), Some("3"));
    // Pipelined: three requests in one write, answered in order.
    s.write_all(
        b"GET /api/cl/10 HTTP/1.1\r\nHost: h\r\n\r\nGET /api/chunked/20 HTTP/1.1\r\nHost: h\r\n\r\n\
          GET /api/cl/30 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    for n in [10, 20, 30] {
        let reply = read_reply(&mut r, false, &mut Vec::new()).unwrap();
        assert_eq!(reply.body.len(), n);
    }
}

#[test]
fn unix_socket_upstreams_and_root_less_sites() {
    let env = Env::new();
    let sock = env.path("app.sock");
    let b = Backend::start_unix("u", sock.clone());
    // Workers run as nobody when the tests run as root.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let text = format!(
        "{}[[upstream]]\nname = \"app\"\nservers = [\"unix:{}\"]\n\
         [[site]]\nlisten = [\"127.0.0.1:{}\"]\n\
         [[site.route]]\npath = \"/app/\"\nproxy = \"app\"\nstrip_prefix = true\n",
        env.globals(),
        sock.display(),
        env.port
    );
    env.write_config(&text);
    let _server = env.start();
    let r = get(env.port, "/app/cl/777");
    assert_eq!(
        (r.status, r.body.len()),
        (200, 777),
        "{}",
        _server.log_text()
    );
    assert_eq!(r.header("x-backend"), Some("u"));
    assert_eq!(b.requests(), 1);
    // No root and no route: not found.
    assert_eq!(get(env.port, "/").status, 404);
    assert_eq!(get(env.port, "/other").status, 404);
}

#[test]
fn access_log_lines_name_the_upstream() {
    let env = Env::new();
    let b = Backend::start("b");
    let log = env.path("access.log");
    let _server = start(
        &env,
        &[b.address()],
        "",
        &format!("access_log = \"{}\"", log.display()),
    );
    assert_eq!(get(env.port, "/api/cl/5").status, 200);
    assert_eq!(get(env.port, "/").status, 200);
    let mut text = String::new();
    assert!(common::wait_until(
        std::time::Duration::from_secs(5),
        || {
            text = std::fs::read_to_string(&log).unwrap_or_default();
            text.lines().count() >= 2
        }
    ));
    let lines: Vec<&str> = text.lines().collect();
    // Proxied: request time, upstream time, address and status.
    let proxied = lines.iter().find(|l| l.contains("/api/cl/5")).unwrap();
    let tail: Vec<&str> = proxied.rsplit(' ').take(3).collect();
    assert_eq!(tail[0], "200", "{proxied}");
    assert_eq!(tail[1], b.address(), "{proxied}");
    assert!(tail[2].parse::<f64>().is_ok(), "{proxied}");
    // Static: as before, one "-" for the upstream time.
    let fixed = lines.iter().find(|l| l.contains("GET / ")).unwrap();
    assert!(fixed.ends_with(" -"), "{fixed}");
}

#[test]
fn proxying_behind_tls() {
    let env = Env::new();
    let b = Backend::start("b");
    let pair = common::tls::ecdsa_cert(&["a.test"]);
    env.write_file("tls/a.pem", pair.0.as_bytes());
    let key = env.write_file("tls/a.key", pair.1.as_bytes());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tls = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}\n",
        env.path("tls/a.pem").display(),
        env.path("tls/a.key").display()
    );
    let text = backend::proxy_config(
        &env,
        "",
        &backend::upstream("app", &[backend::quoted(&b)], ""),
        &backend::route("/api/", "app"),
    )
    .replace("[[site.route]]", &format!("{tls}[[site.route]]"));
    env.write_config(&text);
    let _server = env.start();
    let client = common::tls::client(common::tls::ANY);
    let seen = common::tls::https_get(&client, env.port, Some("a.test"), "/api/echo").unwrap();
    let text = String::from_utf8_lossy(&seen.response).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("X-Forwarded-Proto: https\r\n"), "{text}");
    // A body larger than any buffer, through rustls.
    let seen =
        common::tls::https_get(&client, env.port, Some("a.test"), "/api/cl/3000000").unwrap();
    let r = read_reply(
        &mut BufReader::new(&seen.response[..]),
        false,
        &mut Vec::new(),
    )
    .unwrap();
    assert!(r.complete && r.body.len() == 3_000_000 && backend::is_pattern(&r.body));
}

/// Whether the worker keeps reading (and throwing away) what the client
/// sends after the response: a lingering close. A socket closed outright
/// answers the client's next bytes with a reset.
fn server_lingers(s: &mut std::net::TcpStream) -> bool {
    let chunk = [b'x'; 1024];
    // Well inside the lingering close (1 s).
    !common::wait_until(std::time::Duration::from_millis(300), || {
        s.write_all(&chunk).is_err()
    })
}

#[test]
fn a_last_request_is_closed_at_once_and_an_unread_body_lingers() {
    use std::io::Read;
    // An upstream that answers 413 as soon as it has the head, without
    // waiting for the body (and drains what comes after).
    let early = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let early_addr = early.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut s in early.incoming().flatten() {
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(
                    b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    let env = Env::new();
    let b = Backend::start("b");
    let _server = start(&env, &[b.address()], "", "");
    // The client said it was its last request and sent all of it: nothing
    // more is coming, so the worker closes without lingering (as after a
    // static response, and as nginx does).
    let mut s = connect(env.port);
    s.write_all(b"GET /api/cl/100 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let reply = read_reply(&mut r, false, &mut Vec::new()).unwrap();
    assert_eq!((reply.status, reply.body.len()), (200, 100));
    assert!(!server_lingers(&mut s), "lingered after a last request");
    drop(_server);
    // The upstream answers before the body is all sent: the rest of it is
    // still coming, so the close lingers (a reset could destroy the
    // response before the client reads it).
    let env = Env::new();
    let _server = start(&env, &[early_addr], "", "");
    let mut s = connect(env.port);
    s.write_all(
        b"POST /api/x HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\
          Connection: close\r\n\r\nxxxx",
    )
    .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let reply = read_reply(&mut r, false, &mut Vec::new()).unwrap();
    assert_eq!(reply.status, 413);
    assert!(
        server_lingers(&mut s),
        "closed outright with the body unread"
    );
}
