//! The admin API, served by the master: every endpoint, its failure
//! replies, and the guards of its TCP variant.

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
    let config = format!(
        "{}\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n",
        env.simple_config()
    );
    env.write_config(&config);
    let _server = env.start();
    let ask = |host: &str, origin: Option<&str>| {
        let origin = origin
            .map(|o| format!("Origin: {o}\r\n"))
            .unwrap_or_default();
        request(
            admin_port,
            &format!("POST /reload HTTP/1.1\r\nHost: {host}\r\n{origin}Content-Length: 0\r\n\r\n"),
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
    assert!(err.contains("the admin API has no authentication"), "{err}");
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
