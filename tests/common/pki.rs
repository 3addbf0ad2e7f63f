//! Certificates for HTTPS upstreams in the tests: a CA made at test time
//! (rcgen), server certificates it signs (for names, IP addresses, expired
//! ones), and the rustls server configurations the TLS backends use.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate authority.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("CA cert");
        Ca { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `names` (DNS names or IP addresses).
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_with(names, |_| {})
    }

    /// One that expired in 2021.
    pub fn expired_leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_with(names, |p| {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        })
    }

    fn leaf_with(&self, names: &[&str], tweak: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        tweak(&mut params);
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn chain_and_key(leaf: &Leaf) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("cert PEM");
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key PEM");
    (chain, key)
}

/// A TLS server configuration presenting `leaf` (HTTP/1.1 by ALPN).
pub fn server_config(leaf: &Leaf) -> Arc<ServerConfig> {
    let (chain, key) = chain_and_key(leaf);
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The same, requiring a client certificate signed by `clients`.
pub fn server_config_mtls(leaf: &Leaf, clients: &Ca) -> Arc<ServerConfig> {
    let (chain, key) = chain_and_key(leaf);
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(clients.pem().as_bytes()).expect("CA PEM");
    roots.add(ca).expect("client CA");
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .expect("client verifier");
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// What a TLS backend's handshakes showed.
#[derive(Default)]
pub struct Seen {
    /// Handshakes that resumed a session.
    pub resumed: AtomicUsize,
    /// The SNI each handshake asked for.
    pub names: std::sync::Mutex<Vec<Option<String>>>,
}

/// A TLS backend's connection, noting what its handshake showed once it
/// is over.
pub struct TlsConn {
    s: rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream>,
    seen: Arc<Seen>,
    noted: bool,
}

impl TlsConn {
    /// `session` over `tcp`, its handshake noted in `seen`.
    pub fn new(
        session: rustls::ServerConnection,
        tcp: std::net::TcpStream,
        seen: &Arc<Seen>,
    ) -> TlsConn {
        TlsConn {
            s: rustls::StreamOwned::new(session, tcp),
            seen: Arc::clone(seen),
            noted: false,
        }
    }
}

impl std::io::Read for TlsConn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = std::io::Read::read(&mut self.s, buf)?;
        if !self.noted && !self.s.conn.is_handshaking() {
            self.noted = true;
            if self.s.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                self.seen
                    .resumed
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            if let Ok(mut names) = self.seen.names.lock() {
                names.push(self.s.conn.server_name().map(str::to_owned));
            }
        }
        Ok(n)
    }
}

impl std::io::Write for TlsConn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::Write::write(&mut self.s, buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::Write::flush(&mut self.s)
    }
}
