//! The master's event loop: signals, the control socket, the admin API and
//! the workers' channels in one single-threaded mio loop (so `fork` is
//! always safe), and one table of timers.
//!
//! The parts, each in its file:
//!
//! - `transaction`: the reload transaction, a pure state machine (events
//!   in, effects out); `steps` carries out its effects.
//! - `commands`: what anyone may ask of the master (signals, `baton -s`,
//!   the admin API), parsed into one `Command` and decided in one place.
//! - `process_table`: children, generations, fork, reap, crash backoff.
//! - `workers`: what the workers say and how they end.
//! - `lifecycle`: the stop (one rule for a second one) and every exit.
//! - `resources`: what the master holds and releases on every exit path.
//! - `timers`: one deadline per owner.
//! - `reopen`, `retired`, `tls_push`, `status`, `config_io`, `endpoints`.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use baton_shared::config::{Config, Source};
use baton_shared::deadline;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signalfd::SignalFd;

use crate::daemon::Readiness;
use crate::reload::{Outcome, Waiter};
use crate::signals;

mod adopt;
mod certs_challenges;
mod certs_helper;
mod commands;
mod config_io;
mod endpoints;
mod health;
mod inetd;
mod lifecycle;
mod process_table;
mod reopen;
mod resources;
mod retired;
mod status;
mod steps;
mod timers;
mod tls_push;
mod transaction;
mod upgrade;
mod workers;

pub use adopt::resume;
pub use config_io::{Overrides, load_config, load_config_text};
pub use resources::Resources;

use endpoints::Endpoints;
use lifecycle::Lifecycle;
use process_table::ProcessTable;
use reopen::Reopen;
use steps::Staged;
use timers::{Owner, Timers};
use tls_push::TlsPush;
use transaction::{Event, Transaction};

const SIGNALS: Token = Token(0);
const CONTROL: Token = Token(1);
const ADMIN: Token = Token(2);
const FIRST_DYNAMIC: usize = 3;

/// How reloads have gone, for status and metrics.
#[derive(Default)]
struct History {
    last: Option<(SystemTime, Outcome)>,
    ok: u64,
    failed: u64,
}

pub struct Master {
    poll: Poll,
    signals: SignalFd,
    res: Resources,
    endpoints: Endpoints,
    procs: ProcessTable,
    tx: Transaction<Waiter>,
    /// What the reload under way prepared, until it commits or rolls back.
    staged: Option<Staged>,
    timers: Timers,
    lifecycle: Lifecycle,
    reopen: Option<Reopen>,
    tls: TlsPush,
    history: History,
    next_token: usize,
    /// The text of the config the serving generation runs (`GET /config`).
    running_text: String,
    source: Source,
    overrides: Overrides,
    readiness: Option<Readiness>,
    started: Instant,
    /// Set when the first generation could not start: why.
    startup_failure: Option<String>,
    /// inetd mode's exit when idle, if configured.
    idle: Option<inetd::IdleExit>,
    /// A binary upgrade under way (`upgrade`).
    upgrade: Option<upgrade::Pending>,
    /// Active health checks of upstream servers (`crate::health`).
    health: crate::health::Checker,
    /// The certificate helper (ACME), when a site needs it.
    helper: certs_helper::Helper,
}

/// What `Master::new` needs, prepared by `lib.rs`.
pub struct Setup {
    pub config: Config,
    pub config_text: String,
    pub access_logs: Vec<std::os::fd::OwnedFd>,
    pub overrides: Overrides,
    pub resources: Resources,
    pub readiness: Option<Readiness>,
}

impl Master {
    /// Sets up the loop and forks the first generation. On error the
    /// resources are released (they are dropped with `setup`).
    pub fn new(setup: Setup) -> io::Result<Master> {
        let poll = Poll::new()?;
        let signals = signals::open().map_err(io::Error::from)?;
        poll.registry().register(
            &mut SourceFd(&signals.as_raw_fd()),
            SIGNALS,
            Interest::READABLE,
        )?;
        let mut res = setup.resources;
        if let Some((control, _)) = res.control.as_mut() {
            poll.registry()
                .register(control, CONTROL, Interest::READABLE)?;
        }
        if let Some((listener, _)) = res.admin.as_mut() {
            poll.registry()
                .register(listener, ADMIN, Interest::READABLE)?;
        }
        let config = Arc::new(setup.config);
        let now = Instant::now();
        let mut master = Master {
            poll,
            signals,
            res,
            endpoints: Endpoints::default(),
            procs: ProcessTable::default(),
            tx: Transaction::idle(),
            staged: None,
            timers: Timers::default(),
            lifecycle: Lifecycle::Starting,
            reopen: None,
            tls: TlsPush::new(&config, now),
            history: History::default(),
            next_token: FIRST_DYNAMIC,
            running_text: String::new(),
            source: config.source.clone(),
            overrides: setup.overrides,
            readiness: setup.readiness,
            started: now,
            startup_failure: None,
            idle: None,
            upgrade: None,
            health: crate::health::Checker::default(),
            helper: certs_helper::Helper::default(),
        };
        // Signals that arrived between blocking them and the signalfd are
        // pending and are read on the first loop turn.
        let number = master
            .procs
            .create(Arc::clone(&config), setup.access_logs, Vec::new());
        let workers = config.workers;
        let ready_by = deadline::after(now, config.worker_ready_timeout);
        master.tx = Transaction::first(number, workers, ready_by, setup.config_text, now);
        if let Err(e) = master.spawn_generation(number) {
            master.startup_failure = Some(format!("cannot fork the first workers: {e}"));
        }
        Ok(master)
    }

    /// Runs until the master should exit; returns its exit status.
    pub fn run(mut self) -> i32 {
        let mut events = Events::with_capacity(256);
        loop {
            if let Some(reason) = self.startup_failure.take() {
                return self.exit_after_failed_start(&reason);
            }
            if self.lifecycle.stopping() && self.procs.children.is_empty() {
                return self.exit_stopped();
            }
            self.sync_timers();
            let timeout = self
                .timers
                .next()
                .map(|d| d.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("master event loop failed: {e}; stopping fast");
                self.stop(true);
                continue;
            }
            for event in events.iter() {
                self.dispatch(event.token());
            }
            self.on_timers(Instant::now());
        }
    }

    fn dispatch(&mut self, token: Token) {
        match token {
            SIGNALS => {
                for order in signals::drain(&mut self.signals) {
                    self.on_signal(order);
                }
            }
            CONTROL => self.accept_control(),
            ADMIN => self.accept_admin(),
            token if self.endpoints.owns(token) => self.on_endpoint_readable(token),
            token if self.health.owns(token) => self.on_health_event(token),
            token if self.helper.owns(token) => self.on_helper_channel(),
            token => {
                if let Some(pid) = self.procs.pid_of(token) {
                    self.on_channel(pid);
                }
            }
        }
    }

    fn token(&mut self) -> Token {
        let t = Token(self.next_token);
        self.next_token += 1;
        t
    }

    /// Gives the transaction one event and carries out what it says.
    fn feed(&mut self, event: Event<Waiter>) {
        let effects = self.tx.on(event, Instant::now());
        for effect in effects {
            self.carry_out(effect);
        }
    }

    /// The derived deadlines, from the state of their owners.
    fn sync_timers(&mut self) {
        self.sync_health(Instant::now());
        self.timers.set(Owner::Health, self.health.deadline());
        self.timers.set(Owner::Transaction, self.tx.deadline());
        self.timers
            .set(Owner::CertWatch, self.tls.watch.as_ref().map(|w| w.due()));
        self.timers
            .set(Owner::Linger, self.res.listeners.next_linger_end());
        self.timers
            .set(Owner::Reopen, self.reopen.as_ref().map(|r| r.deadline));
        self.timers
            .set(Owner::TicketRotation, Some(self.tls.next_rotation));
        self.timers.set(Owner::Helper, self.helper.restart_at);
        self.timers.set(
            Owner::Upgrade,
            self.upgrade.as_ref().and_then(|u| u.deadline()),
        );
    }

    /// Whatever deadline has come, each to its owner.
    fn on_timers(&mut self, now: Instant) {
        self.sync_timers();
        for owner in self.timers.take_due(now) {
            match owner {
                Owner::Transaction => self.feed(Event::Tick),
                Owner::Drain(n) => self.grace_over(n),
                Owner::Respawn(n, slot) => self.respawn(n, slot),
                Owner::Stop => self.stop_deadline(),
                Owner::Reopen => self.reopen_timed_out(),
                Owner::CertWatch => self.check_certificates(),
                Owner::TicketRotation => self.rotate_ticket_keys(),
                Owner::Linger => self.end_lingers(now),
                Owner::IdleExit => self.check_idle(),
                Owner::Upgrade => self.preflight_timed_out(),
                Owner::Health => self.health_tick(now),
                Owner::Helper => self.restart_helper(),
            }
        }
    }
}
