//! The master's life: start, pidfile, second instance, daemon, config test,
//! stops, crashed workers, master death, privilege drop.

mod common;

use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

use common::*;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

#[test]
fn serves_and_keeps_alive() {
    let env = Env::new();
    env.write_config(&env.simple_config());
    let _server = env.start();
    let mut s = connect(env.port);
    let mut reader = BufReader::new(s.try_clone().unwrap());
    for _ in 0..3 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let r = read_response(&mut reader, false).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"<h1>hello from baton</h1>\n");
        assert!(!r.closes());
    }
    assert_eq!(get(env.port, "/missing").unwrap().status, 404);
}

#[test]
fn pidfile_lifecycle_and_second_instance() {
    let env = Env::new();
    env.write_config(&env.simple_config());
    assert!(!env.pid_file().exists());
    let mut server = env.start();
    let pid: i32 = std::fs::read_to_string(env.pid_file())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, server.pid());

    // Reloads do not change it.
    assert!(env.reload().status.success());
    assert_eq!(
        std::fs::read_to_string(env.pid_file()).unwrap().trim(),
        pid.to_string()
    );

    // A second instance on the same pidfile is refused and changes nothing.
    let other_port = free_port();
    let second = env
        .simple_config()
        .replace(&env.port.to_string(), &other_port.to_string());
    let second_path = env.path("second.toml");
    std::fs::write(&second_path, second).unwrap();
    let out = std::process::Command::new(BIN)
        .arg("-c")
        .arg(&second_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("already running (pid {pid})")),
        "{}",
        text(&out.stderr)
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", other_port)).is_err());

    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(!env.pid_file().exists(), "pidfile removed at exit");
}

#[test]
fn a_stale_pidfile_is_replaced() {
    let env = Env::new();
    env.write_config(&env.simple_config());
    // A pid that cannot be alive: beyond pid_max.
    std::fs::write(env.pid_file(), "4194999\n").unwrap();
    let server = env.start();
    assert_eq!(
        std::fs::read_to_string(env.pid_file()).unwrap().trim(),
        server.pid().to_string()
    );
}

#[test]
fn pidfile_of_someone_else_is_left_at_exit() {
    let env = Env::new();
    env.write_config(&env.simple_config());
    let mut server = env.start();
    std::fs::write(env.pid_file(), "12345\n").unwrap();
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    assert_eq!(std::fs::read_to_string(env.pid_file()).unwrap(), "12345\n");
}

#[test]
fn daemon_exits_0_when_ready_and_1_on_startup_error() {
    let env = Env::new();
    env.write_config(&env.simple_config());
    let out = env.baton(&["--daemon"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let pid: i32 = std::fs::read_to_string(env.pid_file())
        .expect("pidfile exists when --daemon returns")
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(pid));
    assert_eq!(get(env.port, "/").unwrap().status, 200);
    let status = env.status();
    assert_eq!(status.pid, pid);
    // `-s quit` returns once the master is gone.
    let out = env.baton(&["-s", "quit"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(wait_until(Duration::from_secs(2), || !pid_alive(pid)));
    assert!(!env.pid_file().exists());

    // Startup error: the port is taken.
    let taken = std::net::TcpListener::bind(("127.0.0.1", env.port)).unwrap();
    let out = env.baton(&["--daemon"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("cannot bind 127.0.0.1:{}", env.port)),
        "{}",
        text(&out.stderr)
    );
    assert!(!env.pid_file().exists(), "no pidfile after a failed start");
    drop(taken);
}

#[test]
fn s_commands_report_not_running() {
    let env = Env::new();
    env.write_config(&env.simple_config());
    for cmd in ["reload", "status", "stop", "quit"] {
        let out = env.baton(&["-s", cmd]);
        assert_eq!(
            out.status.code(),
            Some(3),
            "-s {cmd}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains("not running"));
    }
}

#[test]
fn config_test_accepts_good_and_rejects_bad_without_a_trace() {
    let env = Env::new();
    let good = env.simple_config_with(&format!(
        "error_log = \"{}\"",
        env.path("logs/error.log").display()
    ));
    std::fs::create_dir_all(env.path("logs")).unwrap();
    env.write_config(&good);
    let listing = || {
        let mut v: Vec<_> = walk(env.dir.path());
        v.sort();
        v
    };
    let before = listing();
    let out = env.baton(&["-t"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("is valid"));
    assert_eq!(listing(), before, "-t created or removed files");
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", env.port)).is_ok(),
        "-t bound the port"
    );

    let bad = good.replace("workers = 2", "workers = \"lots\"\nwhatever = 1");
    env.write_config(&bad);
    let before = listing();
    let out = env.baton(&["-t"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("baton.toml:"), "{err}");
    assert!(err.contains("\"workers\""), "{err}");
    assert!(err.contains("unknown key \"whatever\""), "{err}");
    assert_eq!(listing(), before);

    // Missing config file.
    let out = std::process::Command::new(BIN)
        .args(["-t", "-c"])
        .arg(env.path("nope.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("nope.toml"),
        "{}",
        text(&out.stderr)
    );
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        out.push(p.display().to_string());
        if p.is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

#[test]
fn bad_config_at_start_exits_1_with_location_and_leaves_nothing() {
    let env = Env::new();
    env.write_config(&env.simple_config().replace("root =", "root = 5 #"));
    let out = env.baton(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("baton.toml:"),
        "{}",
        text(&out.stderr)
    );
    assert!(!env.pid_file().exists());
    assert!(std::net::TcpListener::bind(("127.0.0.1", env.port)).is_ok());
}

#[test]
fn root_the_workers_cannot_enter_fails_the_start() {
    if !is_root() {
        eprintln!("skipped: needs root (workers must run as another user)");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    std::fs::set_permissions(env.path("www"), std::fs::Permissions::from_mode(0o700)).unwrap();
    env.write_config(&env.simple_config());
    let out = env.baton(&["--daemon"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not accessible to user nobody"),
        "{}",
        text(&out.stderr)
    );
    assert!(!env.pid_file().exists());
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", env.port)).is_ok(),
        "left listening"
    );
}

/// Starts a slow download, sends SIGTERM to `target` (the master, or the
/// whole process group as an init system or Ctrl-\\ would), and checks the
/// download completes byte for byte before the master exits 0.
fn graceful_stop_finishes_a_slow_response(to_group: bool) {
    let env = Env::new();
    let size = 8 * 1024 * 1024;
    let big: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    env.write_file("www/big.bin", &big);
    env.write_config(&env.simple_config());
    let mut server = env.start();

    let mut s = connect(env.port);
    s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 1024];
    let n = s.read(&mut first).unwrap();
    assert!(n > 0);
    // The response is in flight and the client is slow: stop now.
    let target = if to_group {
        -server.pid()
    } else {
        server.pid()
    };
    // SAFETY: kill on our own server (or its process group).
    unsafe { libc::kill(target, libc::SIGTERM) };
    let mut got = first[..n].to_vec();
    let mut chunk = [0u8; 64 * 1024];
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(5)); // the slow reader, not a synchronisation
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            // A socket with a receive timeout may say EINTR after the test
            // process was stopped and continued; a client retries.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read failed after {} bytes: {e}", got.len()),
        }
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(text(&got[..head_end]).contains("200"));
    assert_eq!(got.len() - head_end, size, "whole body delivered");
    assert_eq!(&got[head_end..], &big[..]);
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(!env.pid_file().exists());
}

#[test]
fn graceful_stop_finishes_a_slow_response_sigterm_to_master() {
    graceful_stop_finishes_a_slow_response(false);
}

#[test]
fn graceful_stop_finishes_a_slow_response_sigterm_to_process_group() {
    graceful_stop_finishes_a_slow_response(true);
}

#[test]
fn host_routing_between_sites_on_one_address() {
    let env = Env::new();
    env.write_file("a/index.html", b"site a\n");
    env.write_file("b/index.html", b"site b\n");
    let config = format!(
        "{}\n[[site]]\nlisten = [\"127.0.0.1:{port}\"]\nnames = [\"a.example\"]\nroot = \"{a}\"\n\n\
         [[site]]\nlisten = [\"127.0.0.1:{port}\"]\nroot = \"{b}\"\n",
        env.globals(),
        port = env.port,
        a = env.path("a").display(),
        b = env.path("b").display(),
    );
    env.write_config(&config);
    let _server = env.start();
    let ask = |host: &str| {
        request(
            env.port,
            &format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .unwrap()
        .body
    };
    assert_eq!(ask("a.example"), b"site a\n");
    assert_eq!(ask("A.Example:8080"), b"site a\n", "case and port ignored");
    assert_eq!(ask("other.example"), b"site b\n", "the catch-all site");
}

#[test]
fn s_reopen_hands_the_new_error_log_to_the_workers_without_a_new_generation() {
    let env = Env::new();
    let log = env.path("logs/error.log");
    std::fs::create_dir_all(env.path("logs")).unwrap();
    let config = env.simple_config_with(&format!("error_log = \"{}\"", log.display()));
    env.write_config(&config);
    let _server = env.start();
    let workers = env.status().serving_pids();
    let rotated = env.path("logs/error.log.1");
    std::fs::rename(&log, &rotated).unwrap();

    let out = env.baton(&["-s", "reopen"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let status = env.status();
    assert_eq!(status.generation, 1, "no new generation");
    assert_eq!(status.serving_pids(), workers);
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("reopened error log")
    );

    // The workers write to the new file too: their drain lines land there.
    assert!(env.reload().status.success());
    assert!(wait_until(Duration::from_secs(5), || {
        let fresh = std::fs::read_to_string(&log).unwrap_or_default();
        workers
            .iter()
            .all(|p| fresh.contains(&format!("baton worker {p}: told to drain")))
    }));
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(
        !old.contains("told to drain"),
        "a worker still wrote to the rotated file"
    );
}

#[test]
fn reload_reopens_the_error_log_after_rotation() {
    let env = Env::new();
    let log = env.path("logs/error.log");
    std::fs::create_dir_all(env.path("logs")).unwrap();
    let config = env.simple_config_with(&format!("error_log = \"{}\"", log.display()));
    env.write_config(&config);
    let _server = env.start();
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("ready: generation 1")
    );
    // logrotate without copytruncate: rename, then reload.
    let rotated = env.path("logs/error.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    assert!(env.reload().status.success());
    let fresh = std::fs::read_to_string(&log).expect("a new error.log after the reload");
    assert!(fresh.contains("reload ok: generation 2"), "{fresh}");
    assert!(
        std::fs::read_to_string(&rotated)
            .unwrap()
            .contains("reloading")
    );
}

#[test]
fn graceful_stop_exits_at_once_when_idle() {
    let env = Env::new();
    // A long grace: exiting must not wait for it.
    env.write_config(
        &env.simple_config()
            .replace("grace = \"5s\"", "grace = \"60s\""),
    );
    let mut server = env.start();
    let started = Instant::now();
    server.signal(libc::SIGQUIT);
    assert!(
        server
            .wait_notify("STOPPING=1", Duration::from_secs(5))
            .is_some()
    );
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A client that asks for /big.bin (16 MiB, more than socket buffers hold)
/// and never reads past the first bytes: its worker cannot finish draining.
fn stuck_download(port: u16) -> std::net::TcpStream {
    let mut stuck = connect(port);
    stuck
        .write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 16];
    stuck.read_exact(&mut first).unwrap();
    stuck
}

#[test]
fn grace_expiry_kills_a_stuck_old_worker() {
    let env = Env::new();
    env.write_file("www/big.bin", &vec![7u8; 16 * 1024 * 1024]);
    // The config says 30 s; `--grace 1s` overrides it, on start and on
    // every reload.
    env.write_config(
        &env.simple_config()
            .replace("grace = \"5s\"", "grace = \"30s\""),
    );
    let server = env.start_with(&["--grace", "1s"]);
    let _stuck = stuck_download(env.port);
    let old: Vec<i32> = env.status().serving_pids();
    assert!(env.reload().status.success());
    assert!(
        wait_until(Duration::from_secs(5), || old
            .iter()
            .all(|p| !pid_alive(*p))),
        "old workers still alive after grace: {}",
        env.status().raw
    );
    assert!(
        server.log_text().contains("after the grace period (1 s)"),
        "{}",
        server.log_text()
    );
    assert_eq!(get(env.port, "/").unwrap().status, 200);
}

#[test]
fn fast_stop_and_second_signal() {
    let env = Env::new();
    env.write_config(
        &env.simple_config()
            .replace("grace = \"5s\"", "grace = \"60s\""),
    );
    env.write_file("www/big.bin", &vec![7u8; 16 * 1024 * 1024]);
    let mut server = env.start();
    let _stuck = stuck_download(env.port);
    // Graceful stop would wait up to 60 s for the stuck client; the second
    // TERM stops at once.
    server.signal(libc::SIGTERM);
    assert!(
        server
            .wait_notify("STOPPING=1", Duration::from_secs(5))
            .is_some()
    );
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(5)), Some(0));
}

#[test]
fn process_group_interrupt_stops_everything() {
    let env = Env::new();
    env.write_config(&env.simple_config());
    let mut server = env.start();
    let workers = env.status().serving_pids();
    assert_eq!(workers.len(), 2);
    // Ctrl-C in a terminal: SIGINT to the whole group.
    // SAFETY: kill on the process group our own child leads.
    unsafe { libc::kill(-server.pid(), libc::SIGINT) };
    assert_eq!(server.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(workers.iter().all(|p| !pid_alive(*p)));
    assert!(!env.pid_file().exists());
}

#[test]
fn killed_worker_is_replaced() {
    let env = Env::new();
    env.write_config(&env.simple_config());
    let server = env.start();
    let before = env.status().serving_pids();
    // SAFETY: kill on a worker of our own server.
    unsafe { libc::kill(before[0], libc::SIGKILL) };
    let mut now = Status::default();
    assert!(wait_until(Duration::from_secs(5), || {
        now = env.status();
        now.serving_pids().len() == 2 && !now.serving_pids().contains(&before[0])
    }));
    assert!(now.serving_pids().contains(&before[1]));
    assert_eq!(now.generation, 1, "a replacement is of the same generation");
    assert!(
        server
            .log_text()
            .contains(&format!("worker {} (generation 1, slot", before[0]))
    );
    assert!(server.log_text().contains("was killed by SIGKILL"));
    assert_eq!(get(env.port, "/").unwrap().status, 200);
}

#[test]
fn crash_loop_backs_off_exponentially() {
    let env = Env::new();
    env.write_config(&env.simple_config().replace("workers = 2", "workers = 1"));
    let server = env.start();
    let mut victim = env.status().serving_pids()[0];
    let mut gaps = Vec::new();
    for _ in 0..5 {
        let killed_at = Instant::now();
        // SAFETY: kill on a worker of our own server.
        unsafe { libc::kill(victim, libc::SIGKILL) };
        let mut next = 0;
        assert!(wait_until(Duration::from_secs(10), || {
            let s = env.status();
            next = s.serving_pids().first().copied().unwrap_or(0);
            next != 0 && next != victim
        }));
        gaps.push(killed_at.elapsed());
        victim = next;
    }
    // The master waits at least 100 ms, 200, 400, 800, 1600 ms: lower bounds
    // only, a slow machine may take longer but never less.
    for (i, gap) in gaps.iter().enumerate() {
        let min = Duration::from_millis(100 << i);
        assert!(*gap >= min, "restart {i} after {gap:?}, less than {min:?}");
    }
    assert!(
        server.log_text().contains("crash loop"),
        "{}",
        server.log_text()
    );
    assert_eq!(children_of(server.pid()).len(), 1, "never a fork bomb");
}

#[test]
fn master_killed_leaves_no_worker() {
    let env = Env::new();
    env.write_config(&env.simple_config());
    let server = env.start();
    let workers = env.status().serving_pids();
    assert_eq!(workers.len(), 2);
    server.signal(libc::SIGKILL);
    assert!(
        wait_until(Duration::from_secs(2), || workers
            .iter()
            .all(|p| !pid_alive(*p))),
        "workers outlived the master"
    );
}

#[test]
fn workers_run_as_the_configured_user() {
    if !is_root() {
        eprintln!("skipped: needs root to switch users");
        return;
    }
    let env = Env::new();
    env.write_config(&env.simple_config());
    let server = env.start();
    for pid in env.status().serving_pids() {
        let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid = st.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            uid.split_whitespace().skip(1).all(|u| u == "65534"),
            "{uid}"
        );
        let gid = st.lines().find(|l| l.starts_with("Gid:")).unwrap();
        assert!(
            gid.split_whitespace().skip(1).all(|g| g == "65534"),
            "{gid}"
        );
        // Exactly nobody's groups (getgrouplist in the master, setgroups
        // in the worker): none of the master's (root's) are kept.
        let groups = st.lines().find(|l| l.starts_with("Groups:")).unwrap();
        let expected = nix::unistd::getgrouplist(c"nobody", nix::unistd::Gid::from_raw(65534))
            .unwrap()
            .iter()
            .map(|g| g.as_raw().to_string())
            .collect::<Vec<_>>();
        assert_eq!(
            groups.split_whitespace().skip(1).collect::<Vec<_>>(),
            expected,
            "{groups}"
        );
        let nnp = st.lines().find(|l| l.starts_with("NoNewPrivs:")).unwrap();
        assert!(nnp.ends_with('1'), "{nnp}");
    }
    let master = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    assert!(
        master
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("\t0\t"))
    );
}

#[test]
fn root_workers_need_explicit_opt_in() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let env = Env::new();
    env.write_config(
        &env.simple_config()
            .replace("user = \"nobody\"", "user = \"root\""),
    );
    let out = env.baton(&["-t"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("run_as_root"),
        "{}",
        text(&out.stderr)
    );
}

/// `--grace` overrides the config's grace on start and on every reload, so
/// it has the config's bounds: a value the master would have added to
/// `Instant::now()` (and panicked on, at the first reload) is refused by
/// the command line itself.
#[test]
fn grace_on_the_command_line_is_bounded_like_the_config() {
    let env = Env::new();
    env.write_config(&env.simple_config());
    for huge in ["18446744073709551615", "25h"] {
        let out = env.baton(&["--grace", huge, "-t"]);
        assert_eq!(out.status.code(), Some(2), "--grace {huge} was accepted");
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("grace \"{huge}\" is too long (at most 24h)")),
            "{err}"
        );
        let out = env.baton(&["--grace", huge]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(!env.pid_file().exists());
    }
    let out = env.baton(&["--grace", "24h", "-t"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
