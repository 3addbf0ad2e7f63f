//! Access logs: formats, per-site files, files opened by the master, and
//! rotation under load with no line lost or split.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use common::load::Load;
use common::*;

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// A combined-format line: `IP - - [date] "METHOD TARGET PROTO" STATUS BYTES
/// "REFERER" "UA" SECONDS -`. Returns (status, bytes), or None if the line
/// is not one (split, interleaved, truncated).
fn parse_combined(line: &str) -> Option<(u16, u64)> {
    let (_, rest) = line.split_once(" - - [")?;
    let (date, rest) = rest.split_once("] \"")?;
    if date.len() != 26 || !date.ends_with(" +0000") {
        return None;
    }
    let (request, rest) = rest.split_once("\" ")?;
    if request.split(' ').count() != 3 {
        return None;
    }
    let mut f = rest.splitn(3, ' ');
    let status = f.next()?.parse().ok()?;
    let bytes = f.next()?.parse().ok()?;
    let tail = f.next()?;
    let (_, time_and_upstream) = tail.rsplit_once("\" ")?;
    let (secs, upstream) = time_and_upstream.split_once(' ')?;
    secs.parse::<f64>().ok()?;
    (upstream == "-").then_some((status, bytes))
}

#[test]
fn combined_lines_for_every_request_flushed_within_a_second() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("logs")).unwrap();
    let log = env.path("logs/access.log");
    let config = env.simple_config_with(&format!("access_log = \"{}\"", log.display()));
    env.write_config(&config);
    let _server = env.start();
    request(
        env.port,
        "GET /index.html?q=1 HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test \"agent\"\r\nReferer: http://r.example/\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(get(env.port, "/missing").unwrap().status, 404);
    // No sleep: the worker writes its buffer at least once a second.
    assert!(
        wait_until(Duration::from_secs(3), || lines(&log).len() == 2),
        "{:?}",
        lines(&log)
    );
    // Two workers flush their own buffers: the order of lines is theirs.
    let l = lines(&log);
    let ok = l
        .iter()
        .find(|x| x.contains("/index.html"))
        .expect("the 200 line");
    let missing = l
        .iter()
        .find(|x| x.contains("/missing"))
        .expect("the 404 line");
    assert!(ok.starts_with("127.0.0.1 - - ["), "{ok}");
    assert!(
        ok.contains(
            "\"GET /index.html?q=1 HTTP/1.1\" 200 26 \"http://r.example/\" \"test \\x22agent\\x22\""
        ),
        "{ok}"
    );
    assert_eq!(parse_combined(ok), Some((200, 26)), "{ok}");
    assert_eq!(
        parse_combined(missing).map(|(s, _)| s),
        Some(404),
        "{missing}"
    );
}

#[test]
fn per_site_files_off_and_json() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("logs")).unwrap();
    env.write_file("b/index.html", b"b\n");
    let config = format!(
        "{}access_log_format = \"json\"\naccess_log = \"{main}\"\n\
         [[site]]\nlisten = [\"127.0.0.1:{port}\"]\nnames = [\"a.example\"]\nroot = \"{www}\"\n\
         [[site]]\nlisten = [\"127.0.0.1:{port}\"]\nnames = [\"b.example\"]\nroot = \"{b}\"\naccess_log = \"{blog}\"\n\
         [[site]]\nlisten = [\"127.0.0.1:{port}\"]\nnames = [\"quiet.example\"]\nroot = \"{www}\"\naccess_log = \"off\"\n",
        env.globals(),
        main = env.path("logs/main.log").display(),
        blog = env.path("logs/b.log").display(),
        port = env.port,
        www = env.path("www").display(),
        b = env.path("b").display(),
    );
    env.write_config(&config);
    let mut server = env.start();
    for host in ["a.example", "b.example", "quiet.example"] {
        let r = request(
            env.port,
            &format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .unwrap();
        assert_eq!(r.status, 200);
    }
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    let main = lines(&env.path("logs/main.log"));
    let b = lines(&env.path("logs/b.log"));
    assert_eq!(main.len(), 1, "{main:?}");
    assert_eq!(b.len(), 1, "{b:?}");
    let v: serde_json::Value = serde_json::from_str(&main[0]).unwrap();
    assert_eq!(v["host"], "a.example");
    assert_eq!(v["status"], 200);
    assert_eq!(v["method"], "GET");
    assert!(v["request_time"].is_f64());
    assert!(v["upstream_time"].is_null());
    let v: serde_json::Value = serde_json::from_str(&b[0]).unwrap();
    assert_eq!(v["host"], "b.example");
}

#[test]
fn the_master_opens_log_files_workers_cannot_write() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let env = Env::new();
    // Only root may write here; the workers run as nobody.
    std::fs::create_dir_all(env.path("logs")).unwrap();
    std::fs::set_permissions(env.path("logs"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = env.path("logs/access.log");
    let config = env.simple_config_with(&format!(
        "access_log = \"{}\"\nlog_mode = \"0600\"\nlog_owner = \"www-data\"",
        log.display()
    ));
    env.write_config(&config);
    let mut server = env.start();
    assert_eq!(get(env.port, "/").unwrap().status, 200);
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    assert_eq!(lines(&log).len(), 1);
    let meta = std::fs::metadata(&log).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), 33, "owned by www-data");
}

#[test]
fn rotation_and_reopen_under_load_lose_and_split_no_line() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("logs")).unwrap();
    let log = env.path("logs/access.log");
    let rotated = env.path("logs/access.log.1");
    let config = env.simple_config_with(&format!("access_log = \"{}\"", log.display()));
    env.write_config(&config);
    let mut server = env.start();
    let body = std::fs::read(env.path("www/index.html")).unwrap();
    let load = Load::start(env.port, 4, 2, &body);
    // Let some lines reach the first file, then rotate as logrotate does.
    assert!(wait_until(Duration::from_secs(5), || lines(&log).len() > 100));
    std::fs::rename(&log, &rotated).unwrap();
    let out = env.baton(&["-s", "reopen"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(wait_until(Duration::from_secs(5), || lines(&log).len() > 100));
    let counts = load.finish();
    assert_eq!(counts.failed, 0, "{:?}", counts.errors);
    // A graceful stop writes what is buffered.
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    let before = lines(&rotated);
    let after = lines(&log);
    for l in before.iter().chain(&after) {
        assert_eq!(
            parse_combined(l),
            Some((200, body.len() as u64)),
            "split or mixed line: {l:?}"
        );
    }
    assert_eq!(
        (before.len() + after.len()) as u64,
        counts.ok,
        "every request logged exactly once ({} before, {} after the rotation)",
        before.len(),
        after.len()
    );
}

#[test]
fn metrics_count_responses_by_class_and_bytes() {
    let env = Env::new();
    env.write_config(&with_admin(&env, &env.simple_config()));
    let _server = env.start();
    for _ in 0..3 {
        assert_eq!(get(env.port, "/").unwrap().status, 200);
    }
    let not_found = get(env.port, "/nope").unwrap();
    assert_eq!(not_found.status, 404);
    let bytes = 3 * 26 + not_found.body.len();
    let metrics = || admin_get(&env.path("admin.sock"), "/metrics");
    // Workers report about once a second.
    let mut m = String::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            m = metrics();
            m.contains("baton_responses_total{class=\"2xx\"} 3")
                && m.contains("baton_responses_total{class=\"4xx\"} 1")
        }),
        "{m}"
    );
    assert!(
        m.contains(&format!("baton_sent_bytes_total {bytes}")),
        "3 x 26 bytes and the 404 page: {m}"
    );
    // Counters survive the workers that counted them.
    assert!(env.reload().status.success());
    m = metrics();
    assert!(m.contains("baton_responses_total{class=\"2xx\"} 3"), "{m}");
}

/// Forty sites, each with its own access log, plus the error log: more fds
/// than one control message could carry to a worker (16), which used to
/// read the truncated message as "master lost", drain and exit, be
/// respawned as a crash, while `-s reopen` still reported success. Now
/// every file reaches the same workers and new lines land in the new files.
#[test]
fn reopen_hands_forty_access_logs_to_the_same_workers() {
    const SITES: usize = 40;
    let env = Env::new();
    std::fs::create_dir_all(env.path("logs")).unwrap();
    let log = |i: usize| env.path(&format!("logs/s{i}.log"));
    let mut config = format!(
        "{}error_log = \"{}\"\n",
        env.globals(),
        env.path("logs/error.log").display()
    );
    for i in 0..SITES {
        config.push_str(&format!(
            "\n[[site]]\nlisten = [\"127.0.0.1:{}\"]\nnames = [\"s{i}.example\"]\n\
             root = \"{}\"\naccess_log = \"{}\"\n",
            env.port,
            env.path("www").display(),
            log(i).display()
        ));
    }
    env.write_config(&config);
    let _server = env.start();
    let ask_all = || {
        for i in 0..SITES {
            let r = request(
                env.port,
                &format!("GET /?n={i} HTTP/1.1\r\nHost: s{i}.example\r\nConnection: close\r\n\r\n"),
            )
            .unwrap();
            assert_eq!(r.status, 200);
        }
    };
    ask_all();
    assert!(wait_until(Duration::from_secs(5), || (0..SITES)
        .all(|i| lines(&log(i)).len() == 1)));
    let before = env.status();
    assert_eq!(before.serving_pids().len(), 2, "{}", before.raw);

    for i in 0..SITES {
        std::fs::rename(log(i), env.path(&format!("logs/s{i}.log.1"))).unwrap();
    }
    let out = env.baton(&["-s", "reopen"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ask_all();
    assert!(
        wait_until(Duration::from_secs(5), || (0..SITES).all(|i| lines(&log(
            i
        ))
        .len()
            == 1)),
        "new lines did not all reach the new files"
    );
    let after = env.status();
    assert_eq!(
        after.serving_pids(),
        before.serving_pids(),
        "workers were replaced: {}",
        after.raw
    );
    assert!(after.raw.contains("restarts: 0"), "{}", after.raw);
    for i in 0..SITES {
        let old = lines(&env.path(&format!("logs/s{i}.log.1")));
        assert_eq!(old.len(), 1, "site {i} wrote to its rotated file: {old:?}");
        assert!(lines(&log(i))[0].contains(&format!("/?n={i} ")));
    }
}

/// A log the master cannot reopen is a failed reopen, reported to the
/// caller with the file's name; the workers keep their old files and go
/// on serving.
#[test]
fn reopen_reports_a_log_it_cannot_open() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("logs/site")).unwrap();
    let log = env.path("logs/site/access.log");
    let config = env.simple_config_with(&format!("access_log = \"{}\"", log.display()));
    env.write_config(&config);
    let _server = env.start();
    let before = env.status();
    std::fs::remove_file(&log).unwrap();
    std::fs::remove_dir(env.path("logs/site")).unwrap();
    let out = env.baton(&["-s", "reopen"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "reopen said: {err}");
    assert!(
        err.contains(&format!("cannot open access log {}", log.display())),
        "{err}"
    );
    assert_eq!(get(env.port, "/").unwrap().status, 200);
    let after = env.status();
    assert_eq!(after.serving_pids(), before.serving_pids());
}
