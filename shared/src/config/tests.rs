//! Whole configs through the whole loader: values, defaults, and every error
//! with its exact place and text.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;

use super::*;

mod bounds;
mod compress;
mod upstream;

/// A temp dir with `www/`, `run/` and `logs/` in it, for configs to use.
fn dir() -> TempDir {
    let d = tempfile::tempdir().unwrap();
    for sub in ["www", "run", "logs"] {
        fs::create_dir(d.path().join(sub)).unwrap();
    }
    d
}

/// Loads `text` as if from `DIR/baton.toml`, the master having `euid`.
fn load_in(d: &TempDir, euid: u32, text: &str) -> Result<Config, ConfigErrors> {
    let file = d.path().join("baton.toml");
    load_text(text, Source::File(file), d.path(), &System { euid })
}

fn ok(text: &str) -> (TempDir, Config) {
    let d = dir();
    match load_in(&d, 0, text) {
        Ok(c) => (d, c),
        Err(e) => panic!("unexpected errors:\n{e}"),
    }
}

/// The errors as `LINE:COL: message`, the temp dir's path written `DIR`.
fn errors_in(d: &TempDir, euid: u32, text: &str) -> Vec<String> {
    let dir = d.path().display().to_string();
    match load_in(d, euid, text) {
        Ok(_) => panic!("config was accepted:\n{text}"),
        Err(ConfigErrors(list)) => list
            .iter()
            .map(|e| {
                assert_eq!(e.file, format!("{dir}/baton.toml"));
                let m = e.message.replace(&dir, "DIR");
                format!("{}:{}: {m}", e.pos.line, e.pos.col)
            })
            .collect(),
    }
}

fn errors(text: &str) -> Vec<String> {
    errors_in(&dir(), 0, text)
}

fn tcp(s: &str) -> ListenAddr {
    ListenAddr::Tcp(s.parse::<SocketAddr>().unwrap())
}

fn pos(line: usize, col: usize) -> Pos {
    Pos { line, col }
}

const MINIMAL: &str = "[[site]]\nlisten = [\"127.0.0.1:8080\"]\nroot = \"www\"\n";

#[test]
fn inetd_idle_exit_setting() {
    let (_d, c) = ok(&format!("inetd_idle_exit = \"5m\"\n{MINIMAL}"));
    assert_eq!(c.inetd_idle_exit, Duration::from_secs(300));
    let (_d, c) = ok(MINIMAL);
    assert_eq!(c.inetd_idle_exit, Duration::from_secs(60));
}

#[test]
fn full_config() {
    let (d, c) = ok(r#"
user = "www-data"
group = "nogroup"
run_as_root = false
workers = 3
pid_file = "run/baton.pid"
grace = "1m30s"
error_log = "logs/error.log"
log_level = "DEBUG"
worker_ready_timeout = "500ms"
drain_linger = 2
keepalive_timeout = "2m"
header_timeout = "10s"
defer_accept = "0s"

[[site]]
listen = [
  "127.0.0.1:8080",
  "[::]:8080",
  9090,
  { address = "unix:run/http.sock", backlog = 64, mode = "0660" },
  { address = "*:8443", backlog = 1024 },
]
names = ["Example.COM", "www.example.com"]
root = "www"
index = ["index.html", "index.htm"]

[[site]]
listen = ["127.0.0.1:8080"]
root = "./www/"
"#);
    let p = d.path();
    assert_eq!(c.source, Source::File(p.join("baton.toml")));
    assert_eq!(
        c.identity,
        Some(Identity {
            user: "www-data".into(),
            uid: 33,
            gid: 65534,
            groups: vec![65534],
            pos: pos(2, 8),
        })
    );
    assert!(!c.run_as_root);
    assert_eq!(c.workers, 3);
    assert_eq!(c.pid_file, p.join("run/baton.pid"));
    assert_eq!(c.grace, Duration::from_secs(90));
    assert_eq!(c.error_log, Some(p.join("logs/error.log")));
    assert_eq!(c.log_level, "debug");
    assert_eq!(c.worker_ready_timeout, Duration::from_millis(500));
    assert_eq!(c.drain_linger, Duration::from_secs(2));
    assert_eq!(c.keepalive_timeout, Duration::from_secs(120));
    assert_eq!(c.header_timeout, Duration::from_secs(10));
    assert_eq!(c.defer_accept, Duration::ZERO);

    assert_eq!(c.sites.len(), 2);
    let s = &c.sites[0];
    assert_eq!(s.pos, pos(16, 1));
    assert_eq!(s.names, ["example.com", "www.example.com"]);
    assert_eq!(s.root, Some(p.join("www")));
    assert_eq!(s.index, ["index.html", "index.htm"]);
    let l = |addr, backlog, mode, line, col| Listen {
        addr,
        backlog,
        mode,
        h2c: false,
        pos: pos(line, col),
    };
    assert_eq!(
        s.listen,
        [
            l(tcp("127.0.0.1:8080"), 511, 0o666, 18, 3),
            l(tcp("[::]:8080"), 511, 0o666, 19, 3),
            l(tcp("0.0.0.0:9090"), 511, 0o666, 20, 3),
            l(ListenAddr::Unix(p.join("run/http.sock")), 64, 0o660, 21, 3),
            l(tcp("0.0.0.0:8443"), 1024, 0o666, 22, 3),
        ]
    );
    let s = &c.sites[1];
    assert_eq!(s.pos, pos(28, 1));
    assert!(s.names.is_empty());
    assert_eq!(s.root, Some(p.join("www/")));
    assert_eq!(c.listens().len(), 5);
    assert_eq!(c.sites_on(&tcp("127.0.0.1:8080")).count(), 2);
}

#[test]
fn defaults() {
    let (d, c) = ok(MINIMAL);
    assert_eq!(
        c.identity,
        Some(Identity {
            user: "nobody".into(),
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
            pos: Pos::default(),
        })
    );
    assert!(!c.run_as_root);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(c.workers, cpus);
    assert_eq!(c.pid_file, Path::new("/run/baton.pid"));
    assert_eq!(c.grace, Duration::from_secs(30));
    assert_eq!(c.error_log, None);
    assert_eq!(c.log_level, "info");
    assert_eq!(c.worker_ready_timeout, Duration::from_secs(10));
    assert_eq!(c.drain_linger, Duration::from_secs(1));
    assert_eq!(c.inetd_idle_exit, Duration::from_secs(60));
    assert_eq!(c.keepalive_timeout, Duration::from_secs(75));
    assert_eq!(c.header_timeout, Duration::from_secs(30));
    assert_eq!(c.defer_accept, Duration::from_secs(1));
    let s = &c.sites[0];
    assert!(s.names.is_empty());
    assert_eq!(s.index, ["index.html"]);
    assert_eq!(s.root, Some(d.path().join("www")));
    assert_eq!(s.listen[0].backlog, 511);
    assert_eq!(s.listen[0].mode, 0o666);

    let (_, c) = ok(&format!("workers = \"auto\"\n{MINIMAL}"));
    assert_eq!(c.workers, cpus);
}

#[test]
fn default_pid_files() {
    assert_eq!(default_pid_file_for(0, None), Path::new("/run/baton.pid"));
    assert_eq!(
        default_pid_file_for(0, Some("/run/user/0".into())),
        Path::new("/run/baton.pid")
    );
    assert_eq!(
        default_pid_file_for(1000, Some("/run/user/1000".into())),
        Path::new("/run/user/1000/baton.pid")
    );
    assert_eq!(
        default_pid_file_for(1000, Some("relative".into())),
        Path::new("/tmp/baton-1000.pid")
    );
    assert_eq!(
        default_pid_file_for(1000, None),
        Path::new("/tmp/baton-1000.pid")
    );
    // Not root here: the pid file follows the euid's rule.
    let d = dir();
    let c = load_in(&d, 1000, MINIMAL).unwrap();
    assert_eq!(
        c.pid_file,
        default_pid_file_for(1000, std::env::var_os("XDG_RUNTIME_DIR"))
    );
}

#[test]
fn unknown_keys_at_every_level() {
    assert_eq!(
        errors(
            r#"wokers = 2
[[site]]
listen = ["8080", { address = "8081", backlogg = 5 }]
rot = "www"
root = "www"
frob = 1
"#
        ),
        [
            r#"1:1: unknown key "wokers", did you mean "workers"?"#,
            r#"3:39: unknown key "backlogg", did you mean "backlog"?"#,
            r#"4:1: unknown key "rot", did you mean "root"?"#,
            r#"6:1: unknown key "frob" (expected listen, names, root, index, directory_listing, dotfiles, symlinks, types, default_type, charset, precompressed, headers, path_headers, error_pages, fallback, access_log, tls, redirect_https, compress, route, http2)"#,
        ]
    );
}

#[test]
fn a_misspelt_required_key_is_not_also_missing() {
    assert_eq!(
        errors("[[site]]\nlistn = [8080]\nrot = \"www\"\n"),
        [
            r#"2:1: unknown key "listn", did you mean "listen"?"#,
            r#"3:1: unknown key "rot", did you mean "root"?"#,
        ]
    );
}

#[test]
fn parse_duration_is_public() {
    assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("soon"), None);
}

#[test]
fn keys_in_the_wrong_table() {
    assert_eq!(
        errors("root = \"www\"\n[[site]]\nlisten = [8080]\nroot = \"www\"\nworkers = 4\n"),
        [
            r#"1:1: unknown key "root" at the top level: it belongs in a [[site]] table"#,
            r#"5:1: unknown key "workers" in a [[site]]: top-level keys go before the first [[site]]"#,
        ]
    );
}

#[test]
fn wrong_types() {
    assert_eq!(
        errors(
            r#"workers = "lots"
run_as_root = "yes"
grace = "soon"
log_level = "verbose"
header_timeout = 0
user = 7
pid_file = ""
drain_linger = -1
defer_accept = true
[[site]]
listen = "127.0.0.1:8080"
root = 5
names = "example.com"
index = ["a/b.html", 3]
"#
        ),
        [
            r#"1:11: "workers" must be "auto" or a whole number from 1 to 1024, not "lots""#,
            r#"2:15: "run_as_root" must be true or false, not "yes""#,
            r#"3:9: "grace" must be a duration like "30s" or "500ms", not "soon""#,
            r#"4:13: "log_level" must be one of error, warn, info, debug, trace, not "verbose""#,
            r#"5:18: "header_timeout" must be more than 0"#,
            r#"6:8: "user" must be a user name, not 7"#,
            r#"7:12: "pid_file" must be a path, not """#,
            r#"8:16: "drain_linger" must be a duration like "30s" or "500ms", not -1"#,
            r#"9:16: "defer_accept" must be a duration like "30s" or "500ms", not true"#,
            r#"11:10: "listen" must be an array of addresses like ["127.0.0.1:8080"], not "127.0.0.1:8080""#,
            r#"12:8: "root" must be a path, not 5"#,
            r#"13:9: "names" must be an array of host names, not "example.com""#,
            r#"14:10: index "a/b.html" must be a file name, without "/""#,
            r#"14:22: "index" must be an array of file names like ["index.html"], not 3"#,
        ]
    );
}

#[test]
fn worker_counts() {
    assert_eq!(ok(&format!("workers = 1024\n{MINIMAL}")).1.workers, 1024);
    assert_eq!(
        errors(&format!("workers = 0\n{MINIMAL}")),
        [r#"1:11: "workers" must be "auto" or a whole number from 1 to 1024, not 0"#]
    );
    assert_eq!(
        errors(&format!("workers = 1025\n{MINIMAL}")),
        [r#"1:11: "workers" must be "auto" or a whole number from 1 to 1024, not 1025"#]
    );
    assert_eq!(
        errors(&format!("workers = 2.5\n{MINIMAL}")),
        [r#"1:11: "workers" must be "auto" or a whole number from 1 to 1024, not 2.5"#]
    );
}

#[test]
fn durations() {
    let (_, c) = ok(&format!(
        "grace = \"1h2m\"\ndrain_linger = \"250ms\"\nkeepalive_timeout = 0\n\
         worker_ready_timeout = 3\n{MINIMAL}"
    ));
    assert_eq!(c.grace, Duration::from_secs(3720));
    assert_eq!(c.drain_linger, Duration::from_millis(250));
    assert_eq!(c.keepalive_timeout, Duration::ZERO);
    assert_eq!(c.worker_ready_timeout, Duration::from_secs(3));
    assert_eq!(
        errors(&format!(
            "keepalive_timeout = \"5 minutes\"\nworker_ready_timeout = \"0s\"\n{MINIMAL}"
        )),
        [
            r#"1:21: "keepalive_timeout" must be a duration like "30s" or "500ms", not "5 minutes""#,
            r#"2:24: "worker_ready_timeout" must be more than 0"#,
        ]
    );
}

#[test]
fn missing_site_parts() {
    assert_eq!(
        errors("[[site]]\nnames = [\"a.example\"]\n"),
        [
            r#"1:1: this [[site]] has no "listen" (for example listen = ["127.0.0.1:8080"])"#,
            r#"1:1: this [[site]] has no "root" (the directory to serve) and no [[site.route]]"#,
        ]
    );
    assert_eq!(
        errors("[[site]]\nlisten = []\nroot = \"www\"\n"),
        [r#"2:10: "listen" must list at least one address, like ["127.0.0.1:8080"]"#]
    );
}

#[test]
fn no_site() {
    assert_eq!(
        errors(""),
        ["1:1: no [[site]] in the config: nothing to serve"]
    );
    assert_eq!(
        errors("\n\nworkers = 2\n"),
        ["1:1: no [[site]] in the config: nothing to serve"]
    );
    assert_eq!(
        errors("workers = 2\n[site]\nroot = \"www\"\n"),
        [r#"2:1: "site" must be an array of tables, written [[site]], not a table"#]
    );
}

#[test]
fn root_must_be_an_existing_directory() {
    let d = dir();
    fs::write(d.path().join("file.txt"), "x").unwrap();
    assert_eq!(
        errors_in(
            &d,
            0,
            "[[site]]\nlisten = [8080]\nroot = \"missing\"\n\
             [[site]]\nlisten = [8081]\nroot = \"file.txt\"\n\
             [[site]]\nlisten = [8082]\nroot = \"/\"\n"
        ),
        [
            r#"3:8: root "DIR/missing" does not exist"#,
            r#"6:8: root "DIR/file.txt" is not a directory"#,
        ]
    );
}

#[test]
fn listen_forms() {
    let (d, c) = ok(r#"
[[site]]
root = "www"
listen = [
  "8080",
  ":8081",
  "*:8082",
  8083,
  "0.0.0.0:8084",
  "127.0.0.1:8084",
  "[::]:8085",
  "unix:/tmp/../tmp/baton-test.sock",
  "unix:./run/a.sock",
  { address = 8086 },
  { address = "unix:run/b.sock", mode = "600" },
  { address = "unix:run/c.sock", mode = 0o640, backlog = 1 },
]
"#);
    let addrs: Vec<ListenAddr> = c.sites[0].listen.iter().map(|l| l.addr.clone()).collect();
    let run = d.path().join("run");
    assert_eq!(
        addrs,
        [
            tcp("0.0.0.0:8080"),
            tcp("0.0.0.0:8081"),
            tcp("0.0.0.0:8082"),
            tcp("0.0.0.0:8083"),
            tcp("0.0.0.0:8084"),
            tcp("127.0.0.1:8084"),
            tcp("[::]:8085"),
            ListenAddr::Unix("/tmp/../tmp/baton-test.sock".into()),
            ListenAddr::Unix(run.join("a.sock")),
            tcp("0.0.0.0:8086"),
            ListenAddr::Unix(run.join("b.sock")),
            ListenAddr::Unix(run.join("c.sock")),
        ]
    );
    // `.` is dropped from resolved paths, `..` kept.
    assert_eq!(
        addrs[8].to_string(),
        format!("unix:{}/run/a.sock", d.path().display())
    );
    let l = &c.sites[0].listen;
    assert_eq!((l[10].mode, l[10].backlog), (0o600, 511));
    assert_eq!((l[11].mode, l[11].backlog), (0o640, 1));
}

#[test]
fn listen_errors() {
    let d = dir();
    fs::write(d.path().join("run/not-a-socket"), "").unwrap();
    assert_eq!(
        errors_in(
            &d,
            0,
            r#"[[site]]
root = "www"
listen = [
  "127.0.0.1:0",
  "192.0.2.1:80",
  "unix:nodir/s.sock",
  { address = "127.0.0.1:81", mode = "0660" },
  "8082",
  ":8082",
  { address = "unix:run/s.sock", mode = "rw" },
  true,
  { backlog = 0 },
  { address = "8083", backlog = 0 },
  "localhost:80",
  0,
  "unix:run/not-a-socket",
  "unix:/run/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock",
]
"#
        ),
        [
            r#"4:3: address "127.0.0.1:0": port 0 is out of range (1 to 65535)"#,
            r#"5:3: address 192.0.2.1:80 is not assigned to any interface of this machine"#,
            r#"6:3: directory "DIR/nodir" of unix socket "DIR/nodir/s.sock" does not exist"#,
            r#"7:38: "mode" only applies to unix sockets, not to 127.0.0.1:81"#,
            r#"9:3: 0.0.0.0:8082 is listed twice in this site (also on line 8)"#,
            r#"10:41: "mode" must be an octal file mode like "0660", not "rw""#,
            r#"11:3: each "listen" entry must be an address like "127.0.0.1:8080", a port or a table with "address", not true"#,
            r#"12:3: listen table has no "address""#,
            r#"13:33: "backlog" must be a whole number from 1 to 65535, not 0"#,
            r#"14:3: address "localhost:80": "localhost" is not an IP address (use IP:PORT, [IPv6]:PORT, PORT, unix:/path or stdin)"#,
            r#"15:3: port 0 is out of range (1 to 65535)"#,
            r#"16:3: unix socket "DIR/run/not-a-socket" exists and is not a socket"#,
            r#"17:3: unix socket "/run/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock" is too long (112 bytes, at most 107)"#,
        ]
    );
}

#[test]
fn address_conflicts_between_sites() {
    assert_eq!(
        errors(
            r#"[[site]]
listen = ["127.0.0.1:8080"]
names = ["a.example", "B.example"]
root = "www"
[[site]]
listen = ["127.0.0.1:8080", "127.0.0.1:8081"]
names = ["b.EXAMPLE", "c.example", "c.example"]
root = "www"
[[site]]
listen = ["127.0.0.1:8080"]
root = "www"
[[site]]
listen = ["127.0.0.1:8081", "127.0.0.1:8080", "0.0.0.0:8080"]
root = "www"
"#
        ),
        [
            r#"7:10: name "b.example" on 127.0.0.1:8080 is already taken by the site on line 1"#,
            r#"7:36: name "c.example" is already listed on line 7 of this site"#,
            r#"13:29: the site on line 9 already answers any host name on 127.0.0.1:8080: only one site per address may have no "names""#,
        ]
    );
}

#[test]
fn host_routing_on_one_address_is_fine() {
    let (_, c) = ok(r#"
[[site]]
listen = ["127.0.0.1:8080", "0.0.0.0:8080"]
names = ["a.example"]
root = "www"
[[site]]
listen = ["127.0.0.1:8080", "0.0.0.0:8080"]
names = ["b.example", "[::1]", "127.0.0.1"]
root = "www"
[[site]]
listen = ["127.0.0.1:8080", "0.0.0.0:8080"]
root = "www"
"#);
    assert_eq!(c.sites_on(&tcp("127.0.0.1:8080")).count(), 3);
    assert_eq!(c.listens().len(), 2);
}

#[test]
fn one_address_has_one_backlog() {
    assert_eq!(
        errors(
            "[[site]]\nlisten = [{ address = \"8080\", backlog = 100 }]\nroot = \"www\"\n\
             [[site]]\nlisten = [\"8080\"]\nnames = [\"x\"]\nroot = \"www\"\n"
        ),
        [
            "5:11: 0.0.0.0:8080 has backlog 511 here but 100 on line 2: \
             an address has one backlog for all its sites"
        ]
    );
}

#[test]
fn bad_names() {
    assert_eq!(
        errors(
            "[[site]]\nlisten = [8080]\nroot = \"www\"\n\
             names = [\"example.com:8080\", \"a b\", \"*.example.com\", \"\"]\n"
        ),
        [
            r#"4:10: name "example.com:8080" must not include a port"#,
            r#"4:30: name "a b" must not contain spaces"#,
            r#"4:37: name "*.example.com" is not a valid host name"#,
            r#"4:54: name "" is empty"#,
        ]
    );
}

#[test]
fn syntax_errors() {
    assert_eq!(
        errors("workers = \n"),
        ["1:11: string values must be quoted, expected literal string"]
    );
    assert_eq!(errors("workers = 2\nworkers = 3\n"), ["2:1: duplicate key"]);
    assert_eq!(
        errors("[[site]]\nlisten = [\"8080\"\nroot = \"www\"\n"),
        ["3:1: missing comma between array elements, expected `,`"]
    );
    assert_eq!(
        errors("grace = \"10s\ngrace2 = 1\n"),
        ["1:13: invalid basic string, expected `\"`"]
    );
    // The first error in the file, though the parser finds it last.
    assert_eq!(
        errors("é = 1\nb = [1,\n"),
        ["1:1: invalid unquoted key, expected letters, numbers, `-`, `_`"]
    );
}

#[test]
fn pid_file_and_error_log_directories() {
    let d = dir();
    assert_eq!(
        errors_in(
            &d,
            0,
            &format!("pid_file = \"nodir/sub/baton.pid\"\nerror_log = \"run\"\n{MINIMAL}")
        ),
        [
            r#"1:12: directory "DIR/nodir/sub" of pid_file "DIR/nodir/sub/baton.pid" does not exist"#,
            r#"2:13: error_log "DIR/run" is a directory"#,
        ]
    );
}

/// A missing runtime directory (`/run/baton` after `systemctl stop`) is
/// valid when its parent exists: the master creates it at start.
#[test]
fn pid_file_in_a_missing_runtime_directory() {
    let d = dir();
    let c = load_in(&d, 0, &format!("pid_file = \"gone/baton.pid\"\n{MINIMAL}"));
    assert!(c.is_ok(), "{c:?}");
}

#[test]
fn identity_as_root() {
    let d = dir();
    let id = |text: &str| load_in(&d, 0, &format!("{text}\n{MINIMAL}")).map(|c| c.identity);
    assert_eq!(
        id("user = \"www-data\""),
        Ok(Some(Identity {
            user: "www-data".into(),
            uid: 33,
            gid: 33,
            groups: vec![33],
            pos: pos(1, 8),
        }))
    );
    assert_eq!(
        id("group = \"www-data\""),
        Ok(Some(Identity {
            user: "nobody".into(),
            uid: 65534,
            gid: 33,
            groups: vec![33],
            pos: pos(1, 9),
        }))
    );
    assert_eq!(
        id("user = \"root\"\nrun_as_root = true"),
        Ok(Some(Identity {
            user: "root".into(),
            uid: 0,
            gid: 0,
            groups: vec![0],
            pos: pos(1, 8),
        }))
    );
    assert_eq!(
        errors_in(&d, 0, &format!("user = \"root\"\n{MINIMAL}")),
        ["1:8: workers would run as root; set run_as_root = true to allow it"]
    );
    assert_eq!(
        errors_in(
            &d,
            0,
            &format!("user = \"no-such-user\"\ngroup = \"no-such-group\"\n{MINIMAL}")
        ),
        [
            r#"1:8: user "no-such-user" does not exist"#,
            r#"2:9: group "no-such-group" does not exist"#,
        ]
    );
}

#[test]
fn identity_when_not_root() {
    let d = dir();
    let c = load_in(
        &d,
        1000,
        &format!("user = \"www-data\"\ngroup = \"nogroup\"\n{MINIMAL}"),
    );
    assert_eq!(c.map(|c| c.identity), Ok(None));
    // Root needs no opt-in when the master cannot switch to it anyway.
    let c = load_in(&d, 1000, &format!("user = \"root\"\n{MINIMAL}"));
    assert_eq!(c.map(|c| c.identity), Ok(None));
    assert_eq!(
        errors_in(&d, 1000, &format!("user = \"no-such-user\"\n{MINIMAL}")),
        [r#"1:8: user "no-such-user" does not exist"#]
    );
}

#[test]
fn relative_paths_follow_the_config_not_the_cwd() {
    let d = dir();
    // A symlinked directory keeps its name: the config is where it was asked
    // to be read from.
    let real = d.path().join("real");
    fs::create_dir_all(real.join("www")).unwrap();
    fs::create_dir(real.join("run")).unwrap();
    std::os::unix::fs::symlink(&real, d.path().join("link")).unwrap();
    let file = d.path().join("link/baton.toml");
    fs::write(
        &file,
        "pid_file = \"run/baton.pid\"\nerror_log = \"../logs/e.log\"\n\
         [[site]]\nlisten = [\"unix:run/s.sock\"]\nroot = \"www\"\n",
    )
    .unwrap();
    let c = load_file(&file).unwrap();
    let link = d.path().join("link");
    assert_eq!(c.source, Source::File(file.clone()));
    assert_eq!(c.pid_file, link.join("run/baton.pid"));
    assert_eq!(c.error_log, Some(link.join("../logs/e.log")));
    assert_eq!(c.sites[0].root, Some(link.join("www")));
    assert_eq!(
        c.sites[0].listen[0].addr,
        ListenAddr::Unix(link.join("run/s.sock"))
    );
}

#[test]
fn file_errors_name_the_file() {
    let d = dir();
    let file = d.path().join("baton.toml");
    fs::write(&file, "workers = \"lots\"\n").unwrap();
    let e = load_file(&file).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{f}:1:1: no [[site]] in the config: nothing to serve\n\
             {f}:1:11: \"workers\" must be \"auto\" or a whole number from 1 to 1024, not \"lots\"",
            f = file.display()
        )
    );

    let missing = d.path().join("missing.toml");
    let e = load_file(&missing).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}: cannot read config: No such file or directory (os error 2)",
            missing.display()
        )
    );

    fs::write(&file, b"workers = 2\n# caf\xe9\n").unwrap();
    let e = load_file(&file).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}:2:6: invalid UTF-8: a config must be UTF-8 text",
            file.display()
        )
    );
}

#[test]
fn embedded_config() {
    let c = load_embedded().unwrap();
    assert_eq!(c.source, Source::Embedded);
    assert_eq!(c.workers, 2);
    assert_eq!(c.grace, Duration::from_secs(10));
    let sample = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("sample-site");
    assert_eq!(c.sites[0].root, Some(sample));
    assert!(
        !c.sites[0]
            .root
            .as_ref()
            .unwrap()
            .to_string_lossy()
            .contains("..")
    );
    assert_eq!(c.sites[0].listen[0].addr, tcp("127.0.0.1:8080"));
}

#[test]
fn pid_file_of_reads_only_what_it_needs() {
    let d = dir();
    let file = d.path().join("baton.toml");
    fs::write(
        &file,
        "pid_file = \"run/baton.pid\"\nworkers = \"lots\"\n\
         [[site]]\nlisten = [0]\nroot = \"no-such-dir\"\n",
    )
    .unwrap();
    assert_eq!(pid_file_of(Some(&file)), Ok(d.path().join("run/baton.pid")));

    fs::write(&file, "[[site]]\nroot = 5\n").unwrap();
    assert_eq!(pid_file_of(Some(&file)), Ok(default_pid_file()));
    assert_eq!(pid_file_of(None), Ok(default_pid_file()));

    fs::write(&file, "pid_file = 5\n").unwrap();
    assert_eq!(
        pid_file_of(Some(&file)).unwrap_err().to_string(),
        format!(
            "{}:1:12: \"pid_file\" must be a path, not 5",
            file.display()
        )
    );

    fs::write(&file, "pid_file = \"x\"\n[[site\n").unwrap();
    let e = pid_file_of(Some(&file)).unwrap_err();
    assert_eq!(e.0[0].pos, pos(2, 7));

    let missing = d.path().join("missing.toml");
    assert!(
        pid_file_of(Some(&missing))
            .unwrap_err()
            .to_string()
            .ends_with("missing.toml: cannot read config: No such file or directory (os error 2)")
    );
}

#[test]
fn http_limits_and_file_options() {
    let d = dir();
    let www = d.path().join("www");
    let text = format!(
        "max_header_size = \"8k\"\nmax_headers = 50\nmax_uri_length = 2048\n\
         max_body_size = \"2m\"\nmax_connections = 10\nkeepalive_requests = 5\n\
         body_timeout = \"5s\"\nsend_timeout = \"7s\"\nserver_token = false\n\
         file_cache_size = \"1m\"\nfile_cache_max_file_size = 0\n\
         [[site]]\nlisten = [\"127.0.0.1:8080\"]\nroot = \"{}\"\n\
         directory_listing = true\ndotfiles = \"allow\"\nsymlinks = \"owner\"\n\
         types = {{ md = \"text/markdown\" }}\ndefault_type = \"text/plain\"\n\
         charset = false\nprecompressed = true\n\
         headers = {{ \"Cache-Control\" = \"max-age=3600\" }}\n\
         path_headers = {{ \"/assets/\" = {{ \"X-A\" = \"1\" }} }}\n\
         error_pages = {{ 404 = \"/404.html\" }}\nfallback = \"/index.html\"\n",
        www.display()
    );
    let c = load_in(&d, 0, &text).unwrap();
    let h = &c.http;
    assert_eq!(
        (
            h.max_header_size,
            h.max_headers,
            h.max_uri_length,
            h.max_body_size
        ),
        (8192, 50, 2048, 2 << 20)
    );
    assert_eq!((h.max_connections, h.keepalive_requests), (10, 5));
    assert_eq!(
        (h.body_timeout, h.send_timeout),
        (Duration::from_secs(5), Duration::from_secs(7))
    );
    assert_eq!(h.server_token, None);
    assert_eq!(
        (h.file_cache_size, h.file_cache_max_file_size),
        (1 << 20, 0)
    );
    let f = &c.sites[0].files;
    assert!(f.directory_listing && f.dotfiles && f.precompressed);
    assert_eq!(f.symlinks, Symlinks::Owner);
    assert_eq!(f.types, [("md".to_string(), "text/markdown".to_string())]);
    assert_eq!(
        (f.default_type.as_str(), f.charset.as_deref()),
        ("text/plain", None)
    );
    assert_eq!(f.headers, [("Cache-Control".into(), "max-age=3600".into())]);
    assert_eq!(f.path_headers[0].0, "/assets/");
    assert_eq!(f.error_pages, [(404, "/404.html".to_string())]);
    assert_eq!(f.fallback.as_deref(), Some("/index.html"));

    let (_d, c) = ok("[[site]]\nlisten = [\"127.0.0.1:8080\"]\nroot = \"www\"\n");
    assert_eq!(c.http, HttpLimits::default());
    assert_eq!(c.sites[0].files, FileOptions::default());
}

#[test]
fn bad_file_cache_sizes_are_located() {
    let text = "file_cache_size = -1\nfile_cache_max_file_size = \"1g\"\nfile_cache = 1\n\
                [[site]]\nlisten = [\"127.0.0.1:8080\"]\nroot = \"www\"\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(
        errs[0].starts_with("1:19: \"file_cache_size\" must be"),
        "{errs:?}"
    );
    assert_eq!(
        errs[1],
        "2:28: file_cache_max_file_size = \"1g\" is too large (at most 16m)"
    );
    assert!(
        errs[2].starts_with("3:1: unknown key \"file_cache\", did you mean"),
        "{errs:?}"
    );
}

#[test]
fn bad_http_limits_and_file_options_are_located() {
    let text = "max_header_size = \"lots\"\nmax_headers = 0\nserver_token = \"a\\nb\"\n\
                keepalive_request = 3\n\
                [[site]]\nlisten = [\"127.0.0.1:8080\"]\nroot = \"www\"\n\
                symlinks = \"sometimes\"\ndotfiles = true\n\
                headers = { \"Bad Name\" = \"x\", \"Content-Length\" = \"1\" }\n\
                error_pages = { 200 = \"/x\", 404 = \"x\" }\nfallback = \"index.html\"\n\
                types = { \".md\" = \"markdown\" }\nprecompresed = true\n";
    assert_eq!(
        errors(text),
        [
            r#"1:19: "max_header_size" must be a size like 16384 or "16k", not "lots""#,
            r#"2:15: "max_headers" must be a whole number from 1 to 1024, not 0"#,
            r#"3:16: "server_token" must be a product name like "baton", or false, not "a\nb""#,
            r#"4:1: unknown key "keepalive_request", did you mean "keepalive_requests"?"#,
            r#"8:12: "symlinks" must be one of follow, owner, never, not "sometimes""#,
            r#"9:12: "dotfiles" must be "deny" or "allow", not true"#,
            r#"10:13: header name "Bad Name" is not a valid HTTP field name"#,
            r#"10:31: header "Content-Length" is set by Baton itself and cannot be added"#,
            r#"11:17: error page status "200" must be a status from 400 to 599"#,
            r#"11:35: "error_pages" must be a URL path under the root, like "/index.html", not "x""#,
            r#"12:12: "fallback" must be a URL path under the root, like "/index.html", not "index.html""#,
            r#"13:11: type extension ".md" must be a file extension without its dot, like "md""#,
            r#"14:1: unknown key "precompresed", did you mean "precompressed"?"#,
        ]
    );
}

#[test]
fn tls_tables_in_every_form() {
    let (_d, c) = ok(r#"
tls_min_version = "1.3"
tls_ciphers = ["tls13_aes_128_gcm_sha256"]
tls_watch_interval = "250ms"
tls_unknown_sni = "reject"

[[site]]
listen = ["127.0.0.1:8443"]
names = ["a.test"]
root = "www"
tls = { cert = "a.pem", key = "a.key", ocsp = "a.der", default = true }

[[site]]
listen = ["127.0.0.1:8443"]
names = ["b.test"]
root = "www"
[[site.tls.cert]]
cert = "b-ec.pem"
key = "b-ec.key"
[[site.tls.cert]]
cert = "b-rsa.pem"
key = "b-rsa.key"

[[site]]
listen = ["127.0.0.1:8080"]
root = "www"
redirect_https = 8443
"#);
    assert_eq!(c.tls.min_version, TlsVersion::V13);
    assert_eq!(c.tls.ciphers, vec!["TLS13_AES_128_GCM_SHA256".to_string()]);
    assert_eq!(c.tls.watch_interval, Duration::from_millis(250));
    assert!(c.tls.reject_unknown_sni);
    let a = c.sites[0].tls.as_ref().unwrap();
    assert!(a.default);
    assert_eq!(a.certs.len(), 1);
    assert!(a.certs[0].cert.ends_with("a.pem"));
    assert!(a.certs[0].ocsp.as_ref().unwrap().ends_with("a.der"));
    let b = c.sites[1].tls.as_ref().unwrap();
    assert_eq!(b.certs.len(), 2);
    assert!(b.certs[1].key.ends_with("b-rsa.key"));
    assert_eq!(c.sites[2].redirect_https, Some(8443));
    assert!(c.tls_on(&tcp("127.0.0.1:8443")));
    assert!(!c.tls_on(&tcp("127.0.0.1:8080")));
}

#[test]
fn tls_errors_are_located_with_suggestions() {
    assert_eq!(
        errors(
            r#"tls_ciphers = ["TLS13_AES_128_GCM_SHA265"]
tls_min_version = "1.1"
[[site]]
listen = ["127.0.0.1:8443"]
root = "www"
tls = { cert = "a.pem", kye = "a.key" }
[[site]]
listen = ["127.0.0.1:8443"]
names = ["b.test"]
root = "www"
"#
        ),
        vec![
            r#"1:16: unknown cipher suite "TLS13_AES_128_GCM_SHA265", did you mean "TLS13_AES_128_GCM_SHA256"?"#,
            r#"2:19: "tls_min_version" must be "1.2" or "1.3", not "1.1""#,
            r#"6:16: "cert" without "key": add key = "FILE.key""#,
            r#"6:25: unknown key "kye", did you mean "key"?"#,
            r#"8:11: 127.0.0.1:8443 mixes TLS and plain HTTP: the site on line 3 has "tls" but this site does not (sites sharing an address must agree; give them different addresses)"#,
        ]
    );
    assert_eq!(
        errors("[[site]]\nlisten = [\"127.0.0.1:1\"]\nroot = \"www\"\ntls = {}\n"),
        vec![
            r#"4:7: "tls" needs cert and key (cert = "site.pem", key = "site.key"), [[site.tls.cert]] entries or dir = "DIRECTORY""#
        ]
    );
}
