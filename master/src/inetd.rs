//! inetd mode (`listen = ["stdin"]`): the server exits once it had no
//! connection for `inetd_idle_exit`, as lighttpd does, so the superserver
//! (which keeps the listening socket and watches it while no server runs)
//! starts it again on the next connection. Connections that arrive during
//! the exit wait in the listening socket's backlog for that next server.
//!
//! A watcher thread asks the master for its status over the control
//! socket, the way `baton -s status` does, and reads the workers'
//! counters (open connections, requests; each worker reports them every
//! second). Any open connection, or any change in the counters, is
//! activity. After `inetd_idle_exit` of none it sends the master SIGTERM:
//! a graceful stop, exactly as an operator's. Read at start: a reload does
//! not change it, and after a binary upgrade (the new image has no watcher
//! thread) the server stays up until stopped.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use baton_shared::config::{Config, ListenAddr};

/// Starts the idle watcher if `config` serves stdin and has an idle exit.
pub fn watch(config: &Config) {
    let idle = config.inetd_idle_exit;
    if idle.is_zero() || !config.listens().iter().any(|l| l.addr == ListenAddr::Stdin) {
        return;
    }
    let control = crate::control::socket_path(&config.pid_file);
    // Poll often enough that the exit comes within a tenth of the period
    // (at most a second late), but not more than the workers report.
    let every = (idle / 10).clamp(Duration::from_millis(200), Duration::from_secs(1));
    let spawned = std::thread::Builder::new()
        .name("inetd-idle".into())
        .spawn(move || run(control, idle, every));
    if let Err(e) = spawned {
        log::warn!(
            "inetd mode: cannot start the idle watcher ({e}); the server will not exit when idle"
        );
    }
}

fn run(control: PathBuf, idle: Duration, every: Duration) {
    let mut last_active = Instant::now();
    let mut last_seen: Option<Vec<(String, u64)>> = None;
    loop {
        std::thread::sleep(every);
        match activity(&control) {
            Some((open, counters)) => {
                if open > 0 || last_seen.as_ref().is_some_and(|s| *s != counters) {
                    last_active = Instant::now();
                }
                last_seen = Some(counters);
            }
            // The master is busy or stopping: not a reason to exit.
            None => last_active = Instant::now(),
        }
        if last_active.elapsed() >= idle {
            log::info!(
                "inetd mode: no connection for {}s, exiting (inetd_idle_exit)",
                idle.as_secs_f64()
            );
            // SAFETY: kill(2) on our own pid; the master's signals are
            // blocked in every thread and read by its loop, so this is the
            // same graceful stop as an operator's SIGTERM.
            unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
            return;
        }
    }
}

/// (open connections, each worker's `pid:requests` and `connections`)
/// from the master's status; `None` if it did not answer.
fn activity(control: &PathBuf) -> Option<(u64, Vec<(String, u64)>)> {
    let mut stream = UnixStream::connect(control).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"status\n").ok()?;
    let reader = BufReader::new(stream);
    let mut open = 0u64;
    let mut counters = Vec::new();
    let mut first = true;
    for line in reader.lines() {
        let line = line.ok()?;
        if first {
            first = false;
            if line.trim() != "0" {
                return None;
            }
            continue;
        }
        let Some(fields) = line.strip_prefix("worker: ") else {
            continue;
        };
        let value = |key: &str| {
            fields
                .split_whitespace()
                .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
        };
        let pid = value("pid")?;
        let conns: u64 = value("connections")?.parse().ok()?;
        let requests: u64 = value("requests")?.parse().ok()?;
        open = open.saturating_add(conns);
        counters.push((pid, requests));
    }
    Some((open, counters))
}
