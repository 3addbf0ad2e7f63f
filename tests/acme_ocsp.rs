//! OCSP for ACME certificates, against real processes: pebble (the ACME
//! CA), `openssl ocsp` (a responder on loopback), the baton binary and its
//! certificate helper.
//!
//! Pebble's certificates name no OCSP responder (nor do Let's Encrypt's
//! since 2025), so the stapled ACME certificate is one the test writes
//! into `acme_dir` itself, made by a test CA whose certificates name the
//! responder. Its revocation makes the helper order a new certificate
//! from pebble at once.

mod common;
#[path = "../certs/tests/pki/mod.rs"]
mod pki;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::acme::{Pebble, PebbleOptions, from_pebble};
use common::tls::{ECDSA, client, have, https_get};
use common::*;
use pki::Pki;

const NAME: &str = "a.baton.test";

fn acme_config(env: &Env, pebble: &Pebble, http: u16, https: u16) -> String {
    format!(
        "{}{}tls_watch_interval = \"200ms\"\n\
         [[site]]\nlisten = [\"127.0.0.1:{http}\"]\nroot = \"{www}\"\nredirect_https = true\n\n\
         [[site]]\nlisten = [\"127.0.0.1:{https}\"]\nnames = [\"{NAME}\"]\nroot = \"{www}\"\n\
         tls = {{ acme = true }}\n",
        env.globals(),
        pebble.globals(env, http, https),
        www = env.path("www").display()
    )
}

/// What `openssl s_client -status` says about NAME's staple.
fn s_client_status(port: u16) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", NAME, "-status"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn staple_good(port: u16) -> bool {
    s_client_status(port).contains("Cert Status: good")
}

/// Gives `path` (recursively) to the helper's user: it runs as nobody
/// when the tests run as root, and `acme_dir` must be its own.
fn give_to_helper(path: &Path) {
    if !is_root() {
        return;
    }
    let status = Command::new("chown")
        .args(["-R", "nobody:"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// An ACME certificate naming an OCSP responder gets its staple fetched
/// by the helper into `acme_dir` and served by the same workers (same
/// generation); when the responder says it is revoked, the helper logs it
/// loudly and orders a new certificate at once, retried with backoff while
/// the CA is down (the status shows why), and the new certificate (pebble's)
/// is served by the same workers.
#[test]
fn an_acme_certificate_is_stapled_and_reissued_at_once_when_revoked() {
    need_pebble!();
    if !have("openssl") {
        eprintln!("openssl missing: skipped");
        return;
    }
    let env = Env::new();
    let http = free_port();
    let https = env.port;
    let mut pebble = Pebble::start(
        &env,
        PebbleOptions {
            http_port: http,
            tls_port: https,
            validity: None,
            va_sleep: 0,
        },
    );
    let pki = Pki::new();
    let responder_port = free_port();
    let leaf = pki.leaf(
        NAME,
        "3B07",
        Some(&format!("http://127.0.0.1:{responder_port}")),
    );
    pki.index(&[(&leaf, false)]);
    // One-minute responses: refreshed at half that.
    let _responder = pki.responder(responder_port, 1);
    let cert_dir = format!("acme/certs/{NAME}");
    env.write_file(
        &format!("{cert_dir}/cert.pem"),
        &std::fs::read(&leaf.chain).unwrap(),
    );
    let key = env.write_file(
        &format!("{cert_dir}/key.pem"),
        &std::fs::read(&leaf.key).unwrap(),
    );
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    env.write_file(&format!("{cert_dir}/names"), NAME.as_bytes());
    std::fs::set_permissions(
        env.path("acme"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    give_to_helper(&env.path("acme"));
    env.write_config(&acme_config(&env, &pebble, http, https));
    let server = env.start();
    let before = env.status();
    let pids = before.serving_pids();

    assert!(
        wait_until(Duration::from_secs(30), || staple_good(https)),
        "the ACME certificate's staple is not served: {}",
        server.log_text()
    );
    assert!(env.path(&format!("{cert_dir}/ocsp.der")).exists());
    assert_eq!(pebble.orders(), 0, "a fresh certificate is not ordered");

    // The CA is down when the revocation is noticed: the order fails,
    // is retried with backoff, and the status says why.
    pebble.stop();
    pki.index(&[(&leaf, true)]);
    assert!(
        wait_until(Duration::from_secs(90), || server.log_text().lines().any(
            |l| l.contains("ERROR")
                && l.contains("REVOKED")
                && l.contains("ordering a new one now")
        )),
        "the revocation is not logged loudly: {}",
        server.log_text()
    );
    let mut status = String::new();
    assert!(
        wait_until(Duration::from_secs(30), || {
            status = env.status().raw;
            status.contains(&format!("acme: {NAME} state=revoked"))
                && status.contains("reason=\"revoked (OCSP responder")
                && status.contains("last_error=")
        }),
        "{status}\n{}",
        server.log_text()
    );
    // The master stops stapling the old "good" answer once the helper
    // stored the revoked one (its watch: `tls_watch_interval`).
    assert!(
        wait_until(Duration::from_secs(10), || !staple_good(https)),
        "a revoked certificate's staple is still served: {}",
        server.log_text()
    );

    // Pebble forgets its accounts when restarted: the helper makes a new
    // one (the CA's accountDoesNotExist) and the next attempt succeeds.
    pebble.restart();
    assert!(
        wait_until(Duration::from_secs(90), || {
            https_get(&client(ECDSA), https, Some(NAME), "/").is_ok_and(|s| from_pebble(&s.cert))
        }),
        "the re-issued certificate is not served: {}",
        server.log_text()
    );
    assert!(pebble.orders() >= 1);
    let after = env.status();
    assert_eq!(after.generation, before.generation, "no new generation");
    assert_eq!(after.serving_pids(), pids, "the same workers serve it");
    assert!(
        after.raw.contains(&format!("acme: {NAME} state=valid")) && !after.raw.contains("reason="),
        "{}",
        after.raw
    );
    // The old certificate's staple is gone with it, and the new one
    // (naming no responder) is not fetched for.
    assert!(!env.path(&format!("{cert_dir}/ocsp.der")).exists());
    let log = server.log_text();
    assert!(!log.contains("names no OCSP responder"), "{log}");
}

/// A pebble certificate names no OCSP responder: no staple is fetched or
/// missed, and nothing is warned about, at issuance, at a reload, or
/// over the helper's next look at the chains.
#[test]
fn an_acme_certificate_naming_no_responder_makes_no_warning() {
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
    env.write_config(&acme_config(&env, &pebble, http, https));
    let server = env.start();
    assert!(
        wait_until(Duration::from_secs(60), || {
            https_get(&client(ECDSA), https, Some(NAME), "/").is_ok_and(|s| from_pebble(&s.cert))
        }),
        "no pebble certificate: {}",
        server.log_text()
    );
    let out = env.baton(&["-s", "reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Absence is observed over one look of the helper at the ACME chains
    // (every 10 s) after the reload.
    std::thread::sleep(Duration::from_secs(11));
    let log = server.log_text();
    let noise: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .filter(|l| l.contains("OCSP") || l.contains("staple"))
        .collect();
    assert!(noise.is_empty(), "{noise:#?}\n{log}");
    assert!(!env.path(&format!("acme/certs/{NAME}/ocsp.der")).exists());
    let status = env.status().raw;
    assert!(
        !status.lines().any(|l| l.starts_with("warning:")),
        "{status}"
    );
}
