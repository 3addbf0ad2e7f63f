//! HTTPS: SNI between sites, a default certificate, ECDSA and RSA on one
//! host, certificates swapped while TLS clients run (no new generation), a
//! half-written certificate ignored, errors located on `-t` and reload,
//! session resumption across a reload, static files over TLS, and curl and
//! `openssl s_client` as real clients.
//!
//! Certificates are made at test time (rcgen; openssl for RSA), never
//! committed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::tls::*;
use common::*;
use rustls::ClientConnection;
use rustls::pki_types::ServerName;

/// A certificate that expired in 2001.
fn expired_cert(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    let cert = params.self_signed(&key).expect("sign");
    (cert.pem(), key.serialize_pem())
}

/// A self-signed RSA certificate made by openssl: (cert PEM, key PEM).
fn rsa_cert(env: &Env, name: &str) -> Option<(String, String)> {
    if !have("openssl") {
        eprintln!("openssl missing: skipping the RSA part");
        return None;
    }
    let key = env.path(&format!("rsa-{name}.key"));
    let cert = env.path(&format!("rsa-{name}.pem"));
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-subj", &format!("/CN={name}")])
        .args(["-addext", &format!("subjectAltName=DNS:{name}")])
        .output()
        .expect("openssl")
        .status
        .success();
    assert!(ok, "openssl req failed");
    Some((
        std::fs::read_to_string(cert).unwrap(),
        std::fs::read_to_string(key).unwrap(),
    ))
}

fn status_of(response: &[u8]) -> Option<u16> {
    first_status(response)
}

/// Writes `NAME.pem` and `NAME.key` into the test dir (the key 0600).
fn write_pair(env: &Env, name: &str, pair: &(String, String)) {
    env.write_file(&format!("tls/{name}.pem"), pair.0.as_bytes());
    let key = env.write_file(&format!("tls/{name}.key"), pair.1.as_bytes());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Replaces a file the way certbot does: a temp file renamed over it.
fn replace_file(env: &Env, rel: &str, contents: &[u8]) {
    let tmp = env.write_file(&format!("{rel}.tmp"), contents);
    std::fs::rename(tmp, env.path(rel)).unwrap();
}

/// Writes a certificate for a.test and a config serving it with TLS on
/// `env.port`, `extra_globals` (TOML lines) added at the top; returns the
/// certificate and key PEM.
fn one_tls_site(env: &Env, extra_globals: &str) -> (String, String) {
    let a = ecdsa_cert(&["a.test"]);
    serve_pair(env, &a, extra_globals);
    a
}

/// Writes `pair` as a.test's certificate and a config serving it with TLS,
/// `extra_globals` added at the top.
fn serve_pair(env: &Env, pair: &(String, String), extra_globals: &str) {
    write_pair(env, "a", pair);
    env.write_config(&format!(
        "{}{extra_globals}{}",
        env.globals(),
        site(env, "\"a.test\"", &tls_kv(env, "a"))
    ));
}

fn site(env: &Env, names: &str, tls: &str) -> String {
    format!(
        "\n[[site]]\nlisten = [\"127.0.0.1:{}\"]\nnames = [{names}]\nroot = \"{}\"\n{tls}\n",
        env.port,
        env.path("www").display()
    )
}

fn tls_kv(env: &Env, name: &str) -> String {
    format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}",
        env.path(&format!("tls/{name}.pem")).display(),
        env.path(&format!("tls/{name}.key")).display()
    )
}

#[test]
fn sni_picks_the_site_and_clients_without_sni_get_the_default() {
    let env = Env::new();
    let a = ecdsa_cert(&["a.test"]);
    let b = ecdsa_cert(&["b.test"]);
    write_pair(&env, "a", &a);
    write_pair(&env, "b", &b);
    let b_tls = format!(
        "tls = {{ cert = \"{}\", key = \"{}\", default = true }}",
        env.path("tls/b.pem").display(),
        env.path("tls/b.key").display()
    );
    let config = format!(
        "{}{}{}",
        env.globals(),
        site(&env, "\"a.test\"", &tls_kv(&env, "a")),
        site(&env, "\"b.test\"", &b_tls)
    );
    env.write_config(&config);
    let _server = env.start();
    let c = client(ANY);
    let seen = https_get(&c, env.port, Some("a.test"), "/").unwrap();
    assert_eq!(seen.cert, der(&a.0), "SNI a.test gets a's certificate");
    assert_eq!(status_of(&seen.response), Some(200));
    assert_eq!(seen.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let seen = https_get(&c, env.port, Some("b.test"), "/").unwrap();
    assert_eq!(seen.cert, der(&b.0), "SNI b.test gets b's certificate");
    let seen = https_get(&c, env.port, None, "/").unwrap();
    assert_eq!(seen.cert, der(&b.0), "no SNI: the default (b)");
    let seen = https_get(&c, env.port, Some("other.test"), "/").unwrap();
    assert_eq!(seen.cert, der(&b.0), "unknown SNI: the default (b)");

    if have("curl") {
        let out = Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(env.path("tls/a.pem"))
            .args([
                "--resolve",
                &format!("a.test:{}:127.0.0.1", env.port),
                &format!("https://a.test:{}/", env.port),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("hello from baton"));
    }
}

#[test]
fn unknown_sni_rejected_when_configured() {
    let env = Env::new();
    one_tls_site(&env, "tls_unknown_sni = \"reject\"\n");
    let _server = env.start();
    let c = client(ANY);
    assert!(https_get(&c, env.port, Some("a.test"), "/").is_ok());
    assert!(https_get(&c, env.port, None, "/").is_err());
    assert!(https_get(&c, env.port, Some("z.test"), "/").is_err());
}

#[test]
fn ecdsa_and_rsa_on_one_host_by_what_the_client_supports() {
    let env = Env::new();
    let Some(rsa) = rsa_cert(&env, "both.test") else {
        return;
    };
    let ec = ecdsa_cert(&["both.test"]);
    write_pair(&env, "ec", &ec);
    write_pair(&env, "rsa", &rsa);
    let tls = format!(
        "[[site.tls.cert]]\ncert = \"{}\"\nkey = \"{}\"\n[[site.tls.cert]]\ncert = \"{}\"\nkey = \"{}\"\n",
        env.path("tls/ec.pem").display(),
        env.path("tls/ec.key").display(),
        env.path("tls/rsa.pem").display(),
        env.path("tls/rsa.key").display()
    );
    let config = format!(
        "{}\n[[site]]\nlisten = [\"127.0.0.1:{}\"]\nnames = [\"both.test\"]\nroot = \"{}\"\n{tls}",
        env.globals(),
        env.port,
        env.path("www").display()
    );
    env.write_config(&config);
    let _server = env.start();
    let seen = https_get(&client(ECDSA), env.port, Some("both.test"), "/").unwrap();
    assert_eq!(seen.cert, der(&ec.0), "an ECDSA-only client gets ECDSA");
    let seen = https_get(&client(RSA), env.port, Some("both.test"), "/").unwrap();
    assert_eq!(seen.cert, der(&rsa.0), "an RSA-only client gets RSA");
    let seen = https_get(&client(ANY), env.port, Some("both.test"), "/").unwrap();
    assert_eq!(seen.cert, der(&ec.0), "the first that fits: ECDSA");
}

#[test]
fn static_files_over_tls_with_back_pressure() {
    let env = Env::new();
    let a = ecdsa_cert(&["a.test"]);
    write_pair(&env, "a", &a);
    // Larger than any socket and rustls buffer: the file goes in chunks.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    env.write_file("www/big.bin", &big);
    env.write_config(&format!(
        "{}{}",
        env.globals(),
        site(&env, "\"a.test\"", &tls_kv(&env, "a"))
    ));
    let _server = env.start();
    let seen = https_get(&client(ANY), env.port, Some("a.test"), "/big.bin").unwrap();
    let split = seen
        .response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head");
    assert_eq!(status_of(&seen.response), Some(200));
    assert!(seen.response[split + 4..] == big[..], "body intact");
    // A range and a 404 take the same paths as over plain HTTP; a small
    // file goes out with its head.
    let seen = https_get(&client(ANY), env.port, Some("a.test"), "/nope").unwrap();
    assert_eq!(status_of(&seen.response), Some(404));
    env.write_file("www/small.txt", b"0123456789");
    let req =
        "GET /small.txt HTTP/1.1\r\nHost: a.test\r\nRange: bytes=2-5\r\nConnection: close\r\n\r\n";
    let seen = https_request(&client(ANY), env.port, Some("a.test"), req).unwrap();
    assert_eq!(status_of(&seen.response), Some(206));
    assert!(
        seen.response.ends_with(b"\r\n\r\n2345"),
        "{:?}",
        String::from_utf8_lossy(&seen.response)
    );
    let req = "HEAD /small.txt HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
    let seen = https_request(&client(ANY), env.port, Some("a.test"), req).unwrap();
    assert!(seen.response.ends_with(b"\r\n\r\n"));
    assert!(String::from_utf8_lossy(&seen.response).contains("Content-Length: 10"));
}

#[test]
fn config_errors_are_located_on_t_and_reload_keeps_the_old_generation() {
    let env = Env::new();
    let a = ecdsa_cert(&["a.test"]);
    let other = ecdsa_cert(&["a.test"]);
    write_pair(&env, "a", &a);
    // a.pem with another certificate's key: not a pair.
    env.write_file("tls/mismatch.pem", a.0.as_bytes());
    env.write_file("tls/mismatch.key", other.1.as_bytes());
    write_pair(&env, "expired", &expired_cert("a.test"));

    let check = |tls: &str, expect: &str| {
        env.write_config(&format!(
            "{}{}",
            env.globals(),
            site(&env, "\"a.test\"", tls)
        ));
        let out = env.baton(&["-t"]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "-t accepted {tls}");
        assert!(err.contains(expect), "{expect:?} not in: {err}");
        // FILE:LINE:COL of the tls entry.
        let located = format!("{}:", env.config_path().display());
        assert!(err.contains(&located), "not located: {err}");
    };
    check(&tls_kv(&env, "mismatch"), "does not match the certificate");
    check(&tls_kv(&env, "expired"), "expired");
    check(&tls_kv(&env, "missing"), "cannot read certificate");
    check(
        &format!("tls = {{ cert = \"{}\" }}", env.path("tls/a.pem").display()),
        "\"cert\" without \"key\"",
    );
    check(
        &format!(
            "tls = {{ cert = \"{}\", kye = \"x\" }}",
            env.path("tls/a.pem").display()
        ),
        "did you mean \"key\"?",
    );
    // TLS and plain HTTP on one address.
    env.write_config(&format!(
        "{}{}{}",
        env.globals(),
        site(&env, "\"a.test\"", &tls_kv(&env, "a")),
        site(&env, "\"b.test\"", "")
    ));
    let out = env.baton(&["-t"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("mixes TLS and plain HTTP"), "{err}");

    // A good start, then a reload to a mismatched key fails; the old
    // generation serves on with the old certificate.
    env.write_config(&format!(
        "{}{}",
        env.globals(),
        site(&env, "\"a.test\"", &tls_kv(&env, "a"))
    ));
    let _server = env.start();
    let before = env.status().generation;
    env.write_config(&format!(
        "{}{}",
        env.globals(),
        site(&env, "\"a.test\"", &tls_kv(&env, "mismatch"))
    ));
    let out = env.reload();
    assert!(!out.status.success(), "reload to a bad key must fail");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("does not match"), "{text}");
    assert_eq!(env.status().generation, before);
    let seen = https_get(&client(ANY), env.port, Some("a.test"), "/").unwrap();
    assert_eq!(seen.cert, der(&a.0));
}

#[test]
fn hot_swap_under_load_without_a_new_generation_and_half_written_files_ignored() {
    let env = Env::new();
    let old = ecdsa_cert(&["a.test"]);
    let new = ecdsa_cert(&["a.test"]);
    serve_pair(&env, &old, "tls_watch_interval = \"200ms\"\n");
    let server = env.start();
    let generation = env.status().generation;
    let port = env.port;

    // TLS clients, each a new connection per request, for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen_new = Arc::new(Mutex::new(None::<Instant>));
    let new_der = der(&new.0);
    let old_der = der(&old.0);
    let mut threads = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failures, seen_new) =
            (stop.clone(), ok.clone(), failures.clone(), seen_new.clone());
        let (new_der, old_der) = (new_der.clone(), old_der.clone());
        threads.push(std::thread::spawn(move || {
            // Full handshakes only: a resumed session shows the certificate
            // of the session it resumes.
            let mut c = (*client(ANY)).clone();
            c.resumption = rustls::client::Resumption::disabled();
            let c = Arc::new(c);
            while !stop.load(Ordering::Relaxed) {
                match https_get(&c, port, Some("a.test"), "/") {
                    Ok(s) if status_of(&s.response) == Some(200) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if s.cert == new_der {
                            seen_new.lock().unwrap().get_or_insert(Instant::now());
                        } else if s.cert != old_der {
                            failures.lock().unwrap().push("unknown certificate".into());
                        }
                    }
                    Ok(s) => failures
                        .lock()
                        .unwrap()
                        .push(format!("status {:?}", status_of(&s.response))),
                    Err(e) => failures.lock().unwrap().push(e),
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(500));

    // Half-written: a cut certificate, then a key that does not match the
    // certificate still in place. Neither is applied.
    let half = &new.0.as_bytes()[..new.0.len() / 2];
    replace_file(&env, "tls/a.pem", half);
    std::thread::sleep(Duration::from_millis(700));
    assert!(seen_new.lock().unwrap().is_none());
    assert!(
        wait_until(Duration::from_secs(5), || server
            .log_text()
            .contains("is not usable, the old one stays")),
        "no error logged: {}",
        server.log_text()
    );
    let seen = https_get(&client(ANY), port, Some("a.test"), "/").unwrap();
    assert_eq!(seen.cert, old_der, "the old certificate stays");
    assert!(seen_new.lock().unwrap().is_none());

    // The whole new pair: the key first, then the certificate.
    replace_file(&env, "tls/a.key", new.1.as_bytes());
    replace_file(&env, "tls/a.pem", new.0.as_bytes());
    let written = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || seen_new
            .lock()
            .unwrap()
            .is_some()),
        "the new certificate was never served ({} ok, failures {:?}): {}",
        ok.load(Ordering::Relaxed),
        failures.lock().unwrap(),
        server.log_text()
    );
    let delay = seen_new
        .lock()
        .unwrap()
        .unwrap()
        .saturating_duration_since(written);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "failed requests: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert!(ok.load(Ordering::Relaxed) > 20, "too few requests");
    // Within the watch interval (200 ms) plus scheduling slack.
    assert!(delay < Duration::from_secs(2), "took {delay:?}");
    // Every new client now gets the new certificate; same generation.
    for _ in 0..6 {
        let seen = https_get(&client(ANY), port, Some("a.test"), "/").unwrap();
        assert_eq!(seen.cert, new_der);
    }
    assert_eq!(env.status().generation, generation, "no new generation");
}

#[test]
fn sessions_resume_across_workers_and_a_reload() {
    let env = Env::new();
    one_tls_site(&env, "");
    let _server = env.start();
    let c = client(ANY);
    let first = https_get(&c, env.port, Some("a.test"), "/").unwrap();
    assert!(!first.resumed);
    // Two workers: a few connections land on both; all resume.
    for _ in 0..4 {
        assert!(
            https_get(&c, env.port, Some("a.test"), "/")
                .unwrap()
                .resumed
        );
    }
    let out = env.reload();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = https_get(&c, env.port, Some("a.test"), "/").unwrap();
    assert!(after.resumed, "a ticket from the old generation resumes");
    assert_eq!(status_of(&after.response), Some(200));
}

#[test]
fn reload_picks_up_changed_certificates() {
    let env = Env::new();
    let old = ecdsa_cert(&["a.test"]);
    let new = ecdsa_cert(&["a.test"]);
    // A long watch interval: only the reload can pick the change up.
    serve_pair(&env, &old, "tls_watch_interval = \"1h\"\n");
    let _server = env.start();
    write_pair(&env, "a", &new);
    let out = env.reload();
    assert!(out.status.success());
    let seen = https_get(&client(ANY), env.port, Some("a.test"), "/").unwrap();
    assert_eq!(seen.cert, der(&new.0));
}

#[test]
fn openssl_s_client_sees_the_chosen_certificate() {
    if !have("openssl") {
        eprintln!("openssl missing: skipped");
        return;
    }
    let env = Env::new();
    one_tls_site(&env, "");
    let _server = env.start();
    for version in ["-tls1_2", "-tls1_3"] {
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{}", env.port)])
            .args(["-servername", "a.test", version, "-alpn", "http/1.1"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("CN=rcgen") || text.contains("subject="),
            "{text}"
        );
        assert!(
            text.contains("ALPN protocol: http/1.1"),
            "{version}: {text}"
        );
    }
}

#[test]
fn plain_http_site_redirects_to_https() {
    let env = Env::new();
    let https_port = free_port();
    let a = ecdsa_cert(&["a.test"]);
    write_pair(&env, "a", &a);
    let config = format!(
        "{}{}\n[[site]]\nlisten = [\"127.0.0.1:{https_port}\"]\nnames = [\"a.test\"]\nroot = \"{}\"\n{}\n",
        env.globals(),
        site(
            &env,
            "\"a.test\"",
            &format!(
                "redirect_https = {https_port}\nheaders = {{ Strict-Transport-Security = \"max-age=63072000\" }}"
            )
        ),
        env.path("www").display(),
        tls_kv(&env, "a"),
    );
    env.write_config(&config);
    let _server = env.start();
    let r = request(
        env.port,
        "GET /x/y?z=1 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some(format!("https://a.test:{https_port}/x/y?z=1").as_str())
    );
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=63072000")
    );
    let seen = https_get(&client(ANY), https_port, Some("a.test"), "/").unwrap();
    assert_eq!(status_of(&seen.response), Some(200));
}

/// Runs a bash script in `dir`; panics with its output if it fails.
fn sh(dir: &std::path::Path, script: &str) {
    let out = Command::new("bash")
        .args(["-euc", script])
        .current_dir(dir)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "script failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s_client_status(port: u16) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", "o.test", "-status"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn ocsp_staple_served_refused_when_wrong_and_swapped() {
    if !have("openssl") {
        eprintln!("openssl missing: skipped");
        return;
    }
    let env = Env::new();
    std::fs::create_dir_all(env.path("ocsp")).unwrap();
    // A CA, two leaves it signed, and an OCSP response ("good") for each,
    // made the way docs/tls.md describes with `openssl ocsp`.
    sh(
        &env.path("ocsp"),
        r#"
        ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
        openssl req -x509 $ec -keyout ca.key -out ca.pem -days 2 -subj /CN=TestCA \
            -addext basicConstraints=critical,CA:TRUE 2>/dev/null
        : > index.txt
        echo 'unique_subject = no' > index.txt.attr
        for n in leaf other; do
            openssl req $ec -keyout $n.key -out $n.csr -subj /CN=o.test 2>/dev/null
            printf 'subjectAltName=DNS:o.test\n' > ext
            openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                -out $n.crt -days 2 -extfile ext 2>/dev/null
            cat $n.crt ca.pem > $n.pem
            serial=$(openssl x509 -in $n.crt -noout -serial | cut -d= -f2)
            printf 'V\t%s\t\t%s\tunknown\t/CN=o.test\n' "$(date -u -d +2days +%y%m%d%H%M%SZ)" "$serial" >> index.txt
        done
        for n in leaf other; do
            openssl ocsp -issuer ca.pem -cert $n.crt -no_nonce -reqout $n.req
            openssl ocsp -index index.txt -rsigner ca.pem -rkey ca.key -CA ca.pem \
                -reqin $n.req -respout $n.ocsp -ndays 1 2>/dev/null
        done
        cp leaf.ocsp staple.der
        "#,
    );
    let dir = env.path("ocsp");
    let tls = format!(
        "tls = {{ cert = \"{0}/leaf.pem\", key = \"{0}/leaf.key\", ocsp = \"{0}/staple.der\" }}",
        dir.display()
    );
    env.write_config(&format!(
        "{}tls_watch_interval = \"200ms\"\n{}",
        env.globals(),
        site(&env, "\"o.test\"", &tls)
    ));
    let server = env.start();
    let text = s_client_status(env.port);
    assert!(text.contains("OCSP Response Status: successful"), "{text}");
    assert!(text.contains("Cert Status: good"), "{text}");

    // A staple for another certificate: not served.
    let other = std::fs::read(dir.join("other.ocsp")).unwrap();
    replace_file(&env, "ocsp/staple.der", &other);
    assert!(
        wait_until(Duration::from_secs(5), || s_client_status(env.port)
            .contains("OCSP response: no response sent")),
        "a staple for another certificate was served: {}",
        server.log_text()
    );
    // The right one again: served again, no new generation.
    let good = std::fs::read(dir.join("leaf.ocsp")).unwrap();
    replace_file(&env, "ocsp/staple.der", &good);
    assert!(
        wait_until(Duration::from_secs(5), || s_client_status(env.port)
            .contains("Cert Status: good")),
        "the staple was not refreshed"
    );
    assert_eq!(env.status().generation, 1);
}

#[test]
fn a_tls_dir_pairs_keys_and_certificates_by_public_key_not_by_name() {
    let env = Env::new();
    let a = ecdsa_cert(&["a.test"]);
    let b = ecdsa_cert(&["b.test"]);
    // Misleading names: each pair is found by its public key.
    env.write_file("certs/one.key", a.0.as_bytes());
    env.write_file("certs/one.pem", b.1.as_bytes());
    env.write_file("certs/two.key", b.0.as_bytes());
    env.write_file("certs/two.pem", a.1.as_bytes());
    env.write_file("certs/README", b"not a certificate");
    let tls = format!("tls = {{ dir = \"{}\" }}", env.path("certs").display());
    env.write_config(&format!(
        "{}{}",
        env.globals(),
        site(&env, "\"a.test\", \"b.test\"", &tls)
    ));
    let _server = env.start();
    let seen = https_get(&client(ANY), env.port, Some("a.test"), "/").unwrap();
    assert!(seen.cert == der(&a.0) || seen.cert == der(&b.0));
    assert_eq!(status_of(&seen.response), Some(200));

    // A key with no certificate for it: refused, located.
    let c = ecdsa_cert(&["c.test"]);
    env.write_file("certs/three.key", c.1.as_bytes());
    let out = env.baton(&["-t"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no valid certificate"), "{err}");
}

#[test]
fn reloads_under_tls_load_fail_nothing_and_drain_closes_keep_alive_cleanly() {
    use std::io::BufReader;
    let env = Env::new();
    one_tls_site(&env, "");
    let _server = env.start();
    let port = env.port;

    // A kept-alive TLS connection across a reload: its next request is
    // answered with Connection: close, then a clean end (close_notify).
    let conn = ClientConnection::new(client(ANY), ServerName::try_from("a.test").unwrap()).unwrap();
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = BufReader::new(rustls::StreamOwned::new(conn, sock));
    let req = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n";
    tls.get_mut().write_all(req).unwrap();
    let r = read_response(&mut tls, false).unwrap();
    assert_eq!(r.status, 200);
    assert!(!r.closes());

    // TLS clients, a new connection per request, while reloads run.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut threads = Vec::new();
    for _ in 0..3 {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        threads.push(std::thread::spawn(move || {
            let c = client(ANY);
            while !stop.load(Ordering::Relaxed) {
                match https_get(&c, port, Some("a.test"), "/") {
                    Ok(s) if status_of(&s.response) == Some(200) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(s) => failures
                        .lock()
                        .unwrap()
                        .push(format!("status {:?}", status_of(&s.response))),
                    Err(e) => failures.lock().unwrap().push(e),
                }
            }
        }));
    }
    for _ in 0..10 {
        let out = env.reload();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    tls.get_mut().write_all(req).unwrap();
    let r = read_response(&mut tls, false).unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.closes(),
        "a draining worker answers with Connection: close"
    );
    let mut rest = Vec::new();
    let end = tls.read_to_end(&mut rest);
    assert!(end.is_ok(), "clean TLS close expected: {end:?}");
    assert!(rest.is_empty());

    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "failed: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert!(ok.load(Ordering::Relaxed) > 10);
}

#[test]
fn ticket_keys_rotate_and_the_previous_key_still_resumes() {
    let env = Env::new();
    one_tls_site(&env, "tls_ticket_rotation = \"3s\"\n");
    let server = env.start();
    let started = Instant::now();
    let c = client(ANY);
    assert!(
        !https_get(&c, env.port, Some("a.test"), "/")
            .unwrap()
            .resumed
    );
    // Before the first rotation (at 3 s): resumes with the first key, and
    // gets a fresh ticket sealed with it.
    std::thread::sleep(Duration::from_millis(2000).saturating_sub(started.elapsed()));
    assert!(
        https_get(&c, env.port, Some("a.test"), "/")
            .unwrap()
            .resumed
    );
    // After the rotation: that ticket (1.5 s old, within its 3 s lifetime)
    // is sealed with what is now the previous key, which still opens it.
    std::thread::sleep(Duration::from_millis(3500).saturating_sub(started.elapsed()));
    let seen = https_get(&c, env.port, Some("a.test"), "/").unwrap();
    assert!(
        server.log_text().contains("session ticket key rotated"),
        "no rotation: {}",
        server.log_text()
    );
    assert!(seen.resumed, "the previous ticket key no longer resumes");
    assert_eq!(status_of(&seen.response), Some(200));
    // A new client after the rotation: full handshake, then resumes.
    let fresh = client(ANY);
    assert!(
        !https_get(&fresh, env.port, Some("a.test"), "/")
            .unwrap()
            .resumed
    );
    assert!(
        https_get(&fresh, env.port, Some("a.test"), "/")
            .unwrap()
            .resumed
    );
    assert_eq!(env.status().generation, 1);
    drop(server);
}

/// A bad certificate at start: exit 1 with the located error, nothing left
/// listening, no pidfile (the same checks as `-t`, through the same loader).
#[test]
fn a_bad_certificate_fails_the_start_and_leaves_nothing() {
    let env = Env::new();
    write_pair(&env, "expired", &expired_cert("a.test"));
    env.write_config(&format!(
        "{}{}",
        env.globals(),
        site(&env, "\"a.test\"", &tls_kv(&env, "expired"))
    ));
    let out = env.baton(&["--daemon"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expired"), "{err}");
    assert!(
        err.contains(&format!("{}:", env.config_path().display())),
        "not located: {err}"
    );
    assert!(!env.pid_file().exists());
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", env.port)).is_ok(),
        "left listening"
    );
}

/// A key the master cannot read (root-only, and the master runs as another
/// user): a clear error naming the file and the fix. Run for real as
/// `nobody` with setpriv; the binary is copied where nobody may run it.
#[test]
fn a_key_the_master_cannot_read_is_a_clear_error() {
    if !is_root() || !have("setpriv") {
        eprintln!("skipped: needs root and setpriv to run the master as another user");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    one_tls_site(&env, "");
    let key = env.path("tls/a.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let bin = env.path("baton-copy");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .arg("-t")
        .arg("-c")
        .arg(env.config_path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&key.display().to_string()),
        "names the key: {err}"
    );
    assert!(err.contains("Permission denied"), "{err}");
    assert!(
        err.contains("make them readable by the user it runs as"),
        "{err}"
    );
}
