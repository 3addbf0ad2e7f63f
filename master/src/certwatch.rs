//! Watching certificate, key and OCSP files for changes (hot swap).
//!
//! A cheap periodic `stat` of every file the serving generation's
//! certificates came from (`tls_watch_interval`, 5 s by default): inode,
//! size and mtime. When any of a pair's files changed, the pair is read and
//! verified again (`baton_shared::tls::load_files`: chain parses, key
//! matches, not expired, staple for this certificate). If it passes, the
//! master sends the whole new set to every worker of the generation
//! (`ToWorker::Certificates`), which swaps its store without a new
//! generation. If it fails (a half-written file, a key that does not match
//! yet), the old certificate stays, the error is logged, and the next change
//! of the files is tried again.
//!
//! The stat runs in the master's loop but touches only a few files, so it
//! never blocks it for long.
//!
//! OCSP staples expire by the clock, not by a file event: workers stop
//! serving a staple at its `nextUpdate` on their own (their resolver looks
//! at the clock on every handshake), and this watch holds a timer for the
//! earliest one, so that the master logs a warning at that moment. What
//! `GET /status` and `baton -s status` show (`warnings`) is computed from
//! the clock when asked, so it is right even between two timers.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use baton_shared::deadline;
use baton_shared::tls::{LoadedCert, Material, Staple, http_date, load_files, unix_now};

/// What a file looked like: (inode, size, mtime in ns); `None` if missing.
type Sig = Option<(u64, u64, i128)>;

fn sig(path: &Path) -> Sig {
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.ino(),
        m.size(),
        i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    ))
}

fn sigs(c: &LoadedCert) -> [Sig; 3] {
    [
        sig(&c.files.cert),
        sig(&c.files.key),
        c.files.ocsp.as_deref().and_then(sig),
    ]
}

/// `from + d`, or `None` past what an `Instant` can hold ("never").
fn later(from: Instant, d: Duration) -> Option<Instant> {
    from.checked_add(d)
}

/// The moment `secs` (seconds since the epoch) as an `Instant`, by the
/// wall clock now; `now` if it has passed, `None` if out of reach.
fn instant_at(secs: i64) -> Option<Instant> {
    let at = UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(secs).ok()?))?;
    let left = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    later(Instant::now(), left)
}

/// Whether the wall clock has reached `secs` (seconds since the epoch).
fn passed(secs: i64) -> bool {
    unix_now() >= secs
}

pub struct Watch {
    /// One per `Material::certs` entry, in the same order.
    seen: Vec<[Sig; 3]>,
    /// Per entry: its staple's expiry has been logged.
    expiry_logged: Vec<bool>,
    interval: Duration,
    next: Instant,
    /// The earliest `nextUpdate` of a served staple not yet passed.
    staple_due: Option<Instant>,
}

impl Watch {
    /// `None` when there is nothing to watch.
    pub fn new(material: &Material, interval: Duration) -> Option<Watch> {
        if material.certs.is_empty() {
            return None;
        }
        let now = Instant::now();
        let mut watch = Watch {
            seen: material.certs.iter().map(sigs).collect(),
            expiry_logged: vec![false; material.certs.len()],
            interval,
            next: deadline::after(now, interval),
            staple_due: None,
        };
        watch.staples(material);
        // Loaded before the log was open (start) or as part of a reload:
        // say here, once per generation, which staples are not served.
        for c in &material.certs {
            log_refused(c);
        }
        Some(watch)
    }

    /// The next stat of the files, or sooner a staple's expiry.
    pub fn due(&self) -> Instant {
        self.staple_due.map_or(self.next, |t| t.min(self.next))
    }

    /// What the status reports about the serving certificates: staples
    /// refused when loaded, and staples past their `nextUpdate`, by the
    /// wall clock now (as workers judge them on each handshake).
    pub fn warnings(&self, material: &Material) -> Vec<String> {
        material
            .certs
            .iter()
            .filter_map(|c| {
                let file = c.files.ocsp.as_deref()?.display();
                let cert = c.files.cert.display();
                match &c.staple {
                    Staple::Refused(why) => Some(format!(
                        "OCSP staple {file} of certificate {cert} is not served: {why}"
                    )),
                    Staple::Served {
                        next_update: Some(t),
                    } if passed(*t) => Some(format!(
                        "OCSP staple {file} of certificate {cert} expired at {} (its nextUpdate) \
                         and is no longer served: fetch a fresh response",
                        http_date(*t)
                    )),
                    _ => None,
                }
            })
            .collect()
    }

    /// Logs each served staple whose `nextUpdate` has passed (once), and
    /// sets the timer for the next one.
    fn staples(&mut self, material: &Material) {
        self.staple_due = None;
        for (i, c) in material.certs.iter().enumerate() {
            let Some(t) = c.staple.expires() else {
                continue;
            };
            let Some(logged) = self.expiry_logged.get_mut(i) else {
                continue;
            };
            if !passed(t) {
                if let Some(at) = instant_at(t) {
                    self.staple_due = Some(self.staple_due.map_or(at, |d| d.min(at)));
                }
            } else if !*logged {
                *logged = true;
                log::warn!(
                    "OCSP staple {} of certificate {} expired at {} (its nextUpdate): \
                     no longer served; fetch a fresh response",
                    c.files
                        .ocsp
                        .as_deref()
                        .map_or_else(|| "?".into(), |p| p.display().to_string()),
                    c.files.cert.display(),
                    http_date(t)
                );
            }
        }
    }

    /// The watch's turn: stats the files if their time has come, and
    /// checks the staples' expiry. Returns the new material if a changed
    /// pair loaded and verified.
    pub fn check(&mut self, material: &Material) -> Option<Arc<Material>> {
        let updated = if Instant::now() >= self.next {
            self.stat(material)
        } else {
            None
        };
        self.staples(updated.as_ref().unwrap_or(material));
        updated.map(Arc::new)
    }

    /// Stats the files; the new material if a changed pair loaded and
    /// verified.
    fn stat(&mut self, material: &Material) -> Option<Material> {
        let started = Instant::now();
        self.next = deadline::after(started, self.interval);
        let now = unix_now();
        let mut updated: Option<Material> = None;
        for (i, cert) in material.certs.iter().enumerate() {
            let current = sigs(cert);
            let Some(seen) = self.seen.get_mut(i) else {
                continue;
            };
            if *seen == current {
                continue;
            }
            // Remember this state either way: a broken file is retried on
            // its next change, not every interval.
            *seen = current;
            match load_files(&cert.files, now) {
                Ok(mut new) => {
                    // An ACME certificate naming no OCSP responder
                    // (renewed in place) has no staple to miss.
                    baton_shared::tls_acme::no_staple_needed(&mut new);
                    if new.cert_pem == cert.cert_pem
                        && new.key_pem == cert.key_pem
                        && new.ocsp == cert.ocsp
                    {
                        continue;
                    }
                    log::info!(
                        "certificate {} changed: loaded and verified, sending it to the workers",
                        cert.files.cert.display()
                    );
                    log_refused(&new);
                    let m = updated.get_or_insert_with(|| material.clone());
                    if let Some(c) = m.certs.get_mut(i) {
                        *c = LoadedCert {
                            site: c.site,
                            ..new
                        };
                    }
                    // A new staple's expiry is news again.
                    if let Some(logged) = self.expiry_logged.get_mut(i) {
                        *logged = false;
                    }
                }
                Err(e) => log::error!(
                    "certificate {} changed but is not usable, the old one stays \
                     (the next change is tried again): {e}",
                    cert.files.cert.display()
                ),
            }
        }
        updated
    }
}

/// Logs why a certificate's staple is not served, if it is not.
fn log_refused(c: &LoadedCert) {
    if let (Some(file), Staple::Refused(why)) = (&c.files.ocsp, &c.staple) {
        log::warn!(
            "OCSP staple {} of certificate {} is not served: {why}",
            file.display(),
            c.files.cert.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staple_times_convert_without_overflow() {
        let now = unix_now();
        assert!(passed(now));
        assert!(!passed(now + 60));
        // Past: due at once. Out of reach: never, not a panic.
        let t = Instant::now();
        assert!(instant_at(now - 3600).is_some_and(|i| i <= Instant::now() && i >= t));
        assert!(instant_at(now + 60).is_some_and(|i| i > t + Duration::from_secs(50)));
        let _ = instant_at(i64::MAX);
        assert_eq!(instant_at(-1), None);
    }
}
