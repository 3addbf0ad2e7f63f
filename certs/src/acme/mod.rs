//! ACME (RFC 8555): accounts, orders, HTTP-01 and TLS-ALPN-01 challenges,
//! renewal. Built on the `instant-acme` crate.
//!
//! The engine runs on a thread of its own with a current-thread tokio
//! runtime (instant-acme is async); it takes settings from the helper's
//! main loop and sends what the master must know (`FromHelper`) back, both
//! over crossbeam channels. One order at a time: a CA answers within
//! seconds, and certificates are renewed weeks ahead.
//!
//! When: a name with no usable certificate on disk is ordered at once; a
//! certificate is renewed at the point the CA's renewal information (ARI,
//! `ari`) suggests if it offers any, otherwise once a third of its
//! lifetime is left (Let's Encrypt's 90 days: 30 days ahead); the files are looked at every
//! `acme_renew_check` (default 10 minutes, with ±10% jitter so that
//! instances sharing a directory spread out), since another instance
//! sharing `acme_dir` may have renewed. A failed order is retried after
//! 10 s, doubling up to a day, each failure logged with the CA's problem
//! document and reported to the master for `/status` and `/metrics`.
//!
//! A certificate its OCSP responder says is revoked (the staples thread
//! sends a [`Revoked`]) is ordered again at once, whatever its expiry,
//! with the same backoff on failure; `GET /status` shows why (`reason`)
//! until a new certificate is on disk.
//!
//! Before ordering, the engine takes the name's lock in `acme_dir`
//! (`store::Lock`) and looks at the disk again: an instance that waited
//! for another's order finds the new certificate there and orders nothing.

pub mod ari;
mod order;
pub mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use baton_shared::channel::certs::{FromHelper, HelperSettings, NameStatus, OrderSpec};
use baton_shared::tls::{pem_validity, unix_now};
use crossbeam_channel::{Receiver, Sender, select};

/// Retry delay after the first failure; doubled per failure after that.
const BACKOFF_FIRST: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(24 * 3600);

/// The staples thread's word that an ACME certificate is revoked.
#[derive(Debug, Clone)]
pub struct Revoked {
    pub id: String,
    /// The chain file as it was when the responder said so: a different
    /// file on disk (another instance re-issued it) is not revoked.
    pub chain: Vec<u8>,
    /// For the log and the status: since when, and the responder.
    pub why: String,
}

struct Entry {
    spec: OrderSpec,
    /// The chain on disk the responder said is revoked: not fresh,
    /// whatever its expiry, while it is still the one on disk.
    revoked: Option<Vec<u8>>,
    status: NameStatus,
    /// When to look at this certificate next.
    due: Instant,
    /// The notAfter last seen on disk (news for the master when it moves).
    seen: Option<i64>,
    /// The CA's renewal window for the certificate on disk: (its notAfter,
    /// the window, when to ask again).
    ari: Option<(i64, ari::Window, Instant)>,
}

struct Engine {
    settings: HelperSettings,
    /// One `()` per challenge answer the master confirmed published.
    published: tokio::sync::mpsc::UnboundedReceiver<()>,
    entries: BTreeMap<String, Entry>,
    /// ACME directories that offer no renewal information (until the
    /// next settings).
    no_ari: std::collections::BTreeSet<String>,
    out: Sender<FromHelper>,
    /// A `()` each time a certificate is written: the staples thread
    /// looks at the chains again at once.
    issued: Sender<()>,
    rt: tokio::runtime::Runtime,
}

/// The engine's thread: runs until `settings` closes (the helper exits).
pub fn run(
    settings: Receiver<HelperSettings>,
    revoked: Receiver<Revoked>,
    issued: Sender<()>,
    published: tokio::sync::mpsc::UnboundedReceiver<()>,
    out: Sender<FromHelper>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("certificate helper: cannot start its async runtime: {e}");
            return;
        }
    };
    let mut engine = Engine {
        settings: HelperSettings::default(),
        published,
        entries: BTreeMap::new(),
        no_ari: std::collections::BTreeSet::new(),
        out,
        issued,
        rt,
    };
    loop {
        let now = Instant::now();
        let wait = engine
            .entries
            .values()
            .map(|e| e.due)
            .min()
            .map_or(Duration::from_secs(3600), |d| {
                d.saturating_duration_since(now)
            });
        select! {
            recv(settings) -> msg => match msg {
                Ok(s) => engine.apply(s),
                Err(_) => return,
            },
            recv(revoked) -> msg => {
                if let Ok(r) = msg {
                    engine.revoked(r);
                }
            }
            default(wait) => {}
        }
        // Settings that came meanwhile win over work planned on old ones.
        while let Ok(s) = settings.try_recv() {
            engine.apply(s);
        }
        engine.work_due();
    }
}

impl Engine {
    fn dir(&self) -> PathBuf {
        PathBuf::from(&self.settings.dir)
    }

    fn apply(&mut self, s: HelperSettings) {
        let now = Instant::now();
        let mut entries = BTreeMap::new();
        for spec in &s.orders {
            let entry = match self.entries.remove(&spec.id) {
                Some(mut e) => {
                    if e.spec != *spec {
                        e.spec = spec.clone();
                        e.due = now;
                    }
                    e
                }
                None => Entry {
                    spec: spec.clone(),
                    status: NameStatus {
                        id: spec.id.clone(),
                        ..NameStatus::default()
                    },
                    due: now,
                    seen: None,
                    revoked: None,
                    ari: None,
                },
            };
            entries.insert(spec.id.clone(), entry);
        }
        self.entries = entries;
        self.settings = s;
        self.no_ari.clear();
        if !self.settings.ca_pem.is_empty()
            && let Err(e) = store::write_atomic(&self.ca_file(), &self.settings.ca_pem)
        {
            log::error!("certificate helper: {e}");
        }
        log::info!(
            "certificate helper: {} ACME certificate(s) to keep",
            self.entries.len()
        );
    }

    /// Marks `r.id`'s certificate as revoked and makes it due now.
    fn revoked(&mut self, r: Revoked) {
        let Some(e) = self.entries.get_mut(&r.id) else {
            return;
        };
        // Known already (the responder says so again at each refresh):
        // the order under way or its backoff stands.
        if e.revoked.as_ref() == Some(&r.chain) {
            return;
        }
        log::error!(
            "{}: the ACME certificate is REVOKED ({}): ordering a new one now",
            r.id,
            r.why
        );
        e.revoked = Some(r.chain);
        e.status.reason = format!("revoked ({}): re-issuing", r.why);
        e.due = Instant::now();
        let _ = self.out.send(FromHelper::Status(e.status.clone()));
    }

    fn ca_file(&self) -> PathBuf {
        self.dir().join("ca.pem")
    }

    fn work_due(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.due <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.work(&id);
        }
    }

    /// One look at `id`: fresh on disk, or ordered now (under its lock).
    fn work(&mut self, id: &str) {
        let dir = self.dir();
        let renew_check = Duration::from_millis(self.settings.renew_check_ms.max(1000));
        let stale = Duration::from_millis(self.settings.lock_stale_ms.max(3000));
        let Some(spec) = self.entries.get(id).map(|e| e.spec.clone()) else {
            return;
        };
        self.ask_ari(&dir, &spec, renew_check);
        if self.fresh_on_disk(&dir, &spec, renew_check) {
            return;
        }
        let lock = match store::Lock::try_take(&dir, id, stale) {
            Ok(lock) => lock,
            Err(store::NotLocked::Held(who)) => {
                log::info!("{id}: being ordered by {who}; looking again shortly");
                if let Some(e) = self.entries.get_mut(id) {
                    e.due = Instant::now() + (stale / 3).min(renew_check);
                }
                return;
            }
            Err(store::NotLocked::Failed(e)) => {
                self.failed(id, format!("cannot take the lock: {e}"));
                return;
            }
        };
        // Another instance may have finished while we waited for the lock.
        if self.fresh_on_disk(&dir, &spec, renew_check) {
            return;
        }
        let names = spec.names.join(", ");
        log::info!(
            "{id}: ordering a certificate for {names} from {} ({})",
            spec.directory,
            spec.challenge.as_str()
        );
        if let Some(e) = self.entries.get_mut(id) {
            e.status.ordering = true;
            e.status.last_attempt = unix_now();
            let _ = self.out.send(FromHelper::Status(e.status.clone()));
        }
        let ca = (!self.settings.ca_pem.is_empty()).then(|| self.ca_file());
        let out = self.out.clone();
        let started = Instant::now();
        let published = &mut self.published;
        let result = self.rt.block_on(async {
            let work = async {
                let account = order::account(&dir, ca.as_deref(), &spec).await?;
                match order::run(&account, &spec, &out, published).await {
                    // The CA lost or deleted the account (a test CA
                    // restarted, an account deactivated): a new one.
                    Err(f) if f.0.contains("accountDoesNotExist") => {
                        let stored = store::account_path(&dir, &spec.directory, &spec.email);
                        log::warn!(
                            "{id}: {} does not know the account stored in {} any more: \
                             creating a new one",
                            spec.directory,
                            stored.display()
                        );
                        let _ = std::fs::remove_file(&stored);
                        let account = order::account(&dir, ca.as_deref(), &spec).await?;
                        order::run(&account, &spec, &out, published).await
                    }
                    r => r,
                }
            };
            tokio::pin!(work);
            // The lock is refreshed while the order runs.
            let mut tick = tokio::time::interval(stale / 3);
            loop {
                tokio::select! {
                    r = &mut work => break r,
                    _ = tick.tick() => lock.refresh(),
                }
            }
        });
        match result {
            Ok(issued) => {
                if let Err(e) = save(&dir, &spec, &issued) {
                    self.failed(id, e);
                    return;
                }
                log::info!(
                    "{id}: certificate issued for {names} in {} ms",
                    started.elapsed().as_millis()
                );
                if let Some(e) = self.entries.get_mut(id) {
                    e.status.failures = 0;
                    e.status.last_error.clear();
                    e.status.ordering = false;
                    e.revoked = None;
                    e.status.reason.clear();
                }
                let _ = self.issued.send(());
                self.fresh_on_disk(&dir, &spec, renew_check);
            }
            Err(f) => self.failed(id, f.0),
        }
        drop(lock);
    }

    /// Whether `spec`'s certificate on disk is for its names and not due
    /// for renewal; if so, plans the next look, and tells the master when
    /// it is one it has not seen.
    fn fresh_on_disk(&mut self, dir: &Path, spec: &OrderSpec, renew_check: Duration) -> bool {
        let cert_dir = baton_shared::config::acme::cert_dir(dir, &spec.id);
        let pem = std::fs::read(cert_dir.join("cert.pem")).ok();
        let names = std::fs::read_to_string(cert_dir.join("names")).unwrap_or_default();
        if let (Some(e), Some(pem)) = (self.entries.get_mut(&spec.id), pem.as_deref())
            && let Some(revoked) = &e.revoked
        {
            if revoked.as_slice() == pem {
                return false;
            }
            // Replaced on disk (by another instance sharing acme_dir).
            e.revoked = None;
            e.status.reason.clear();
        }
        let Some((not_before, not_after)) = pem.as_deref().and_then(pem_validity) else {
            return false;
        };
        if names.lines().collect::<Vec<_>>() != spec.names {
            return false;
        }
        let window = self
            .entries
            .get(&spec.id)
            .and_then(|e| e.ari.as_ref())
            .filter(|(cert, _, _)| *cert == not_after)
            .map(|(_, w, _)| w);
        let renew_at = ari::renew_at(not_before, not_after, window);
        let now = unix_now();
        if now >= renew_at {
            return false;
        }
        let Some(e) = self.entries.get_mut(&spec.id) else {
            return true;
        };
        let until_renewal = Duration::from_secs(u64::try_from(renew_at - now).unwrap_or(0));
        e.due = Instant::now() + until_renewal.min(jitter(renew_check));
        e.status.expires = not_after;
        e.status.next_attempt = 0;
        e.status.ordering = false;
        if e.seen != Some(not_after) {
            e.seen = Some(not_after);
            let _ = self.out.send(FromHelper::Issued {
                id: spec.id.clone(),
            });
        }
        let _ = self.out.send(FromHelper::Status(e.status.clone()));
        true
    }

    /// Asks the CA for the renewal window of `spec`'s certificate on disk,
    /// when there is one, the CA offers ARI, and the last answer is due
    /// for asking again. Any failure leaves the one-third rule in force.
    fn ask_ari(&mut self, dir: &Path, spec: &OrderSpec, renew_check: Duration) {
        if self.no_ari.contains(&spec.directory) {
            return;
        }
        let cert_dir = baton_shared::config::acme::cert_dir(dir, &spec.id);
        let Ok(pem) = std::fs::read(cert_dir.join("cert.pem")) else {
            return;
        };
        let Some((_, not_after)) = pem_validity(&pem) else {
            return;
        };
        let now = Instant::now();
        let Some(e) = self.entries.get(&spec.id) else {
            return;
        };
        if e.revoked.is_some()
            || e.ari
                .as_ref()
                .is_some_and(|(cert, _, again)| *cert == not_after && now < *again)
        {
            return;
        }
        let ca = (!self.settings.ca_pem.is_empty()).then(|| self.ca_file());
        let answer = self.rt.block_on(async {
            let ask = async {
                let account = order::account(dir, ca.as_deref(), spec)
                    .await
                    .map_err(|f| f.0)?;
                ari::ask(&account, &pem).await
            };
            tokio::time::timeout(Duration::from_secs(20), ask)
                .await
                .unwrap_or_else(|_| Err("no answer within 20 s".into()))
        });
        let id = &spec.id;
        match answer {
            Ok(ari::Answer::Window { start, end, again }) => {
                let kept = self.entries.get(id).and_then(|e| e.ari.clone());
                // The same window as before keeps its point: re-rolling at
                // every ask would drift toward the window's start.
                let at = match kept {
                    Some((cert, w, _)) if cert == not_after && (w.start, w.end) == (start, end) => {
                        w.at
                    }
                    _ => ari::choose(start, end, random()),
                };
                log::info!(
                    "{id}: the CA suggests renewing between {} and {}: renewing at {}",
                    baton_shared::tls::http_date(start),
                    baton_shared::tls::http_date(end),
                    baton_shared::tls::http_date(at)
                );
                if let Some(e) = self.entries.get_mut(id) {
                    e.ari = Some((not_after, ari::Window { start, end, at }, now + again));
                }
            }
            Ok(ari::Answer::Unsupported) => {
                log::info!(
                    "{}: offers no renewal information (ARI): certificates are renewed once a \
                     third of their lifetime is left",
                    spec.directory
                );
                self.no_ari.insert(spec.directory.clone());
            }
            // Looked at again at the next check (the certificate may be
            // replaced by one the CA issued).
            Ok(ari::Answer::Unnamed(why)) => {
                log::debug!("{id}: no renewal information asked for: {why}");
            }
            Err(why) => {
                log::info!(
                    "{id}: cannot get the CA's renewal information ({why}); the one-third rule \
                     applies until the next check"
                );
                if let Some(e) = self.entries.get_mut(id) {
                    e.ari = e
                        .ari
                        .take()
                        .map(|(c, w, _)| (c, w, now + jitter(renew_check)));
                }
            }
        }
    }

    fn failed(&mut self, id: &str, why: String) {
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        e.status.failures = e.status.failures.saturating_add(1);
        e.status.failures_total = e.status.failures_total.saturating_add(1);
        e.status.ordering = false;
        e.status.last_error = why;
        let shift = u32::try_from(e.status.failures.saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(20);
        let delay = jitter(BACKOFF_FIRST.saturating_mul(1u32 << shift).min(BACKOFF_MAX));
        e.due = Instant::now() + delay;
        e.status.next_attempt = unix_now().saturating_add(delay.as_secs() as i64);
        log::error!(
            "{id}: ACME order failed (attempt {} in a row; the current certificate, if any, \
             is served until it expires; next attempt in {}s): {}",
            e.status.failures,
            delay.as_secs(),
            e.status.last_error
        );
        let _ = self.out.send(FromHelper::Status(e.status.clone()));
    }
}

/// Writes the key, then the chain, then the names (see `store`), and
/// removes the old certificate's OCSP staple: it is not this one's (the
/// staples thread fetches one for the new certificate if it names a
/// responder).
fn save(dir: &Path, spec: &OrderSpec, issued: &order::Issued) -> Result<(), String> {
    let cert_dir = baton_shared::config::acme::cert_dir(dir, &spec.id);
    let names = spec.names.join("\n");
    store::write_all_atomic(&[
        (&cert_dir.join("key.pem"), issued.key.as_bytes()),
        (&cert_dir.join("cert.pem"), issued.chain.as_bytes()),
        (&cert_dir.join("names"), names.as_bytes()),
    ])
    .map_err(|e| e.to_string())?;
    let staple = cert_dir.join(baton_shared::tls_acme::STAPLE_FILE);
    match std::fs::remove_file(&staple) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => log::warn!(
            "{}: cannot remove the old certificate's OCSP staple {}: {e}",
            spec.id,
            staple.display()
        ),
        _ => {}
    }
    Ok(())
}

/// `d` ± 10%, from the kernel's randomness.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.9 + 0.2 * random())
}

/// Uniform in `[0, 1]`, from the kernel's randomness (0.5 if it fails).
fn random() -> f64 {
    let mut b = [0u8; 2];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).map_or(0.5, |()| {
        f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(100));
            assert!(j >= Duration::from_secs(90) && j <= Duration::from_secs(110));
        }
    }
}
