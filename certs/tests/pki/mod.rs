//! A test PKI made with the `openssl` command in a temporary directory: a
//! CA (ECDSA P-256), a delegated OCSP responder certificate it signed
//! (RSA 2048, `extendedKeyUsage = OCSPSigning`), leaf certificates naming
//! a responder URL, the responder's `index.txt`, and `openssl ocsp` as the
//! responder: offline (`-reqin`/`-respout`) or serving on a loopback port.
//!
//! Shared by the certificate helper's tests and the end-to-end tests
//! (`tests/ocsp.rs` includes this file by path).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Pki {
    pub dir: tempfile::TempDir,
}

pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The leaf then the CA: what a site's `cert` and a `StapleJob` take.
    pub chain: PathBuf,
    pub serial: String,
    pub subject: String,
}

/// Runs openssl in `dir`; panics with its stderr if it fails.
pub fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("the openssl command runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `openssl` with a command line of words without spaces.
pub fn run(dir: &Path, line: &str) -> Vec<u8> {
    openssl(dir, &line.split_whitespace().collect::<Vec<_>>())
}

const EC: &str = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        run(
            d,
            &format!(
                "req -x509 {EC} -keyout ca.key -out ca.pem -days 30 -subj /CN=baton-test-ca \
                 -addext basicConstraints=critical,CA:TRUE \
                 -addext keyUsage=critical,keyCertSign,cRLSign"
            ),
        );
        run(
            d,
            "req -newkey rsa:2048 -nodes -keyout rsp.key -out rsp.csr -subj /CN=baton-test-ocsp",
        );
        std::fs::write(
            d.join("rsp.ext"),
            "extendedKeyUsage=OCSPSigning\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        run(
            d,
            "x509 -req -in rsp.csr -CA ca.pem -CAkey ca.key -set_serial 0x1001 -days 30 \
             -extfile rsp.ext -out rsp.pem",
        );
        std::fs::write(d.join("index.txt"), "").unwrap();
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A leaf for `name` with `serial` (hex), naming `ocsp_url` (if any)
    /// as its responder.
    pub fn leaf(&self, name: &str, serial: &str, ocsp_url: Option<&str>) -> Leaf {
        let d = self.dir.path();
        let subject = format!("/CN={name}");
        run(
            d,
            &format!("req {EC} -keyout {name}.key -out {name}.csr -subj {subject}"),
        );
        let mut extensions = format!("subjectAltName=DNS:{name}\n");
        if let Some(url) = ocsp_url {
            extensions.push_str(&format!("authorityInfoAccess=OCSP;URI:{url}\n"));
        }
        std::fs::write(d.join(format!("{name}.ext")), extensions).unwrap();
        run(
            d,
            &format!(
                "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -set_serial 0x{serial} \
                 -days 30 -extfile {name}.ext -out {name}.pem"
            ),
        );
        let chain = d.join(format!("{name}.chain.pem"));
        let mut bytes = std::fs::read(d.join(format!("{name}.pem"))).unwrap();
        bytes.extend(std::fs::read(d.join("ca.pem")).unwrap());
        std::fs::write(&chain, bytes).unwrap();
        Leaf {
            cert: d.join(format!("{name}.pem")),
            key: d.join(format!("{name}.key")),
            chain,
            serial: serial.to_uppercase(),
            subject,
        }
    }

    /// The responder's database: each leaf valid, or revoked (since
    /// 2026-01-01, keyCompromise). `openssl ocsp` rereads it when it
    /// changes.
    pub fn index(&self, entries: &[(&Leaf, bool)]) {
        let mut text = String::new();
        for (leaf, revoked) in entries {
            let (status, when) = if *revoked {
                ("R", "260101000000Z,keyCompromise")
            } else {
                ("V", "")
            };
            text.push_str(&format!(
                "{status}\t351231000000Z\t{when}\t{}\tunknown\t{}\n",
                leaf.serial, leaf.subject
            ));
        }
        // Written beside and renamed: the responder never reads half.
        let tmp = self.path("index.txt.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.path("index.txt")).unwrap();
    }

    /// A response for `leaf` made offline by `openssl ocsp`, valid for
    /// `minutes` (0: no nextUpdate).
    pub fn response(&self, leaf: &Leaf, minutes: u32) -> Vec<u8> {
        let d = self.dir.path();
        let cert = leaf.cert.display();
        run(
            d,
            &format!("ocsp -issuer ca.pem -cert {cert} -no_nonce -reqout req.der"),
        );
        let validity = if minutes > 0 {
            format!("-nmin {minutes}")
        } else {
            String::new()
        };
        run(
            d,
            &format!(
                "ocsp -index index.txt -rsigner rsp.pem -rkey rsp.key -CA ca.pem \
                 -reqin req.der -respout resp.der {validity}"
            ),
        );
        std::fs::read(d.join("resp.der")).unwrap()
    }

    /// `openssl ocsp` answering on `port`, responses valid for `minutes`.
    /// (It listens on every address of the port, as it cannot be told
    /// otherwise; the tests talk to it on 127.0.0.1.)
    pub fn responder(&self, port: u16, minutes: u32) -> Responder {
        let log = self.path(&format!("responder-{port}.log"));
        let line = format!(
            "ocsp -index index.txt -port {port} -rsigner rsp.pem -rkey rsp.key -CA ca.pem \
             -nmin {minutes}"
        );
        let mut child = Command::new("openssl")
            .args(line.split_whitespace())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("openssl ocsp starts");
        // It logs "waiting for OCSP client connections" once listening. (A
        // probe connection would not do: one closed without a request
        // wedges it.)
        let text = || std::fs::read_to_string(&log).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !text().contains("waiting for OCSP client") {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("openssl ocsp exited ({status}): {}", text());
            }
            assert!(
                Instant::now() < deadline,
                "openssl ocsp is not listening on {port}: {}",
                text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Responder { child }
    }
}

/// A running `openssl ocsp`; killed (by its pid) when dropped.
pub struct Responder {
    pub child: Child,
}

impl Responder {
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nothing listens on now (the kernel's choice, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
