//! Binary upgrade in place (`baton -s upgrade`, SIGUSR2): the master
//! re-executes the binary at its path, same pid, and the new image starts a
//! generation; a new binary that cannot run is refused or rolled back.
//!
//! Each server runs from its own copy of the binary in its temp dir, so a
//! test can replace that file the way a package manager does (a new file
//! renamed over it). The two images of one build are told apart with the
//! debug-only hooks file (`BATON_TEST_UPGRADE_HOOKS`, read by each image
//! as it starts): `server_token=NAME` sets the `Server` header its
//! generations answer with, `fail=adopt` makes a new image give up after
//! adopting.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::load::Load;
use common::*;

struct Upgradable {
    env: Env,
    bin: PathBuf,
    hooks: PathBuf,
}

impl Upgradable {
    fn new(token: &str) -> Upgradable {
        let env = Env::new();
        let bin = env.path("sbin/baton");
        std::fs::create_dir_all(env.path("sbin")).unwrap();
        std::fs::set_permissions(env.path("sbin"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::copy(BIN, &bin).expect("copy the binary");
        let hooks = env.write_file("hooks", format!("server_token={token}\n").as_bytes());
        Upgradable { env, bin, hooks }
    }

    fn config(&self, extra: &str) {
        self.env.write_config(&self.env.simple_config_with(extra));
    }

    fn start(&self) -> Server {
        let mut command = Command::new(&self.bin);
        command
            .arg("-c")
            .arg(self.env.config_path())
            .env("BATON_TEST_UPGRADE_HOOKS", &self.hooks);
        self.env.spawn_command(command).wait_ready()
    }

    /// What the next image will read as it starts.
    fn hooks(&self, text: &str) {
        self.env.write_file("hooks", text.as_bytes());
    }

    /// A new binary at the path, as dpkg installs one: written beside it,
    /// renamed over it (the running image's file is unlinked).
    fn install(&self, contents: &[u8], mode: u32) {
        let tmp = self.env.path("sbin/baton.dpkg-new");
        std::fs::write(&tmp, contents).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::rename(&tmp, &self.bin).unwrap();
    }

    fn install_build(&self) {
        self.install(&std::fs::read(BIN).unwrap(), 0o755);
    }

    fn upgrade(&self) -> Output {
        Command::new(BIN)
            .arg("-c")
            .arg(self.env.config_path())
            .args(["-s", "upgrade"])
            .stdin(Stdio::null())
            .output()
            .expect("run baton -s upgrade")
    }

    fn server_header(&self) -> String {
        let r = get(self.env.port, "/").expect("GET /");
        assert_eq!(r.status, 200);
        r.header("server").unwrap_or("").to_string()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn exe_of(pid: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Waits until the master has exactly `n` children (the old generation
/// drained away), then returns them.
fn settle(pid: i32, n: usize) -> Vec<i32> {
    assert!(
        wait_until(Duration::from_secs(15), || children_of(pid).len() == n),
        "master {pid} has children {:?}, expected {n}",
        children_of(pid)
    );
    let mut c = children_of(pid);
    c.sort_unstable();
    c
}

#[test]
fn upgrade_keeps_the_pid_and_runs_the_new_image() {
    let u = Upgradable::new("baton-old");
    u.config("");
    let server = u.start();
    let pid = server.pid();
    assert_eq!(u.server_header(), "baton-old");
    let before = settle(pid, 2);
    assert_eq!(
        std::fs::read_to_string(u.env.pid_file()).unwrap().trim(),
        pid.to_string()
    );

    u.hooks("server_token=baton-new\n");
    // A reload keeps the image: the header stays.
    assert!(u.env.reload().status.success());
    assert_eq!(u.server_header(), "baton-old");

    u.install_build();
    assert!(exe_of(pid).ends_with("(deleted)"), "{}", exe_of(pid));
    let out = u.upgrade();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(text(&out.stdout).contains("upgraded"), "{}", describe(&out));
    assert_eq!(u.server_header(), "baton-new");
    assert_eq!(server.pid(), pid);
    assert_eq!(
        exe_of(pid),
        u.bin.display().to_string(),
        "the new file runs"
    );
    assert_eq!(
        std::fs::read_to_string(u.env.pid_file()).unwrap().trim(),
        pid.to_string()
    );
    let after = settle(pid, 2);
    assert!(
        before.iter().all(|p| !after.contains(p)),
        "{before:?} {after:?}"
    );
    assert!(zombies_of(pid).is_empty());
    let status = u.env.status();
    assert_eq!(status.pid, pid);
    assert_eq!(status.generation, 3, "{}", status.raw);
}

#[test]
fn sigusr2_upgrades_with_reloading_and_ready_for_systemd() {
    let u = Upgradable::new("baton-a");
    u.config("");
    let server = u.start();
    let pid = server.pid();
    u.hooks("server_token=baton-b\n");
    u.install_build();
    server.signal(libc::SIGUSR2);
    let reloading = server.wait_notify("RELOADING=1", Duration::from_secs(10));
    assert!(reloading.is_some(), "{}", server.log_text());
    let ready = server
        .wait_notify("READY=1", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no READY=1 after USR2; log:\n{}", server.log_text()));
    assert!(ready.contains(&format!("MAINPID={pid}")), "{ready}");
    assert_eq!(u.server_header(), "baton-b");
    assert_eq!(exe_of(pid), u.bin.display().to_string());
}

#[test]
fn upgrade_under_load_loses_no_request() {
    let u = Upgradable::new("baton-1");
    u.config("");
    let server = u.start();
    let pid = server.pid();
    let body = b"<h1>hello from baton</h1>\n";
    let load = Load::start(u.env.port, 4, 4, body);
    for round in 2..=4 {
        // Let the load reach the generation about to be replaced.
        std::thread::sleep(Duration::from_millis(200)); // load time, not a synchronisation
        u.hooks(&format!("server_token=baton-{round}\n"));
        u.install_build();
        let out = u.upgrade();
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        assert_eq!(u.server_header(), format!("baton-{round}"));
    }
    std::thread::sleep(Duration::from_millis(200)); // load time, not a synchronisation
    let counts = load.finish();
    assert_eq!(counts.failed, 0, "failures: {:?}", counts.errors);
    assert!(
        counts.ok > 100,
        "too little load to prove anything: {}",
        counts.ok
    );
    eprintln!(
        "upgrade under load: {} requests ok, 0 failed, 3 upgrades",
        counts.ok
    );
    assert_eq!(server.pid(), pid);
    settle(pid, 2);
    assert!(zombies_of(pid).is_empty());
}

#[test]
fn a_slow_download_started_before_the_upgrade_completes() {
    let u = Upgradable::new("baton-old");
    u.config("");
    let size = 8 * 1024 * 1024;
    let big: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    u.env.write_file("www/big.bin", &big);
    let server = u.start();
    let mut s = connect(u.env.port);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = vec![0u8; 64 * 1024];
    let n = s.read(&mut got).unwrap();
    got.truncate(n);

    u.hooks("server_token=baton-new\n");
    u.install_build();
    let out = u.upgrade();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(u.server_header(), "baton-new");

    let mut chunk = vec![0u8; 256 * 1024];
    let started = Instant::now();
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "read failed after {} bytes: {e}\n{}",
                got.len(),
                server.log_text()
            ),
        }
        let head_end = got.windows(4).position(|w| w == b"\r\n\r\n");
        if head_end.is_some_and(|h| got.len() - h - 4 >= size) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(
        text(&got[..head_end]).contains("Server: baton-old"),
        "served by the old image's worker"
    );
    assert_eq!(got.len() - head_end, size, "whole body delivered");
    assert_eq!(&got[head_end..], &big[..]);
}

/// Whatever refused or rolled back the upgrade: the same master, the same
/// workers (still its children), the old image answering.
fn assert_untouched(u: &Upgradable, server: &Server, workers: &[i32], token: &str) {
    assert_eq!(u.server_header(), token);
    assert_eq!(settle(server.pid(), workers.len()), workers);
    assert_eq!(
        std::fs::read_to_string(u.env.pid_file()).unwrap().trim(),
        server.pid().to_string()
    );
    assert!(zombies_of(server.pid()).is_empty());
}

#[test]
fn a_new_binary_that_exits_at_once_is_never_executed() {
    let u = Upgradable::new("baton-old");
    u.config("");
    let server = u.start();
    let workers = settle(server.pid(), 2);
    u.install(b"#!/bin/sh\nexit 0\n", 0o755);
    let out = u.upgrade();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("failed its preflight"),
        "{}",
        describe(&out)
    );
    assert_untouched(&u, &server, &workers, "baton-old");

    // A binary that crashes at once is refused the same way.
    u.install(b"#!/bin/sh\nkill -SEGV $$\n", 0o755);
    let out = u.upgrade();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert_untouched(&u, &server, &workers, "baton-old");

    // A real binary afterwards upgrades.
    u.hooks("server_token=baton-new\n");
    u.install_build();
    let out = u.upgrade();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(u.server_header(), "baton-new");
}

#[test]
fn a_binary_path_replaced_by_a_file_that_is_not_executable() {
    let u = Upgradable::new("baton-old");
    u.config("");
    let server = u.start();
    let workers = settle(server.pid(), 2);
    u.install(b"not a program\n", 0o644);
    let out = u.upgrade();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot run the new binary"),
        "{}",
        describe(&out)
    );
    assert!(err.contains("ermission denied"), "{}", describe(&out));
    assert_untouched(&u, &server, &workers, "baton-old");
}

#[test]
fn an_invalid_config_is_reported_and_nothing_changes() {
    let u = Upgradable::new("baton-old");
    u.config("");
    let server = u.start();
    let workers = settle(server.pid(), 2);
    u.install_build();
    // Invalid, yet the client still finds the pidfile in it.
    u.config("wrokers = 3");
    let out = u.upgrade();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("baton.toml:6:1: unknown key"),
        "{}",
        describe(&out)
    );
    assert_untouched(&u, &server, &workers, "baton-old");
}

#[test]
fn a_new_image_that_fails_before_ready_rolls_back_to_the_old_binary() {
    rolls_back("adopt");
}

#[test]
fn a_new_image_that_cannot_read_the_state_rolls_back() {
    rolls_back("state");
}

#[test]
fn a_new_image_that_crashes_before_ready_rolls_back() {
    rolls_back("crash");
}

/// The new image fails (`fail=HOW`) after the exec: the old binary runs
/// again from its fd, same pid, same workers, and the waiter hears exit 2.
fn rolls_back(how: &str) {
    let u = Upgradable::new("baton-old");
    u.config("");
    let server = u.start();
    let pid = server.pid();
    let workers = settle(pid, 2);
    u.hooks(&format!("server_token=baton-new\nfail={how}\n"));
    u.install_build();
    let out = u.upgrade();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(err.contains("previous binary"), "{}", describe(&out));
    assert!(err.contains("serves again"), "{}", describe(&out));
    assert_untouched(&u, &server, &workers, "baton-old");
    // The old image runs again: its file is the unlinked one.
    assert!(exe_of(pid).ends_with("(deleted)"), "{}", exe_of(pid));
    assert!(
        server.log_text().contains(&format!("fail={how}")),
        "{}",
        server.log_text()
    );

    // It still serves, reloads and upgrades.
    assert!(u.env.reload().status.success());
    u.hooks("server_token=baton-new\n");
    let out = u.upgrade();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(u.server_header(), "baton-new");
    assert_eq!(exe_of(pid), u.bin.display().to_string());
}

#[test]
fn twenty_upgrades_in_a_row_keep_fds_flat_and_leave_no_zombie() {
    let u = Upgradable::new("baton-0");
    u.config("");
    let server = u.start();
    let pid = server.pid();
    settle(pid, 2);
    // The first entry: the image started normally, before any upgrade.
    let mut counts = vec![fd_count(pid)];
    for i in 1..=20 {
        u.hooks(&format!("server_token=baton-{i}\n"));
        u.install_build();
        let out = u.upgrade();
        assert_eq!(
            out.status.code(),
            Some(0),
            "upgrade {i}: {}",
            describe(&out)
        );
        assert_eq!(u.server_header(), format!("baton-{i}"));
        settle(pid, 2);
        assert!(zombies_of(pid).is_empty(), "zombies after upgrade {i}");
        counts.push(fd_count(pid));
    }
    eprintln!("master fd count after each of 20 upgrades: {counts:?}");
    assert!(counts.iter().all(|c| *c == counts[0]), "{counts:?}");
    assert_eq!(server.pid(), pid);
    assert_eq!(
        std::fs::read_to_string(u.env.pid_file()).unwrap().trim(),
        pid.to_string()
    );
    assert_eq!(u.env.status().generation, 21);
}

#[test]
fn a_second_upgrade_while_one_runs_is_refused_as_busy() {
    let u = Upgradable::new("baton-old");
    u.config("");
    let server = u.start();
    // The new "binary" is a wrapper that takes its time before it runs the
    // real one: the first upgrade's preflight is still running when the
    // second request comes.
    let real = u.env.path("sbin/baton-real");
    std::fs::copy(BIN, &real).unwrap();
    let wrapper = format!("#!/bin/sh\nsleep 3\nexec {} \"$@\"\n", real.display());
    u.hooks("server_token=baton-new\n");
    u.install(wrapper.as_bytes(), 0o755);
    let first = {
        let mut c = Command::new(BIN);
        c.arg("-c")
            .arg(u.env.config_path())
            .args(["-s", "upgrade"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    assert!(
        wait_until(Duration::from_secs(10), || server
            .log_text()
            .contains("upgrade: checking the new binary")),
        "{}",
        server.log_text()
    );
    let second = u.upgrade();
    assert_eq!(second.status.code(), Some(2), "{}", describe(&second));
    assert!(
        text(&second.stderr).contains("busy"),
        "{}",
        describe(&second)
    );
    let first = first.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", describe(&first));
    assert_eq!(u.server_header(), "baton-new");
    assert_eq!(exe_of(server.pid()), real.display().to_string());
}

#[test]
fn the_admin_api_the_lock_and_the_counters_survive_an_upgrade() {
    use common::admin::{ADMIN_TOKEN, admin_get, with_admin, with_tcp_admin};
    let u = Upgradable::new("baton-old");
    let admin_port = free_port();
    let config = with_admin(&u.env, &u.env.simple_config());
    // Both kinds of admin socket: a unix one and a TCP one are adopted
    // the same way; the config can only have one, so two rounds.
    u.env.write_config(&config);
    let server = u.start();
    let pid = server.pid();
    assert!(u.env.reload().status.success());
    // Uptime is in whole seconds: let one pass before the upgrade.
    std::thread::sleep(Duration::from_millis(1100)); // uptime, not a synchronisation
    u.hooks("server_token=baton-new\n");
    u.install_build();
    let out = u.upgrade();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let status = admin_get(&u.env.path("admin.sock"), "/status");
    assert!(status.contains(&format!("\"pid\":{pid}")), "{status}");
    assert!(
        status.contains("\"reloads\":{\"failed\":0,\"ok\":2}"),
        "reload + upgrade counted: {status}"
    );
    assert!(
        !status.contains("\"uptime_seconds\":0,"),
        "uptime goes on: {status}"
    );
    // The instance lock is still held: a second server is refused.
    let second = u.env.baton(&[]);
    assert_eq!(second.status.code(), Some(1), "{}", describe(&second));
    assert!(
        text(&second.stderr).contains("already running"),
        "{}",
        describe(&second)
    );

    // The TCP admin API, moved there by a reload, survives the next one.
    u.env
        .write_config(&with_tcp_admin(&u.env, &u.env.simple_config(), admin_port));
    assert!(u.env.reload().status.success());
    u.install_build();
    let out = u.upgrade();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let raw = format!(
        "GET /status HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
    );
    let r = request(admin_port, &raw).expect("admin over TCP");
    assert_eq!(r.status, 200, "{}", text(&r.body));
    assert!(text(&r.body).contains(&format!("\"pid\":{pid}")));
}

#[test]
fn a_preflight_that_never_ends_is_killed_and_the_upgrade_refused() {
    let u = Upgradable::new("baton-old");
    u.hooks("server_token=baton-old\npreflight_timeout_ms=500\n");
    u.config("");
    let server = u.start();
    let workers = settle(server.pid(), 2);
    u.install(b"#!/bin/sh\nexec sleep 60\n", 0o755);
    let started = Instant::now();
    let out = u.upgrade();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("did not finish within 500 ms"),
        "{}",
        describe(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // The killed preflight is reaped: only the workers are left.
    assert_untouched(&u, &server, &workers, "baton-old");
}

#[test]
fn a_new_generation_that_cannot_serve_rolls_back_and_drains() {
    if !is_root() {
        eprintln!("skipped: needs root (workers run as nobody)");
        return;
    }
    let u = Upgradable::new("baton-old");
    u.config("");
    let server = u.start();
    let pid = server.pid();
    let workers = settle(pid, 2);
    // `-t` cannot see it (it checks as root), the new workers (as nobody)
    // cannot enter the root: the new image's generation fails.
    std::fs::set_permissions(u.env.path("www"), std::fs::Permissions::from_mode(0o700)).unwrap();
    u.hooks("server_token=baton-new\n");
    u.install_build();
    let out = u.upgrade();
    std::fs::set_permissions(u.env.path("www"), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(err.contains("cannot serve"), "{}", describe(&out));
    assert!(err.contains("previous binary"), "{}", describe(&out));
    // The failed generation, handed back draining, is reaped by the old
    // image; the old workers serve on.
    assert_untouched(&u, &server, &workers, "baton-old");
    assert!(exe_of(pid).ends_with("(deleted)"), "{}", exe_of(pid));
    let status = u.env.status();
    assert_eq!(status.generation, 1, "{}", status.raw);
}

#[test]
fn a_stop_during_the_preflight_abandons_the_upgrade_and_stops() {
    let u = Upgradable::new("baton-old");
    u.config("");
    let mut server = u.start();
    u.install(b"#!/bin/sh\nexec sleep 60\n", 0o755);
    let waiter = Command::new(BIN)
        .arg("-c")
        .arg(u.env.config_path())
        .args(["-s", "upgrade"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || server
            .log_text()
            .contains("upgrade: checking the new binary")),
        "{}",
        server.log_text()
    );
    server.signal(libc::SIGTERM);
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("the server is stopping"),
        "{}",
        describe(&out)
    );
    assert_eq!(server.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(!u.env.pid_file().exists());
}
