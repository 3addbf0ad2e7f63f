//! What goes into the reload transaction (events) and what comes out
//! (effects), and the request it carries out.

use std::time::{Duration, Instant};

use nix::unistd::Pid;

use crate::reload::Outcome;

/// How long the reload waits for old workers to stop accepting (they do it
/// as soon as they read `Drain`; this only bounds a stuck one).
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(2);

/// One reload to run, and who waits for its outcome (`W`: a control or
/// admin connection in the master, anything in the tests).
#[derive(Debug)]
pub struct Request<W> {
    pub waiters: Vec<W>,
    /// Config text sent with `POST /config`: validated, run, and written to
    /// the config file once it runs. `None`: re-read the config file.
    pub text: Option<String>,
    /// `text` came from a caller who is not root: it may not change the
    /// settings only root may (checked again when the reload starts).
    pub restricted: bool,
}

/// What happened, as the transaction needs to know it.
#[derive(Debug)]
pub enum Event<W> {
    /// A signal, `baton -s reload` or the admin API asked for a reload.
    ReloadRequested(Request<W>),
    /// `Effect::Prepare` succeeded: the generation is forked.
    Prepared {
        generation: u64,
        /// How many workers must say `Ready`.
        workers: usize,
        ready_deadline: Instant,
        /// The text of the config it runs.
        text: String,
    },
    /// `Effect::Prepare` failed; it changed nothing.
    PrepareFailed(Outcome),
    WorkerReady {
        pid: Pid,
        generation: u64,
    },
    /// A worker said it cannot serve (`Failed`).
    WorkerFailed {
        pid: Pid,
        generation: u64,
        reason: String,
    },
    WorkerExited {
        pid: Pid,
        generation: u64,
        how: String,
    },
    /// An old worker confirmed it no longer accepts (`Draining`).
    StoppedAccepting {
        pid: Pid,
    },
    /// `Effect::Commit` ran: these old workers were told to drain.
    /// `warning`: writing the config a `POST /config` sent failed.
    Committed {
        draining: Vec<Pid>,
        warning: Option<String>,
    },
    /// Time passed; whatever deadline is due at `now` fires.
    Tick,
    /// A stop began: the transaction ends now, one way or the other.
    StopRequested,
}

/// What the loop must do, in order.
#[derive(Debug)]
pub enum Effect<W> {
    /// Tell systemd a reload began (`RELOADING=1`).
    NotifyReloading,
    /// Load the config (`text`, or the file), prepare the listeners and
    /// fork the generation; answer with `Prepared` or `PrepareFailed`.
    Prepare {
        text: Option<String>,
        restricted: bool,
    },
    /// The generation is ready: make it the serving one (commit the
    /// listener plan, switch logs, write the config if `persist`, and for
    /// the first one the pidfile and readiness), tell every older serving
    /// generation to drain; answer with `Committed`.
    Commit {
        generation: u64,
        first: bool,
        text: String,
        persist: bool,
    },
    /// The generation failed: abort its listener plan and let whatever it
    /// already accepted finish (drain, killed only after `grace`).
    RollBack { generation: u64, reason: String },
    /// The reload ended: count it, log it, tell the waiters.
    Finished { waiters: Vec<W>, outcome: Outcome },
    /// These requests will not run (the server is stopping).
    Refuse { waiters: Vec<W>, why: &'static str },
    /// The first generation failed: the server cannot start.
    StartupFailed { reason: String },
    /// Something worth a warning in the log.
    Warn(String),
}
