//! `baton -tt`, the deep preflight, on real files and sockets: what `-t`
//! passes but a start would trip over (a port another process holds, a
//! root the workers cannot enter, a log that cannot be opened), located;
//! the running instance's own sockets pass; and it creates nothing.

mod common;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::time::Duration;

use common::*;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// The line (1-based) of the first line of `config` containing `needle`.
fn line_of(config: &str, needle: &str) -> usize {
    config
        .lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .expect("needle in config")
}

#[test]
fn passes_a_good_config_and_creates_nothing() {
    let env = Env::new();
    let config = env.simple_config_with(&format!(
        "error_log = \"{}\"",
        env.path("logs/error.log").display()
    ));
    let config = config.replace(
        "root = ",
        &format!(
            "access_log = \"{}\"\nroot = ",
            env.path("logs/access.log").display()
        ),
    );
    std::fs::create_dir_all(env.path("logs")).unwrap();
    env.write_config(&config);
    let out = env.baton(&["-tt"]);
    assert!(out.status.success(), "-tt: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("is valid"));
    assert!(!env.path("logs/error.log").exists(), "-tt creates no log");
    assert!(!env.path("logs/access.log").exists(), "-tt creates no log");
    assert!(!env.pid_file().exists(), "-tt writes no pidfile");
    // The port was only probed: the server can bind it right after.
    let mut server = env.start();
    assert_eq!(get(env.port, "/").unwrap().status, 200);
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(20)), Some(0));
}

/// The running instance of this config holds its ports: `-tt` passes (so
/// an init script can run it before a restart), and the server is
/// untouched; another config on the same port is told who holds it.
#[test]
fn the_running_instance_holds_its_ports_others_are_named() {
    let env = Env::new();
    let sock = env.path("http.sock");
    let config = env.simple_config().replace(
        &format!("listen = [\"127.0.0.1:{}\"]", env.port),
        &format!(
            "listen = [\"127.0.0.1:{}\", \"unix:{}\"]",
            env.port,
            sock.display()
        ),
    );
    env.write_config(&config);
    let server = env.start();
    let out = env.baton(&["-tt"]);
    assert!(
        out.status.success(),
        "-tt beside its own server: {}",
        text(&out.stderr)
    );
    assert_eq!(get(env.port, "/").unwrap().status, 200, "still serving");
    let status = env.status();
    assert_eq!(
        (status.pid, status.generation),
        (server.pid(), 1),
        "untouched"
    );

    // The same addresses under another pidfile: not the running instance.
    let other = Env::new();
    let other_config = config.replace(
        &env.pid_file().display().to_string(),
        &other.pid_file().display().to_string(),
    );
    other.write_config(&other_config);
    let out = other.baton(&["-tt"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let line = line_of(&other_config, "listen = ");
    let cfg = other.config_path().display().to_string();
    assert!(
        err.contains(&format!("{cfg}:{line}:")) && err.contains("the address is in use by pid"),
        "located, holder named: {err}"
    );
    assert!(err.contains(&format!("unix:{}", sock.display())), "{err}");
    assert!(err.contains("is not running"), "{err}");
    drop(server);
}

#[test]
fn a_port_held_by_another_process_fails_located() {
    let env = Env::new();
    let config = env.simple_config();
    env.write_config(&config);
    let squatter = TcpListener::bind(("127.0.0.1", env.port)).unwrap();
    let out = env.baton(&["-t"]);
    assert!(
        out.status.success(),
        "-t cannot see it: {}",
        text(&out.stderr)
    );
    let out = env.baton(&["-tt"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let want = format!(
        "{}:{}:11: cannot bind 127.0.0.1:{}: the address is in use by pid {}",
        env.config_path().display(),
        line_of(&config, "listen = "),
        env.port,
        std::process::id()
    );
    assert!(err.contains(&want), "want {want:?} in {err}");
    assert!(err.contains("is invalid"), "{err}");
    drop(squatter);
    let out = env.baton(&["-tt"]);
    assert!(out.status.success(), "free again: {}", text(&out.stderr));
}

/// A unix socket path: a live listener is refused, a stale socket file
/// (its server gone) passes (the start removes it), a regular file too is
/// refused.
#[test]
fn unix_socket_paths() {
    let env = Env::new();
    let sock = env.path("app.sock");
    let config = env.simple_config().replace(
        &format!("listen = [\"127.0.0.1:{}\"]", env.port),
        &format!("listen = [\"unix:{}\"]", sock.display()),
    );
    env.write_config(&config);
    let live = UnixListener::bind(&sock).unwrap();
    let out = env.baton(&["-tt"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("a server listens on it"),
        "{}",
        text(&out.stderr)
    );
    drop(live);
    assert!(sock.exists(), "stale socket file left behind");
    let out = env.baton(&["-tt"]);
    assert!(out.status.success(), "stale file: {}", text(&out.stderr));
    std::fs::remove_file(&sock).unwrap();
    std::fs::write(&sock, b"not a socket").unwrap();
    let out = env.baton(&["-tt"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("exists and is not a socket"));
}

/// A root the workers' user cannot enter: `-t` (as root, the master) sees
/// nothing wrong; `-tt` checks as the workers' user.
#[test]
fn a_root_the_workers_cannot_enter() {
    if !is_root() {
        eprintln!("skipped: needs root to run workers as another user");
        return;
    }
    let env = Env::new();
    let config = env.simple_config();
    env.write_config(&config);
    std::fs::set_permissions(env.path("www"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = env.baton(&["-t"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = env.baton(&["-tt"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let want = format!(
        "{}:{}:1: root {}: user nobody cannot enter and list it: Permission denied",
        env.config_path().display(),
        line_of(&config, "[[site]]"),
        env.path("www").display()
    );
    assert!(err.contains(&want), "want {want:?} in {err}");
    // Search permission alone is not enough: workers list directories
    // for their index files.
    std::fs::set_permissions(env.path("www"), std::fs::Permissions::from_mode(0o711)).unwrap();
    assert_eq!(env.baton(&["-tt"]).status.code(), Some(1));
    std::fs::set_permissions(env.path("www"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = env.baton(&["-tt"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// An error log that exists but cannot be opened for appending without
/// blocking (a FIFO nobody reads: the start would hang in open(2)).
#[test]
fn a_log_that_cannot_be_opened() {
    let env = Env::new();
    let fifo = env.path("error.log");
    let c = std::ffi::CString::new(fifo.display().to_string()).unwrap();
    // SAFETY: a valid path; creates a FIFO in the test's own directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let config = env.simple_config_with(&format!("error_log = \"{}\"", fifo.display()));
    env.write_config(&config);
    let out = env.baton(&["-tt"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: error_log: cannot open {} for appending",
            env.config_path().display(),
            fifo.display()
        )),
        "{err}"
    );
}
