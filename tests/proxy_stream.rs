//! Big bodies through the proxy in both directions, with the worker's
//! memory flat: bodies stream through bounded buffers, and a slow side
//! holds the other back instead of filling memory.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

use common::backend::{self, Backend, proxy_config, quoted, route, rss_kib, upstream};
use common::{Env, connect};

/// One framing each way goes to 1 GiB; the other at a quarter of that
/// keeps the suite's time in check.
const BIG: u64 = 1 << 30;
const SIZE: u64 = 256 << 20;

/// A slow client pauses every this many bytes (and the worker's RSS is
/// sampled then).
const PAUSE_EVERY: u64 = 64 << 20;

/// One worker, so its memory is the one measured.
fn start(env: &Env, b: &Backend) -> (common::Server, i32) {
    let text = proxy_config(
        env,
        "max_body_size = \"1g\"",
        &upstream("app", &[quoted(b)], ""),
        &route("/api/", "app"),
    )
    .replace("workers = 2", "workers = 1");
    env.write_config(&text);
    let server = env.start();
    let pids = env.status().serving_pids();
    assert_eq!(pids.len(), 1);
    (server, pids[0])
}

/// Reads a response head; returns its lines.
fn head<R: BufRead>(r: &mut R) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        if l.trim().is_empty() {
            return lines;
        }
        lines.push(l.trim().to_owned());
    }
}

#[test]
fn a_1_gib_download_and_a_256_mib_chunked_one_keep_memory_flat() {
    let env = Env::new();
    let b = Backend::start("b");
    let (_server, pid) = start(&env, &b);
    let before = rss_kib(pid);
    let mut peak = before;
    for (kind, size) in [("cl", BIG), ("chunked", SIZE)] {
        let mut s = connect(env.port);
        write!(
            s,
            "GET /api/{kind}/{size} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut r = BufReader::with_capacity(1 << 16, s);
        let lines = head(&mut r);
        assert!(lines[0].contains(" 200 "), "{lines:?}");
        // Decode as we go (chunked) and check every byte.
        let mut at = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        let mut slow = 0;
        let check = |data: &[u8], at: &mut u64| {
            for &byte in data {
                assert_eq!(byte, backend::pattern(*at), "byte {at}");
                *at += 1;
            }
        };
        if kind == "cl" {
            while at < size {
                let n = r.read(&mut buf).unwrap();
                assert!(n > 0, "cut at {at}");
                check(&buf[..n], &mut at);
                // A slow client now and then: the upstream must wait, not
                // the worker's memory grow.
                if at > (slow + 1) * PAUSE_EVERY {
                    slow += 1;
                    std::thread::sleep(Duration::from_millis(200));
                    peak = peak.max(rss_kib(pid));
                }
            }
        } else {
            loop {
                let mut l = String::new();
                r.read_line(&mut l).unwrap();
                let size = usize::from_str_radix(l.trim(), 16).unwrap();
                if size == 0 {
                    break;
                }
                let mut chunk = vec![0u8; size];
                r.read_exact(&mut chunk).unwrap();
                check(&chunk, &mut at);
                let mut crlf = [0u8; 2];
                r.read_exact(&mut crlf).unwrap();
                if at > (slow + 1) * PAUSE_EVERY {
                    slow += 1;
                    std::thread::sleep(Duration::from_millis(200));
                    peak = peak.max(rss_kib(pid));
                }
            }
            assert_eq!(at, size);
        }
        peak = peak.max(rss_kib(pid));
    }
    // The worker's memory did not follow the bodies (1.25 GiB went
    // through).
    eprintln!("1 GiB + 256 MiB downloads: worker RSS {before} KiB -> peak {peak} KiB");
    assert!(
        peak < before + 16 * 1024,
        "worker RSS went from {before} KiB to {peak} KiB"
    );
}

#[test]
fn a_1_gib_chunked_upload_and_a_256_mib_one_keep_memory_flat() {
    let env = Env::new();
    let b = Backend::start("b");
    let (_server, pid) = start(&env, &b);
    let before = rss_kib(pid);
    let mut peak = before;
    let block: Vec<u8> = (0..(1u64 << 20)).map(backend::pattern).collect();
    for (chunked, size) in [(true, BIG), (false, SIZE)] {
        // Pattern bytes are periodic in 251, so a 1 MiB block repeated is
        // not the pattern: the checksum is of what is actually sent.
        let mut sum = backend::FNV_START;
        let mut s = connect(env.port);
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let framing = if chunked {
            "Transfer-Encoding: chunked".to_owned()
        } else {
            format!("Content-Length: {size}")
        };
        write!(
            s,
            "POST /api/echo HTTP/1.1\r\nHost: h\r\n{framing}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        for i in 0..(size >> 20) {
            if chunked {
                write!(s, "{:x}\r\n", block.len()).unwrap();
            }
            s.write_all(&block).unwrap();
            sum = backend::checksum(&block, sum);
            if chunked {
                s.write_all(b"\r\n").unwrap();
            }
            if i % 32 == 0 {
                peak = peak.max(rss_kib(pid));
            }
        }
        if chunked {
            s.write_all(b"0\r\n\r\n").unwrap();
        }
        let mut r = BufReader::new(s);
        let lines = head(&mut r);
        assert!(lines[0].contains(" 200 "), "{lines:?}");
        let len = lines.iter().find_map(|l| l.strip_prefix("X-Body-Len: "));
        assert_eq!(len, Some(size.to_string().as_str()));
        let got = lines.iter().find_map(|l| l.strip_prefix("X-Body-Sum: "));
        assert_eq!(got, Some(format!("{sum:x}").as_str()));
        peak = peak.max(rss_kib(pid));
    }
    eprintln!("1 GiB + 256 MiB uploads: worker RSS {before} KiB -> peak {peak} KiB");
    assert!(
        peak < before + 16 * 1024,
        "worker RSS went from {before} KiB to {peak} KiB"
    );
}

#[test]
fn a_slow_upstream_holds_a_fast_upload_back_without_memory() {
    let env = Env::new();
    let b = Backend::start("b");
    let (_server, pid) = start(&env, &b);
    let before = rss_kib(pid);
    let mut peak = before;
    let size: u64 = 64 << 20;
    let block: Vec<u8> = (0..(1u64 << 20)).map(backend::pattern).collect();
    let mut s = connect(env.port);
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "POST /api/slowecho HTTP/1.1\r\nHost: h\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n").unwrap();
    for _ in 0..(size >> 20) {
        s.write_all(&block).unwrap();
        peak = peak.max(rss_kib(pid));
    }
    let mut r = BufReader::new(s);
    let lines = head(&mut r);
    let len = lines.iter().find_map(|l| l.strip_prefix("X-Body-Len: "));
    assert_eq!(len, Some(size.to_string().as_str()), "{lines:?}");
    eprintln!("slow upstream upload: worker RSS {before} KiB -> peak {peak} KiB");
    assert!(
        peak < before + 16 * 1024,
        "worker RSS went from {before} KiB to {peak} KiB"
    );
}
