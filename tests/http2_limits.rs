//! HTTP/2's limits, each mounted as an attack by `tests/h2/h2tool.py`
//! writing raw frames: the server answers GOAWAY ENHANCE_YOUR_CALM (or
//! refuses the streams), keeps its memory bounded, and serves the next
//! legitimate client. Rapid reset (CVE-2023-44487), CONTINUATION flood,
//! HPACK bomb, SETTINGS / PING / PRIORITY / empty-DATA floods, too many
//! concurrent streams, a window held shut, and a client that reads
//! nothing.

mod common;

use std::time::{Duration, Instant};

use common::h2::*;
use common::*;
use serde_json::Value;

const ENHANCE_YOUR_CALM: u64 = 0xb;
const REFUSED_STREAM: u64 = 0x7;
const CANCEL: u64 = 0x8;

fn start(env: &Env, globals: &str) -> Server {
    env.write_file("www/big.bin", &vec![b'x'; 4 << 20]);
    let globals = format!("workers = 1\n{globals}");
    let config = tls_config(env, &globals, "").replacen("workers = 2\n", "", 1);
    env.write_config(&config);
    env.start()
}

/// The one worker's pid.
fn worker(env: &Env) -> i32 {
    let pids = env.status().serving_pids();
    assert_eq!(pids.len(), 1, "{pids:?}");
    pids[0]
}

/// The server still answers a legitimate HTTP/2 client.
fn still_serves(env: &Env) {
    let got = h2tool(&["--tls", &env.port.to_string(), "get", "/index.html"]);
    assert_eq!(got["streams"][0]["status"], 200, "{got}");
}

fn goaway_codes(seen: &Value) -> Vec<u64> {
    seen["goaway"]
        .as_array()
        .map(|a| a.iter().filter_map(|g| g["code"].as_u64()).collect())
        .unwrap_or_default()
}

/// Mounts `kind` and checks the answer: GOAWAY ENHANCE_YOUR_CALM and the
/// connection closed, memory bounded, the next client served.
fn flood(kind: &str, count: &str) {
    let env = Env::new();
    let _server = start(&env, "");
    let pid = worker(&env);
    let before = rss_kib(pid);
    let seen = h2tool(&["--tls", &env.port.to_string(), "flood", kind, count]);
    assert_eq!(goaway_codes(&seen), [ENHANCE_YOUR_CALM], "{kind}: {seen}");
    assert_eq!(
        seen["closed"], true,
        "{kind}: the connection stayed open: {seen}"
    );
    assert!(
        seen["headers"].as_array().is_none_or(|h| h.len() <= 1),
        "{kind}: {seen}"
    );
    let after = rss_kib(pid);
    assert!(
        after < before + 32 * 1024,
        "{kind}: the worker grew from {before} KiB to {after} KiB"
    );
    still_serves(&env);
    assert!(pid_alive(pid), "{kind}: the worker died");
}

#[test]
fn rapid_reset_gets_enhance_your_calm() {
    flood("rapid_reset", "2000");
}

#[test]
fn continuation_flood_gets_enhance_your_calm() {
    flood("continuation", "5000");
}

#[test]
fn hpack_bomb_gets_enhance_your_calm() {
    // Each reference is one byte on the wire and 4 KB decoded: 2000 of
    // them would be 8 MB against a 16 KiB max_header_size.
    flood("hpack_bomb", "2000");
}

#[test]
fn settings_flood_gets_enhance_your_calm() {
    flood("settings", "5000");
}

#[test]
fn ping_flood_gets_enhance_your_calm() {
    flood("ping", "5000");
}

#[test]
fn priority_flood_gets_enhance_your_calm() {
    flood("priority", "5000");
}

#[test]
fn empty_data_flood_gets_enhance_your_calm() {
    flood("empty_data", "5000");
}

#[test]
fn control_frames_under_the_rate_are_fine() {
    // A client that pings now and then is not a flood.
    let env = Env::new();
    let _server = start(&env, "http2_max_control_frames = 100");
    let seen = h2tool(&["--tls", &env.port.to_string(), "flood", "ping", "50"]);
    assert!(goaway_codes(&seen).is_empty(), "{seen}");
    // ... but past the configured rate it is.
    let seen = h2tool(&["--tls", &env.port.to_string(), "flood", "ping", "500"]);
    assert_eq!(goaway_codes(&seen), [ENHANCE_YOUR_CALM], "{seen}");
}

#[test]
fn streams_past_max_concurrent_streams_are_refused() {
    let env = Env::new();
    let _server = start(&env, "http2_max_concurrent_streams = 8");
    let seen = h2tool(&[
        "--tls",
        &env.port.to_string(),
        "over_limit",
        "12",
        "/big.bin",
    ]);
    // SETTINGS_MAX_CONCURRENT_STREAMS (3) says so up front.
    assert_eq!(seen["settings"]["3"], 8, "{seen}");
    let rst = seen["rst"].as_object().expect("rst");
    let refused = rst
        .values()
        .filter(|c| c.as_u64() == Some(REFUSED_STREAM))
        .count();
    assert_eq!(refused, 4, "{seen}");
    assert_eq!(seen["headers"].as_array().map(Vec::len), Some(8), "{seen}");
    still_serves(&env);
}

#[test]
fn a_window_held_shut_times_the_stream_out_then_the_connection() {
    let env = Env::new();
    let _server = start(&env, "send_timeout = \"1s\"\nkeepalive_timeout = \"1s\"");
    let t = Instant::now();
    let seen = h2tool(&[
        "--tls",
        &env.port.to_string(),
        "zero_window",
        "/big.bin",
        "8",
    ]);
    // The stream is reset (CANCEL) after the send timeout, then the idle
    // connection gets its GOAWAY and is closed: nothing held forever.
    assert_eq!(seen["rst"]["1"], CANCEL, "{seen}");
    assert_eq!(goaway_codes(&seen).first(), Some(&0), "{seen}");
    assert_eq!(seen["closed"], true, "{seen}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    still_serves(&env);
}

#[test]
fn a_client_that_reads_nothing_costs_bounded_memory() {
    let env = Env::new();
    let _server = start(&env, "");
    let pid = worker(&env);
    let before = rss_kib(pid);
    // 128 streams of a 4 MiB file (512 MiB if buffered), none read.
    let held = Held::start(&["--tls", &env.port.to_string(), "stall", "128", "/big.bin"]);
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    // A measurement over time, not a synchronisation: the worker fills
    // what it may within the first moments and must stay there.
    while Instant::now() < deadline {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    // 128 streams × 64 KiB of send buffer, plus TLS and socket buffers.
    assert!(
        peak < before + 48 * 1024,
        "the worker grew from {before} KiB to {peak} KiB"
    );
    still_serves(&env);
    drop(held);
}

#[test]
fn metrics_count_streams_resets_and_goaways_by_reason() {
    let env = Env::new();
    env.write_file("www/big.bin", b"x");
    let config = tls_config(&env, "workers = 1", "").replacen("workers = 2\n", "", 1);
    env.write_config(&with_admin(&env, &config));
    let _server = env.start();
    let port = env.port.to_string();
    h2tool(&["--tls", &port, "get", "/index.html", "/big.bin", "/nope"]);
    h2tool(&["--tls", &port, "flood", "rapid_reset", "2000"]);
    h2tool(&["--tls", &port, "flood", "ping", "5000"]);
    let sock = env.path("admin.sock");
    let value = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    };
    // Workers report about every second: wait for the counts to arrive.
    let mut text = String::new();
    let arrived = wait_until(Duration::from_secs(10), || {
        text = admin_get(&sock, "/metrics");
        value(
            &text,
            "baton_http2_goaways_sent_total{reason=\"enhance_your_calm\"}",
        ) >= 2
    });
    assert!(arrived, "{text}");
    assert!(value(&text, "baton_http2_connections_total") >= 3, "{text}");
    assert!(value(&text, "baton_http2_streams_total") >= 3, "{text}");
    assert!(
        value(&text, "baton_http2_resets_received_total") >= 20,
        "{text}"
    );
    assert!(
        text.contains("# TYPE baton_http2_goaways_sent_total counter"),
        "{text}"
    );
}
