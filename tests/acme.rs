//! ACME against a real ACME server (Debian's pebble, started by the test on
//! loopback with its own CA): first issuance with HTTP-01 and TLS-ALPN-01,
//! the certificate hot-swapped into the live workers (same pids, same
//! generation) with handshakes running throughout and none failing.

mod common;

use std::time::{Duration, Instant};

use common::acme::{Handshakes, Pebble, PebbleOptions, from_pebble};
use common::tls::{ECDSA, client, https_get};
use common::*;

const NAME: &str = "a.baton.test";

/// A plain-HTTP site on `http` (which redirects everything to HTTPS: the
/// challenges are answered before that) and an ACME site on `https`.
fn acme_config(
    env: &Env,
    pebble: &Pebble,
    http: u16,
    https: u16,
    extra: &str,
    acme: &str,
) -> String {
    format!(
        "{}{}{extra}\n[[site]]\nlisten = [\"127.0.0.1:{http}\"]\nroot = \"{www}\"\nredirect_https = true\n\n\
         [[site]]\nlisten = [\"127.0.0.1:{https}\"]\nnames = [\"{NAME}\"]\nroot = \"{www}\"\n\
         tls = {{ acme = {acme} }}\n",
        env.globals(),
        pebble.globals(env, http, https),
        www = env.path("www").display()
    )
}

fn wait_for_pebble_cert(port: u16, timeout: Duration) -> bool {
    wait_until(timeout, || {
        https_get(&client(ECDSA), port, Some(NAME), "/").is_ok_and(|s| from_pebble(&s.cert))
    })
}

#[test]
fn http01_first_issuance_is_swapped_into_the_live_workers_without_a_failed_handshake() {
    need_pebble!();
    let env = Env::new();
    let http = free_port();
    let https = env.port;
    let pebble = Pebble::start(
        &env,
        PebbleOptions {
            http_port: http,
            tls_port: https,
            validity: None,
            va_sleep: 0,
        },
    );
    // With the placeholder every handshake succeeds from the first
    // instant: the one certificate changes under a running load.
    env.write_config(&acme_config(
        &env,
        &pebble,
        http,
        https,
        "acme_placeholder = true\n",
        "true",
    ));
    let started = Instant::now();
    let server = env.start();
    let before = env.status();
    let pids = before.serving_pids();
    assert_eq!(pids.len(), 2, "{}", before.raw);
    let load = Handshakes::start(https, NAME);
    assert!(
        wait_until(Duration::from_secs(60), || load.pebble() >= 20),
        "no pebble certificate served; status:\n{}\nlog:\n{}",
        env.status().raw,
        server.log_text()
    );
    let issued_in = started.elapsed();
    let (with_pebble, placeholder, failed, errors) = load.finish();
    eprintln!(
        "issuance to served: {} ms; handshakes: {with_pebble} with the pebble certificate, \
         {placeholder} with the placeholder, {failed} failed",
        issued_in.as_millis()
    );
    assert_eq!(failed, 0, "failed handshakes: {errors:?}");
    // The CA was told to validate only once every worker served the token.
    assert!(
        !server.log_text().contains("did not confirm"),
        "{}",
        server.log_text()
    );
    let after = env.status();
    assert_eq!(after.generation, before.generation, "no new generation");
    assert_eq!(after.serving_pids(), pids, "the same workers serve it");
    // Every worker has it: many new connections, spread by the kernel.
    for _ in 0..40 {
        let seen = https_get(&client(ECDSA), https, Some(NAME), "/").expect("handshake");
        assert!(from_pebble(&seen.cert));
    }
    assert!(
        after.raw.contains(&format!("acme: {NAME} state=valid")),
        "{}",
        after.raw
    );
    assert_eq!(pebble.orders(), 1);
    // The state is where the docs say, the key private to the helper.
    let key = env.path(&format!("acme/certs/{NAME}/key.pem"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key).expect("key").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let dir_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(env.path("acme"))
            .expect("acme_dir")
            .permissions(),
    );
    assert_eq!(dir_mode & 0o777, 0o700);
    // A restart finds it on disk: served at once, nothing ordered. (A
    // graceful stop: the master exits once its workers have, so the
    // ports are free again.)
    let mut server = server;
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(20)), Some(0));
    let _server = env.start();
    let seen = https_get(&client(ECDSA), https, Some(NAME), "/").expect("handshake");
    assert!(from_pebble(&seen.cert), "served from acme_dir at once");
    assert_eq!(pebble.orders(), 1, "nothing ordered again");
}

#[test]
fn tls_alpn01_issuance_with_no_plain_http_listener_and_pending_handshakes_fail_until_then() {
    need_pebble!();
    let env = Env::new();
    let https = env.port;
    let pebble = Pebble::start(
        &env,
        PebbleOptions {
            http_port: free_port(),
            tls_port: https,
            validity: None,
            // The order takes a moment: the pending state is observable.
            va_sleep: 2,
        },
    );
    // Only the TLS site; a second one on the same port with a file
    // certificate serves at once while the ACME name is pending.
    let (cert, key) = common::tls::ecdsa_cert(&["static.baton.test"]);
    let cert = env.write_file("static.pem", cert.as_bytes());
    let key = env.write_file("static.key", key.as_bytes());
    env.write_config(&format!(
        "{}{}\n[[site]]\nlisten = [\"127.0.0.1:{https}\"]\nnames = [\"{NAME}\"]\nroot = \"{www}\"\n\
         tls = {{ acme = {{ challenge = \"tls-alpn-01\", directory = \"{dir}\", \
         email = \"admin@baton.test\" }} }}\n\n\
         [[site]]\nlisten = [\"127.0.0.1:{https}\"]\nnames = [\"static.baton.test\"]\nroot = \"{www}\"\n\
         tls = {{ cert = \"{}\", key = \"{}\" }}\n",
        env.globals(),
        // The directory and the contact come from the site's own table.
        pebble
            .globals(&env, 1, https)
            .replace(&format!("acme_directory = \"{}\"\n", pebble.directory()), ""),
        cert.display(),
        key.display(),
        www = env.path("www").display(),
        dir = pebble.directory()
    ));
    let started = Instant::now();
    let server = env.start();
    // Started at once, serving the other site, while the name is pending.
    let other = https_get(&client(ECDSA), https, Some("static.baton.test"), "/");
    assert!(other.is_ok(), "{other:?}");
    let status = env.status();
    if status.raw.contains("state=ordering") || status.raw.contains("state=pending") {
        let pending = https_get(&client(ECDSA), https, Some(NAME), "/");
        assert!(
            pending.is_err(),
            "a pending name's handshake fails: {pending:?}"
        );
    }
    assert!(
        wait_for_pebble_cert(https, Duration::from_secs(60)),
        "not issued; status:\n{}\nlog:\n{}",
        env.status().raw,
        server.log_text()
    );
    eprintln!(
        "tls-alpn-01 issuance to served: {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(env.status().generation, 1);
    assert_eq!(pebble.orders(), 1);
}

#[test]
fn a_short_lived_certificate_is_renewed_and_a_dead_ca_leaves_the_old_one_served() {
    need_pebble!();
    let env = Env::new();
    let http = free_port();
    let https = env.port;
    let mut pebble = Pebble::start(
        &env,
        PebbleOptions {
            http_port: http,
            tls_port: https,
            validity: Some(Duration::from_secs(30)),
            va_sleep: 0,
        },
    );
    let admin = env.path("admin.sock");
    env.write_config(&with_admin(
        &env,
        &acme_config(
            &env,
            &pebble,
            http,
            https,
            "acme_renew_check = \"1s\"\n",
            "true",
        ),
    ));
    let server = env.start();
    let pids = env.status().serving_pids();
    let first = {
        assert!(
            wait_for_pebble_cert(https, Duration::from_secs(60)),
            "{}",
            server.log_text()
        );
        https_get(&client(ECDSA), https, Some(NAME), "/")
            .expect("served")
            .cert
    };
    // Renewed a third of its life (10 s) before it expires.
    let renewed = wait_until(Duration::from_secs(40), || {
        https_get(&client(ECDSA), https, Some(NAME), "/")
            .is_ok_and(|s| from_pebble(&s.cert) && s.cert != first)
    });
    assert!(renewed, "not renewed; log:\n{}", server.log_text());
    let second = https_get(&client(ECDSA), https, Some(NAME), "/")
        .expect("served")
        .cert;
    assert_eq!(
        env.status().serving_pids(),
        pids,
        "renewed in the same workers"
    );
    assert_eq!(env.status().generation, 1);
    assert_eq!(pebble.orders(), 2);

    // The CA goes away: the next renewal fails, is reported, and the
    // certificate in hand is still served.
    pebble.stop();
    assert!(
        wait_until(Duration::from_secs(40), || {
            let s = admin_get(&admin, "/status");
            s.contains("\"last_error\":\"") && !s.contains("\"last_error\":null")
        }),
        "no failure reported; log:\n{}",
        server.log_text()
    );
    let status: serde_json::Value =
        serde_json::from_str(&admin_get(&admin, "/status")).expect("json");
    let cert = &status["acme"]["certificates"][0];
    assert_eq!(cert["id"], NAME);
    assert!(cert["failures"].as_u64() >= Some(1), "{cert}");
    assert!(
        cert["next_attempt"].as_i64().is_some(),
        "backoff planned: {cert}"
    );
    assert!(cert["last_error"].as_str().is_some_and(|e| !e.is_empty()));
    let metrics = admin_get(&admin, "/metrics");
    assert!(
        metrics.contains(&format!(
            "baton_acme_failures_total{{certificate=\"{NAME}\"}} "
        )),
        "{metrics}"
    );
    assert!(!metrics.contains(&format!(
        "baton_acme_failures_total{{certificate=\"{NAME}\"}} 0"
    )));
    let text = env.status().raw;
    assert!(text.contains("last_error=\""), "{text}");
    let seen = https_get(&client(ECDSA), https, Some(NAME), "/").expect("still served");
    assert_eq!(seen.cert, second, "the certificate in hand stays");
    assert!(server.log_text().contains("ACME order failed"));
}

#[test]
fn a_reload_during_an_order_does_not_disturb_it() {
    need_pebble!();
    let env = Env::new();
    let http = free_port();
    let https = env.port;
    let pebble = Pebble::start(
        &env,
        PebbleOptions {
            http_port: http,
            tls_port: https,
            validity: None,
            va_sleep: 8,
        },
    );
    let config = acme_config(&env, &pebble, http, https, "", "true");
    env.write_config(&config);
    let server = env.start();
    let helper_before = env.status().raw;
    assert!(
        wait_until(Duration::from_secs(20), || env
            .status()
            .raw
            .contains("state=ordering")),
        "no order under way; log:\n{}",
        server.log_text()
    );
    // A reload (with a change) while the CA validates.
    env.write_config(&config.replace("workers = 2", "workers = 3"));
    let out = env.reload();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        wait_for_pebble_cert(https, Duration::from_secs(60)),
        "not issued; log:\n{}",
        server.log_text()
    );
    let after = env.status();
    assert_eq!(after.serving_pids().len(), 3);
    assert_eq!(pebble.orders(), 1, "the order went on, not started again");
    let pid_of = |raw: &str| {
        raw.lines()
            .find(|l| l.starts_with("acme_helper:"))
            .map(str::to_owned)
    };
    assert_eq!(
        pid_of(&after.raw),
        pid_of(&helper_before),
        "the same helper"
    );
}

#[test]
fn two_instances_sharing_acme_dir_order_once() {
    need_pebble!();
    let a = Env::new();
    let b = Env::new();
    let http = free_port();
    let https = a.port;
    let pebble = Pebble::start(
        &a,
        PebbleOptions {
            http_port: http,
            tls_port: https,
            validity: None,
            va_sleep: 5,
        },
    );
    // B uses A's acme_dir (pebble.globals names A's), its own ports.
    a.write_config(&acme_config(
        &a,
        &pebble,
        http,
        https,
        "acme_lock_stale = \"3s\"\n",
        "true",
    ));
    let b_http = free_port();
    b.write_config(
        &acme_config(
            &a,
            &pebble,
            b_http,
            b.port,
            "acme_lock_stale = \"3s\"\n",
            "true",
        )
        .replace(
            &a.pid_file().display().to_string(),
            &b.pid_file().display().to_string(),
        ),
    );
    let server_a = a.start();
    assert!(
        wait_until(Duration::from_secs(20), || a
            .status()
            .raw
            .contains("state=ordering")),
        "A orders; log:\n{}",
        server_a.log_text()
    );
    let server_b = b.start();
    assert!(
        wait_for_pebble_cert(https, Duration::from_secs(60)),
        "{}",
        server_a.log_text()
    );
    assert!(
        wait_for_pebble_cert(b.port, Duration::from_secs(30)),
        "B serves A's certificate; log:\n{}",
        server_b.log_text()
    );
    let cert_a = https_get(&client(ECDSA), https, Some(NAME), "/")
        .expect("a")
        .cert;
    let cert_b = https_get(&client(ECDSA), b.port, Some(NAME), "/")
        .expect("b")
        .cert;
    assert_eq!(cert_a, cert_b, "one certificate");
    assert_eq!(pebble.orders(), 1, "ordered once");
    // B either found A's lock and waited for it, or (if A was done before
    // B loaded its config) found the certificate at start; it never
    // ordered.
    let log_b = server_b.log_text();
    let waited = log_b.contains("being ordered by");
    let found_at_start = !log_b.contains("pending");
    assert!(waited || found_at_start, "{log_b}");
    eprintln!(
        "B {}",
        if waited {
            "waited on A's lock"
        } else {
            "found A's certificate at start"
        }
    );
    assert!(!log_b.contains("ordering a certificate"), "{log_b}");
}

#[test]
fn a_failed_validation_reports_the_cas_problem_document_and_backs_off() {
    need_pebble!();
    let env = Env::new();
    let http = free_port();
    let https = env.port;
    // Pebble validates HTTP-01 on a port where nothing listens.
    let pebble = Pebble::start(
        &env,
        PebbleOptions {
            http_port: free_port(),
            tls_port: https,
            validity: None,
            va_sleep: 0,
        },
    );
    let admin = env.path("admin.sock");
    env.write_config(&with_admin(
        &env,
        &acme_config(&env, &pebble, http, https, "", "true"),
    ));
    let server = env.start();
    assert!(
        wait_until(Duration::from_secs(30), || admin_get(&admin, "/status")
            .contains("urn:ietf:params:acme:error:")),
        "no problem document reported; log:\n{}",
        server.log_text()
    );
    let status: serde_json::Value =
        serde_json::from_str(&admin_get(&admin, "/status")).expect("json");
    let cert = &status["acme"]["certificates"][0];
    assert_eq!(cert["state"], "pending", "{cert}");
    assert!(cert["pending"].as_str().is_some(), "{cert}");
    assert!(cert["failures"].as_u64() >= Some(1), "{cert}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(
        cert["next_attempt"].as_i64().is_some_and(|t| t > now),
        "a retry is planned, later: {cert}"
    );
    let log = server.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("ACME order failed") && l.contains("urn:ietf:params:acme:error:")),
        "{log}"
    );
    let metrics = admin_get(&admin, "/metrics");
    assert!(metrics.contains(&format!("baton_acme_pending{{certificate=\"{NAME}\"}} 1")));
    // Backoff: no second attempt within the first 10 s.
    assert_eq!(pebble.orders(), 1, "{log}");
}

#[test]
fn a_reload_that_adds_a_name_orders_a_certificate_for_both() {
    need_pebble!();
    let env = Env::new();
    let http = free_port();
    let https = env.port;
    let pebble = Pebble::start(
        &env,
        PebbleOptions {
            http_port: http,
            tls_port: https,
            validity: None,
            va_sleep: 0,
        },
    );
    let config = acme_config(&env, &pebble, http, https, "", "true");
    env.write_config(&config);
    let server = env.start();
    assert!(
        wait_for_pebble_cert(https, Duration::from_secs(30)),
        "{}",
        server.log_text()
    );
    let first = https_get(&client(ECDSA), https, Some(NAME), "/")
        .expect("a")
        .cert;
    env.write_config(&config.replace(
        &format!("names = [\"{NAME}\"]"),
        &format!("names = [\"{NAME}\", \"b.baton.test\"]"),
    ));
    let out = env.reload();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let both = wait_until(Duration::from_secs(30), || {
        https_get(&client(ECDSA), https, Some("b.baton.test"), "/")
            .is_ok_and(|s| from_pebble(&s.cert) && s.cert != first)
    });
    assert!(
        both,
        "no certificate for the new name; log:\n{}",
        server.log_text()
    );
    let seen = https_get(&client(ECDSA), https, Some(NAME), "/")
        .expect("a")
        .cert;
    assert_ne!(seen, first, "one new certificate for both names");
    assert_eq!(pebble.orders(), 2);
}
