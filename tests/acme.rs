//! ACME against a real ACME server (Debian's pebble, started by the test on
//! loopback with its own CA): first issuance with HTTP-01 and TLS-ALPN-01,
//! the certificate hot-swapped into the live workers (same pids, same
//! generation) with handshakes running throughout and none failing.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::acme::{Pebble, PebbleOptions, from_pebble};
use common::tls::{ECDSA, client, https_get};
use common::*;

const NAME: &str = "a.baton.test";

/// Handshakes (each a new TLS connection and a GET) in a loop until
/// stopped, counting those that got a pebble certificate, a placeholder,
/// and failures.
struct Handshakes {
    stop: Arc<AtomicBool>,
    pebble: Arc<AtomicU64>,
    other: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Handshakes {
    fn start(port: u16, name: &'static str) -> Handshakes {
        let stop = Arc::new(AtomicBool::new(false));
        let pebble = Arc::new(AtomicU64::new(0));
        let other = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, p, o, f, e) = (
            stop.clone(),
            pebble.clone(),
            other.clone(),
            failed.clone(),
            errors.clone(),
        );
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                // A new client each time: a resumed session would show the
                // certificate of the session it resumes.
                match https_get(&client(ECDSA), port, Some(name), "/") {
                    Ok(seen) if seen.response.starts_with(b"HTTP/1.1 200") => {
                        if from_pebble(&seen.cert) {
                            p.fetch_add(1, Ordering::Relaxed);
                        } else {
                            o.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(seen) => {
                        f.fetch_add(1, Ordering::Relaxed);
                        e.lock().unwrap().push(
                            String::from_utf8_lossy(&seen.response[..seen.response.len().min(80)])
                                .into_owned(),
                        );
                    }
                    Err(err) => {
                        f.fetch_add(1, Ordering::Relaxed);
                        e.lock().unwrap().push(err);
                    }
                }
            }
        });
        Handshakes {
            stop,
            pebble,
            other,
            failed,
            errors,
            thread: Some(thread),
        }
    }

    fn pebble(&self) -> u64 {
        self.pebble.load(Ordering::Relaxed)
    }

    /// (pebble, other, failed).
    fn finish(mut self) -> (u64, u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (
            self.pebble.load(Ordering::Relaxed),
            self.other.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.errors.lock().unwrap().clone(),
        )
    }
}

/// A plain-HTTP site on `http` and an ACME site on `https`.
fn acme_config(env: &Env, pebble: &Pebble, http: u16, https: u16, extra: &str, acme: &str) -> String {
    format!(
        "{}{}{extra}\n[[site]]\nlisten = [\"127.0.0.1:{http}\"]\nroot = \"{www}\"\n\n\
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
    let after = env.status();
    assert_eq!(after.generation, before.generation, "no new generation");
    assert_eq!(after.serving_pids(), pids, "the same workers serve it");
    // Every worker has it: many new connections, spread by the kernel.
    for _ in 0..40 {
        let seen = https_get(&client(ECDSA), https, Some(NAME), "/").expect("handshake");
        assert!(from_pebble(&seen.cert));
    }
    assert!(after.raw.contains(&format!("acme: {NAME} state=valid")), "{}", after.raw);
    assert_eq!(pebble.orders(), 1);
    // The state is where the docs say, the key private to the helper.
    let key = env.path(&format!("acme/certs/{NAME}/key.pem"));
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).expect("key").permissions());
    assert_eq!(mode & 0o777, 0o600);
    let dir_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(env.path("acme")).expect("acme_dir").permissions(),
    );
    assert_eq!(dir_mode & 0o777, 0o700);
    // A restart finds it on disk: served at once, nothing ordered.
    drop(server);
    let _server = env.start();
    let seen = https_get(&client(ECDSA), https, Some(NAME), "/").expect("handshake");
    assert!(from_pebble(&seen.cert), "served from acme_dir at once");
    assert_eq!(pebble.orders(), 1, "nothing ordered again");
}
