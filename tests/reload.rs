//! Reloads: under load nothing is lost, a bad config or a failed apply
//! leaves the old generation serving, listeners are diffed, and a burst of
//! signals gives one or two reloads.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::load::Load;
use common::*;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// The inode of the socket listening on 127.0.0.1/0.0.0.0:`port`, from
/// /proc/net/tcp (state 0A = LISTEN).
fn listen_inode(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local = f.get(1)?;
        let p = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
        (p == port && f.get(3) == Some(&"0A")).then(|| f.get(9)?.parse().ok())?
    })
}

/// Waits until only the current generation is left.
fn wait_settled(env: &Env, workers: usize) -> Status {
    let mut last = Status::default();
    let ok = wait_until(Duration::from_secs(15), || {
        last = env.status();
        last.workers.len() == workers
            && last
                .workers
                .iter()
                .all(|w| w.generation == last.generation && w.state == "serving")
    });
    assert!(ok, "generations did not settle: {}", last.raw);
    last
}

fn reloads_under_load(keepalive: usize, per_request: usize) {
    let env = Env::new();
    env.write_config(&env.simple_config());
    let server = env.start();
    let master = server.pid();
    let body = std::fs::read(env.path("www/index.html")).unwrap();
    wait_settled(&env, 2);
    let fds_before = fd_count(master);
    let inode_before = listen_inode(env.port);

    let load = Load::start(env.port, keepalive, per_request, &body);
    for i in 0..50 {
        let out = env.reload();
        assert!(
            out.status.success(),
            "reload {i} failed: {}\n{}",
            text(&out.stderr),
            server.log_text()
        );
    }
    let counts = load.finish();
    assert_eq!(
        counts.failed, 0,
        "failed requests across 50 reloads ({} ok): {:?}",
        counts.ok, counts.errors
    );
    assert!(
        counts.ok >= 200,
        "the load barely ran: {} requests",
        counts.ok
    );

    let status = wait_settled(&env, 2);
    assert_eq!(status.generation, 51, "{}", status.raw);
    assert_eq!(
        children_of(master).len(),
        2,
        "children: {:?}",
        children_of(master)
    );
    assert!(zombies_of(master).is_empty());
    assert_eq!(fd_count(master), fds_before, "the master leaks fds");
    assert_eq!(
        listen_inode(env.port),
        inode_before,
        "the listen socket changed"
    );
}

#[test]
fn fifty_reloads_under_keepalive_load_lose_nothing() {
    reloads_under_load(6, 0);
}

#[test]
fn fifty_reloads_under_connection_per_request_load_lose_nothing() {
    reloads_under_load(0, 6);
}

#[test]
fn broken_config_reload_keeps_the_old_generation() {
    let env = Env::new();
    env.write_config(&env.simple_config());
    let server = env.start();
    let before = env.status();

    let broken = env.simple_config().replace("root =", "rot =");
    env.write_config(&broken);
    let out = env.reload();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let line = broken.lines().position(|l| l.starts_with("rot =")).unwrap() + 1;
    assert!(
        err.contains(&format!(
            "baton.toml:{line}:1: unknown key \"rot\", did you mean \"root\"?"
        )),
        "error was: {err}"
    );
    let after = env.status();
    assert_eq!(after.generation, before.generation);
    assert!(
        after.last_reload.contains("config invalid"),
        "{}",
        after.raw
    );
    assert_eq!(get(env.port, "/").unwrap().status, 200);
    assert!(server.log_text().contains("unknown key \"rot\""));
}

#[test]
fn reload_that_cannot_bind_fails_with_status_2_and_old_keeps_serving() {
    let env = Env::new();
    env.write_config(&env.simple_config());
    let _server = env.start();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let config = env.simple_config().replace(
        &format!("\"127.0.0.1:{}\"", env.port),
        &format!("\"127.0.0.1:{}\", \"127.0.0.1:{taken_port}\"", env.port),
    );
    env.write_config(&config);
    let out = env.reload();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("cannot bind 127.0.0.1:{taken_port}")),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(env.status().generation, 1);
    assert_eq!(get(env.port, "/").unwrap().status, 200);
}

/// A site root the workers' user cannot enter: the new generation's workers
/// say so instead of becoming ready, the reload fails (2) with the config
/// location, the failed generation is killed and the old one serves on.
#[test]
fn new_generation_that_cannot_serve_is_killed_and_old_keeps_serving() {
    if !is_root() {
        eprintln!("skipped: needs root (workers must run as another user)");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    env.write_config(&env.simple_config());
    let server = env.start();
    let before = wait_settled(&env, 2);
    env.write_file("private/index.html", b"secret");
    std::fs::set_permissions(env.path("private"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = env.simple_config().replace("/www\"", "/private\"");
    env.write_config(&config);
    let out = env.reload();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let line = config.lines().position(|l| l == "[[site]]").unwrap() + 1;
    assert!(
        err.contains(&format!("baton.toml:{line}:1: root "))
            && err.contains("is not accessible to user nobody"),
        "{err}"
    );
    // The failed generation's workers are gone; the old ones still serve.
    let after = wait_settled(&env, 2);
    assert_eq!(after.serving_pids(), before.serving_pids());
    assert_eq!(after.generation, 1);
    assert!(wait_until(Duration::from_secs(5), || children_of(
        server.pid()
    )
    .len()
        == 2));
    assert!(zombies_of(server.pid()).is_empty());
    assert_eq!(get(env.port, "/").unwrap().status, 200);
}

#[test]
fn listeners_are_added_and_removed_under_load() {
    let env = Env::new();
    env.write_config(&env.simple_config());
    let _server = env.start();
    let body = std::fs::read(env.path("www/index.html")).unwrap();
    let load = Load::start(env.port, 3, 3, &body);
    let second = free_port();
    let both = env.simple_config().replace(
        &format!("\"127.0.0.1:{}\"", env.port),
        &format!("\"127.0.0.1:{}\", \"127.0.0.1:{second}\"", env.port),
    );
    env.write_config(&both);
    let inode = listen_inode(env.port);
    assert!(env.reload().status.success());
    assert_eq!(get(second, "/").unwrap().status, 200);
    assert_eq!(get(env.port, "/").unwrap().status, 200);
    assert_eq!(
        listen_inode(env.port),
        inode,
        "unchanged listener kept its socket"
    );

    env.write_config(&env.simple_config());
    assert!(env.reload().status.success());
    wait_settled(&env, 2);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", second)).is_err(),
        "removed listener still accepts"
    );
    assert_eq!(get(env.port, "/").unwrap().status, 200);
    let counts = load.finish();
    assert_eq!(
        counts.failed, 0,
        "{} ok, errors {:?}",
        counts.ok, counts.errors
    );
}

#[test]
fn listener_moved_from_loopback_to_wildcard_under_load() {
    let env = Env::new();
    env.write_config(&env.simple_config());
    let _server = env.start();
    let body = std::fs::read(env.path("www/index.html")).unwrap();
    let load = Load::start(env.port, 3, 3, &body);
    let moved = env.simple_config().replace(
        &format!("\"127.0.0.1:{}\"", env.port),
        &format!("\"0.0.0.0:{}\"", env.port),
    );
    env.write_config(&moved);
    let out = env.reload();
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_settled(&env, 2);
    // And back again, still under load.
    env.write_config(&env.simple_config());
    let out = env.reload();
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_settled(&env, 2);
    let counts = load.finish();
    assert_eq!(
        counts.failed, 0,
        "{} ok, errors {:?}",
        counts.ok, counts.errors
    );
    assert!(counts.ok > 50);
}

#[test]
fn a_burst_of_signals_gives_one_or_two_reloads() {
    let env = Env::new();
    env.write_config(&env.simple_config());
    let server = env.start();
    for _ in 0..50 {
        server.signal(libc::SIGHUP);
    }
    // A reload of our own queues behind whatever the burst started, so when
    // it returns the burst has been fully handled.
    assert!(env.reload().status.success());
    let status = wait_settled(&env, 2);
    assert!(
        (3..=4).contains(&status.generation),
        "50 signals + 1 command gave generation {}",
        status.generation
    );
    assert!(!server.log_text().contains("panicked"));
}

#[test]
fn sigusr1_reloads_like_sighup() {
    let env = Env::new();
    env.write_config(&env.simple_config());
    let server = env.start();
    server.signal(libc::SIGUSR1);
    assert!(
        server
            .wait_notify("READY=1", Duration::from_secs(10))
            .is_some()
    );
    assert_eq!(wait_settled(&env, 2).generation, 2);
}

#[test]
fn unix_socket_listener_keeps_its_inode_and_is_removed_at_exit() {
    use std::io::{BufReader, Write};
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::net::UnixStream;
    let env = Env::new();
    let sock = env.path("http.sock");
    let config = env.simple_config().replace(
        &format!("listen = [\"127.0.0.1:{}\"]", env.port),
        &format!(
            "listen = [\"127.0.0.1:{}\", {{ address = \"unix:{}\", mode = \"0660\" }}]",
            env.port,
            sock.display()
        ),
    );
    env.write_config(&config);
    let mut server = env.start();
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660);
    let ask = || {
        let mut s = UnixStream::connect(&sock).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        read_response(&mut BufReader::new(s), false).unwrap()
    };
    assert_eq!(ask().status, 200);
    assert!(env.reload().status.success());
    assert_eq!(
        std::fs::metadata(&sock).unwrap().ino(),
        meta.ino(),
        "same socket file"
    );
    assert_eq!(ask().status, 200);

    // A second server may not take over the live socket's path.
    let other = Env::new();
    let other_config = other.simple_config().replace(
        &format!("listen = [\"127.0.0.1:{}\"]", other.port),
        &format!("listen = [\"unix:{}\"]", sock.display()),
    );
    other.write_config(&other_config);
    let out = other.baton(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("another server is listening"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        ask().status,
        200,
        "the refused server must not have unlinked it"
    );

    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(!sock.exists(), "socket file removed at exit");
}

/// Durations and sizes are bounded in validation: a value that `-t`
/// accepted used to be added to `Instant::now()` by the master on reload,
/// which panicked (the master aborted, both generations were orphaned and
/// the pidfile stayed). Now `-t` and the reload refuse it with its place,
/// and the same master keeps serving.
#[test]
fn reload_with_an_unbounded_duration_is_refused_and_the_master_lives() {
    let env = Env::new();
    env.write_config(&env.simple_config());
    let server = env.start();
    let before = wait_settled(&env, 2);
    let huge = "\"18446744073709551615\"";
    for (key, limit) in [
        ("grace", "24h"),
        ("worker_ready_timeout", "1h"),
        ("tls_ticket_rotation", "24h"),
        ("drain_linger", "1h"),
        ("keepalive_timeout", "1h"),
        ("header_timeout", "1h"),
    ] {
        let base = env.simple_config();
        let config = match base.lines().find(|l| l.starts_with(&format!("{key} ="))) {
            Some(line) => base.replace(line, &format!("{key} = {huge}")),
            None => env.simple_config_with(&format!("{key} = {huge}")),
        };
        env.write_config(&config);
        let line = config
            .lines()
            .position(|l| l.starts_with(&format!("{key} =")))
            .unwrap()
            + 1;
        let col = key.len() + 4;
        let expected =
            format!("baton.toml:{line}:{col}: {key} = {huge} is too long (at most {limit})");

        let out = env.baton(&["-t"]);
        assert_eq!(out.status.code(), Some(1), "-t accepted {key} = {huge}");
        assert!(
            text(&out.stderr).contains(&expected),
            "{}",
            text(&out.stderr)
        );

        let out = env.reload();
        assert_eq!(
            out.status.code(),
            Some(1),
            "reload with {key} = {huge}: {}\n{}",
            text(&out.stderr),
            server.log_text()
        );
        assert!(
            text(&out.stderr).contains(&expected),
            "{}",
            text(&out.stderr)
        );
        let after = env.status();
        assert_eq!(after.pid, before.pid, "{}", server.log_text());
        assert_eq!(after.serving_pids(), before.serving_pids());
        assert_eq!(get(env.port, "/").unwrap().status, 200);
    }
    assert!(!server.log_text().contains("panicked"));
}

/// Whether a socket listens on `ip:port` (IPv4). Polled while a server
/// drains, so asked of the kernel's listening sockets only (see
/// `common::sockets`), not read from /proc/net/tcp.
fn listening_on(ip: [u8; 4], port: u16) -> bool {
    !sockets::tcp4_listeners(ip.into(), port)
        .expect("sock_diag")
        .is_empty()
}

/// A client that connected before a reload and sends its request after it
/// (a browser's preconnect), on an address the reload moves. With
/// TCP_DEFER_ACCEPT the kernel keeps such a connection out of the accept
/// queue until its first bytes or the defer timeout: the draining workers
/// sweep the retired socket's queue before it is there, and closing the
/// socket used to reset it. The retired socket is now served by the new
/// generation until nothing can still arrive on it.
#[test]
fn preconnected_client_survives_a_reload_that_moves_its_address() {
    use std::io::{BufReader, Write};
    let env = Env::new();
    // 3 s: the connection stays out of the accept queue until well after
    // the commit (the kernel queues it at 1 s only once the master has
    // turned the defer off), however slow the machine.
    let config = env.simple_config_with("defer_accept = \"3s\"");
    env.write_config(&config);
    let server = env.start();
    wait_settled(&env, 2);
    let mut client = connect(env.port);

    env.write_config(&config.replace(
        &format!("\"127.0.0.1:{}\"", env.port),
        &format!("\"0.0.0.0:{}\"", env.port),
    ));
    let out = env.reload();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The old generation is gone, and so is the old socket (once nothing
    // can arrive on it any more).
    wait_settled(&env, 2);
    assert!(
        wait_until(Duration::from_secs(10), || !listening_on(
            [127, 0, 0, 1],
            env.port
        )),
        "the retired 127.0.0.1 socket was never closed"
    );
    assert!(listening_on([0, 0, 0, 0], env.port));

    client
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("send the request");
    let response = read_response(&mut BufReader::new(client), false);
    assert_eq!(
        response.map(|r| r.status).map_err(|e| e.to_string()),
        Ok(200),
        "{}",
        server.log_text()
    );
}

/// The same for an address the reload removes: the old generation, whose
/// config still has a site there, keeps accepting on it until nothing can
/// still arrive, and serves the late connection.
///
/// The draining worker that accepted it lives until that connection ends
/// or `grace` passes; nothing tells the test when the socket is closed but
/// the socket table, polled. So the worker is given all the time the test
/// could take to see that and send its request (`grace`, `drain_linger`
/// and, as the connection has sent nothing yet, `header_timeout`, each a
/// minute): with a grace of 5 s, a loaded machine used up the second
/// between the end of the linger (3 s + 1 s) and the kill before the
/// request went, and the killed worker's FIN read as an empty answer.
#[test]
fn preconnected_client_survives_a_reload_that_removes_its_address() {
    use std::io::{BufReader, Write};
    let env = Env::new();
    let second = free_port();
    let one = env
        .simple_config_with(
            "defer_accept = \"3s\"\ndrain_linger = \"60s\"\nheader_timeout = \"60s\"",
        )
        .replace("grace = \"5s\"", "grace = \"60s\"");
    let both = one.replace(
        &format!("\"127.0.0.1:{}\"", env.port),
        &format!("\"127.0.0.1:{}\", \"127.0.0.1:{second}\"", env.port),
    );
    env.write_config(&both);
    let server = env.start();
    wait_settled(&env, 2);
    let mut client = connect(second);

    env.write_config(&one);
    let out = env.reload();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        wait_until(Duration::from_secs(30), || !listening_on(
            [127, 0, 0, 1],
            second
        )),
        "the removed socket was never closed"
    );

    client
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("send the request");
    let response = read_response(&mut BufReader::new(client), false);
    assert_eq!(
        response.map(|r| r.status).map_err(|e| e.to_string()),
        Ok(200),
        "{}",
        server.log_text()
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", second)).is_err(),
        "the removed address still accepts"
    );
    wait_settled(&env, 2);
}
