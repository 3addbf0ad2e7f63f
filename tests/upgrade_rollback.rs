//! Binary upgrades that must not happen, or must be undone: a new binary
//! that cannot run is refused before it replaces the master; a new image
//! that fails before its generation is ready executes the old binary
//! again, which adopts everything back. The harness is `common/upgrade.rs`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::upgrade::*;
use common::*;

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
