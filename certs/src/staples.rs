//! The helper's OCSP component: turns each config the master sends into
//! the refresher's job list, and drains the refresher's events.
//!
//! The refresher (`ocsp::refresher`) logs every turn itself (stored, kept,
//! revoked, failed with the reason and the retry delay); the events are
//! only drained here, so its channel never grows. The master needs no
//! message: it notices the staple file change (its cert watch), verifies
//! the response again and pushes it to the live workers, and stops
//! serving it at its `nextUpdate` whatever happens here.
//!
//! Certificates issued by ACME are not stapled: Let's Encrypt ended its
//! OCSP service in 2025 and test CAs (pebble) run no responder; a site
//! that wants a staple for an ACME certificate can still name an `ocsp`
//! path for a certificate of its own.

use std::path::PathBuf;

use baton_shared::channel::certs::HelperSettings;
use crossbeam_channel::{Receiver, Sender, select, unbounded};

use crate::ocsp::{self, Event, StapleJob};

/// Starts the thread; it ends when `settings`' sender is dropped.
pub(crate) fn start(settings: Receiver<HelperSettings>) -> std::io::Result<()> {
    let (jobs_tx, jobs_rx) = unbounded::<Vec<StapleJob>>();
    let (events_tx, events_rx) = unbounded::<Event>();
    ocsp::spawn(jobs_rx, events_tx, ocsp::Settings::default())?;
    std::thread::Builder::new()
        .name("staples".into())
        .spawn(move || run(&settings, &jobs_tx, &events_rx))?;
    Ok(())
}

fn run(
    settings: &Receiver<HelperSettings>,
    jobs: &Sender<Vec<StapleJob>>,
    events: &Receiver<Event>,
) {
    loop {
        select! {
            recv(settings) -> s => match s {
                Ok(s) => {
                    let _ = jobs.send(jobs_of(&s));
                }
                // The helper is ending; dropping `jobs` ends the refresher.
                Err(_) => return,
            },
            recv(events) -> e => {
                if e.is_err() {
                    return;
                }
            }
        }
    }
}

/// The staple jobs of one config, as the master computed them.
fn jobs_of(settings: &HelperSettings) -> Vec<StapleJob> {
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
