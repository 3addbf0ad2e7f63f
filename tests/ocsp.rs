//! OCSP stapling end to end: a real `openssl ocsp` responder on loopback,
//! the certificate helper process fetching and storing staples, and the real baton binary serving them (checked with
//! `openssl s_client -status`): fresh staples are picked up without a new
//! generation; revoked, malformed and foreign ones are not served, each
//! with a log line that names the file and says why.
//!
//! (A staple that expires while served stops being served at its
//! `nextUpdate`, by a timer: `tls_wire::an_ocsp_staple_stops_being_served_when_it_expires`.)

mod common;
#[path = "../certs/tests/pki/mod.rs"]
mod pki;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::tls::have;
use common::*;
use pki::{Leaf, Pki};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

/// What `openssl s_client -status` says about the staple of a.test.
fn s_client_status(port: u16) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", "a.test", "-status"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The "This Update" of the served staple, if one is served and good.
fn served_this_update(port: u16) -> Option<String> {
    let text = s_client_status(port);
    if !text.contains("Cert Status: good") {
        return None;
    }
    text.lines()
        .find_map(|l| l.trim().strip_prefix("This Update: "))
        .map(str::to_owned)
}

fn no_staple(port: u16) -> bool {
    s_client_status(port).contains("OCSP response: no response sent")
}

/// A config serving a.test with `leaf` and the staple at `ocsp/a.der`.
fn config(env: &Env, leaf: &Leaf) -> String {
    format!(
        "{}tls_watch_interval = \"200ms\"\n\n[[site]]\nlisten = [\"127.0.0.1:{}\"]\n\
         names = [\"a.test\"]\nroot = \"{}\"\n\
         tls = {{ cert = \"{}\", key = \"{}\", ocsp = \"{}\" }}\n",
        env.globals(),
        env.port,
        env.path("www").display(),
        leaf.chain.display(),
        leaf.key.display(),
        env.path("ocsp/a.der").display()
    )
}

fn replace(env: &Env, bytes: &[u8]) {
    let tmp = env.write_file("ocsp/a.der.tmp", bytes);
    std::fs::rename(tmp, env.path("ocsp/a.der")).unwrap();
}

/// The server starts before any staple exists; its certificate helper
/// (an unprivileged process of its own) fetches one from the responder
/// named in the certificate, the server staples it within
/// `tls_watch_interval`, and again after the helper's refresh at half its
/// (one minute) validity: same generation throughout. The refresher's own
/// rules (backoff, chain changes) are `certs/tests/ocsp_refresher.rs`'s.
#[test]
fn the_helper_keeps_a_configured_staple_fresh() {
    if !have("openssl") {
        eprintln!("openssl missing: skipped");
        return;
    }
    let env = Env::new();
    let pki = Pki::new();
    let port = free_port();
    let leaf = pki.leaf("a.test", "2A01", Some(&format!("http://127.0.0.1:{port}")));
    pki.index(&[(&leaf, false)]);
    let dir = env.path("ocsp");
    std::fs::create_dir_all(&dir).unwrap();
    // The helper runs as the workers' user (nobody, under root), and
    // writes the staple there.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let _responder = pki.responder(port, 1);
    env.write_config(&config(&env, &leaf));
    let server = env.start();

    let mut first = None;
    assert!(
        wait_until(Duration::from_secs(60), || {
            first = served_this_update(env.port);
            first.is_some()
        }),
        "the helper's staple is not served: {}",
        server.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(90), || {
            served_this_update(env.port).is_some_and(|t| Some(t) != first)
        }),
        "the refreshed staple is not served: {}",
        server.log_text()
    );
    assert_eq!(env.status().generation, 1, "no new generation");
    // Stored by the helper, which is not root: the file is its user's.
    if common::is_root() {
        let owner = std::fs::metadata(env.path("ocsp/a.der")).unwrap().uid();
        assert_ne!(owner, 0, "the staple was written by root");
    }
}

/// Revoked, malformed and foreign staples are not served, at start or
/// when the file changes; each refusal is logged with the file and why;
/// a good one is served again after them.
#[test]
fn revoked_malformed_and_foreign_staples_are_not_served() {
    if !have("openssl") {
        eprintln!("openssl missing: skipped");
        return;
    }
    let env = Env::new();
    let pki = Pki::new();
    let leaf = pki.leaf("a.test", "2A01", None);
    pki.index(&[(&leaf, true)]);
    let revoked = pki.response(&leaf, 60);
    pki.index(&[(&leaf, false)]);
    let good = pki.response(&leaf, 60);
    // Another CA's certificate with the same serial.
    let other = Pki::new();
    let twin = other.leaf("a.test", "2A01", None);
    other.index(&[(&twin, false)]);
    let foreign = other.response(&twin, 60);

    env.write_file("ocsp/a.der", &revoked);
    env.write_config(&config(&env, &leaf));
    // `-t`: valid (the certificate is served), with a warning.
    let out = env.baton(&["-t"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("baton: warning: OCSP staple")
                && l.contains("a.der")
                && l.contains("REVOKED")),
        "{stderr}"
    );
    let server = env.start();
    assert!(no_staple(env.port), "a revoked staple was served");
    let refused = |why: &str| {
        wait_until(Duration::from_secs(10), || {
            server.log_text().lines().any(|l| {
                l.contains("WARN")
                    && l.contains("OCSP staple")
                    && l.contains("a.der")
                    && l.contains("not served")
                    && l.contains(why)
            })
        })
    };
    assert!(refused("REVOKED"), "{}", server.log_text());

    replace(&env, &good);
    assert!(
        wait_until(Duration::from_secs(10), || served_this_update(env.port)
            .is_some()),
        "the good staple is not served: {}",
        server.log_text()
    );

    replace(&env, b"<html>503 Service Unavailable</html>");
    assert!(wait_until(Duration::from_secs(10), || no_staple(env.port)));
    assert!(refused("not valid DER"), "{}", server.log_text());

    replace(&env, &good);
    assert!(wait_until(Duration::from_secs(10), || served_this_update(
        env.port
    )
    .is_some()));
    replace(&env, &foreign);
    assert!(wait_until(Duration::from_secs(10), || no_staple(env.port)));
    assert!(refused("another certificate"), "{}", server.log_text());
    assert_eq!(env.status().generation, 1);

    // GET /status-style warnings: `baton -s status` says it too.
    let text = String::from_utf8_lossy(&env.baton(&["-s", "status"]).stdout).into_owned();
    assert!(
        text.lines()
            .any(|l| l.starts_with("warning:") && l.contains("another certificate")),
        "{text}"
    );
}
