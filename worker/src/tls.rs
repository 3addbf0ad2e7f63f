//! TLS in a worker: one `rustls::ServerConfig` per TLS listener, all
//! sharing one certificate store and one ticket key set.
//!
//! The store is behind an `ArcSwap`: a handshake's resolver loads the
//! current store (a lock-free pointer load) and picks a certificate from
//! it; a `Certificates` message from the master builds a whole new store
//! and swaps it in. Handshakes in progress keep the store they loaded; no
//! lock is ever held across a handshake.
//!
//! Which certificate: SNI picks the site among those on the listener
//! (`names`); without SNI, or with a name no site has, the listener's
//! default site (`tls.default = true`, else the catch-all site, else the
//! first TLS site), unless `tls_unknown_sni = "reject"`. Among a site's
//! certificates (ECDSA and RSA, say) the first whose key can sign with a
//! scheme the client offered; if none can (a client that shares no cipher
//! suite with us offers no usable scheme either), the first anyway, so
//! that rustls refuses the handshake with `handshake_failure`, as other
//! servers do, rather than the `access_denied` of a resolver that gives
//! up.
//!
//! An OCSP staple is served until its `nextUpdate`: the resolver compares
//! it with the clock at every handshake and, once it has passed, serves
//! the certificate without it (a stale staple is worse than none), with no
//! file event or message needed.
//!
//! Suites: rustls's (all ECDHE with AES-GCM or ChaCha20-Poly1305, what
//! Mozilla's intermediate profile allows) or `tls_ciphers`, in that order,
//! and the server's order wins over the client's.
//!
//! Session tickets are sealed with keys the master makes and rotates, the
//! same in every worker and every generation, so a ticket from one worker
//! resumes on another, across reloads.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use baton_shared::config::{Config, ListenAddr, TlsVersion};
use baton_shared::tls::{CertBundle, Material, Staple, unix_now, verify};
use ring::aead;
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, ServerConnection};

/// The certificates of each listener.
#[derive(Default)]
pub struct Store {
    per_listener: Vec<ListenerCerts>,
}

#[derive(Default)]
struct ListenerCerts {
    by_name: HashMap<String, Vec<Served>>,
    default: Vec<Served>,
}

/// A certificate as handshakes get it: with its staple while the staple
/// is current, without it from its `nextUpdate` on.
#[derive(Clone)]
struct Served {
    key: Arc<CertifiedKey>,
    /// (nextUpdate in seconds since the epoch, the same without staple).
    stale: Option<(i64, Arc<CertifiedKey>)>,
}

impl Served {
    fn new(key: &Arc<CertifiedKey>, staple: &Staple) -> Served {
        let stale = match staple.expires() {
            Some(t) if key.ocsp.is_some() => {
                let bare = CertifiedKey {
                    ocsp: None,
                    ..(**key).clone()
                };
                Some((t, Arc::new(bare)))
            }
            _ => None,
        };
        Served {
            key: Arc::clone(key),
            stale,
        }
    }

    /// What to serve at `now` (seconds since the epoch).
    fn at(&self, now: i64) -> &Arc<CertifiedKey> {
        match &self.stale {
            Some((next_update, bare)) if now >= *next_update => bare,
            _ => &self.key,
        }
    }
}

impl Store {
    /// Builds the store for `addrs` (this worker's listeners, in order) from
    /// the loaded certificates, each tagged with its site's index.
    fn build(config: &Config, addrs: &[ListenAddr], certs: &[(usize, Served)]) -> Store {
        let of_site = |i: usize| -> Vec<Served> {
            certs
                .iter()
                .filter(|(s, _)| *s == i)
                .map(|(_, k)| k.clone())
                .collect()
        };
        let per_listener = addrs
            .iter()
            .map(|addr| {
                let sites: Vec<usize> = config
                    .sites
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.tls.is_some() && s.listen.iter().any(|l| &l.addr == addr))
                    .map(|(i, _)| i)
                    .collect();
                let mut l = ListenerCerts::default();
                for &i in &sites {
                    for name in &config.sites[i].names {
                        l.by_name.entry(name.clone()).or_insert_with(|| of_site(i));
                    }
                }
                let default = sites
                    .iter()
                    .find(|&&i| config.sites[i].tls.as_ref().is_some_and(|t| t.default))
                    .or_else(|| sites.iter().find(|&&i| config.sites[i].names.is_empty()))
                    .or_else(|| sites.first());
                if let Some(&i) = default {
                    l.default = of_site(i);
                }
                l
            })
            .collect();
        Store { per_listener }
    }
}

struct Resolver {
    listener: usize,
    store: Arc<ArcSwap<Store>>,
    reject_unknown: bool,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // ACME TLS-ALPN-01 (RFC 8737): only the CA offers `acme-tls/1`.
        if hello
            .alpn()
            .is_some_and(|mut p| p.any(|p| p == crate::acme::ACME_TLS_ALPN))
        {
            return crate::acme::alpn_cert(hello.server_name());
        }
        let store = self.store.load();
        let certs = store.per_listener.get(self.listener)?;
        let by_name = hello
            .server_name()
            .and_then(|n| certs.by_name.get(&n.to_ascii_lowercase()));
        let candidates = match by_name {
            Some(c) => c,
            None if self.reject_unknown => return None,
            None => &certs.default,
        };
        let schemes = hello.signature_schemes();
        let now = unix_now();
        candidates
            .iter()
            .map(|c| c.at(now))
            .find(|k| k.key.choose_scheme(schemes).is_some())
            // No scheme fits: rustls keeps only the schemes of the suites
            // both sides have, so this is most often no common suite. A
            // certificate lets rustls say so (`handshake_failure`); `None`
            // would be `access_denied`.
            .or_else(|| candidates.first().map(|c| c.at(now)))
            .cloned()
    }
}

/// Session ticket keys from the master, newest first. A ticket is
/// `key id (4) | nonce (12) | ChaCha20-Poly1305 sealed state`.
pub struct Tickets {
    keys: ArcSwap<Vec<TicketKey>>,
    lifetime: u32,
    rng: SystemRandom,
}

struct TicketKey {
    id: [u8; 4],
    key: aead::LessSafeKey,
}

impl fmt::Debug for Tickets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tickets")
            .field("keys", &self.keys.load().len())
            .finish_non_exhaustive()
    }
}

impl Tickets {
    fn new(keys: &[[u8; 32]], lifetime: u32) -> Tickets {
        let t = Tickets {
            keys: ArcSwap::from_pointee(Vec::new()),
            lifetime,
            rng: SystemRandom::new(),
        };
        t.set(keys);
        t
    }

    pub fn set(&self, keys: &[[u8; 32]]) {
        let keys = keys
            .iter()
            .filter_map(|k| {
                let digest = ring::digest::digest(&ring::digest::SHA256, k);
                let mut id = [0u8; 4];
                id.copy_from_slice(&digest.as_ref()[..4]);
                let unbound = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, k).ok()?;
                Some(TicketKey {
                    id,
                    key: aead::LessSafeKey::new(unbound),
                })
            })
            .collect();
        self.keys.store(Arc::new(keys));
    }
}

impl ProducesTickets for Tickets {
    fn enabled(&self) -> bool {
        !self.keys.load().is_empty()
    }

    fn lifetime(&self) -> u32 {
        self.lifetime
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let keys = self.keys.load();
        let key = keys.first()?;
        let mut nonce = [0u8; 12];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(16 + plain.len() + 16);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        key.key
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(&key.id),
                &mut body,
            )
            .ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let (id, rest) = cipher.split_first_chunk::<4>()?;
        let (nonce, sealed) = rest.split_first_chunk::<12>()?;
        let keys = self.keys.load();
        let key = keys.iter().find(|k| &k.id == id)?;
        let mut body = sealed.to_vec();
        let plain = key
            .key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(*nonce),
                aead::Aad::from(id),
                &mut body,
            )
            .ok()?;
        Some(plain.to_vec())
    }
}

/// A worker's TLS state.
pub struct Tls {
    store: Arc<ArcSwap<Store>>,
    /// Per listener (same order as the worker's): `None` for plain HTTP.
    configs: Vec<Option<Arc<ServerConfig>>>,
    tickets: Arc<Tickets>,
    addrs: Vec<ListenAddr>,
}

impl Tls {
    /// Sets up every TLS listener with the certificates the worker inherited.
    pub fn new(
        config: &Config,
        addrs: &[ListenAddr],
        material: &Material,
        ticket_keys: &[[u8; 32]],
    ) -> Result<Tls, String> {
        let certs: Vec<_> = material
            .certs
            .iter()
            .map(|c| (c.site, Served::new(&c.key, &c.staple)))
            .collect();
        let store = Arc::new(ArcSwap::from_pointee(Store::build(config, addrs, &certs)));
        let lifetime = u32::try_from(config.tls.ticket_rotation.as_secs()).unwrap_or(u32::MAX);
        // Without a TLS listener the keys are never used: deriving them
        // would only map ring's code into a plain-HTTP worker.
        let any_tls = addrs.iter().any(|a| config.tls_on(a));
        let keys = if any_tls { ticket_keys } else { &[] };
        let tickets = Arc::new(Tickets::new(keys, lifetime));
        let mut configs = Vec::with_capacity(addrs.len());
        for (i, addr) in addrs.iter().enumerate() {
            if !config.tls_on(addr) {
                configs.push(None);
                continue;
            }
            let resolver = Arc::new(Resolver {
                listener: i,
                store: Arc::clone(&store),
                reject_unknown: config.tls.reject_unknown_sni,
            });
            let h2 = crate::http2::offered(config, addr);
            configs.push(Some(server_config(
                config,
                resolver,
                Arc::clone(&tickets),
                h2,
            )?));
        }
        Ok(Tls {
            store,
            configs,
            tickets,
            addrs: addrs.to_vec(),
        })
    }

    /// A new TLS session for a connection accepted on `listener`, if that
    /// listener speaks TLS.
    pub fn session(&self, listener: usize) -> Option<Result<ServerConnection, rustls::Error>> {
        let config = self.configs.get(listener)?.as_ref()?;
        Some(ServerConnection::new(Arc::clone(config)))
    }

    /// Replaces every certificate with those of a `Certificates` message.
    /// All of them must verify, or nothing changes.
    pub fn replace(&self, config: &Config, bundles: &[CertBundle]) -> Result<usize, String> {
        let now = unix_now();
        let mut certs = Vec::with_capacity(bundles.len());
        for b in bundles {
            let ocsp = (!b.ocsp.is_empty()).then_some(b.ocsp.as_slice());
            let verified = verify(&b.cert_pem, &b.key_pem, ocsp, now)
                .map_err(|e| format!("certificate {} of site {}: {e}", certs.len() + 1, b.site))?;
            let served = Served::new(&verified.key, &verified.staple);
            certs.push((b.site as usize, served));
        }
        self.store
            .store(Arc::new(Store::build(config, &self.addrs, &certs)));
        Ok(certs.len())
    }

    pub fn set_ticket_keys(&self, keys: &[[u8; 32]]) {
        // No TLS listener, no use for them (see `new`).
        if self.configs.iter().any(Option::is_some) {
            self.tickets.set(keys);
        }
    }
}

/// What ALPN offers, in our order of preference (rustls picks the first
/// of ours the client also offers): `h2` first where the listener's sites
/// have HTTP/2 (`http2`, on by default). A client offering only
/// `http/1.0` is served too (HTTP/1.1 servers answer 1.0 requests);
/// refusing it would be a fatal `no_application_protocol`. A client that
/// offers no ALPN at all gets HTTP/1.1.
fn alpn_protocols(http2: bool) -> Vec<Vec<u8>> {
    let mut list = Vec::with_capacity(3);
    if http2 {
        list.push(b"h2".to_vec());
    }
    list.push(b"http/1.1".to_vec());
    list.push(b"http/1.0".to_vec());
    list
}

fn server_config(
    config: &Config,
    resolver: Arc<Resolver>,
    tickets: Arc<Tickets>,
    http2: bool,
) -> Result<Arc<ServerConfig>, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    if !config.tls.ciphers.is_empty() {
        let all = std::mem::take(&mut provider.cipher_suites);
        for name in &config.tls.ciphers {
            if let Some(s) = all.iter().find(|s| &format!("{:?}", s.suite()) == name) {
                provider.cipher_suites.push(*s);
            }
        }
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = match config.tls.min_version {
        TlsVersion::V12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V13 => &[&rustls::version::TLS13],
    };
    let mut sc = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS settings: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    sc.alpn_protocols = alpn_protocols(http2);
    // Last: chosen only when a client offers nothing else (the ACME CA).
    sc.alpn_protocols.push(crate::acme::ACME_TLS_ALPN.to_vec());
    // Our order (rustls's, or `tls_ciphers`'), not the client's: every
    // suite is an AEAD with forward secrecy, and the strongest first is
    // what scanners (testssl.sh) expect of a server.
    sc.ignore_client_order = true;
    sc.ticketer = tickets;
    Ok(Arc::new(sc))
}
