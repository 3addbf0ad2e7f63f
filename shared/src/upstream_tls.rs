//! HTTPS upstreams: the rustls client configuration of an `[[upstream]]`'s
//! `tls` (or of an `https://` route URL), built when the config loads, by
//! the master (`-t`, start and reload alike), so that a missing or empty
//! `ca` file is a located config error and never a worker's surprise.
//!
//! Certificates are always verified: against `ca` when given, else against
//! the system's trust store (`SSL_CERT_FILE` when set, as OpenSSL and
//! rustls-native-certs read it, else the distribution's bundle). No roots are
//! compiled in. The worker's connections and the master's health checks
//! share the same `ClientConfig`, so they verify alike; each process's copy
//! keeps its own session cache (rustls's in-memory one, per upstream), so
//! reconnections to a server resume their TLS session.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// Where distributions keep their bundle of trusted roots, the first that
/// exists is used (the list openssl-probe and rustls-native-certs look
/// through): Debian, Ubuntu, Arch and Gentoo; Fedora and RHEL; openSUSE;
/// Alpine.
pub const SYSTEM_CA_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The system's trust store: `SSL_CERT_FILE` if set, else the first of
/// `SYSTEM_CA_FILES` that exists (else the first, for the error).
pub fn system_ca_file() -> PathBuf {
    if let Some(v) = std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()) {
        return PathBuf::from(v);
    }
    SYSTEM_CA_FILES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_FILES[0]))
}

/// The trust anchors in the PEM file `path`. The error completes
/// "the ca file PATH ...".
pub fn load_anchors(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot be read: {e}"))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(&e))?;
    if certs.is_empty() {
        return Err("holds no certificate (no PEM \"BEGIN CERTIFICATE\" section)".into());
    }
    let mut store = RootCertStore::empty();
    let (valid, invalid) = store.add_parsable_certificates(certs.iter().cloned());
    if valid == 0 {
        return Err(format!(
            "holds {invalid} certificate(s), none usable as a trust anchor"
        ));
    }
    Ok(certs)
}

/// A client certificate chain and its key (mTLS), from PEM files. The error
/// says which file and what is wrong with it.
pub fn load_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let cert_pem = std::fs::read(cert)
        .map_err(|e| format!("the cert file {} cannot be read: {e}", cert.display()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the cert file {} {}", cert.display(), pem_error(&e)))?;
    if chain.is_empty() {
        return Err(format!(
            "the cert file {} holds no certificate",
            cert.display()
        ));
    }
    let key_pem = std::fs::read(key)
        .map_err(|e| format!("the key file {} cannot be read: {e}", key.display()))?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("the key file {} {}", key.display(), pem_error(&e)))?;
    Ok((chain, key_der))
}

/// The client configuration: these anchors, HTTP/1.1 by ALPN, rustls's
/// safe protocol versions and suites, and the client identity if any.
pub fn client_config(
    anchors: &[CertificateDer<'static>],
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(anchors.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("no TLS version available: {e}"))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => {
                    "the client key does not match the client certificate".to_owned()
                }
                e => format!("the client certificate cannot be used: {e}"),
            })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The name a server's certificate is verified against (and sent as SNI
/// when it is a DNS name): `server_name`, else the host the address was
/// written with, else its IP address (verified as an IP SAN, no SNI).
pub fn server_name(
    configured: Option<&str>,
    host: Option<&str>,
    ip: Option<std::net::IpAddr>,
) -> Option<ServerName<'static>> {
    if let Some(name) = configured.or(host) {
        return ServerName::try_from(name.to_owned()).ok();
    }
    ip.map(|ip| ServerName::IpAddress(ip.into()))
}

/// Completes "the ... file ..." for a PEM error.
fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { .. } => "ends in the middle of a PEM section".into(),
        Error::IllegalSectionStart { .. } => "has a malformed PEM section".into(),
        Error::Base64Decode(_) => "has invalid base64 in a PEM section".into(),
        Error::NoItemsFound => "holds nothing of the expected kind (no PEM section)".into(),
        e => format!("does not parse as PEM: {e:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_for_verification() {
        let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            server_name(Some("app.internal"), Some("x.example"), Some(ip)),
            Some(ServerName::try_from("app.internal").unwrap())
        );
        assert_eq!(
            server_name(None, Some("x.example"), Some(ip)),
            Some(ServerName::try_from("x.example").unwrap())
        );
        assert_eq!(
            server_name(None, None, Some(ip)),
            Some(ServerName::IpAddress(ip.into()))
        );
        assert_eq!(server_name(None, None, None), None);
        assert_eq!(server_name(Some("bad name!"), None, None), None);
    }

    #[test]
    fn anchors_must_exist_and_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("baton-anchors-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        assert!(
            load_anchors(&missing)
                .unwrap_err()
                .contains("cannot be read")
        );
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "just text\n").unwrap();
        assert!(load_anchors(&empty).unwrap_err().contains("no certificate"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
