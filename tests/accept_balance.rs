//! Connections are spread over the workers that share a listen socket.
//!
//! Every worker waits on the same listen socket with EPOLLEXCLUSIVE, and
//! the kernel wakes the first idle worker in the socket's wait queue: the
//! one registered first. Before the fix, connections that arrived one by
//! one all went to that worker (50 of 50), and a burst went to whichever
//! worker ran first (46 of 50 seen), for the whole life of a long-lived
//! connection (HTTP/2, keep-alive). Each connection here is counted by
//! the worker that holds its socket (/proc/PID/fd), so the split is what
//! the kernel and the workers did, not what a log says.

mod common;

use common::*;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Sockets a process holds open.
fn sockets_of(pid: i32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

/// A keep-alive GET on `s`, answered in full (200 and the whole body).
fn served(s: &TcpStream, body_len: usize) {
    (&*s)
        .write_all(b"GET /1k.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send a request");
    let mut r = BufReader::new(s);
    let resp = read_response(&mut r, false).expect("a response");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), body_len);
    assert!(!resp.closes(), "the connection must stay open");
}

fn start(env: &Env, workers: usize) -> Server {
    env.write_file("www/1k.txt", &[b'x'; 1024]);
    let config = env
        .simple_config()
        .replacen("workers = 2", &format!("workers = {workers}"), 1);
    env.write_config(&config);
    env.start()
}

/// Open connections per serving worker: sockets now minus `base`.
fn split(pids: &[i32], base: &[usize]) -> Vec<usize> {
    pids.iter()
        .zip(base)
        .map(|(p, b)| sockets_of(*p).saturating_sub(*b))
        .collect()
}

/// `n` connections, each opened once the one before it was served: every
/// connection finds both workers idle, which is when the first-registered
/// one used to take them all. Returns the per-worker split.
fn one_by_one(env: &Env, pids: &[i32], n: usize) -> (Vec<usize>, Vec<TcpStream>) {
    let base: Vec<usize> = pids.iter().map(|p| sockets_of(*p)).collect();
    let mut conns = Vec::new();
    for _ in 0..n {
        let s = connect(env.port);
        served(&s, 1024);
        conns.push(s);
    }
    (split(pids, &base), conns)
}

/// Whether each worker holds at least a quarter of `n`.
fn balanced(counts: &[usize], n: usize) -> bool {
    counts.iter().sum::<usize>() == n && counts.iter().all(|c| c * 4 >= n)
}

/// Up to three rounds of `one_by_one` (each closed before the next):
/// the splits seen, and whether one of them was balanced. Round robin
/// gives n/2 each; before the fix, every round gave n/0 or close (50/0
/// and 47/3 measured). A round can come out lopsided when the machine is
/// saturated (one worker not back in epoll_wait before the next connection
/// arrives, seen as 29/1 with the whole suite running), hence the rounds.
fn rounds(env: &Env, server: &Server, n: usize) -> (Vec<Vec<usize>>, bool) {
    let pids = env.status().serving_pids();
    assert_eq!(pids.len(), 2, "two serving workers");
    let idle: Vec<usize> = pids.iter().map(|p| sockets_of(*p)).collect();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (counts, conns) = one_by_one(env, &pids, n);
        seen.push(counts.clone());
        if balanced(&counts, n) {
            return (seen, true);
        }
        drop(conns);
        let back = wait_until(Duration::from_secs(10), || {
            pids.iter().zip(&idle).all(|(p, b)| sockets_of(*p) <= *b)
        });
        assert!(back, "closed connections still held\n{}", server.log_text());
    }
    (seen, false)
}

#[test]
fn connections_arriving_one_by_one_are_spread_over_the_workers() {
    let env = Env::new();
    let server = start(&env, 2);
    let (seen, ok) = rounds(&env, &server, 40);
    assert!(
        ok,
        "one worker took most, per round: {seen:?}\n{}",
        server.log_text()
    );
}

#[test]
fn after_a_reload_the_new_workers_take_every_connection_and_share_them() {
    let env = Env::new();
    let server = start(&env, 2);
    // Connections held by the old generation while it drains.
    let old = env.status().serving_pids();
    let (_, old_conns) = one_by_one(&env, &old, 6);
    let out = env.reload();
    assert!(out.status.success(), "reload: {}", server.diagnose());
    let new = env.status().serving_pids();
    assert!(
        new.iter().all(|p| !old.contains(p)),
        "a new generation: {old:?} {new:?}"
    );
    let old_base: Vec<usize> = old.iter().map(|p| sockets_of(*p)).collect();
    // Every round's connections are counted on the new workers only
    // (`balanced` wants all n there).
    let (seen, ok) = rounds(&env, &server, 30);
    assert!(
        ok,
        "new generation's split, per round: {seen:?}\n{}",
        server.log_text()
    );
    // The draining generation took none of them (it may only have let go
    // of its own connections).
    for (p, b) in old.iter().zip(&old_base) {
        assert!(
            sockets_of(*p) <= *b,
            "draining worker {p} accepted a connection"
        );
    }
    drop(old_conns);
}

/// A burst: all connections opened before any request. Which worker runs
/// first is the scheduler's choice, so the split is not bounded here; what
/// must hold is that each is accepted and served at once by the serving
/// workers, with one accept per pass and the wake-up order rotating.
#[test]
fn a_burst_of_connections_is_served_in_full() {
    for workers in [2, 1] {
        let env = Env::new();
        let _server = start(&env, workers);
        let pids = env.status().serving_pids();
        assert_eq!(pids.len(), workers);
        let base: Vec<usize> = pids.iter().map(|p| sockets_of(*p)).collect();
        let n = 100;
        let conns: Vec<TcpStream> = (0..n).map(|_| connect(env.port)).collect();
        for s in &conns {
            served(s, 1024);
        }
        let mut counts = Vec::new();
        // Served means accepted; the count is read once every reply is in.
        assert!(
            wait_until(Duration::from_secs(5), || {
                counts = split(&pids, &base);
                counts.iter().sum::<usize>() == n
            }),
            "{workers} workers hold {counts:?} of {n} connections"
        );
    }
}
