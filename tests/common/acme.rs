//! A real ACME server for the tests: Debian's `pebble`, started on
//! loopback ports of the test's own, with a CA made at test time for its
//! HTTPS (the `acme_ca` Baton is given), and `pebble-challtestsrv` as its
//! DNS server, answering every name with 127.0.0.1, so that pebble's
//! validation authority connects to Baton's own listeners (`httpPort`,
//! `tlsPort`). Both processes are killed by pid on drop.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::tls::{ECDSA, client, https_get};
use super::{Env, free_port, wait_until};

pub fn have_pebble() -> bool {
    super::tls::have("pebble") && super::tls::have("pebble-challtestsrv")
}

/// Skips a test (with a line saying why) where pebble is not installed;
/// `.ci/run` installs it, so CI always runs them.
#[macro_export]
macro_rules! need_pebble {
    () => {
        if !common::acme::have_pebble() {
            eprintln!("pebble is not installed (apt-get install pebble): skipped");
            if std::env::var_os("CI").is_some() {
                panic!("pebble must be installed in CI");
            }
            return;
        }
    };
}

pub struct Pebble {
    pebble: Option<Child>,
    dns: Child,
    pub port: u16,
    /// The CA of pebble's HTTPS (for `acme_ca`).
    pub ca: PathBuf,
    config: PathBuf,
    dns_port: u16,
    env: Vec<(&'static str, String)>,
    pub log: PathBuf,
}

pub struct PebbleOptions {
    /// Where pebble's validation connects for HTTP-01 and TLS-ALPN-01.
    pub http_port: u16,
    pub tls_port: u16,
    /// Lifetime of the certificates it issues; `None`: pebble's default.
    pub validity: Option<Duration>,
    /// PEBBLE_VA_SLEEPTIME: the VA sleeps up to this many seconds before
    /// each validation (an order that takes a while); 0: no sleep.
    pub va_sleep: u32,
}

impl Pebble {
    pub fn start(env: &Env, o: PebbleOptions) -> Pebble {
        let dir = env.path("pebble");
        std::fs::create_dir_all(&dir).expect("mkdir pebble");
        // A CA of our own for pebble's HTTPS.
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Baton test ACME server CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("params");
        let cert = params.signed_by(&key, &ca, &ca_key).expect("signed");
        let ca_path = env.write_file("pebble/ca.pem", ca.pem().as_bytes());
        let cert_path = env.write_file("pebble/cert.pem", cert.pem().as_bytes());
        let key_path = env.write_file("pebble/key.pem", key.serialize_pem().as_bytes());

        let port = free_port();
        let management = free_port();
        let dns_port = free_port();
        let validity = o
            .validity
            .map(|v| format!(",\n    \"certificateValidityPeriod\": {}", v.as_secs()))
            .unwrap_or_default();
        let config = format!(
            "{{\n  \"pebble\": {{\n    \"listenAddress\": \"127.0.0.1:{port}\",\n    \
             \"managementListenAddress\": \"127.0.0.1:{management}\",\n    \
             \"certificate\": \"{}\",\n    \"privateKey\": \"{}\",\n    \
             \"httpPort\": {},\n    \"tlsPort\": {},\n    \"ocspResponderURL\": \"\",\n    \
             \"externalAccountBindingRequired\": false{validity}\n  }}\n}}\n",
            cert_path.display(),
            key_path.display(),
            o.http_port,
            o.tls_port,
        );
        let config_path = env.write_file("pebble/pebble.json", config.as_bytes());
        let log = env.path("pebble/pebble.log");
        let dns = Command::new("pebble-challtestsrv")
            .args([
                "-dns01",
                &format!("127.0.0.1:{dns_port}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{}", free_port()),
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&env.path("pebble/dns.log")))
            .spawn()
            .expect("pebble-challtestsrv");
        let mut env_vars = vec![
            ("PEBBLE_WFE_NONCEREJECT", "0".to_string()),
            ("PEBBLE_AUTHZREUSE", "0".to_string()),
        ];
        if o.va_sleep == 0 {
            env_vars.push(("PEBBLE_VA_NOSLEEP", "1".to_string()));
        } else {
            env_vars.push(("PEBBLE_VA_SLEEPTIME", o.va_sleep.to_string()));
        }
        let mut p = Pebble {
            pebble: None,
            dns,
            port,
            ca: ca_path,
            config: config_path,
            dns_port,
            env: env_vars,
            log,
        };
        p.run();
        p
    }

    fn run(&mut self) {
        let mut cmd = Command::new("pebble");
        cmd.args([
            "-config",
            &self.config.display().to_string(),
            "-dnsserver",
            &format!("127.0.0.1:{}", self.dns_port),
            "-strict=false",
        ])
        .stdin(Stdio::null())
        .stdout(log_file(&self.log))
        .stderr(log_file(&self.log));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.pebble = Some(cmd.spawn().expect("pebble"));
        let port = self.port;
        assert!(
            wait_until(Duration::from_secs(20), || TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "pebble did not listen on {port}; its log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// Stops pebble (the CA goes away); `restart` brings it back.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.pebble.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// Orders pebble received (its log has one line per new order).
    pub fn orders(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("POST /order-plz"))
            .count()
    }

    /// The global settings pointing Baton at this pebble.
    pub fn globals(&self, env: &Env, http_port: u16, tls_port: u16) -> String {
        format!(
            "acme_directory = \"{}\"\nacme_ca = \"{}\"\nacme_dir = \"{}\"\n\
             acme_http_port = {http_port}\nacme_tls_port = {tls_port}\n",
            self.directory(),
            self.ca.display(),
            env.path("acme").display()
        )
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        let _ = self.dns.kill();
        let _ = self.dns.wait();
    }
}

fn log_file(path: &std::path::Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("log file")
}

/// Whether a DER certificate was issued by pebble (its issuer's name).
pub fn from_pebble(der: &[u8]) -> bool {
    der.windows(6).any(|w| w == b"Pebble")
}

/// Handshakes (each a new TLS connection and a GET) in a loop until
/// stopped, counting those that got a pebble certificate, a placeholder,
/// and failures.
pub struct Handshakes {
    stop: Arc<AtomicBool>,
    pebble: Arc<AtomicU64>,
    other: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Handshakes {
    pub fn start(port: u16, name: &'static str) -> Handshakes {
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

    pub fn pebble(&self) -> u64 {
        self.pebble.load(Ordering::Relaxed)
    }

    /// (pebble, other, failed).
    pub fn finish(mut self) -> (u64, u64, u64, Vec<String>) {
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
