//! What an init system and a package count on: `baton -t` with the runtime
//! directory gone, the lock file gone with the server, the fd limit the
//! master sets itself, the deep preflight `-tt`, and inetd mode's idle exit.

mod common;

use std::time::Duration;

use common::*;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// `/run/baton` is removed by systemd after every stop: `-t` must still
/// pass, the start makes the directory, and the lock file does not outlive
/// the server.
#[test]
fn missing_runtime_directory_and_lock_file_lifetime() {
    let env = Env::new();
    let run = env.path("run");
    let pid_file = run.join("baton.pid");
    let config = env.simple_config().replace(
        &env.pid_file().display().to_string(),
        &pid_file.display().to_string(),
    );
    env.write_config(&config);
    assert!(!run.exists());

    let out = env.baton(&["-t"]);
    assert!(out.status.success(), "-t: {}", text(&out.stderr));
    assert!(!run.exists(), "-t creates nothing");

    let mut server = env.start();
    assert!(run.is_dir(), "the start makes the runtime directory");
    let lock = run.join("baton.pid.lock");
    assert!(lock.exists());
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        server.pid().to_string()
    );
    assert_eq!(get(env.port, "/").unwrap().status, 200);

    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(!pid_file.exists(), "pidfile removed");
    assert!(!lock.exists(), "lock file removed at exit");

    // A second start over the now-empty directory works (no stale lock).
    let mut again = env.start();
    assert_eq!(get(env.port, "/").unwrap().status, 200);
    again.signal(libc::SIGTERM);
    assert_eq!(again.wait_exit(Duration::from_secs(20)), Some(0));
}

/// Two levels missing is still an error, located, and the start refuses too.
#[test]
fn runtime_directory_without_parent_is_an_error() {
    let env = Env::new();
    let pid_file = env.path("no/such/baton.pid");
    let config = env.simple_config().replace(
        &env.pid_file().display().to_string(),
        &pid_file.display().to_string(),
    );
    env.write_config(&config);
    let out = env.baton(&["-t"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(":12: directory") && err.contains("no/such\" of pid_file"),
        "{err}"
    );
}

/// (soft, hard) RLIMIT_NOFILE of a process, from /proc/PID/limits.
fn nofile(pid: i32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1])
}

/// Starts baton under `wrapper` (e.g. prlimit), which execs it.
fn start_under(env: &Env, wrapper: &[&str]) -> Server {
    let mut command = std::process::Command::new(wrapper[0]);
    command
        .args(&wrapper[1..])
        .arg("--")
        .arg(BIN)
        .arg("-c")
        .arg(env.config_path())
        .stdin(std::process::Stdio::null());
    env.spawn_command(command).wait_ready()
}

fn have_prlimit() -> bool {
    std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// "auto": the master raises the soft limit to what max_connections needs,
/// for itself and every worker, under a low limit given by whoever started
/// it; a reload that raises max_connections raises it for the new
/// generation; it never lowers.
#[test]
fn rlimit_nofile_auto_raises_for_max_connections() {
    if !have_prlimit() {
        eprintln!("prlimit missing: skipped");
        return;
    }
    let env = Env::new();
    env.write_config(&env.simple_config_with("max_connections = 1000"));
    let server = start_under(&env, &["prlimit", "--nofile=256:8192"]);
    // 2 x 1000 + 64 + one listen address.
    let want = (2 * 1000 + 64 + 1, 8192);
    assert_eq!(nofile(server.pid()), want, "master");
    let workers = env.status().workers;
    assert_eq!(workers.len(), 2);
    for w in &workers {
        assert_eq!(nofile(w.pid), want, "worker {}", w.pid);
    }
    assert_eq!(get(env.port, "/").unwrap().status, 200);

    env.write_config(&env.simple_config_with("max_connections = 3000"));
    let out = env.reload();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want = (2 * 3000 + 64 + 1, 8192);
    assert_eq!(nofile(server.pid()), want, "master after reload");
    for w in env.status().workers.iter().filter(|w| w.state == "serving") {
        assert_eq!(nofile(w.pid), want, "new worker {}", w.pid);
    }

    // Lower needs: auto leaves the limit where it is.
    env.write_config(&env.simple_config_with("max_connections = 10"));
    assert!(env.reload().status.success());
    assert_eq!(nofile(server.pid()), want);
}

/// A number sets exactly that, even below what the process started with.
#[test]
fn rlimit_nofile_explicit_value() {
    if !have_prlimit() {
        eprintln!("prlimit missing: skipped");
        return;
    }
    let env = Env::new();
    env.write_config(&env.simple_config_with("worker_rlimit_nofile = 3000"));
    let server = start_under(&env, &["prlimit", "--nofile=5000:8192"]);
    assert_eq!(nofile(server.pid()), (3000, 8192));
    for w in env.status().workers {
        assert_eq!(nofile(w.pid), (3000, 8192));
    }
}

/// Hard limit too low: as root the master raises it; without
/// CAP_SYS_RESOURCE it takes the hard limit, serves, and says so.
#[test]
fn rlimit_nofile_hard_limit() {
    if !have_prlimit() || !is_root() {
        eprintln!("needs root and prlimit: skipped");
        return;
    }
    let env = Env::new();
    env.write_config(&env.simple_config_with("max_connections = 1000"));
    // Whether this process may raise a hard limit at all (a container may
    // have dropped CAP_SYS_RESOURCE, as the machine these were written on).
    let can_raise = std::process::Command::new("prlimit")
        .args([
            "--nofile=256:512",
            "--",
            "prlimit",
            "--nofile=2065:2065",
            "--",
            "true",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if can_raise {
        let server = start_under(&env, &["prlimit", "--nofile=256:512"]);
        assert_eq!(
            nofile(server.pid()),
            (2065, 2065),
            "root raises the hard limit"
        );
    } else {
        eprintln!("no CAP_SYS_RESOURCE here: the raising of the hard limit is not checked");
    }
    let mut server = start_under(
        &env,
        &[
            "setpriv",
            "--bounding-set=-sys_resource",
            "prlimit",
            "--nofile=256:512",
        ],
    );
    assert_eq!(nofile(server.pid()), (512, 512));
    assert_eq!(get(env.port, "/").unwrap().status, 200);
    let log = server.log_text();
    assert!(
        log.contains(
            "RLIMIT_NOFILE: 2065 needed (max_connections = 1000), but the hard limit is 512"
        ),
        "{log}"
    );
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(20)), Some(0));
}

/// A limit outside its bounds is refused by -t, located.
#[test]
fn rlimit_nofile_out_of_bounds_is_refused() {
    let env = Env::new();
    env.write_config(&env.simple_config_with("worker_rlimit_nofile = 10"));
    let out = env.baton(&["-t"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(":24: \"worker_rlimit_nofile\" must be \"auto\" or a whole number from 64 to 1048576, not 10"),
        "{err}"
    );
}

/// Without -c, the binary looks for its sample site relative to where it
/// is installed (PREFIX/sbin/baton → PREFIX/share/baton/sample-site), never
/// at a path from the build; without one, it says so and what to do.
#[test]
fn sample_site_found_from_the_install_prefix() {
    let env = Env::new();
    let sbin = env.path("prefix/sbin");
    std::fs::create_dir_all(&sbin).unwrap();
    let bin = sbin.join("baton");
    std::fs::copy(BIN, &bin).unwrap();
    let run = |bin: &std::path::Path| {
        std::process::Command::new(bin)
            .arg("-t")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(&bin);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("no configuration given and no sample site found")
            && err.contains("prefix/share/baton/sample-site")
            && err.contains("-c FILE"),
        "{err}"
    );
    env.write_file(
        "prefix/share/baton/sample-site/index.html",
        b"<h1>sample</h1>\n",
    );
    let out = run(&bin);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
