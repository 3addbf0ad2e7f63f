//! Sockets passed in rather than bound: systemd socket activation
//! (LISTEN_FDS) and inetd's fd 0; and the order of systemd notifications.

mod common;

use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The inode of a socket we hold.
fn inode(l: &TcpListener) -> u64 {
    std::fs::metadata(format!("/proc/self/fd/{}", l.as_raw_fd()))
        .unwrap()
        .ino()
}

/// The inodes of the listening sockets a process holds.
fn socket_inodes(pid: i32) -> Vec<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            let t = target.to_string_lossy().to_string();
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// Runs baton the way systemd does with socket activation: the passed
/// sockets on fds 3.., LISTEN_FDS/LISTEN_FDNAMES set, and LISTEN_PID the
/// pid of baton itself (a shell sets it to its own pid, then execs baton
/// in its place).
fn spawn_activated(env: &Env, passed: &[&TcpListener], names: &str) -> Server {
    let fds: Vec<i32> = passed.iter().map(|l| l.as_raw_fd()).collect();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("LISTEN_PID=$$ exec \"$@\"")
        .arg("sh")
        .arg(BIN)
        .arg("-c")
        .arg(env.config_path())
        .env("LISTEN_FDS", passed.len().to_string())
        .env("LISTEN_FDNAMES", names)
        .stdin(Stdio::null());
    // SAFETY: only fcntl/dup2/close, which are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            // First out of the way (the originals may sit on 3 or 4), then
            // onto 3, 4, ... without close-on-exec.
            let high: Vec<i32> = fds
                .iter()
                .map(|&fd| libc::fcntl(fd, libc::F_DUPFD, 100))
                .collect();
            for (i, &fd) in high.iter().enumerate() {
                libc::dup2(fd, 3 + i as i32);
                libc::close(fd);
            }
            Ok(())
        });
    }
    env.spawn_command(command).wait_ready()
}

#[test]
fn systemd_socket_activation_adopts_matching_sockets_and_keeps_them_on_reload() {
    let env = Env::new();
    let passed = TcpListener::bind(("127.0.0.1", env.port)).unwrap();
    let stray = TcpListener::bind("127.0.0.1:0").unwrap();
    let stray_port = stray.local_addr().unwrap().port();
    let own_port = free_port();
    let config = env.simple_config().replace(
        &format!("listen = [\"127.0.0.1:{}\"]", env.port),
        &format!(
            "listen = [\"127.0.0.1:{}\", \"127.0.0.1:{own_port}\"]",
            env.port
        ),
    );
    env.write_config(&config);
    let server = spawn_activated(&env, &[&passed, &stray], "http:stray");
    let passed_inode = inode(&passed);

    assert!(
        socket_inodes(server.pid()).contains(&passed_inode),
        "adopted, not rebound"
    );
    assert!(
        !socket_inodes(server.pid()).contains(&inode(&stray)),
        "stray one closed"
    );
    let log = server.log_text();
    assert!(
        log.contains(&format!(
            "using passed socket 127.0.0.1:{} (http)",
            env.port
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "closing passed socket 127.0.0.1:{stray_port} (stray): no site listens there"
        )),
        "{log}"
    );
    // Our copy of the passed socket must not be what serves: close it.
    drop(passed);
    assert_eq!(get(env.port, "/").unwrap().status, 200);
    assert_eq!(
        get(own_port, "/").unwrap().status,
        200,
        "the rest is bound by baton"
    );

    assert!(env.reload().status.success());
    assert!(
        socket_inodes(server.pid()).contains(&passed_inode),
        "kept across the reload"
    );
    assert_eq!(get(env.port, "/").unwrap().status, 200);
}

#[test]
fn socket_activation_for_another_pid_is_ignored() {
    let env = Env::new();
    env.write_config(&env.simple_config());
    let decoy = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut command = Command::new(BIN);
    command
        .arg("-c")
        .arg(env.config_path())
        .env("LISTEN_FDS", "1")
        .env("LISTEN_PID", "1")
        .stdin(Stdio::null());
    let fd = decoy.as_raw_fd();
    // SAFETY: only dup2, which is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            libc::dup2(libc::fcntl(fd, libc::F_DUPFD, 100), 3);
            Ok(())
        });
    }
    let server = env.spawn_command(command).wait_ready();
    assert!(
        !server.log_text().contains("passed socket"),
        "{}",
        server.log_text()
    );
    assert_eq!(get(env.port, "/").unwrap().status, 200);
}

#[test]
fn inetd_mode_serves_the_socket_on_stdin() {
    let env = Env::new();
    let listener = TcpListener::bind(("127.0.0.1", env.port)).unwrap();
    let config = env.simple_config().replace(
        &format!("listen = [\"127.0.0.1:{}\"]", env.port),
        "listen = [\"stdin\"]",
    );
    env.write_config(&config);
    let mut command = Command::new(BIN);
    command
        .arg("-c")
        .arg(env.config_path())
        .stdin(Stdio::from(OwnedFd::from(listener)));
    let server = env.spawn_command(command).wait_ready();
    assert_eq!(get(env.port, "/").unwrap().status, 200);
    assert!(env.reload().status.success());
    assert_eq!(
        get(env.port, "/").unwrap().status,
        200,
        "kept across the reload"
    );
    drop(server);
}

#[test]
fn stdin_that_is_not_a_socket_fails_the_start_with_its_location() {
    let env = Env::new();
    let config = env.simple_config().replace(
        &format!("listen = [\"127.0.0.1:{}\"]", env.port),
        "listen = [\"stdin\"]",
    );
    env.write_config(&config);
    let out = env.baton(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("baton.toml:") && err.contains("stdin is not a listening socket"),
        "{err}"
    );
    let out = env.baton(&["--daemon"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with --daemon"));
}

#[test]
fn notifications_come_in_order() {
    let env = Env::new();
    env.write_config(&env.simple_config());
    let server = env.spawn(&[]);
    let wait = Duration::from_secs(10);
    let ready = server.next_notify(wait).expect("READY");
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(
        ready.contains(&format!("MAINPID={}", server.pid())),
        "{ready}"
    );
    assert!(ready.contains("STATUS=generation 1 serving"), "{ready}");

    assert!(env.reload().status.success());
    let reloading = server.next_notify(wait).expect("RELOADING");
    assert!(reloading.lines().any(|l| l == "RELOADING=1"), "{reloading}");
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC")
        .parse()
        .unwrap();
    assert!(usec > 0);
    let ready = server.next_notify(wait).expect("READY after reload");
    assert!(
        ready.contains("READY=1") && ready.contains("generation 2"),
        "{ready}"
    );

    // A failed reload still ends with READY=1 (systemd waits for it).
    env.write_config(&env.simple_config().replace("root =", "rot ="));
    assert_eq!(env.reload().status.code(), Some(1));
    assert!(server.next_notify(wait).unwrap().contains("RELOADING=1"));
    assert!(server.next_notify(wait).unwrap().contains("generation 2"));

    server.signal(libc::SIGTERM);
    assert!(server.next_notify(wait).unwrap().contains("STOPPING=1"));
}
