//! The reload transaction's hard cases, with real processes: a rollback
//! while the failed generation serves a download, a worker that was ready
//! and died before the commit, a stop during the handover, the cap on
//! draining generations, and a re-added address after a failed reload.
//!
//! Two test hooks, read by workers of debug builds only (release builds
//! ignore them), make the races reproducible instead of timing-dependent:
//! `BATON_TEST_HOLD_READY=G/S,...` keeps the worker of generation G, slot
//! S from sending `Ready` until it gets SIGUSR2 (it serves meanwhile), and
//! `BATON_TEST_HOLD_DRAINING=G` keeps generation G's workers from
//! confirming that they stopped accepting.

mod common;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

const BIG: usize = 32 * 1024 * 1024;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn start_with_env(env: &Env, vars: &[(&str, &str)]) -> Server {
    let mut command = Command::new(BIN);
    command
        .arg("-c")
        .arg(env.config_path())
        .stdin(Stdio::null());
    for (k, v) in vars {
        command.env(k, v);
    }
    env.spawn_command(command).wait_ready()
}

/// `baton -s reload` in a thread: the test goes on while it waits.
fn reload_in_background(env: &Env) -> std::thread::JoinHandle<Output> {
    let config = env.config_path();
    std::thread::spawn(move || {
        Command::new(BIN)
            .arg("-c")
            .arg(config)
            .args(["-s", "reload"])
            .stdin(Stdio::null())
            .output()
            .expect("run baton -s reload")
    })
}

/// The pid of the worker of `generation`, `slot` whose state is `state`.
fn worker(env: &Env, generation: u64, slot: usize, state: &str) -> Option<i32> {
    let status = env.status();
    status.raw.lines().find_map(|line| {
        let rest = line.strip_prefix("worker: ")?;
        let field = |name: &str| {
            rest.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .unwrap_or("")
                .to_string()
        };
        (field("generation") == generation.to_string()
            && field("slot") == slot.to_string()
            && field("state") == state)
            .then(|| field("pid").parse().ok())?
    })
}

fn wait_worker(env: &Env, generation: u64, slot: usize, state: &str) -> i32 {
    let mut pid = None;
    let found = wait_until(Duration::from_secs(10), || {
        pid = worker(env, generation, slot, state);
        pid.is_some()
    });
    assert!(
        found,
        "no {state} worker {generation}/{slot}: {}",
        env.status().raw
    );
    pid.unwrap_or_default()
}

/// Starts downloading `path` on `port` and reads its first bytes, so the
/// response is known to be in flight on whichever worker took it.
fn start_download(port: u16, path: &str) -> TcpStream {
    let mut s = connect(port);
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut first = [0u8; 16];
    s.read_exact(&mut first).unwrap();
    assert_eq!(&first[..12], b"HTTP/1.1 200");
    s
}

/// Reads the rest of a download begun by `start_download`; returns the
/// body's length.
fn finish_download(mut s: TcpStream) -> usize {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).ok();
    // What is left of the head ends at the first blank line.
    let head_end = rest
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(rest.len(), |p| p + 4);
    rest.len() - head_end
}

fn refused(port: u16) -> bool {
    match TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)) {
        Err(e) => e.kind() == ErrorKind::ConnectionRefused,
        Ok(_) => false,
    }
}

fn two_port_config(env: &Env, second: u16, extra: &str) -> String {
    env.simple_config_with(extra).replace(
        &format!("\"127.0.0.1:{}\"", env.port),
        &format!("\"127.0.0.1:{}\", \"127.0.0.1:{second}\"", env.port),
    )
}

/// A reload fails after one of its workers began serving: the rollback
/// lets that worker finish what it took (here a 32 MiB download), and the
/// address only the failed generation listened on refuses connections
/// once it is gone.
#[test]
fn a_rollback_lets_the_failed_generation_finish_its_downloads() {
    let env = Env::new();
    env.write_file("www/big.bin", &vec![7u8; BIG]);
    env.write_config(&env.simple_config());
    let _server = start_with_env(&env, &[("BATON_TEST_HOLD_READY", "2/1")]);
    let extra = free_port();
    env.write_config(&two_port_config(&env, extra, "").replace(
        "worker_ready_timeout = \"5s\"",
        "worker_ready_timeout = \"3s\"",
    ));
    let reload = reload_in_background(&env);
    // Only generation 2 listens on `extra`.
    assert!(wait_until(Duration::from_secs(10), || !refused(extra)));
    let download = start_download(extra, "/big.bin");
    let out = reload.join().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not ready"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(finish_download(download), BIG, "the download was cut");
    assert_eq!(env.status().generation, 1);
    assert_eq!(get(env.port, "/").unwrap().status, 200);
    assert!(
        wait_until(Duration::from_secs(10), || refused(extra)),
        "the failed generation's address still takes connections"
    );
}

/// A worker that said `Ready` and died before its generation committed
/// fails the reload (2).
#[test]
fn a_worker_ready_then_dead_before_the_commit_fails_the_reload() {
    let env = Env::new();
    env.write_config(&env.simple_config());
    let _server = start_with_env(&env, &[("BATON_TEST_HOLD_READY", "2/1")]);
    let reload = reload_in_background(&env);
    let ready = wait_worker(&env, 2, 0, "ready");
    // SAFETY: kill on a worker pid read from the status of our own server.
    unsafe { libc::kill(ready, libc::SIGKILL) };
    let out = reload.join().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let status = env.status();
    assert_eq!(status.generation, 1, "{}", status.raw);
    assert_eq!(get(env.port, "/").unwrap().status, 200);
}

/// The last `Ready` and that worker's death reach the master in the same
/// loop turn (the master is stopped while both happen): the generation
/// must not commit with a dead slot.
#[test]
fn a_ready_and_a_death_seen_together_fail_the_reload() {
    let env = Env::new();
    env.write_config(&env.simple_config());
    let server = start_with_env(&env, &[("BATON_TEST_HOLD_READY", "2/1")]);
    let reload = reload_in_background(&env);
    wait_worker(&env, 2, 0, "ready");
    let held = wait_worker(&env, 2, 1, "starting");
    server.signal(libc::SIGSTOP);
    // SAFETY: kill on a worker pid read from the status of our own server.
    unsafe { libc::kill(held, libc::SIGUSR2) };
    // The hook logs once the Ready is on the channel (the master, stopped,
    // has not read it).
    let line = format!("worker {held}: test hook: Ready sent");
    assert!(
        wait_until(Duration::from_secs(5), || server.log_text().contains(&line)),
        "{}",
        server.log_text()
    );
    // SAFETY: as above.
    unsafe { libc::kill(held, libc::SIGKILL) };
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{held}/status"))
            .map(|s| s.contains("State:\tZ"))
            .unwrap_or(false)
    }));
    server.signal(libc::SIGCONT);
    let out = reload.join().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(env.status().generation, 1);
    assert_eq!(get(env.port, "/").unwrap().status, 200);
}

/// A stop that comes while the old generation has not yet confirmed it
/// stopped accepting: the reload did succeed (its waiter hears so, not
/// "abandoned"), a download on the new generation completes, and the
/// master exits cleanly.
#[test]
fn a_stop_during_the_handover_reports_the_reload_as_done() {
    let env = Env::new();
    env.write_file("www/big.bin", &vec![7u8; BIG]);
    let one_worker = |c: String| c.replace("workers = 2", "workers = 1");
    env.write_config(&one_worker(env.simple_config()));
    let mut server = start_with_env(&env, &[("BATON_TEST_HOLD_DRAINING", "1")]);
    // Keeps generation 1's worker draining (an idle one would exit at
    // once, which ends the handover too).
    let _held = start_download(env.port, "/big.bin");
    let extra = free_port();
    env.write_config(&one_worker(two_port_config(&env, extra, "")));
    let reload = reload_in_background(&env);
    let handover = wait_until(Duration::from_secs(10), || {
        env.status().raw.contains("reload: handover")
    });
    assert!(handover, "{}", env.status().raw);
    let download = start_download(extra, "/big.bin");
    server.signal(libc::SIGTERM);
    let out = reload.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(finish_download(download), BIG, "the download was cut");
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
}

/// Every reload leaves a generation draining while a slow client holds
/// it; past `max_draining_generations` the oldest is stopped at once,
/// logged and counted.
#[test]
fn draining_generations_are_capped() {
    let env = Env::new();
    env.write_file("www/big.bin", &vec![7u8; BIG]);
    let config = env
        .simple_config_with("max_draining_generations = 2")
        .replace("grace = \"5s\"", "grace = \"60s\"")
        .replace("workers = 2", "workers = 1");
    env.write_config(&config);
    let server = start_with_env(&env, &[]);
    let mut stuck = Vec::new();
    for i in 0..6 {
        // Held by the serving generation (the only one accepting): it
        // drains for the whole grace period unless the cap stops it.
        stuck.push(start_download(env.port, "/big.bin"));
        let out = env.reload();
        assert!(out.status.success(), "reload {i}: {}", text(&out.stderr));
        let capped = wait_until(Duration::from_secs(5), || {
            let status = env.status();
            let draining: BTreeSet<u64> = status
                .workers
                .iter()
                .filter(|w| w.state == "draining")
                .map(|w| w.generation)
                .collect();
            draining.len() <= 2
        });
        assert!(capped, "after reload {i}: {}", env.status().raw);
    }
    assert!(
        server
            .log_text()
            .contains("more than 2 generations draining"),
        "{}",
        server.log_text()
    );
    let status = env.status();
    assert!(status.raw.contains("draining_stopped: 4"), "{}", status.raw);
}

/// An address removed by one reload (its socket kept while a slow client
/// holds the draining generation) and re-added by a reload that fails:
/// the failure leaves it exactly as before, refusing new connections.
#[test]
fn a_failed_reload_leaves_a_readded_address_refusing() {
    let env = Env::new();
    env.write_file("www/big.bin", &vec![7u8; BIG]);
    let extra = free_port();
    let both = two_port_config(&env, extra, "").replace("grace = \"5s\"", "grace = \"60s\"");
    env.write_config(&both);
    let _server = start_with_env(&env, &[("BATON_TEST_HOLD_READY", "3/0")]);
    let _stuck = start_download(extra, "/big.bin");
    // Reload 1: `extra` removed, generation 1 drains with the download.
    env.write_config(
        &env.simple_config()
            .replace("grace = \"5s\"", "grace = \"60s\""),
    );
    assert!(env.reload().status.success());
    assert!(wait_until(Duration::from_secs(10), || refused(extra)));
    // Reload 2: `extra` back, but generation 3 never becomes ready.
    env.write_config(&both.replace(
        "worker_ready_timeout = \"5s\"",
        "worker_ready_timeout = \"2s\"",
    ));
    let out = env.reload();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        wait_until(Duration::from_secs(10), || refused(extra)),
        "the re-added address takes connections after the reload failed"
    );
    assert_eq!(get(env.port, "/").unwrap().status, 200);
}
