//! HTTP/2 across a reload and a graceful stop: 100 streams open on one
//! connection (their windows held shut by the client, so none can finish
//! before), then the reload or stop; the draining worker sends GOAWAY
//! twice (the largest stream id, then after a PING round trip the last
//! stream it accepted), finishes every stream, and closes. Zero streams
//! lost, every body byte-exact.

mod common;

use std::time::Duration;

use common::h2::*;
use common::*;
use serde_json::Value;

const SIZE: usize = 300_000;

fn setup(env: &Env) -> Server {
    env.write_file("www/held.bin", &vec![b'h'; SIZE]);
    // Long enough that the grace period cannot be what ends the drain.
    let config = tls_config(env, "", "").replacen("grace = \"5s\"", "grace = \"60s\"", 1);
    env.write_config(&config);
    env.start()
}

/// Every one of the 100 streams complete, and the two GOAWAYs.
fn check(got: &Value) {
    let streams = got["streams"].as_array().expect("streams");
    assert_eq!(streams.len(), 100);
    for s in streams {
        assert_eq!(s["status"], 200, "{s}");
        assert_eq!(s["done"], true, "stream {} lost: {s}", s["sid"]);
        assert_eq!(s["len"], SIZE as u64, "stream {}", s["sid"]);
        assert_eq!(s["reset"], Value::Null);
    }
    let goaways = got["goaways"].as_array().expect("goaways");
    assert_eq!(goaways.len(), 2, "{got}");
    assert_eq!(goaways[0]["last"], (1u64 << 31) - 1, "{got}");
    assert_eq!(goaways[1]["last"], 199, "{got}");
    assert!(goaways.iter().all(|g| g["code"] == 0), "{got}");
    assert_eq!(
        got["closed"], true,
        "the draining worker kept the connection"
    );
}

#[test]
fn a_reload_with_100_open_streams_loses_none() {
    let env = Env::new();
    let _server = setup(&env);
    let old = env.status().serving_pids();
    let held = Held::start(&["--tls", &env.port.to_string(), "hold", "100", "/held.bin"]);
    let out = env.reload();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check(&held.finish());
    // The old generation's workers exit once their connections are done.
    assert!(
        wait_until(Duration::from_secs(10), || old
            .iter()
            .all(|&p| !pid_alive(p))),
        "old workers {old:?} still alive"
    );
    // And the new generation serves HTTP/2.
    let got = h2tool(&["--tls", &env.port.to_string(), "get", "/held.bin"]);
    assert_eq!(got["streams"][0]["len"], SIZE as u64);
}

#[test]
fn a_graceful_stop_with_100_open_streams_loses_none() {
    let env = Env::new();
    let mut server = setup(&env);
    let held = Held::start(&["--tls", &env.port.to_string(), "hold", "100", "/held.bin"]);
    server.signal(libc::SIGTERM);
    check(&held.finish());
    assert_eq!(server.wait_exit(Duration::from_secs(20)), Some(0));
}

#[test]
fn a_client_that_never_answers_the_goaway_ping_does_not_hold_the_drain() {
    let env = Env::new();
    let _server = setup(&env);
    let old = env.status().serving_pids();
    let mute = Held::start(&["--tls", &env.port.to_string(), "mute", "/index.html"]);
    let out = env.reload();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // grace is 60 s: the old worker must be gone long before, once the
    // client had drain_linger (1 s) to answer.
    assert!(
        wait_until(Duration::from_secs(10), || old
            .iter()
            .all(|&p| !pid_alive(p))),
        "old workers {old:?} still alive with a mute HTTP/2 client"
    );
    drop(mute);
}
