//! The admin API, served by the master: every endpoint, its failure
//! replies, the guards of its TCP variant, and its privilege boundary
//! (who may call, and what a caller who is not root may change), tested
//! with callers that really are not root.

mod common;

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn json(r: &Response) -> Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&r.body)))
}

#[test]
fn status_reload_config_metrics_and_stop() {
    let env = Env::new();
    let config = with_admin(&env, &env.simple_config());
    env.write_config(&config);
    let mut server = env.start();
    let sock = env.path("admin.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let r = admin_call(&sock, "GET", "/status", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let s = json(&r);
    assert_eq!(s["pid"], server.pid());
    assert_eq!(s["generation"], 1);
    assert_eq!(s["workers"].as_array().unwrap().len(), 2);
    assert_eq!(s["workers"][0]["state"], "serving");
    assert!(s["last_reload"].is_null());

    let r = admin_call(&sock, "POST", "/reload", "");
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let body = json(&r);
    assert_eq!(body["generation"], 2);
    assert!(body["took_ms"].is_u64());
    // It answered once generation 2 was serving.
    assert_eq!(env.status().generation, 2);

    let r = admin_call(&sock, "GET", "/config", "");
    assert_eq!(r.status, 200);
    assert_eq!(String::from_utf8_lossy(&r.body), config);

    let r = admin_call(&sock, "GET", "/metrics", "");
    assert_eq!(r.status, 200);
    let m = String::from_utf8_lossy(&r.body).to_string();
    assert!(m.contains("# TYPE baton_reloads_total counter"), "{m}");
    assert!(m.contains("baton_reloads_total{result=\"ok\"} 1"), "{m}");
    assert!(m.contains("baton_generation 2"), "{m}");
    assert!(
        m.contains("baton_workers{generation=\"2\",state=\"serving\"} 2"),
        "{m}"
    );

    assert_eq!(admin_call(&sock, "GET", "/nope", "").status, 404);
    let r = admin_call(&sock, "GET", "/reload", "");
    assert_eq!(r.status, 405);
    assert!(json(&r)["error"].as_str().unwrap().contains("POST"));

    let r = admin_call(&sock, "POST", "/stop", "");
    assert_eq!(r.status, 202);
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(!sock.exists(), "admin socket removed at exit");
}

#[test]
fn invalid_config_gives_422_with_the_same_error_as_the_command_line() {
    let env = Env::new();
    env.write_config(&with_admin(&env, &env.simple_config()));
    let _server = env.start();
    let sock = env.path("admin.sock");
    let broken = with_admin(&env, &env.simple_config().replace("root =", "rot ="));
    env.write_config(&broken);

    let r = admin_call(&sock, "POST", "/reload", "");
    assert_eq!(r.status, 422);
    let e = json(&r);
    let line = broken.lines().position(|l| l.starts_with("rot =")).unwrap() + 1;
    assert_eq!(e["line"], line);
    assert_eq!(e["col"], 1);
    assert_eq!(e["message"], "unknown key \"rot\", did you mean \"root\"?");
    assert_eq!(e["file"], env.config_path().display().to_string());
    let as_text = format!(
        "{}:{}:{}: {}",
        e["file"].as_str().unwrap(),
        e["line"],
        e["col"],
        e["message"].as_str().unwrap()
    );
    let out = env.reload();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&as_text),
        "-s reload said {:?}, the API {as_text:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = json(&admin_call(&sock, "GET", "/status", ""));
    assert_eq!(status["generation"], 1, "old generation untouched");
    assert_eq!(status["last_reload"]["result"], "invalid");
    assert_eq!(get(env.port, "/").unwrap().status, 200);
}

#[test]
fn post_config_runs_then_writes_the_file_and_keeps_a_backup() {
    let env = Env::new();
    let original = with_admin(&env, &env.simple_config());
    env.write_config(&original);
    let _server = env.start();
    let sock = env.path("admin.sock");
    env.write_file("site2/index.html", b"second site\n");

    // Invalid: 422, file untouched, no backup made.
    let bad = original.replace("workers = 2", "workers = 0");
    let r = admin_call(&sock, "POST", "/config", &bad);
    assert_eq!(r.status, 422, "{:?}", String::from_utf8_lossy(&r.body));
    assert!(json(&r)["message"].as_str().unwrap().contains("workers"));
    assert_eq!(
        std::fs::read_to_string(env.config_path()).unwrap(),
        original
    );
    assert!(!env.path("baton.toml.bak").exists());

    // Apply failure (the new port is taken): 500, file untouched.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let unbindable = original.replace(
        &format!("\"127.0.0.1:{}\"", env.port),
        &format!("\"127.0.0.1:{}\", \"127.0.0.1:{taken_port}\"", env.port),
    );
    let r = admin_call(&sock, "POST", "/config", &unbindable);
    assert_eq!(r.status, 500);
    assert!(json(&r)["error"].as_str().unwrap().contains("cannot bind"));
    assert_eq!(
        std::fs::read_to_string(env.config_path()).unwrap(),
        original
    );

    // Valid: runs, then is written; the old file is the backup.
    let new = original.replace("/www\"", "/site2\"");
    let r = admin_call(&sock, "POST", "/config", &new);
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(json(&r)["generation"], 2);
    assert_eq!(get(env.port, "/").unwrap().body, b"second site\n");
    assert_eq!(std::fs::read_to_string(env.config_path()).unwrap(), new);
    assert_eq!(
        std::fs::read_to_string(env.path("baton.toml.bak")).unwrap(),
        original
    );
    assert_eq!(
        String::from_utf8_lossy(&admin_call(&sock, "GET", "/config", "").body),
        new
    );
}

#[test]
fn tcp_admin_refuses_foreign_hosts_and_origins() {
    let env = Env::new();
    let admin_port = free_port();
    let config = with_tcp_admin(&env, &env.simple_config(), admin_port);
    env.write_config(&config);
    let _server = env.start();
    // With the right token: the Host and Origin checks still apply.
    let ask = |host: &str, origin: Option<&str>| {
        let origin = origin
            .map(|o| format!("Origin: {o}\r\n"))
            .unwrap_or_default();
        request(
            admin_port,
            &format!(
                "POST /reload HTTP/1.1\r\nHost: {host}\r\n{origin}\
                 Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 0\r\n\r\n"
            ),
        )
        .unwrap()
        .status
    };
    assert_eq!(ask("evil.example", None), 403, "DNS rebinding");
    assert_eq!(
        ask(
            &format!("localhost:{admin_port}"),
            Some("http://evil.example")
        ),
        403
    );
    assert_eq!(env.status().generation, 1, "refused requests did nothing");
    assert_eq!(ask(&format!("127.0.0.1:{admin_port}"), None), 200);
    assert_eq!(
        ask(
            &format!("localhost:{admin_port}"),
            Some(&format!("http://localhost:{admin_port}"))
        ),
        200
    );
}

#[test]
fn admin_socket_mode_and_owner_are_configurable() {
    if !is_root() {
        eprintln!("skipped: needs root to chown");
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let config = format!(
        "{}\n[admin]\nlisten = \"unix:{}\"\nmode = \"0660\"\nowner = \"www-data\"\n",
        env.simple_config(),
        env.path("admin.sock").display()
    );
    env.write_config(&config);
    let _server = env.start();
    let meta = std::fs::metadata(env.path("admin.sock")).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660);
    assert_eq!((meta.uid(), meta.gid()), (33, 33), "www-data");
}

#[test]
fn admin_on_a_network_address_is_refused() {
    let env = Env::new();
    let config = format!(
        "{}\n[admin]\nlisten = \"0.0.0.0:9999\"\nmod = \"0600\"\n",
        env.simple_config()
    );
    env.write_config(&config);
    let out = env.baton(&["-t"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the admin API speaks plain HTTP"), "{err}");
    assert!(
        err.contains("unknown key \"mod\", did you mean \"mode\"?"),
        "{err}"
    );
}

#[test]
fn malformed_and_oversized_admin_requests_are_refused() {
    let env = Env::new();
    env.write_config(&with_admin(&env, &env.simple_config()));
    let _server = env.start();
    let sock = env.path("admin.sock");
    let raw = |bytes: &[u8]| {
        let mut s = UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(bytes).unwrap();
        read_response(&mut BufReader::new(s), false).map(|r| r.status)
    };
    assert_eq!(raw(b"GARBAGE\x00\r\n\r\n").unwrap(), 400);
    assert_eq!(
        raw(b"POST /config HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n").unwrap(),
        413
    );
    assert_eq!(
        raw(b"POST /config HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap(),
        411
    );
    // The master is still fine.
    assert_eq!(admin_call(&sock, "GET", "/status", "").status, 200);
}

/// The reply's JSON `field` and `reason`, for a refusal.
fn refusal(r: &Response) -> (String, String) {
    let body = json(r);
    let field = body["field"].as_str().unwrap_or_default().to_string();
    let reason = body["reason"].as_str().unwrap_or_default().to_string();
    (field, reason)
}

#[test]
fn tcp_admin_without_a_token_file_is_refused_at_load() {
    let env = Env::new();
    let config = format!(
        "{}\n[admin]\nlisten = \"127.0.0.1:{}\"\n",
        env.simple_config(),
        free_port()
    );
    env.write_config(&config);
    let line = config
        .lines()
        .position(|l| l.starts_with("listen = \"127.0.0.1:"));
    let line = line.map(|i| i + 1).unwrap_or(0);
    for args in [&["-t"][..], &[][..]] {
        let out = env.baton(args);
        assert_eq!(out.status.code(), Some(1), "baton {args:?} must refuse it");
        let err = String::from_utf8_lossy(&out.stderr);
        let at = format!(
            "{}:{line}:10: the admin API on a TCP address needs token_file",
            env.config_path().display()
        );
        assert!(err.contains(&at), "{at:?} not in {err}");
        assert!(err.contains("every local user can connect"), "{err}");
    }
    // A world-readable token file is no secret either.
    let with_token = with_tcp_admin(&env, &env.simple_config(), free_port());
    std::fs::set_permissions(
        env.path("admin.token"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    env.write_config(&with_token);
    let out = env.baton(&["-t"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is open to all users (mode 0644)"), "{err}");
}

#[test]
fn tcp_admin_needs_the_token_and_a_token_holder_is_not_root() {
    if !is_root() {
        eprintln!("skipped: needs root to run the client as nobody");
        return;
    }
    let env = Env::new();
    let admin_port = free_port();
    let original = with_tcp_admin(&env, &env.simple_config(), admin_port);
    env.write_config(&original);
    let _server = env.start();
    let at = AdminAt::Tcp(admin_port);
    let bearer = format!("Authorization: Bearer {ADMIN_TOKEN}");

    // No token, a wrong one, another scheme: 401 asking for a bearer token.
    let wrong = format!("Authorization: Bearer {ADMIN_TOKEN}x");
    let basic = format!("Authorization: Basic {ADMIN_TOKEN}");
    for headers in [&[][..], &[wrong.as_str()][..], &[basic.as_str()][..]] {
        for (method, path) in [("GET", "/status"), ("POST", "/reload"), ("POST", "/stop")] {
            let r = admin_as_nobody(at, method, path, headers, "").unwrap();
            assert_eq!(r.status, 401, "{method} {path} with {headers:?}");
            assert_eq!(
                r.header("www-authenticate"),
                Some("Bearer realm=\"baton admin\"")
            );
            assert!(json(&r)["error"].is_string());
        }
    }
    assert_eq!(env.status().generation, 1, "refused requests did nothing");

    // The right token: in, as a caller who is not root.
    let r = admin_as_nobody(at, "GET", "/status", &[&bearer], "").unwrap();
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(json(&r)["generation"], 1);

    // The escalation of the report: workers as root serving /.
    let exploit = original
        .replace("user = \"nobody\"", "user = \"root\"\nrun_as_root = true")
        .replace(
            &format!("root = \"{}\"", env.path("www").display()),
            "root = \"/\"",
        );
    let r = admin_as_nobody(at, "POST", "/config", &[&bearer], &exploit).unwrap();
    assert_eq!(r.status, 403, "{:?}", String::from_utf8_lossy(&r.body));
    let (field, reason) = refusal(&r);
    assert_eq!(field, "user");
    assert!(!reason.is_empty());
    let all = json(&r)["refused"].to_string();
    assert!(all.contains("run_as_root"), "{all}");
    assert_eq!(
        std::fs::read_to_string(env.config_path()).unwrap(),
        original
    );
    assert!(!env.path("baton.toml.bak").exists());
    assert_eq!(get(env.port, "/etc/shadow").unwrap().status, 404);
    assert_eq!(env.status().generation, 1);

    // What a token holder may do: change what is served.
    env.write_file("site2/index.html", b"second site\n");
    let served = original.replace("/www\"", "/site2\"");
    let r = admin_as_nobody(at, "POST", "/config", &[&bearer], &served).unwrap();
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(get(env.port, "/").unwrap().body, b"second site\n");
    assert_eq!(std::fs::read_to_string(env.config_path()).unwrap(), served);
}

#[test]
fn unix_peers_other_than_root_and_the_owner_are_refused() {
    if !is_root() {
        eprintln!("skipped: needs root to run the client as nobody");
        return;
    }
    let env = Env::new();
    let sock = env.path("admin.sock");
    // Mode 0666: the socket lets anyone connect; the master's own check
    // on the peer's credentials is what refuses them.
    let config = format!(
        "{}mode = \"0666\"\n",
        with_admin(&env, &env.simple_config())
    );
    env.write_config(&config);
    let _server = env.start();
    for (method, path) in [("GET", "/status"), ("POST", "/reload"), ("POST", "/stop")] {
        let r = admin_as_nobody(AdminAt::Unix(&sock), method, path, &[], "").unwrap();
        assert_eq!(r.status, 403, "{method} {path}");
        let error = json(&r)["error"].as_str().unwrap_or_default().to_string();
        assert!(
            error.contains("uid 65534 may not use the admin API"),
            "{error}"
        );
    }
    assert_eq!(env.status().generation, 1, "refused requests did nothing");
    // Another user (www-data) is no better; root is let in.
    let r = admin_as(33, 33, AdminAt::Unix(&sock), "GET", "/status", &[], "").unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(admin_call(&sock, "GET", "/status", "").status, 200);
}

#[test]
fn a_caller_who_is_not_root_cannot_change_root_only_settings() {
    if !is_root() {
        eprintln!("skipped: needs root to run the client as nobody");
        return;
    }
    let env = Env::new();
    for dir in ["logs", "elsewhere"] {
        std::fs::create_dir_all(env.path(dir)).unwrap();
    }
    let sock = env.path("admin.sock");
    let d = env.path("").display().to_string();
    let d = d.trim_end_matches('/');
    let original = format!(
        "{}error_log = \"{d}/logs/error.log\"\n\n[[site]]\nlisten = [\"127.0.0.1:{}\"]\n\
         root = \"{d}/www\"\naccess_log = \"{d}/logs/access.log\"\n\n\
         [admin]\nlisten = \"unix:{}\"\nowner = \"nobody\"\n",
        env.globals(),
        env.port,
        sock.display()
    );
    env.write_config(&original);
    let _server = env.start();
    let owner = AdminAt::Unix(&sock);

    // The owner is let in, and may read.
    let r = admin_as_nobody(owner, "GET", "/config", &[], "").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(String::from_utf8_lossy(&r.body), original);

    let cases: Vec<(&str, String)> = vec![
        (
            "user",
            original
                .replace("user = \"nobody\"", "user = \"root\"\nrun_as_root = true")
                .replace(&format!("\"{d}/www\""), "\"/\""),
        ),
        (
            "group",
            original.replace("user = \"nobody\"", "user = \"nobody\"\ngroup = \"daemon\""),
        ),
        ("pid_file", original.replace("/baton.pid\"", "/other.pid\"")),
        (
            "error_log",
            original.replace("logs/error.log", "elsewhere/error.log"),
        ),
        (
            "access_log",
            original.replace("logs/access.log", "elsewhere/access.log"),
        ),
        (
            "access_log",
            original.replace("logs/access.log", "logs/../elsewhere/access.log"),
        ),
        ("[admin]", format!("{original}mode = \"0666\"\n")),
        ("[admin]", original.replace("owner = \"nobody\"\n", "")),
        (
            "log_owner",
            original.replace("error_log =", "log_owner = \"nobody\"\nerror_log ="),
        ),
    ];
    for (field, config) in &cases {
        assert_ne!(config, &original, "{field}: the case changes nothing");
        let r = admin_as_nobody(owner, "POST", "/config", &[], config).unwrap();
        let body = String::from_utf8_lossy(&r.body).to_string();
        assert_eq!(r.status, 403, "{field}: {body}");
        let (got, reason) = refusal(&r);
        assert_eq!(&got, field, "{body}");
        assert!(reason.len() > 10, "{field}: a reason, got {reason:?}");
        // Nothing written, nothing reloaded, no file opened in its name.
        assert_eq!(
            std::fs::read_to_string(env.config_path()).unwrap(),
            original,
            "{field}"
        );
        assert!(
            !env.path("baton.toml.bak").exists(),
            "{field}: a backup was made"
        );
        assert!(!env.path("elsewhere/access.log").exists());
        assert!(!env.path("elsewhere/error.log").exists());
    }
    let status = json(&admin_call(&sock, "GET", "/status", ""));
    assert_eq!(status["generation"], 1, "no reload ran");
    assert!(status["last_reload"].is_null());

    // What the owner may change: what is served and logged where logs go.
    env.write_file("site2/index.html", b"second site\n");
    let served = original
        .replace("/www\"", "/site2\"")
        .replace("logs/access.log", "logs/site2.log");
    let r = admin_as_nobody(owner, "POST", "/config", &[], &served).unwrap();
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(get(env.port, "/").unwrap().body, b"second site\n");
    assert_eq!(std::fs::read_to_string(env.config_path()).unwrap(), served);

    // Root may change what the owner may not.
    let by_root = served.replace("user = \"nobody\"", "user = \"daemon\"");
    let r = admin_call(&sock, "POST", "/config", &by_root);
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(std::fs::read_to_string(env.config_path()).unwrap(), by_root);
}

#[test]
fn a_queued_config_is_checked_against_the_config_running_when_it_starts() {
    if !is_root() {
        eprintln!("skipped: needs root to run the client as nobody");
        return;
    }
    let env = Env::new();
    let sock = env.path("admin.sock");
    let original = format!(
        "{}owner = \"nobody\"\n",
        with_admin(&env, &env.simple_config())
    );
    env.write_config(&original);
    let server = env.start();
    let at = AdminAt::Unix(&sock);
    // With the master stopped, root sends a config changing the user, then
    // the owner sends the config as it was: both wait in the socket's
    // queue. On SIGCONT the master reads root's first and starts its
    // reload; the owner's config changes nothing root-only against the
    // generation still serving, so it is queued; when it starts, root's
    // config runs, and the owner's would put its user back: refused then.
    let by_root = original.replace("user = \"nobody\"", "user = \"daemon\"");
    let post = |config: &str| {
        format!(
            "POST /config HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{config}",
            config.len()
        )
    };
    server.signal(libc::SIGSTOP);
    let mut root = UnixStream::connect(&sock).unwrap();
    root.write_all(post(&by_root).as_bytes()).unwrap();
    let mut owner = UnixStream::from(connect_as(65534, 65534, at).unwrap());
    owner.write_all(post(&original).as_bytes()).unwrap();
    server.signal(libc::SIGCONT);
    for s in [&root, &owner] {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    }
    let r = read_response(&mut BufReader::new(root), false).unwrap();
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let r = read_response(&mut BufReader::new(owner), false).unwrap();
    assert_eq!(r.status, 403, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(refusal(&r).0, "user");
    assert_eq!(std::fs::read_to_string(env.config_path()).unwrap(), by_root);
    let status = json(&admin_call(&sock, "GET", "/status", ""));
    assert_eq!(status["last_reload"]["result"], "refused", "{status}");
    assert_eq!(
        status["generation"], 2,
        "root's reload ran, the owner's did not"
    );
}
