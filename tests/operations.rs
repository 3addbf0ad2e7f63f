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
