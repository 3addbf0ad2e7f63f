//! ACME challenges answered by workers, for the certificate helper: the
//! answers come from the master (`ToWorker::AcmeChallenges`, whole each
//! time one changes) and are held here for the connection code (HTTP-01)
//! and the TLS resolver (TLS-ALPN-01).
//!
//! HTTP-01: `GET /.well-known/acme-challenge/TOKEN` on a plain-HTTP
//! listener is answered with the token's key authorization before any
//! routing, redirect or static file (RFC 8555 section 8.3), whatever the
//! site. A token not held gets the site's normal answer (usually a 404).
//!
//! TLS-ALPN-01: a ClientHello offering ALPN `acme-tls/1` for a name with a
//! challenge certificate gets that certificate (RFC 8737); the CA closes
//! the connection after the handshake.
//!
//! A static behind an `ArcSwap`: rustls wants a `Send + Sync` resolver,
//! and the worker's one thread swaps the set in between two handshakes.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use baton_shared::channel::certs::Challenges;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::http::response::{Response, Status};
use crate::outgoing::Body;

/// The ALPN protocol id of TLS-ALPN-01.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
const HTTP_PREFIX: &str = "/.well-known/acme-challenge/";

#[derive(Default)]
struct Held {
    http: HashMap<String, String>,
    alpn: HashMap<String, Arc<CertifiedKey>>,
}

fn held() -> &'static ArcSwap<Held> {
    static HELD: OnceLock<ArcSwap<Held>> = OnceLock::new();
    HELD.get_or_init(|| ArcSwap::from_pointee(Held::default()))
}

/// Replaces the answers with the master's new set.
pub fn set(c: &Challenges) {
    let provider = rustls::crypto::ring::default_provider();
    let mut alpn = HashMap::new();
    for (name, cert, key) in &c.alpn {
        let chain: Result<Vec<CertificateDer<'static>>, _> =
            CertificateDer::pem_slice_iter(cert).collect();
        let made = chain.map_err(|e| format!("{e:?}")).and_then(|chain| {
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("{e:?}"))?;
            // Not `from_der`: its consistency check parses the
            // certificate with webpki, which refuses the critical
            // acmeIdentifier extension this certificate must carry.
            let key = provider
                .key_provider
                .load_private_key(key)
                .map_err(|e| e.to_string())?;
            Ok(CertifiedKey::new(chain, key))
        });
        match made {
            Ok(k) => {
                alpn.insert(name.to_ascii_lowercase(), Arc::new(k));
            }
            Err(e) => log::warn!("TLS-ALPN-01 certificate for {name} refused: {e}"),
        }
    }
    let http = c.http.iter().cloned().collect();
    held().store(Arc::new(Held { http, alpn }));
}

/// The HTTP-01 answer for `target`, if it asks for a token held now.
pub fn http_answer(target: &str) -> Option<Response> {
    let token = target.strip_prefix(HTTP_PREFIX)?;
    let held = held().load();
    let key_auth = held.http.get(token)?;
    Some(Response {
        status: Status::Ok,
        headers: vec![("Content-Type".into(), "application/octet-stream".into())],
        body: Body::Bytes(key_auth.clone().into_bytes()),
    })
}

/// The TLS-ALPN-01 certificate for a ClientHello offering `acme-tls/1`.
pub fn alpn_cert(server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
    let name = server_name?.to_ascii_lowercase();
    held().load().alpn.get(&name).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_held_tokens_are_answered() {
        set(&Challenges {
            version: 1,
            http: vec![("tok".into(), "tok.thumb".into())],
            alpn: vec![("bad.example".into(), b"not pem".to_vec(), b"x".to_vec())],
        });
        let r = http_answer("/.well-known/acme-challenge/tok").expect("held");
        assert_eq!(r.status, Status::Ok);
        assert!(matches!(r.body, Body::Bytes(ref b) if b == b"tok.thumb"));
        assert!(http_answer("/.well-known/acme-challenge/other").is_none());
        assert!(http_answer("/.well-known/acme-challenge/").is_none());
        assert!(http_answer("/tok").is_none());
        // A malformed certificate is refused, not served.
        assert!(alpn_cert(Some("bad.example")).is_none());
        set(&Challenges::default());
        assert!(http_answer("/.well-known/acme-challenge/tok").is_none());
    }
}
