//! Active health checks through the real binary: the master checks each
//! upstream server (once, not once per worker), every worker skips the
//! servers it marked down, and the state carries across a reload.

mod common;

use std::time::{Duration, Instant};

use common::backend::{Backend, proxy_config, quoted, route, upstream};
use common::{Env, wait_until};

/// An upstream `app` of `servers` with `health`, routed from `/`.
fn config(env: &Env, servers: &[&Backend], health: &str) -> String {
    let servers: Vec<String> = servers.iter().map(|b| quoted(b)).collect();
    proxy_config(
        env,
        "",
        &upstream("app", &servers, &format!("health = {health}")),
        &route("/", "app"),
    )
}

const FAST: &str = "{ path = \"/healthz\", interval = \"200ms\", timeout = \"1s\" }";

/// Whether `baton -s status` shows `b` in state `state` (`up`, `down`).
fn shows(env: &Env, b: &Backend, state: &str) -> bool {
    let line = format!("upstream_health: app {} {state}", b.address());
    env.status().raw.lines().any(|l| l.starts_with(&line))
}

fn wait_state(env: &Env, b: &Backend, state: &str, within: Duration) {
    assert!(
        wait_until(within, || shows(env, b, state)),
        "{} never showed {state}:\n{}",
        b.address(),
        env.status().raw
    );
}

/// `n` GETs of `/`, each answered 200; the backends that answered.
fn spread(env: &Env, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let r = common::get(env.port, "/").unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(r.status, 200, "request {i}");
            r.header("x-backend").unwrap_or_default().to_owned()
        })
        .collect()
}

#[test]
fn a_failing_server_gets_no_requests_after_one_interval_and_comes_back() {
    let env = Env::new();
    let a = Backend::start("a");
    let b = Backend::start("b");
    env.write_config(&config(&env, &[&a, &b], FAST));
    let _server = env.start();
    wait_state(&env, &a, "up", Duration::from_secs(5));
    let answered = spread(&env, 10);
    assert!(answered.iter().any(|n| n == "a"), "{answered:?}");

    a.set_health(500);
    let failed_at = Instant::now();
    wait_state(
        &env,
        &a,
        "down (status 500, expected 200)",
        Duration::from_secs(5),
    );
    // One interval (200ms) and the check's round trip, with slack for a
    // loaded machine: not fail_timeout, not a per-worker discovery.
    assert!(
        failed_at.elapsed() < Duration::from_secs(3),
        "marked down after {:?}",
        failed_at.elapsed()
    );
    let before = a.requests();
    let answered = spread(&env, 20);
    assert!(answered.iter().all(|n| n == "b"), "{answered:?}");
    assert_eq!(a.requests(), before, "a server marked down got requests");

    a.set_health(200);
    wait_state(&env, &a, "up", Duration::from_secs(5));
    let answered = spread(&env, 10);
    assert!(answered.iter().any(|n| n == "a"), "{answered:?}");
}

#[test]
fn the_state_survives_a_reload() {
    let env = Env::new();
    let a = Backend::start("a");
    let b = Backend::start("b");
    env.write_config(&config(&env, &[&a, &b], FAST));
    let server = env.start();
    a.set_health(500);
    wait_state(&env, &a, "down", Duration::from_secs(5));
    let before = a.requests();
    // The same servers, checked only every hour from now on: the new
    // generation can only know that `a` is down from the state it started
    // from (its first check is an hour away... or already behind it).
    env.write_config(&config(
        &env,
        &[&a, &b],
        "{ path = \"/healthz\", interval = \"1h\", timeout = \"1s\" }",
    ));
    let checks = a.health_checks();
    let out = env.reload();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    let status = env.status();
    assert!(status.generation >= 2, "{}", status.raw);
    let answered = spread(&env, 20);
    assert!(answered.iter().all(|n| n == "b"), "{answered:?}");
    assert_eq!(a.requests(), before, "the reload resurrected a dead server");
    // A healthy server was not marked down by the reload either.
    assert!(shows(&env, &b, "up"), "{}", env.status().raw);
    assert!(
        a.health_checks() <= checks + 1,
        "the reload restarted the checks"
    );
}

#[test]
fn checks_run_once_per_server_not_per_worker() {
    let env = Env::new();
    let a = Backend::start("a");
    // Two workers (the test globals): per-worker checks would double this.
    assert!(env.globals().contains("workers = 2"));
    env.write_config(&config(&env, &[&a], FAST));
    let _server = env.start();
    assert!(wait_until(Duration::from_secs(5), || a.health_checks() >= 1));
    let start = a.health_checks();
    let window = Duration::from_secs(2);
    // Counting over a window of time is the measurement itself, not a
    // wait for a state.
    std::thread::sleep(window);
    let n = a.health_checks() - start;
    eprintln!("{n} checks of one server in {window:?} with 2 workers, interval 200ms");
    // One check each 200ms: 10 in the window (give or take one at each
    // end, and a late loop on a loaded machine).
    assert!((5..=12).contains(&n), "{n} checks in {window:?}");
}

#[test]
fn a_check_that_times_out_marks_the_server_down() {
    let env = Env::new();
    let a = Backend::start("a");
    let b = Backend::start("b");
    a.set_health(0);
    env.write_config(&config(
        &env,
        &[&a, &b],
        "{ path = \"/healthz\", interval = \"200ms\", timeout = \"300ms\" }",
    ));
    let _server = env.start();
    wait_state(
        &env,
        &a,
        "down (no status line within 300ms)",
        Duration::from_secs(5),
    );
    assert!(shows(&env, &b, "up"), "{}", env.status().raw);
    let before = a.requests();
    let answered = spread(&env, 10);
    assert!(answered.iter().all(|n| n == "b"), "{answered:?}");
    assert_eq!(a.requests(), before);
}

#[test]
fn a_unix_socket_server_is_checked_and_rise_and_fall_count() {
    let env = Env::new();
    let u = Backend::start_unix("u", env.path("u.sock"));
    let b = Backend::start("b");
    env.write_config(&config(
        &env,
        &[&u, &b],
        "{ path = \"/healthz\", interval = \"100ms\", timeout = \"1s\", fall = 3, rise = 2 }",
    ));
    let _server = env.start();
    wait_state(&env, &u, "up", Duration::from_secs(5));
    u.set_health(503);
    let first = u.health_checks();
    wait_state(&env, &u, "down", Duration::from_secs(5));
    assert!(
        u.health_checks() >= first + 3,
        "down after fewer than fall = 3 failed checks"
    );
    let answered = spread(&env, 6);
    assert!(answered.iter().all(|n| n == "b"), "{answered:?}");
    u.set_health(200);
    let first = u.health_checks();
    wait_state(&env, &u, "up", Duration::from_secs(5));
    assert!(
        u.health_checks() >= first + 2,
        "up after fewer than rise = 2"
    );
}

#[test]
fn all_servers_down_is_a_503() {
    let env = Env::new();
    let a = Backend::start("a");
    a.set_health(500);
    env.write_config(&config(&env, &[&a], FAST));
    let _server = env.start();
    wait_state(&env, &a, "down", Duration::from_secs(5));
    let r = common::get(env.port, "/").unwrap();
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some());
    assert_eq!(a.requests(), 0);
}

#[test]
fn bad_health_values_are_located_errors() {
    let env = Env::new();
    let a = Backend::start("a");
    let file = env.config_path().display().to_string();
    // The `health = ...` line of `config`: the globals, a blank line and
    // the upstream's name and servers come first.
    let line = env.globals().lines().count() + 5;
    for (health, col, what) in [
        (
            "{ interval = \"10ms\" }",
            23,
            "interval = \"10ms\" is too short",
        ),
        (
            "{ expect = 700 }",
            21,
            "\"expect\" must be a whole number from 100 to 599",
        ),
        (
            "{ path = \"healthz\" }",
            19,
            "\"path\" must be a URL path like \"/healthz\"",
        ),
        ("{ tiemout = \"1s\" }", 12, "did you mean \"timeout\"?"),
        ("\"/healthz\"", 10, "\"health\" must be a table like"),
    ] {
        env.write_config(&config(&env, &[&a], health));
        let out = env.baton(&["-t"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{health} accepted");
        let at = format!("{file}:{line}:{col}: ");
        assert!(
            err.lines().any(|l| l.starts_with(&at) && l.contains(what)),
            "{health}: want {at}...{what} in\n{err}"
        );
    }
}

#[test]
fn metrics_and_the_status_json_show_each_checked_server() {
    let env = Env::new();
    let a = Backend::start("a");
    let b = Backend::start("b");
    a.set_health(500);
    env.write_config(&common::with_admin(&env, &config(&env, &[&a, &b], FAST)));
    let _server = env.start();
    wait_state(&env, &a, "down", Duration::from_secs(5));
    let sock = env.path("admin.sock");
    let metrics = common::admin_get(&sock, "/metrics");
    for (backend, value) in [(&a, 0), (&b, 1)] {
        let line = format!(
            "baton_upstream_health{{upstream=\"app\",server=\"{}\"}} {value}",
            backend.address()
        );
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    let status: serde_json::Value =
        serde_json::from_str(&common::admin_get(&sock, "/status")).expect("status JSON");
    let list = status["upstream_health"]
        .as_array()
        .expect("upstream_health");
    let of = |b: &Backend| {
        list.iter()
            .find(|s| s["server"] == b.address().as_str())
            .unwrap_or_else(|| panic!("{} not in {list:?}", b.address()))
    };
    assert_eq!(of(&a)["up"], false);
    assert_eq!(of(&a)["last_error"], "status 500, expected 200");
    assert_eq!(of(&b)["up"], true);
    assert_eq!(of(&b)["upstream"], "app");
}

#[test]
fn a_reload_checks_new_servers_and_forgets_removed_ones() {
    let env = Env::new();
    let a = Backend::start("a");
    let b = Backend::start("b");
    let c = Backend::start("c");
    a.set_health(500);
    env.write_config(&config(&env, &[&a, &b], FAST));
    let server = env.start();
    wait_state(&env, &a, "down", Duration::from_secs(5));
    // `a` leaves, `c` comes: `c` is up until checked and checked at once;
    // `b` keeps its state.
    env.write_config(&config(&env, &[&b, &c], FAST));
    let out = env.reload();
    assert!(out.status.success(), "{}", server.log_text());
    assert!(wait_until(Duration::from_secs(5), || c.health_checks() >= 1));
    wait_state(&env, &c, "up", Duration::from_secs(5));
    assert!(shows(&env, &b, "up"));
    // Once the old generation is gone, so is `a`'s entry.
    let gone = wait_until(Duration::from_secs(10), || {
        let raw = env.status().raw;
        raw.contains("generations: 2 serving\n") && !raw.contains(&a.address())
    });
    assert!(gone, "{}", env.status().raw);
    let answered = spread(&env, 10);
    assert!(answered.iter().any(|n| n == "c"), "{answered:?}");
}

#[test]
fn the_masters_fds_stay_flat_across_checks_that_fail_and_time_out() {
    let env = Env::new();
    let a = Backend::start("a");
    let b = Backend::start("b");
    a.set_health(0);
    env.write_config(&config(
        &env,
        &[&a, &b],
        "{ path = \"/healthz\", interval = \"100ms\", timeout = \"100ms\" }",
    ));
    let server = env.start();
    wait_state(&env, &a, "down", Duration::from_secs(5));
    let before = common::fd_count(server.pid());
    let checks = a.health_checks() + b.health_checks();
    assert!(wait_until(Duration::from_secs(10), || {
        a.health_checks() + b.health_checks() >= checks + 20
    }));
    let after = common::fd_count(server.pid());
    // Two checks may be in flight at either count.
    assert!(
        after <= before + 2,
        "master fds grew from {before} to {after}"
    );
}

#[test]
fn a_replaced_worker_starts_from_the_state() {
    let env = Env::new();
    let a = Backend::start("a");
    let b = Backend::start("b");
    a.set_health(500);
    env.write_config(&config(&env, &[&a, &b], FAST));
    let server = env.start();
    wait_state(&env, &a, "down", Duration::from_secs(5));
    let before = env.status().serving_pids();
    assert_eq!(before.len(), 2);
    for pid in &before {
        // SAFETY: kill on a worker of our own server.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    // Both replaced: every request now meets a worker forked after `a`
    // went down, which no state change has been pushed to since.
    assert!(
        wait_until(Duration::from_secs(10), || {
            let now = env.status().serving_pids();
            now.len() == 2 && now.iter().all(|p| !before.contains(p))
        }),
        "{}",
        server.log_text()
    );
    let requests = a.requests();
    let answered = spread(&env, 20);
    assert!(answered.iter().all(|n| n == "b"), "{answered:?}");
    assert_eq!(a.requests(), requests, "a replacement started all healthy");
}

#[test]
fn a_binary_upgrade_carries_the_state() {
    use common::upgrade::{Upgradable, describe};
    let u = Upgradable::new("baton-old");
    let a = Backend::start("a");
    let b = Backend::start("b");
    a.set_health(500);
    u.env.write_config(&config(&u.env, &[&a, &b], FAST));
    let server = u.start();
    wait_state(&u.env, &a, "down", Duration::from_secs(5));
    // From now on a check of `a` never ends, and the new image waits ten
    // minutes for one: it can only know `a` is down from the state the
    // old image handed over.
    a.set_health(0);
    u.env.write_config(&config(
        &u.env,
        &[&a, &b],
        "{ path = \"/healthz\", interval = \"200ms\", timeout = \"10m\" }",
    ));
    u.install_build();
    let out = u.upgrade();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(server.pid(), u.env.status().pid);
    let requests = a.requests();
    let answered = spread(&u.env, 20);
    assert!(answered.iter().all(|n| n == "b"), "{answered:?}");
    assert_eq!(
        a.requests(),
        requests,
        "the upgrade resurrected a dead server"
    );
    assert!(shows(&u.env, &a, "down"), "{}", u.env.status().raw);
}

#[test]
fn expect_takes_lists_of_codes_and_classes() {
    let env = Env::new();
    let a = Backend::start("a");
    a.set_health(204);
    let with = |expect: &str| {
        config(
            &env,
            &[&a],
            &FAST.replace(" }", &format!(", expect = {expect} }}")),
        )
    };
    env.write_config(&with("[200, 204]"));
    let _server = env.start();
    wait_state(&env, &a, "up", Duration::from_secs(5));
    a.set_health(500);
    wait_state(
        &env,
        &a,
        "down (status 500, expected 200 or 204)",
        Duration::from_secs(5),
    );
    // A class: any 2xx or 3xx passes.
    env.write_config(&with("[\"2xx\", \"3xx\"]"));
    assert!(env.reload().status.success());
    a.set_health(302);
    wait_state(&env, &a, "up", Duration::from_secs(5));
    a.set_health(404);
    wait_state(
        &env,
        &a,
        "down (status 404, expected 2xx or 3xx)",
        Duration::from_secs(5),
    );
    // What is not a status or a class is a located error.
    for bad in ["\"6xx\"", "[]", "[200, \"2x\"]", "true"] {
        env.write_config(&with(bad));
        let out = env.baton(&["-t"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad} accepted");
        assert!(
            err.contains("\"expect\" must be a status from 100 to 599, a class like \"2xx\""),
            "{bad}: {err}"
        );
    }
}
