//! inetd mode's idle exit (`inetd_idle_exit`): with `listen = ["stdin"]`
//! the server stops gracefully once it had no connection for that long,
//! and the listening socket the superserver keeps queues the next
//! connection for the next server. Real processes, a real listening
//! socket passed as fd 0, as inetd's `wait` mode does.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Starts `baton` on a copy of `listener` as fd 0 with `idle` set; the
/// caller keeps `listener`, as inetd does.
fn start_inetd(env: &Env, listener: &TcpListener, idle: &str) -> Server {
    let config = env
        .simple_config_with(&format!("inetd_idle_exit = \"{idle}\""))
        .replace(
            &format!("listen = [\"127.0.0.1:{}\"]", env.port),
            "listen = [\"stdin\"]",
        );
    env.write_config(&config);
    let mut command = Command::new(BIN);
    command
        .arg("-c")
        .arg(env.config_path())
        .stdin(Stdio::from(OwnedFd::from(listener.try_clone().unwrap())));
    env.spawn_command(command).wait_ready()
}

/// Idle from the start: exits 0 after about `inetd_idle_exit`; a
/// connection made after that waits in the kept socket and is served by
/// the next server started on it.
#[test]
fn exits_when_idle_and_the_next_server_takes_the_queue() {
    let env = Env::new();
    let listener = TcpListener::bind(("127.0.0.1", env.port)).unwrap();
    let started = Instant::now();
    let mut server = start_inetd(&env, &listener, "2s");
    let code = server.wait_exit(Duration::from_secs(20));
    let took = started.elapsed();
    assert_eq!(code, Some(0), "graceful exit: {}", server.diagnose());
    assert!(
        took >= Duration::from_secs(2),
        "not before the idle period: {took:?}"
    );
    assert!(took < Duration::from_secs(8), "soon after it: {took:?}");
    assert!(
        server.log_text().contains("inetd_idle_exit"),
        "{}",
        server.log_text()
    );

    // Nobody serves now; the connection is queued in the kept socket.
    let mut waiting = connect(env.port);
    waiting
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let _next = start_inetd(&env, &listener, "60s");
    let mut reader = std::io::BufReader::new(waiting);
    let resp = read_response(&mut reader, false).expect("answered by the next server");
    assert_eq!(resp.status, 200);
}

/// Requests keep it up past the idle period; an open (idle keep-alive)
/// connection too; it exits once the last one is gone.
#[test]
fn connections_postpone_the_exit() {
    let env = Env::new();
    let listener = TcpListener::bind(("127.0.0.1", env.port)).unwrap();
    let mut server = start_inetd(&env, &listener, "2s");
    // Connection-per-request traffic for twice the idle period (the
    // pauses are the load's pattern, not synchronisation).
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert_eq!(get(env.port, "/").unwrap().status, 200);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(pid_alive(server.pid()), "traffic kept it up");
    // One keep-alive connection left open, idle, for the idle period again.
    let mut held = connect(env.port);
    held.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut reader = std::io::BufReader::new(held.try_clone().unwrap());
    assert_eq!(read_response(&mut reader, false).unwrap().status, 200);
    assert!(
        !wait_until(Duration::from_secs(4), || !pid_alive(server.pid())),
        "an open connection keeps it up"
    );
    let released = Instant::now();
    drop(reader);
    drop(held);
    assert_eq!(
        server.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        server.diagnose()
    );
    assert!(
        released.elapsed() >= Duration::from_secs(1),
        "{:?}",
        released.elapsed()
    );
}

/// `inetd_idle_exit = "0s"`: never exits by itself.
#[test]
fn zero_never_exits() {
    let env = Env::new();
    let listener = TcpListener::bind(("127.0.0.1", env.port)).unwrap();
    let server = start_inetd(&env, &listener, "0s");
    assert!(!wait_until(Duration::from_secs(3), || !pid_alive(
        server.pid()
    )));
    assert_eq!(get(env.port, "/").unwrap().status, 200);
    drop(server);
}

/// Out of bounds, or not a duration: refused where it is written.
#[test]
fn bad_values_are_located() {
    let env = Env::new();
    let config = env.simple_config_with("inetd_idle_exit = \"25h\"");
    env.write_config(&config);
    let out = env.baton(&["-t"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = config
        .lines()
        .position(|l| l.starts_with("inetd_idle_exit"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("baton.toml:{line}:")) && err.contains("at most 24h"),
        "{err}"
    );
    env.write_config(&env.simple_config_with("inetd_idle_exit = \"soon\""));
    let out = env.baton(&["-t"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("inetd_idle_exit"));
}
