//! What the master pushes to live workers without a new generation: new
//! certificates when their files change (hot swap; an expiring OCSP
//! staple is noticed on the same timer) and new session ticket keys.

use std::io;
use std::time::{Duration, Instant};

use baton_shared::channel::ToWorker;
use baton_shared::config::Config;
use baton_shared::deadline;

use super::Master;
use crate::certwatch;

pub(super) struct TlsPush {
    /// Watches the serving generation's certificate files.
    pub(super) watch: Option<certwatch::Watch>,
    /// Session ticket keys, newest first; shared by every worker of every
    /// generation, so resumption works across workers and reloads.
    pub(super) ticket_keys: Vec<[u8; 32]>,
    pub(super) next_rotation: Instant,
}

impl TlsPush {
    pub(super) fn new(config: &Config, now: Instant) -> TlsPush {
        TlsPush {
            watch: None,
            ticket_keys: vec![random_key()],
            next_rotation: deadline::after(now, config.tls.ticket_rotation),
        }
    }
}

impl Master {
    /// The watcher's turn: if a certificate changed and verified, the
    /// serving generation's workers get the new set (no new generation).
    pub(super) fn check_certificates(&mut self) {
        let current = self.procs.current;
        let Some(g) = self.procs.generations.get_mut(&current) else {
            return;
        };
        let Some(watch) = self.tls.watch.as_mut() else {
            return;
        };
        let Some(material) = watch.check(&g.tls) else {
            return;
        };
        g.tls = material;
        let message = ToWorker::Certificates(g.tls.bundles());
        let sent = self.procs.send_to(Some(current), &message);
        log::info!("new certificates sent to {sent} workers of generation {current}");
    }

    /// A new ticket key; the previous one still decrypts tickets it sealed.
    pub(super) fn rotate_ticket_keys(&mut self) {
        let rotation = self
            .procs
            .generations
            .get(&self.procs.current)
            .map_or(Duration::from_secs(6 * 3600), |g| {
                g.config.tls.ticket_rotation
            });
        self.tls.next_rotation = deadline::from_now(rotation);
        self.tls.ticket_keys.insert(0, random_key());
        self.tls.ticket_keys.truncate(2);
        let message = ToWorker::TicketKeys(self.tls.ticket_keys.clone());
        self.procs.send_to(None, &message);
        log::info!("session ticket key rotated; the previous one still resumes");
    }
}

/// 32 random bytes from the kernel.
fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    let mut filled = 0;
    while filled < key.len() {
        let rest = &mut key[filled..];
        // SAFETY: `rest` is a valid, writable buffer of `rest.len()` bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n > 0 {
            filled += n as usize;
        } else if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            // getrandom(2) cannot fail after boot on Linux ≥ 3.17 for 32
            // bytes; if it somehow does, no tickets is safer than weak ones.
            log::error!("getrandom failed: {}", io::Error::last_os_error());
            return [0u8; 32];
        }
    }
    key
}
