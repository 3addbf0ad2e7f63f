//! TLS clients for the end-to-end tests: certificates made at test time
//! (rcgen), a rustls client that accepts any server certificate and can be
//! limited to some signature schemes, and one-request HTTPS helpers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

/// A self-signed ECDSA P-256 certificate for `names`: (cert PEM, key PEM).
pub fn ecdsa_cert(names: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
    let cert = params.self_signed(&key).expect("sign");
    (cert.pem(), key.serialize_pem())
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Accepts any server certificate (the tests look at which one came) and
/// offers only `schemes`, so a test can ask for ECDSA or RSA.
#[derive(Debug)]
pub struct AnyCert {
    pub schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

pub const ECDSA: &[SignatureScheme] = &[
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
];
pub const RSA: &[SignatureScheme] = &[
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PKCS1_SHA256,
];
pub const ANY: &[SignatureScheme] = &[
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PKCS1_SHA256,
];

pub fn client(schemes: &[SignatureScheme]) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert {
            schemes: schemes.to_vec(),
        }))
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

/// What one HTTPS request saw.
#[derive(Debug)]
pub struct Seen {
    /// The server's leaf certificate (DER).
    pub cert: Vec<u8>,
    pub resumed: bool,
    pub alpn: Option<Vec<u8>>,
    pub response: Vec<u8>,
}

/// GET `path` over a new TLS connection; `sni: None` sends no SNI.
pub fn https_get(
    config: &Arc<ClientConfig>,
    port: u16,
    sni: Option<&str>,
    path: &str,
) -> Result<Seen, String> {
    let host = sni.unwrap_or("127.0.0.1");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    https_request(config, port, sni, &req)
}

/// Sends `req` (which should ask for Connection: close) over a new TLS
/// connection and reads everything back.
pub fn https_request(
    config: &Arc<ClientConfig>,
    port: u16,
    sni: Option<&str>,
    req: &str,
) -> Result<Seen, String> {
    let (name, config) = match sni {
        Some(n) => (
            ServerName::try_from(n.to_string()).map_err(|e| e.to_string())?,
            Arc::clone(config),
        ),
        None => {
            let mut c = (**config).clone();
            c.enable_sni = false;
            (ServerName::try_from("127.0.0.1").unwrap(), Arc::new(c))
        }
    };
    let mut conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    match tls.read_to_end(&mut response) {
        Ok(_) => {}
        // A peer that closes without close_notify after a complete answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    let cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or("no certificate")?;
    Ok(Seen {
        cert,
        resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        alpn: conn.alpn_protocol().map(|p| p.to_vec()),
        response,
    })
}

pub fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .expect("a cert")
        .expect("pem")
        .to_vec()
}
