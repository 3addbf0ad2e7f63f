//! How requests spread over an upstream's servers (one worker, so its
//! balancer is the one counted).

mod common;

use std::collections::HashMap;
use std::io::{BufReader, Write};

use common::backend::{self, Backend, proxy_config, read_reply, route, upstream};
use common::{Env, Server, connect};

fn start(env: &Env, upstreams: &str) -> Server {
    let text = proxy_config(env, "", upstreams, &route("/api/", "app"))
        .replace("workers = 2", "workers = 1");
    env.write_config(&text);
    env.start()
}

/// Which backend answered each of `n` requests (one keep-alive client
/// connection; `extra` header lines per request index).
fn spread(port: u16, n: usize, extra: impl Fn(usize) -> String) -> HashMap<String, usize> {
    let mut s = connect(port);
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut counts = HashMap::new();
    for i in 0..n {
        // One write: a second small one would wait for the ACK (Nagle).
        let req = format!("GET /api/cl/1 HTTP/1.1\r\nHost: h\r\n{}\r\n", extra(i));
        s.write_all(req.as_bytes()).unwrap();
        let reply: backend::Reply = read_reply(&mut r, false, &mut Vec::new()).unwrap();
        assert_eq!(reply.status, 200);
        *counts
            .entry(reply.header("x-backend").unwrap().to_owned())
            .or_insert(0) += 1;
    }
    counts
}

fn servers(bs: &[&Backend], weights: &[u32]) -> Vec<String> {
    bs.iter()
        .zip(weights)
        .map(|(b, w)| format!("{{ address = \"{}\", weight = {w} }}", b.address()))
        .collect()
}

#[test]
fn weighted_round_robin_counts_exactly() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let env = Env::new();
    let _server = start(
        &env,
        &upstream("app", &servers(&[&a, &b, &c], &[1, 2, 3]), ""),
    );
    let counts = spread(env.port, 60, |_| String::new());
    assert_eq!(
        (counts["a"], counts["b"], counts["c"]),
        (10, 20, 30),
        "{counts:?}"
    );
}

#[test]
fn least_conn_spreads_sequential_requests_evenly() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let env = Env::new();
    let _server = start(
        &env,
        &upstream(
            "app",
            &servers(&[&a, &b], &[1, 1]),
            "balance = \"least_conn\"",
        ),
    );
    let counts = spread(env.port, 20, |_| String::new());
    assert_eq!((counts["a"], counts["b"]), (10, 10), "{counts:?}");
}

#[test]
fn ip_hash_and_header_hash_are_sticky() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let env = Env::new();
    let _server = start(
        &env,
        &upstream(
            "app",
            &servers(&[&a, &b, &c], &[1, 1, 1]),
            "balance = \"ip_hash\"",
        ),
    );
    // Every request comes from 127.0.0.1: one server takes them all.
    let counts = spread(env.port, 12, |_| String::new());
    assert_eq!(counts.len(), 1, "{counts:?}");

    let env = Env::new();
    let _server = start(
        &env,
        &upstream(
            "app",
            &servers(&[&a, &b, &c], &[1, 1, 1]),
            "balance = \"header:X-Session\"",
        ),
    );
    // The same session always lands on the same server...
    let counts = spread(env.port, 10, |_| "X-Session: alice\r\n".into());
    assert_eq!(counts.len(), 1, "{counts:?}");
    // ... and many sessions spread over several.
    let counts = spread(env.port, 60, |i| format!("X-Session: user{i}\r\n"));
    assert!(counts.len() >= 2, "{counts:?}");
    // A request without the header goes round robin.
    let counts = spread(env.port, 30, |_| String::new());
    assert_eq!(counts.len(), 3, "{counts:?}");
}

#[test]
fn backups_serve_only_while_the_others_are_down() {
    let (a, backup) = (Backend::start("a"), Backend::start("backup"));
    let env = Env::new();
    let list = vec![
        format!("\"{}\"", a.address()),
        format!("{{ address = \"{}\", backup = true }}", backup.address()),
    ];
    let _server = start(&env, &upstream("app", &list, "fail_timeout = \"60s\""));
    let counts = spread(env.port, 10, |_| String::new());
    assert_eq!(counts.get("a"), Some(&10), "{counts:?}");
    // The primary goes away: the backup takes over.
    let port = a.port;
    drop(a);
    let mut served = HashMap::new();
    for _ in 0..10 {
        let r = {
            let mut s = connect(env.port);
            s.write_all(b"GET /api/cl/1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
                .unwrap();
            read_reply(&mut BufReader::new(s), false, &mut Vec::new()).unwrap()
        };
        assert_eq!(r.status, 200);
        *served
            .entry(r.header("x-backend").unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(
        served.get("backup"),
        Some(&10),
        "{served:?} (primary was :{port})"
    );
}
