//! What a TLS client sees on the wire: requests split across TLS records
//! and sent in one write (answered at once, not after a timeout), plain
//! HTTP on a TLS port (a 400 saying so), ALPN `http/1.0`, the alert for a
//! client that shares no cipher suite, the server's cipher order, and an
//! OCSP staple that stops being served the moment it expires.
//!
//! Certificates and the staple are made at test time, never committed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::tls::*;
use common::*;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CipherSuite, ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme,
    SupportedCipherSuite,
};

/// Long enough that an answer which waits for one of them is a failure.
const LONG_TIMEOUTS: &str =
    "header_timeout = \"30s\"\nbody_timeout = \"30s\"\nkeepalive_timeout = \"30s\"\n";

/// Well under `LONG_TIMEOUTS`: what "answered at once" means here.
const PROMPT: Duration = Duration::from_secs(3);

/// Writes a certificate for a.test (`pair`) and a config serving `www/` over
/// TLS on `env.port`, with `globals` (TOML lines) at the top.
fn serve_tls(env: &Env, pair: &(String, String), globals: &str) -> Server {
    env.write_file("tls/a.pem", pair.0.as_bytes());
    let key = env.write_file("tls/a.key", pair.1.as_bytes());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).unwrap();
    env.write_config(&format!(
        "{}{globals}\n[[site]]\nlisten = [\"127.0.0.1:{}\"]\nnames = [\"a.test\"]\nroot = \"{}\"\n\
         tls = {{ cert = \"{}\", key = \"{}\" }}\n",
        env.globals(),
        env.port,
        env.path("www").display(),
        env.path("tls/a.pem").display(),
        env.path("tls/a.key").display(),
    ));
    env.start()
}

/// A TLS connection to a.test on `port` with its handshake done.
fn handshake(
    config: Arc<ClientConfig>,
    port: u16,
) -> Result<(ClientConnection, TcpStream), String> {
    let name = ServerName::try_from("a.test").unwrap();
    let mut conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).ok();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
    }
    while conn.wants_write() {
        conn.write_tls(&mut sock).map_err(|e| e.to_string())?;
    }
    Ok((conn, sock))
}

/// Encrypts each piece as its own TLS record(s) and sends them all in one
/// write, so they reach the server together, as a client that corks its
/// socket (or a busy network) delivers them.
fn send_corked(conn: &mut ClientConnection, sock: &mut TcpStream, pieces: &[Vec<u8>]) {
    let mut wire = Vec::new();
    for piece in pieces {
        conn.writer().write_all(piece).unwrap();
        while conn.wants_write() {
            conn.write_tls(&mut wire).unwrap();
        }
    }
    sock.write_all(&wire).unwrap();
}

/// Reads plaintext until `done` says it is all there, for at most `bound`.
fn read_until(
    conn: &mut ClientConnection,
    sock: &mut TcpStream,
    bound: Duration,
    done: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + bound;
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while !done(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no complete answer within {bound:?}; got {} bytes: {:?}",
                got.len(),
                String::from_utf8_lossy(&got[..got.len().min(300)])
            ));
        }
        sock.set_read_timeout(Some(left)).unwrap();
        match rustls::Stream::new(&mut *conn, &mut *sock).read(&mut buf) {
            Ok(0) => return Err(format!("closed after {} bytes", got.len())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => {
                return Err(format!(
                    "{e} after {} bytes within {bound:?}: {:?}",
                    got.len(),
                    String::from_utf8_lossy(&got[..got.len().min(300)])
                ));
            }
        }
    }
    Ok(got)
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// A whole response head has arrived.
fn one_head(got: &[u8]) -> bool {
    count(got, b"\r\n\r\n") >= 1
}

/// TLS returns one record's plaintext per read while more records wait
/// decrypted or in the socket: with edge-triggered readiness no new event
/// comes for them. A POST whose body is a second record, a head split in
/// two records and 40 pipelined GETs in 40 records, each sent in one
/// write, are all answered at once (nginx does), not after a timeout.
#[test]
fn requests_split_across_tls_records_are_answered_at_once() {
    let env = Env::new();
    let _server = serve_tls(&env, &ecdsa_cert(&["a.test"]), LONG_TIMEOUTS);

    // A POST whose body is a second record (bigger than the 4 KiB rustls
    // takes from the socket per read).
    let (mut conn, mut sock) = handshake(client(ANY), env.port).unwrap();
    let body = vec![b'x'; 10_000];
    let head = format!(
        "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    send_corked(&mut conn, &mut sock, &[head.into_bytes(), body]);
    let got = read_until(&mut conn, &mut sock, PROMPT, one_head)
        .unwrap_or_else(|e| panic!("POST with its body in a second record: {e}"));
    assert_eq!(
        first_status(&got),
        Some(405),
        "{}",
        String::from_utf8_lossy(&got)
    );

    // A head in two records.
    let (mut conn, mut sock) = handshake(client(ANY), env.port).unwrap();
    let first = format!(
        "GET / HTTP/1.1\r\nHost: a.test\r\nX-A: {}",
        "a".repeat(6000)
    );
    let second = format!("{}\r\n\r\n", "b".repeat(6000));
    send_corked(
        &mut conn,
        &mut sock,
        &[first.into_bytes(), second.into_bytes()],
    );
    let got = read_until(&mut conn, &mut sock, PROMPT, one_head)
        .unwrap_or_else(|e| panic!("a head split in two records: {e}"));
    assert_eq!(
        first_status(&got),
        Some(200),
        "{}",
        String::from_utf8_lossy(&got)
    );

    // 40 pipelined GETs, one record each.
    let (mut conn, mut sock) = handshake(client(ANY), env.port).unwrap();
    let gets: Vec<Vec<u8>> = (0..40)
        .map(|i| {
            format!(
                "GET /?n={i} HTTP/1.1\r\nHost: a.test\r\nX-Pad: {}\r\n\r\n",
                "p".repeat(100)
            )
            .into_bytes()
        })
        .collect();
    send_corked(&mut conn, &mut sock, &gets);
    let got = read_until(&mut conn, &mut sock, PROMPT, |g| {
        count(g, b"hello from baton") >= 40
    })
    .unwrap_or_else(|e| panic!("40 pipelined GETs in 40 records: {e}"));
    assert_eq!(count(&got, b"HTTP/1.1 200 OK"), 40);
}

/// Plain HTTP sent to a TLS port gets a readable 400 saying the port speaks
/// HTTPS (as nginx answers), not a TLS alert; TLS still works there.
#[test]
fn plain_http_on_a_tls_port_gets_a_400_that_says_so() {
    let env = Env::new();
    let _server = serve_tls(&env, &ecdsa_cert(&["a.test"]), "");
    let out = exchange(env.port, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
    let text = String::from_utf8_lossy(&out);
    assert_eq!(first_status(&out), Some(400), "{text:?}");
    let r = parse_responses(&out, false);
    assert_eq!(r.len(), 1, "{text:?}");
    assert!(r[0].closes(), "{text:?}");
    assert!(
        String::from_utf8_lossy(&r[0].body).contains("HTTPS"),
        "{text:?}"
    );
    let seen = https_get(&client(ANY), env.port, Some("a.test"), "/").unwrap();
    assert_eq!(first_status(&seen.response), Some(200));
}

/// A rustls client config offering `suites` (in that order) and `alpn`.
fn client_with(
    suites: Vec<SupportedCipherSuite>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = suites;
    let mut c = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert {
            schemes: ANY.to_vec(),
        }))
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

fn suites(names: &[CipherSuite]) -> Vec<SupportedCipherSuite> {
    let all = rustls::crypto::ring::default_provider().cipher_suites;
    names
        .iter()
        .map(|n| *all.iter().find(|s| s.suite() == *n).expect("suite"))
        .collect()
}

/// A client offering only ALPN `http/1.0` is served over HTTP/1.0; a client
/// sharing no cipher suite with the server is told `handshake_failure`, not
/// `access_denied` (which blames authorization, not the suites).
#[test]
fn alpn_http10_is_accepted_and_no_common_cipher_is_a_handshake_failure() {
    let env = Env::new();
    let _server = serve_tls(
        &env,
        &ecdsa_cert(&["a.test"]),
        "tls_ciphers = [\"TLS13_AES_256_GCM_SHA384\", \"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384\"]\n",
    );
    let all = rustls::crypto::ring::default_provider().cipher_suites;
    let http10 = client_with(all, rustls::ALL_VERSIONS, &[b"http/1.0"]);
    let seen = https_request(
        &http10,
        env.port,
        Some("a.test"),
        "GET / HTTP/1.0\r\nHost: a.test\r\n\r\n",
    )
    .expect("a client offering only ALPN http/1.0 is served");
    assert_eq!(seen.alpn.as_deref(), Some(&b"http/1.0"[..]));
    assert_eq!(first_status(&seen.response), Some(200));
    assert!(seen.response.starts_with(b"HTTP/1.1 200"));

    for (version, offered) in [
        (
            &rustls::version::TLS13,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
        ),
        (
            &rustls::version::TLS12,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    ] {
        let config = client_with(suites(&[offered]), &[version], &[b"http/1.1"]);
        let err = match handshake(config, env.port) {
            Ok(_) => panic!("{version:?}: a handshake without a common suite succeeded"),
            Err(e) => e,
        };
        assert!(err.contains("HandshakeFailure"), "{version:?}: {err}");
    }
}

/// The server's cipher order wins (testssl.sh rates ignoring it as HIGH):
/// a client listing the suites in reverse still gets the server's first.
#[test]
fn the_server_cipher_order_wins_over_the_client_order() {
    let env = Env::new();
    let _server = serve_tls(&env, &ecdsa_cert(&["a.test"]), "");
    for (version, expected) in [
        (
            &rustls::version::TLS12,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            &rustls::version::TLS13,
            CipherSuite::TLS13_AES_256_GCM_SHA384,
        ),
    ] {
        let mut reversed = rustls::crypto::ring::default_provider().cipher_suites;
        reversed.reverse();
        let config = client_with(reversed, &[version], &[b"http/1.1"]);
        let (conn, _sock) = handshake(config, env.port).unwrap();
        let got = conn.negotiated_cipher_suite().map(|s| s.suite());
        assert_eq!(got, Some(expected), "{version:?}");
    }
}

// ---- An OCSP staple that expires while served ----

/// One DER element.
fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}

/// GeneralizedTime `YYYYMMDDHHMMSSZ` of `t` (UTC).
fn generalized_time(t: SystemTime) -> Vec<u8> {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let s = format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    der_tlv(0x18, s.as_bytes())
}

/// A "successful" OCSP response saying "good" for the self-signed
/// certificate `cert` with `serial`, current from `this_update` to
/// `next_update`, signed by its own key (it is its own issuer), as Baton
/// checks before stapling.
fn ocsp_response(
    cert: &rcgen::Certificate,
    key: &rcgen::KeyPair,
    serial: &[u8],
    this_update: SystemTime,
    next_update: SystemTime,
) -> Vec<u8> {
    use der::{Decode, Encode};
    use ring::digest::{SHA1_FOR_LEGACY_USE_ONLY as SHA1, digest};
    let seq = |parts: &[Vec<u8>]| der_tlv(0x30, &parts.concat());
    let parsed = x509_cert::Certificate::from_der(cert.der()).unwrap();
    let name_hash = digest(&SHA1, &parsed.tbs_certificate.subject.to_der().unwrap());
    let key_hash = digest(&SHA1, key.public_key_raw());
    let sha1 = seq(&[
        der_tlv(0x06, &[0x2b, 0x0e, 0x03, 0x02, 0x1a]),
        vec![0x05, 0x00],
    ]);
    let cert_id = seq(&[
        sha1,
        der_tlv(0x04, name_hash.as_ref()),
        der_tlv(0x04, key_hash.as_ref()),
        der_tlv(0x02, serial),
    ]);
    let single = seq(&[
        cert_id,
        vec![0x80, 0x00], // good
        generalized_time(this_update),
        der_tlv(0xa0, &generalized_time(next_update)),
    ]);
    let data = seq(&[
        der_tlv(0xa2, &der_tlv(0x04, key_hash.as_ref())), // responderID byKey
        generalized_time(this_update),                    // producedAt
        seq(&[single]),
    ]);
    // ecdsa-with-SHA256
    let alg = seq(&[der_tlv(
        0x06,
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02],
    )]);
    let rng = ring::rand::SystemRandom::new();
    let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &key.serialize_der(),
        &rng,
    )
    .unwrap();
    let signature = signer.sign(&rng, &data).unwrap();
    let bits = [&[0u8][..], signature.as_ref()].concat();
    let basic = seq(&[data, alg, der_tlv(0x03, &bits)]);
    // id-pkix-ocsp-basic
    let kind = der_tlv(
        0x06,
        &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01],
    );
    let bytes = seq(&[kind, der_tlv(0x04, &basic)]);
    seq(&[der_tlv(0x0a, &[0x00]), der_tlv(0xa0, &bytes)])
}

/// Accepts any certificate, and keeps the OCSP staple the server sent.
#[derive(Debug)]
struct StapleSeen {
    inner: AnyCert,
    staple: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for StapleSeen {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.staple.lock().unwrap() = Some(ocsp.to_vec());
        self.inner
            .verify_server_cert(end_entity, intermediates, name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The staple a new TLS 1.2 or 1.3 handshake gets (empty: none).
fn staple_of(port: u16, version: &'static rustls::SupportedProtocolVersion) -> Vec<u8> {
    let verifier = Arc::new(StapleSeen {
        inner: AnyCert {
            schemes: ANY.to_vec(),
        },
        staple: Mutex::new(None),
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::clone(&verifier) as Arc<dyn ServerCertVerifier>)
        .with_no_client_auth();
    handshake(Arc::new(config), port).unwrap();
    let staple = verifier.staple.lock().unwrap().take();
    staple.expect("the certificate was verified")
}

/// A staple whose `nextUpdate` passes while it is served stops being served
/// at that moment, without any file changing (a timer, not a file event),
/// and the master says so in its log, `GET /status` and `baton -s status`.
#[test]
fn an_ocsp_staple_stops_being_served_when_it_expires() {
    let env = Env::new();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["a.test".to_string()]).unwrap();
    let serial = [0x12, 0x34, 0x56, 0x78];
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let cert = params.self_signed(&key).unwrap();
    let now = SystemTime::now();
    // Whole seconds (GeneralizedTime has no fraction), a few ahead: time
    // to start the server and see the staple served first.
    let next_update =
        UNIX_EPOCH + Duration::from_secs(now.duration_since(UNIX_EPOCH).unwrap().as_secs() + 8);
    let staple = ocsp_response(
        &cert,
        &key,
        &serial,
        now - Duration::from_secs(60),
        next_update,
    );
    env.write_file("tls/a.ocsp", &staple);
    env.write_file("tls/a.pem", cert.pem().as_bytes());
    env.write_file("tls/a.key", key.serialize_pem().as_bytes());
    let config = format!(
        "{}{}\n[[site]]\nlisten = [\"127.0.0.1:{}\"]\nnames = [\"a.test\"]\nroot = \"{}\"\n\
         tls = {{ cert = \"{}\", key = \"{}\", ocsp = \"{}\" }}\n",
        env.globals(),
        // Long: only a timer can notice the expiry in time, not the watcher.
        "tls_watch_interval = \"1h\"\n",
        env.port,
        env.path("www").display(),
        env.path("tls/a.pem").display(),
        env.path("tls/a.key").display(),
        env.path("tls/a.ocsp").display(),
    );
    env.write_config(&with_admin(&env, &config));
    let server = env.start();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        assert_eq!(
            staple_of(env.port, version),
            staple,
            "{version:?}: the staple is served while current"
        );
    }
    assert!(
        SystemTime::now() < next_update,
        "the test machine is too slow: the staple expired before it was checked"
    );
    let status = admin_get(&env.path("admin.sock"), "/status");
    assert!(!status.contains("OCSP"), "no warning yet: {status}");

    // The wall clock passes nextUpdate (nothing else to wait on).
    assert!(wait_until(Duration::from_secs(30), || SystemTime::now() >= next_update));
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        assert_eq!(
            staple_of(env.port, version),
            Vec::<u8>::new(),
            "{version:?}: an expired staple was served"
        );
    }
    let sock = env.path("admin.sock");
    assert!(
        wait_until(Duration::from_secs(5), || {
            let v: serde_json::Value = serde_json::from_str(&admin_get(&sock, "/status")).unwrap();
            v["warnings"].as_array().is_some_and(|w| {
                w.iter()
                    .any(|w| w.as_str().is_some_and(|w| w.contains("expired")))
            })
        }),
        "GET /status has no warning: {}",
        admin_get(&sock, "/status")
    );
    let text = String::from_utf8_lossy(&env.baton(&["-s", "status"]).stdout).into_owned();
    assert!(
        text.lines()
            .any(|l| l.starts_with("warning:") && l.contains("a.ocsp") && l.contains("expired")),
        "{text}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || server.log_text().lines().any(
            |l| l.contains("WARN") && l.contains("a.ocsp") && l.contains("expired")
        )),
        "{}",
        server.log_text()
    );
}
