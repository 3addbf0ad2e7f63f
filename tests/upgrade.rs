//! Binary upgrade in place (`baton -s upgrade`, SIGUSR2): the master
//! re-executes the binary at its path, same pid, and the new image starts a
//! generation from the new code while the old workers drain. The harness
//! is `common/upgrade.rs`; refusals and rollbacks are in
//! `upgrade_rollback.rs`.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::load::Load;
use common::upgrade::*;
use common::*;

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
    assert_eq!(u.server_header(), "baton-b", "{}", server.log_text());
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
#[test]
fn twenty_upgrades_in_a_row_keep_fds_flat_and_leave_no_zombie() {
    let u = Upgradable::new("baton-0");
    u.config("");
    let server = u.start();
    let pid = server.pid();
    settle(pid, 2);
    // The first entry: the image started normally, before any upgrade.
    let mut counts = vec![fd_count(pid)];
    let mut took = Vec::new();
    for i in 1..=20 {
        u.hooks(&format!("server_token=baton-{i}\n"));
        u.install_build();
        let t = Instant::now();
        let out = u.upgrade();
        took.push(t.elapsed().as_millis());
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
    took.sort_unstable();
    eprintln!(
        "baton -s upgrade took {} ms median, {} ms max (debug build)",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    // Flat from the first upgrade on; the count before it may be higher
    // by a moment's fd (a loaded machine caught one once), never lower: a
    // leak is growth.
    assert!(counts[1..].iter().all(|c| *c == counts[1]), "{counts:?}");
    assert!(
        counts[0] >= counts[1],
        "the first upgrade added fds: {counts:?}"
    );
    assert_eq!(server.pid(), pid);
    assert_eq!(
        std::fs::read_to_string(u.env.pid_file()).unwrap().trim(),
        pid.to_string()
    );
    assert_eq!(u.env.status().generation, 21);
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
fn counters_of_workers_that_exited_survive_an_upgrade() {
    use common::admin::{admin_get, with_admin};
    use common::h2::h2tool;
    let u = Upgradable::new("baton-old");
    // h2c on the listener, for an HTTP/2 stream without TLS.
    let site = format!(
        "{}\n[[site]]\nlisten = [{{ address = \"127.0.0.1:{}\", h2c = true }}]\nroot = \"{}\"\n",
        u.env.globals(),
        u.env.port,
        u.env.path("www").display()
    );
    u.env.write_file("www/index.html", b"hello\n");
    u.env.write_config(&with_admin(&u.env, &site));
    let _server = u.start();
    for _ in 0..5 {
        let r = request(
            u.env.port,
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .expect("request");
        assert_eq!(r.status, 200);
    }
    let got = h2tool(&[&u.env.port.to_string(), "get", "/index.html"]);
    assert_eq!(got["streams"][0]["status"], 200, "{got}");
    // A reload: the workers that served them exit, and their counters
    // move to the master's totals of exited workers.
    let old = u.env.status().serving_pids();
    assert!(u.env.reload().status.success());
    assert!(
        wait_until(Duration::from_secs(10), || old
            .iter()
            .all(|&p| !pid_alive(p))),
        "old workers {old:?} still alive"
    );
    let sock = u.env.path("admin.sock");
    let value = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    };
    let before = admin_get(&sock, "/metrics");
    assert!(value(&before, "baton_requests_total ") >= 6, "{before}");
    assert!(
        value(&before, "baton_http2_streams_total ") >= 1,
        "{before}"
    );
    u.install_build();
    let out = u.upgrade();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let after = admin_get(&sock, "/metrics");
    for name in [
        "baton_requests_total ",
        "baton_responses_total{class=\"2xx\"} ",
        "baton_sent_bytes_total ",
        "baton_http2_connections_total ",
        "baton_http2_streams_total ",
    ] {
        assert!(
            value(&after, name) >= value(&before, name),
            "{name}went down across the upgrade: {} -> {}\n{after}",
            value(&before, name),
            value(&after, name)
        );
    }
}
