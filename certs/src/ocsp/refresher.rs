//! The refresher: one thread that keeps every job's staple fresh.
//!
//! It waits on its job channel with a deadline, the earliest job due. A
//! new job list (config reload) replaces the old one: jobs still listed
//! keep their schedule and failure count, new ones are due at once,
//! dropped ones are forgotten. The thread ends when the job channel's
//! senders are all gone.
//!
//! A job's first turn looks at the stored staple: a good one for this
//! certificate, not past its half-life, is kept until then. Otherwise, and
//! at every later turn, the responder is asked:
//!
//! - good: stored atomically; next turn at half its validity window;
//! - revoked: logged as an error, stored too (the master then stops
//!   stapling the old "good" answer, which would no longer be the truth),
//!   and reported, so that the helper can re-issue an ACME certificate;
//! - unknown, or any failure (network, HTTP status, malformed, bad
//!   signature, expired, wrong certificate): nothing is stored (a stored
//!   staple stays until its own `nextUpdate`), and the job is retried with
//!   exponential backoff from `backoff_min` to `backoff_max`.
//!
//! The chain files are looked at every `chain_check` (and on every new
//! job list): a certificate renewed in place gets a staple of its own at
//! once, not at its predecessor's half-life.
//!
//! Every outcome is also an [`Event`] on the events channel; a closed
//! events channel does not stop the refresher (the log still says it all).

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use baton_shared::ocsp::Status;
use baton_shared::tls::{http_date, unix_now};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::fetch::Limits;
use super::job::StapleJob;
use super::store::store;

/// How the refresher fetches and retries.
#[derive(Debug, Clone)]
pub struct Settings {
    pub limits: Limits,
    /// The first retry after a failure; doubled at each further failure.
    pub backoff_min: Duration,
    /// The longest wait between two attempts after failures; also when to
    /// ask again after a response without `nextUpdate`.
    pub backoff_max: Duration,
    /// How often the chain files are looked at (`stat`): a certificate
    /// renewed in place (ACME, certbot) gets its own staple at once, not
    /// at the old one's half-life. A new job list looks at them too.
    pub chain_check: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            limits: Limits::default(),
            backoff_min: Duration::from_secs(60),
            backoff_max: Duration::from_secs(3600),
            chain_check: Duration::from_secs(60),
        }
    }
}

/// What became of a job's turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A good response was stored. Times in seconds since the epoch.
    Stored {
        job: StapleJob,
        this_update: i64,
        next_update: Option<i64>,
        refresh_at: i64,
    },
    /// At start: the stored staple is good and before its half-life, so
    /// it is kept until `refresh_at`.
    Kept {
        job: StapleJob,
        next_update: i64,
        refresh_at: i64,
    },
    /// The responder says the certificate is revoked (the response was
    /// stored; the master does not staple it).
    Revoked {
        job: StapleJob,
        since: i64,
        reason: Option<String>,
    },
    /// Nothing stored; the next attempt is in `retry_in`.
    Failed {
        job: StapleJob,
        reason: String,
        failures: u32,
        retry_in: Duration,
    },
}

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

#[derive(Debug)]
struct State {
    due: Instant,
    /// Whether the stored staple was looked at (first turn only).
    started: bool,
    failures: u32,
    /// The chain file as it was at the last turn (`None` before the first,
    /// `Some(None)` if it did not exist).
    chain: Option<Sig>,
}

impl State {
    fn new(now: Instant) -> State {
        State {
            due: now,
            started: false,
            failures: 0,
            chain: None,
        }
    }
}

/// Jobs whose chain file changed since their last turn are due now, as
/// on a first turn (the stored staple is for the old certificate), with
/// no backoff left (a chain that was missing or broken may be fixed).
fn chains_changed(states: &mut HashMap<StapleJob, State>, now: Instant) {
    for (job, state) in states.iter_mut() {
        if state.chain.is_some_and(|seen| seen != sig(&job.chain)) {
            log::info!(
                "certificate {} changed: fetching its OCSP staple again",
                job.chain.display()
            );
            state.due = now;
            state.started = false;
            state.failures = 0;
        }
    }
}

/// The refresher thread and its job channel, for a caller that needs no
/// more than that (the helper may as well [`spawn`] with its own channels).
pub struct Refresher {
    jobs: Sender<Vec<StapleJob>>,
    thread: JoinHandle<()>,
}

impl Refresher {
    /// Starts the thread, with no job yet; events go to `events`.
    pub fn start(events: Sender<Event>, settings: Settings) -> io::Result<Refresher> {
        let (jobs, receiver) = crossbeam_channel::unbounded();
        let thread = spawn(receiver, events, settings)?;
        Ok(Refresher { jobs, thread })
    }

    /// Replaces the job list (at start, and on every reload).
    pub fn set_jobs(&self, jobs: Vec<StapleJob>) {
        // Fails only if the thread has ended, which it does only when
        // this sender is gone: never while `self` lives.
        let _ = self.jobs.send(jobs);
    }

    /// Ends the thread once its current turn is over, and waits for it.
    pub fn stop(self) {
        drop(self.jobs);
        let _ = self.thread.join();
    }
}

/// Starts the refresher thread. Send it the full job list, and again
/// whenever it changes; it ends when every sender of `jobs` is gone.
pub fn spawn(
    jobs: Receiver<Vec<StapleJob>>,
    events: Sender<Event>,
    settings: Settings,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ocsp".into())
        .spawn(move || run(&jobs, &events, &settings))
}

fn run(jobs: &Receiver<Vec<StapleJob>>, events: &Sender<Event>, settings: &Settings) {
    let mut states: HashMap<StapleJob, State> = HashMap::new();
    let mut next_check = Instant::now();
    loop {
        let next = states.values().map(|s| s.due).min();
        let received = match next {
            Some(at) => jobs.recv_deadline(at.min(next_check)),
            None => jobs.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let now = Instant::now();
        match received {
            Ok(list) => {
                let mut old = std::mem::take(&mut states);
                for job in list {
                    let state = old.remove(&job).unwrap_or_else(|| State::new(now));
                    states.insert(job, state);
                }
                next_check = now;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if now >= next_check {
            chains_changed(&mut states, now);
            next_check = now + settings.chain_check;
        }
        for (job, state) in states.iter_mut().filter(|(_, s)| s.due <= now) {
            let _ = events.send(turn(job, state, settings));
        }
    }
}

/// The instant of `at` (seconds since the epoch) by the wall clock now.
fn instant_at(at: i64) -> Instant {
    let left = u64::try_from(at.saturating_sub(unix_now())).unwrap_or(0);
    let now = Instant::now();
    now.checked_add(Duration::from_secs(left))
        .unwrap_or(now + Duration::from_secs(365 * 86400))
}

/// One turn of one job, and what to report.
fn turn(job: &StapleJob, state: &mut State, settings: &Settings) -> Event {
    let staple = job.staple.display();
    state.chain = Some(sig(&job.chain));
    let chain = match job.chain() {
        Ok(chain) => chain,
        Err(e) => return failed(job, state, settings, e),
    };
    if !state.started {
        state.started = true;
        let now = unix_now();
        if let Some(checked) = job.stored(&chain, now) {
            let half = half_life(checked.this_update, checked.next_update);
            if let Some(next_update) = checked.next_update.filter(|_| half > now) {
                log::info!(
                    "OCSP staple {staple} is current (until {}): next refresh at {}",
                    http_date(next_update),
                    http_date(half)
                );
                state.due = instant_at(half);
                return Event::Kept {
                    job: job.clone(),
                    next_update,
                    refresh_at: half,
                };
            }
        }
    }
    let fetched = job.fetch(&chain, &settings.limits, unix_now);
    let (checked, der) = match fetched {
        Ok(ok) => ok,
        Err(e) => return failed(job, state, settings, e),
    };
    let now = unix_now();
    if checked.status == Status::Unknown {
        return failed(
            job,
            state,
            settings,
            format!(
                "OCSP responder {} does not know the certificate (status \"unknown\")",
                chain.url
            ),
        );
    }
    if let Err(e) = store(&job.staple, &der) {
        return failed(
            job,
            state,
            settings,
            format!("cannot store OCSP staple {staple}: {e}"),
        );
    }
    state.failures = 0;
    let max = i64::try_from(settings.backoff_max.as_secs()).unwrap_or(i64::MAX);
    let refresh_at = checked.refresh_at(now).unwrap_or(now.saturating_add(max));
    state.due = instant_at(refresh_at);
    match checked.status {
        Status::Revoked { at, reason } => {
            log::error!(
                "certificate {} is REVOKED since {}{} (OCSP responder {}): \
                 replace it; its staple {staple} is no longer served",
                job.chain.display(),
                http_date(at),
                reason
                    .as_deref()
                    .map_or_else(String::new, |r| format!(", reason {r}")),
                chain.url
            );
            Event::Revoked {
                job: job.clone(),
                since: at,
                reason,
            }
        }
        _ => {
            log::info!(
                "OCSP staple {staple} stored: good from {} until {}, next refresh at {}",
                http_date(checked.this_update),
                checked.next_update.map_or("?".into(), http_date),
                http_date(refresh_at)
            );
            Event::Stored {
                job: job.clone(),
                this_update: checked.this_update,
                next_update: checked.next_update,
                refresh_at,
            }
        }
    }
}

/// The middle of a validity window (its end if it has none).
fn half_life(this_update: i64, next_update: Option<i64>) -> i64 {
    next_update.map_or(i64::MAX, |n| {
        this_update.saturating_add(n.saturating_sub(this_update) / 2)
    })
}

fn failed(job: &StapleJob, state: &mut State, settings: &Settings, reason: String) -> Event {
    state.failures = state.failures.saturating_add(1);
    let retry_in = backoff(settings, state.failures);
    state.due = Instant::now() + retry_in;
    log::warn!(
        "OCSP staple {} not refreshed (attempt {}), retrying in {}s: {reason}",
        job.staple.display(),
        state.failures,
        retry_in.as_secs_f32()
    );
    Event::Failed {
        job: job.clone(),
        reason,
        failures: state.failures,
        retry_in,
    }
}

/// `backoff_min` doubled per failure after the first, at most `backoff_max`.
fn backoff(settings: &Settings, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(30);
    settings
        .backoff_min
        .checked_mul(1 << doublings)
        .unwrap_or(settings.backoff_max)
        .min(settings.backoff_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let s = Settings {
            backoff_min: Duration::from_secs(2),
            backoff_max: Duration::from_secs(60),
            ..Settings::default()
        };
        let got: Vec<u64> = (1..=7).map(|n| backoff(&s, n).as_secs()).collect();
        assert_eq!(got, [2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(&s, u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn instants_of_past_and_far_times_do_not_panic() {
        let before = Instant::now();
        assert!(instant_at(0) >= before);
        let _ = instant_at(i64::MAX);
        assert_eq!(half_life(100, Some(200)), 150);
        assert_eq!(half_life(100, None), i64::MAX);
    }
}
