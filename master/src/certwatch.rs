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

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_shared::deadline;
use baton_shared::tls::{LoadedCert, Material, load_files, unix_now};

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

pub struct Watch {
    /// One per `Material::certs` entry, in the same order.
    seen: Vec<[Sig; 3]>,
    interval: Duration,
    next: Instant,
}

impl Watch {
    /// `None` when there is nothing to watch.
    pub fn new(material: &Material, interval: Duration) -> Option<Watch> {
        if material.certs.is_empty() {
            return None;
        }
        Some(Watch {
            seen: material.certs.iter().map(sigs).collect(),
            interval,
            next: deadline::from_now(interval),
        })
    }

    pub fn due(&self) -> Instant {
        self.next
    }

    /// Stats the files; returns the new material if a changed pair loaded
    /// and verified.
    pub fn check(&mut self, material: &Material) -> Option<Arc<Material>> {
        self.next = deadline::from_now(self.interval);
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
                Ok((cert_pem, key_pem, ocsp, key)) => {
                    if cert_pem == cert.cert_pem && key_pem == cert.key_pem && ocsp == cert.ocsp {
                        continue;
                    }
                    log::info!(
                        "certificate {} changed: loaded and verified, sending it to the workers",
                        cert.files.cert.display()
                    );
                    let m = updated.get_or_insert_with(|| material.clone());
                    if let Some(c) = m.certs.get_mut(i) {
                        c.cert_pem = cert_pem;
                        c.key_pem = key_pem;
                        c.ocsp = ocsp;
                        c.key = key;
                    }
                }
                Err(e) => log::error!(
                    "certificate {} changed but is not usable, the old one stays \
                     (the next change is tried again): {e}",
                    cert.files.cert.display()
                ),
            }
        }
        updated.map(Arc::new)
    }
}
