//! The helper's OCSP component: turns each config the master sends into
//! the refresher's job list, and drains the refresher's events.
//!
//! The refresher (`ocsp::refresher`) logs every turn itself (stored, kept,
//! revoked, failed with the reason and the retry delay). The master needs
//! no message: it notices the staple file change (its cert watch), verifies
//! the response again and pushes it to the live workers, and stops
//! serving it at its `nextUpdate` whatever happens here.
//!
//! The jobs are the configured ones (every certificate with an `ocsp`
//! path, as the master computed them) and the ACME certificates whose
//! chain on disk names an OCSP responder, with their staple `ocsp.der`
//! beside the certificate. An ACME certificate naming none (Let's
//! Encrypt's since 2025, pebble's) gets no job: nothing to fetch, nothing
//! to warn about. The ACME chains are looked at again when the ACME engine
//! writes one and every [`RESCAN`] (another instance sharing `acme_dir`
//! may have renewed).
//!
//! A `Revoked` event for an ACME certificate goes to the ACME engine,
//! which orders a new one at once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use baton_shared::channel::certs::HelperSettings;
use baton_shared::config::acme::cert_dir;
use baton_shared::tls::http_date;
use baton_shared::tls_acme::STAPLE_FILE;
use crossbeam_channel::{Receiver, Sender, select, tick, unbounded};

use crate::acme::Revoked;
use crate::ocsp::{self, Event, StapleJob};

/// How often the ACME chains are looked at for a responder URL.
const RESCAN: Duration = Duration::from_secs(10);

/// Starts the thread; it ends when `settings`' sender is dropped.
/// `issued` wakes it when the ACME engine wrote a certificate; revoked
/// ACME certificates are sent on `revoked`.
pub(crate) fn start(
    settings: Receiver<HelperSettings>,
    issued: Receiver<()>,
    revoked: Sender<Revoked>,
) -> std::io::Result<()> {
    let (jobs_tx, jobs_rx) = unbounded::<Vec<StapleJob>>();
    let (events_tx, events_rx) = unbounded::<Event>();
    ocsp::spawn(jobs_rx, events_tx, ocsp::Settings::default())?;
    std::thread::Builder::new()
        .name("staples".into())
        .spawn(move || {
            let mut s = Staples {
                settings: HelperSettings::default(),
                acme: HashMap::new(),
                sent: None,
                jobs: jobs_tx,
                revoked,
            };
            s.run(&settings, &issued, &events_rx);
        })?;
    Ok(())
}

struct Staples {
    settings: HelperSettings,
    /// The ACME jobs' staple paths, to the certificate's id.
    acme: HashMap<PathBuf, String>,
    /// The last job list sent (a rescan that finds the same sends none).
    sent: Option<Vec<StapleJob>>,
    jobs: Sender<Vec<StapleJob>>,
    revoked: Sender<Revoked>,
}

impl Staples {
    fn run(
        &mut self,
        settings: &Receiver<HelperSettings>,
        issued: &Receiver<()>,
        events: &Receiver<Event>,
    ) {
        let rescan = tick(RESCAN);
        loop {
            select! {
                recv(settings) -> s => match s {
                    Ok(s) => {
                        self.settings = s;
                        // Every config: the refresher looks at the chains.
                        self.sent = None;
                        self.update();
                    }
                    // The helper is ending; dropping `jobs` ends the refresher.
                    Err(_) => return,
                },
                recv(issued) -> i => {
                    if i.is_err() {
                        return;
                    }
                    // Sent again even if equal: the refresher then looks
                    // at the chains at once (a new certificate).
                    self.sent = None;
                    self.update();
                }
                recv(rescan) -> _ => self.update(),
                recv(events) -> e => match e {
                    Ok(e) => self.event(e),
                    Err(_) => return,
                },
            }
        }
    }

    /// Sends the refresher the job list if it changed.
    fn update(&mut self) {
        let mut jobs = configured(&self.settings);
        self.acme.clear();
        let dir = PathBuf::from(&self.settings.dir);
        for order in &self.settings.orders {
            let dir = cert_dir(&dir, &order.id);
            let job = StapleJob {
                chain: dir.join("cert.pem"),
                staple: dir.join(STAPLE_FILE),
                responder: None,
            };
            // No chain yet, or one naming no responder: no job. (A chain
            // that does not parse is the ACME engine's to replace.)
            if job.chain().is_err() {
                continue;
            }
            self.acme.insert(job.staple.clone(), order.id.clone());
            if !jobs.contains(&job) {
                jobs.push(job);
            }
        }
        if self.sent.as_ref() != Some(&jobs) {
            let _ = self.jobs.send(jobs.clone());
            self.sent = Some(jobs);
        }
    }

    /// A revoked ACME certificate is the ACME engine's to re-issue.
    fn event(&mut self, e: Event) {
        let Event::Revoked { job, since, reason } = e else {
            return;
        };
        let Some(id) = self.acme.get(&job.staple) else {
            return;
        };
        let Ok(chain) = std::fs::read(&job.chain) else {
            return;
        };
        let url = job.chain().map(|c| c.url).unwrap_or_default();
        let why = format!(
            "OCSP responder {url} says revoked since {}{}",
            http_date(since),
            reason.map_or_else(String::new, |r| format!(", reason {r}"))
        );
        let _ = self.revoked.send(Revoked {
            id: id.clone(),
            chain,
            why,
        });
    }
}

/// The configured staple jobs, as the master computed them.
fn configured(settings: &HelperSettings) -> Vec<StapleJob> {
    settings
        .staples
        .iter()
        .map(|s| StapleJob {
            chain: PathBuf::from(&s.chain),
            staple: PathBuf::from(&s.staple),
            responder: None,
        })
        .collect()
}
