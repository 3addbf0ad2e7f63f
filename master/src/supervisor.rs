//! The master's event loop: signals, the control socket and the workers'
//! channels in one single-threaded mio loop (so `fork` is always safe), and
//! the timers of the reload transaction, draining generations, respawns and
//! stop.
//!
//! Every reload, whatever asked for it (signal, `baton -s reload`, later the
//! admin API), goes through `request_reload`, runs as one transaction at a
//! time, and ends in one `Outcome` that is logged, recorded for status and
//! sent to whoever is waiting.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use baton_shared::channel::{FileCacheStats, ToMaster, ToWorker};
use baton_shared::config::{self, Config, ConfigErrors, Source};
use baton_shared::deadline;
use mio::net::UnixListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{Signal, kill};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::control::{self, status};
use crate::daemon::Readiness;
use crate::generation::{CRASH_LOOP, Child, Generation, Phase};
use crate::listeners::{ListenerSet, Prepared};
use crate::pidfile::{self, InstanceLock};
use crate::reload::{Outcome, Pending, Waiter};
use crate::{admin, certwatch, reload, report};
use crate::{notify, signals, spawn};

mod reopen;
mod retired;

use reopen::Reopen;

const SIGNALS: Token = Token(0);
const CONTROL: Token = Token(1);
const ADMIN: Token = Token(2);
const FIRST_DYNAMIC: usize = 3;

/// Settings given on the command line; they win over the config file, on
/// start and on every reload.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub pid_file: Option<PathBuf>,
    pub grace: Option<Duration>,
}

impl Overrides {
    pub fn apply(&self, config: &mut Config) {
        if let Some(p) = &self.pid_file {
            config.pid_file = p.clone();
        }
        if let Some(g) = self.grace {
            config.grace = g;
        }
    }
}

/// Reads the config from its source and applies the overrides: the one
/// loading path for start, `-t` and every reload.
pub fn load_config(source: &Source, overrides: &Overrides) -> Result<Config, ConfigErrors> {
    load_config_text(source, overrides, None).map(|(c, _)| c)
}

/// `load_config`, also returning the config's text; with `text`, that text
/// is validated as if it were the config file (`POST /config`).
pub fn load_config_text(
    source: &Source,
    overrides: &Overrides,
    text: Option<&str>,
) -> Result<(Config, String), ConfigErrors> {
    let (mut config, text) = match (source, text) {
        (Source::File(path), None) => config::load_file_keeping_text(path)?,
        (Source::File(path), Some(t)) => (config::load_text_as_file(path, t)?, t.to_string()),
        (Source::Embedded, _) => (config::load_embedded()?, config::EMBEDDED.to_string()),
    };
    overrides.apply(&mut config);
    // Certificates and keys: read here, by the master, so `-t`, start and
    // reload refuse the same files with the same located errors.
    let material = baton_shared::tls::load(&config)?;
    config.tls_loaded = config::LoadedTls(Arc::new(material));
    Ok((config, text))
}

/// A reload under way: the generation being started and who waits for it.
struct Reload {
    generation: u64,
    started: Instant,
    waiters: Vec<Waiter>,
    /// What it did to the listeners (bound, brought back), undone if it
    /// fails.
    prepared: Prepared,
    /// The text of the config it runs.
    text: String,
    /// It came from `POST /config`: write `text` to the config file once
    /// it runs.
    persist: bool,
    /// Once committed: the old workers that have not yet said they stopped
    /// accepting. The reload is reported done when this empties, so "reload
    /// returned" means "every new connection reaches the new generation".
    handover: Option<Handover>,
}

struct Handover {
    waiting: Vec<Pid>,
    deadline: Instant,
}

/// How long the reload waits for old workers to stop accepting (they do
/// it as soon as they read `Drain`; this only bounds a stuck one).
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    /// The first generation is starting; nothing is promised yet.
    Starting,
    Running,
    Stopping {
        deadline: Instant,
        fast: bool,
    },
}

pub struct Master {
    poll: Poll,
    signals: SignalFd,
    control: Option<(UnixListener, PathBuf)>,
    control_conns: HashMap<Token, control::Conn>,
    /// `-s stop`/`-s quit` clients, answered by our exit (EOF).
    stop_waiters: Vec<control::Conn>,
    listeners: ListenerSet,
    children: HashMap<Pid, Child>,
    tokens: HashMap<Token, Pid>,
    next_token: usize,
    generations: BTreeMap<u64, Generation>,
    /// The serving generation (0 before the first is ready).
    current: u64,
    next_generation: u64,
    reload: Option<Reload>,
    /// Reload requests that came during a reload, run after it.
    pending: Pending,
    /// The admin API, if configured: its listener, its config, open requests.
    admin: Option<(admin::Listener, config::Admin)>,
    admin_conns: HashMap<Token, admin::Conn>,
    /// The text of the config the serving generation runs (`GET /config`).
    running_text: String,
    /// Requests served by workers that have exited, for counters that never
    /// go down.
    requests_by_gone_workers: u64,
    responses_by_gone_workers: [u64; 5],
    bytes_by_gone_workers: u64,
    /// File cache hits and misses of workers that have exited.
    file_cache_by_gone_workers: (u64, u64),
    reopen: Option<Reopen>,
    last_reload: Option<(SystemTime, Outcome)>,
    reloads_ok: u64,
    reloads_failed: u64,
    restarts: u64,
    lifecycle: Lifecycle,
    source: Source,
    overrides: Overrides,
    pid_file: PathBuf,
    _lock: InstanceLock,
    readiness: Option<Readiness>,
    started: Instant,
    /// Set when the first generation could not start: the exit status.
    startup_failure: Option<String>,
    /// Watches the serving generation's certificate files.
    cert_watch: Option<certwatch::Watch>,
    /// Session ticket keys, newest first; shared by every worker of every
    /// generation, so resumption works across workers and reloads.
    ticket_keys: Vec<[u8; 32]>,
    next_ticket_rotation: Instant,
}

/// What `Master::start` needs, prepared by `lib.rs`.
pub struct Setup {
    pub config: Config,
    pub config_text: String,
    pub access_logs: Vec<std::os::fd::OwnedFd>,
    pub admin: Option<(admin::Listener, config::Admin)>,
    pub overrides: Overrides,
    pub lock: InstanceLock,
    pub listeners: ListenerSet,
    pub control: (UnixListener, PathBuf),
    pub readiness: Option<Readiness>,
}

impl Master {
    pub fn new(setup: Setup) -> io::Result<Master> {
        let poll = Poll::new()?;
        let mut signals = signals::open().map_err(io::Error::from)?;
        poll.registry().register(
            &mut SourceFd(&signals.as_raw_fd()),
            SIGNALS,
            Interest::READABLE,
        )?;
        let (mut control, control_path) = setup.control;
        poll.registry()
            .register(&mut control, CONTROL, Interest::READABLE)?;
        let mut admin = setup.admin;
        if let Some((listener, _)) = admin.as_mut() {
            poll.registry()
                .register(listener, ADMIN, Interest::READABLE)?;
        }
        // Signals that arrived between blocking them and the signalfd are
        // pending and will be read on the first loop turn.
        let _ = &mut signals;
        Ok(Master {
            poll,
            signals,
            control: Some((control, control_path)),
            control_conns: HashMap::new(),
            stop_waiters: Vec::new(),
            listeners: setup.listeners,
            children: HashMap::new(),
            tokens: HashMap::new(),
            next_token: FIRST_DYNAMIC,
            generations: BTreeMap::new(),
            current: 0,
            next_generation: 1,
            reload: None,
            pending: Pending::default(),
            admin,
            admin_conns: HashMap::new(),
            running_text: String::new(),
            requests_by_gone_workers: 0,
            responses_by_gone_workers: [0; 5],
            bytes_by_gone_workers: 0,
            file_cache_by_gone_workers: (0, 0),
            reopen: None,
            last_reload: None,
            reloads_ok: 0,
            reloads_failed: 0,
            restarts: 0,
            lifecycle: Lifecycle::Starting,
            source: setup.config.source.clone(),
            overrides: setup.overrides,
            pid_file: setup.config.pid_file.clone(),
            _lock: setup.lock,
            readiness: setup.readiness,
            started: Instant::now(),
            startup_failure: None,
            cert_watch: None,
            ticket_keys: vec![random_key()],
            next_ticket_rotation: deadline::from_now(setup.config.tls.ticket_rotation),
        }
        .with_first_generation(setup.config, setup.config_text, setup.access_logs))
    }

    fn with_first_generation(
        mut self,
        config: Config,
        text: String,
        access_logs: Vec<std::os::fd::OwnedFd>,
    ) -> Master {
        let config = Arc::new(config);
        let number = self.new_generation(&config, access_logs, Vec::new());
        self.reload = Some(Reload {
            generation: number,
            started: Instant::now(),
            waiters: Vec::new(),
            prepared: Prepared::default(),
            text,
            persist: false,
            handover: None,
        });
        self
    }

    /// Runs until the master should exit; returns its exit status.
    pub fn run(mut self) -> i32 {
        let mut events = Events::with_capacity(256);
        loop {
            if let Some(reason) = self.startup_failure.take() {
                return self.exit_after_failed_start(&reason);
            }
            if matches!(self.lifecycle, Lifecycle::Stopping { .. }) && self.children.is_empty() {
                return self.exit_stopped();
            }
            let now = Instant::now();
            let timeout = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("master event loop failed: {e}; stopping fast");
                self.begin_stop(true);
                continue;
            }
            for event in events.iter() {
                match event.token() {
                    SIGNALS => {
                        for order in signals::drain(&mut self.signals) {
                            self.on_order(order);
                        }
                    }
                    CONTROL => self.accept_control(),
                    ADMIN => self.accept_admin(),
                    token if self.admin_conns.contains_key(&token) => self.on_admin_readable(token),
                    token if self.control_conns.contains_key(&token) => {
                        self.on_control_readable(token)
                    }
                    token => {
                        if let Some(&pid) = self.tokens.get(&token) {
                            self.on_channel(pid);
                        }
                    }
                }
            }
            self.on_timers(Instant::now());
        }
    }

    // ----- orders -------------------------------------------------------

    fn on_order(&mut self, order: signals::Order) {
        match order {
            signals::Order::Reload => self.request_reload(reload::Request {
                waiters: Vec::new(),
                text: None,
                restricted: false,
            }),
            signals::Order::GracefulStop => match self.lifecycle {
                Lifecycle::Stopping { .. } => self.stop_now("second stop signal"),
                _ => self.begin_stop(false),
            },
            signals::Order::FastStop => match self.lifecycle {
                Lifecycle::Stopping { fast: true, .. } => self.stop_now("second fast stop"),
                _ => self.begin_stop(true),
            },
            signals::Order::ReapChildren => self.reap(),
            signals::Order::Ignored(sig) => {
                log::warn!("{sig} (binary upgrade) is not supported yet; ignored")
            }
        }
    }

    // ----- reload transaction -------------------------------------------

    /// The one entry point for every reload request.
    fn request_reload(&mut self, request: reload::Request) {
        if let Lifecycle::Stopping { .. } = self.lifecycle {
            for w in request.waiters {
                w.refuse("reload refused: the server is stopping");
            }
            return;
        }
        if self.reload.is_some() {
            self.pending.push(request);
            log::info!("reload requested while one is running: queued");
            return;
        }
        self.start_reload(request);
    }

    fn start_reload(&mut self, request: reload::Request) {
        let started = Instant::now();
        let waiters = request.waiters;
        let persist = request.text.is_some();
        notify::reloading();
        if persist {
            log::info!(
                "reloading: a config sent to the admin API for {}",
                self.source
            );
        } else {
            log::info!("reloading: reading {}", self.source);
        }
        let (mut config, text) =
            match load_config_text(&self.source, &self.overrides, request.text.as_deref()) {
                Ok(c) => c,
                Err(e) => return self.finish_reload(Outcome::Invalid(e), waiters),
            };
        if request.restricted
            && let Err(outcome) = admin::guard::on_start(self.admin_running(), &config)
        {
            return self.finish_reload(outcome, waiters);
        }
        if config.pid_file != self.pid_file {
            log::warn!(
                "pid_file changed to {} in the config; a reload keeps {} (restart to change it)",
                config.pid_file.display(),
                self.pid_file.display()
            );
            config.pid_file = self.pid_file.clone();
        }
        if let Some(path) = &config.error_log
            && let Err(e) = crate::logfiles::redirect_stderr(path, &config)
        {
            log::warn!("cannot reopen error log {}: {e}", path.display());
        }
        baton_shared::logging::set_level(&config.log_level);
        let prepared = match self.listeners.prepare(&config) {
            Ok(a) => a,
            Err(b) => {
                let msg = config
                    .error_at(
                        b.listen.pos,
                        format!("cannot bind {}: {}", b.listen.addr, b.error),
                    )
                    .to_string();
                return self.finish_reload(Outcome::Failed(msg), waiters);
            }
        };
        for addr in &prepared.added {
            log::info!("listening on {addr}");
        }
        let access_logs = match crate::logfiles::open_access_logs(&config) {
            Ok(fds) => fds,
            Err(e) => {
                self.listeners.undo(&prepared);
                return self.finish_reload(Outcome::Failed(e), waiters);
            }
        };
        let config = Arc::new(config);
        let took_over = self.listeners.covered(&config);
        let generation = self.new_generation(&config, access_logs, took_over);
        self.reload = Some(Reload {
            generation,
            started,
            waiters,
            prepared,
            text,
            persist,
            handover: None,
        });
    }

    /// Creates a generation and forks its workers. A fork failure fails the
    /// generation (through the usual path, on the next loop turn).
    /// `took_over`: the retired sockets it serves too (see `retired`).
    fn new_generation(
        &mut self,
        config: &Arc<Config>,
        access_logs: Vec<std::os::fd::OwnedFd>,
        took_over: Vec<(config::ListenAddr, config::ListenAddr)>,
    ) -> u64 {
        let number = self.next_generation;
        self.next_generation += 1;
        let deadline = deadline::from_now(config.worker_ready_timeout);
        let mut generation = Generation::new(number, Arc::clone(config), deadline);
        generation.access_logs = access_logs;
        generation.took_over = took_over;
        let slots = generation.slots.len();
        self.generations.insert(number, generation);
        log::info!("starting generation {number} with {slots} workers");
        for slot in 0..slots {
            if let Err(e) = self.spawn_worker(number, slot) {
                log::error!("cannot fork a worker of generation {number}: {e}");
                if let Some(g) = self.generations.get_mut(&number) {
                    g.deadline = Some(Instant::now());
                }
                break;
            }
        }
        number
    }

    fn spawn_worker(&mut self, generation: u64, slot: usize) -> io::Result<()> {
        let Some(g) = self.generations.get(&generation) else {
            return Ok(());
        };
        let own = g.addrs.iter().map(|a| (a, a, false));
        let taken = g.took_over.iter().map(|(a, by)| (a, by, true));
        let mut fds = Vec::with_capacity(g.addrs.len() + g.took_over.len());
        let mut listeners = Vec::with_capacity(fds.capacity());
        for (addr, serves_as, taken_over) in own.chain(taken) {
            match self.listeners.get(addr) {
                Some(b) => fds.push(spawn::ListenerFd {
                    fd: b.fd(),
                    serves_as: serves_as.clone(),
                    taken_over,
                }),
                None => {
                    return Err(io::Error::other(format!("listener {addr} is not bound")));
                }
            }
            listeners.push(addr.clone());
        }
        let logs: Vec<i32> = g.access_logs.iter().map(|f| f.as_raw_fd()).collect();
        let tls = spawn::TlsHandoff {
            material: Arc::clone(&g.tls),
            ticket_keys: self.ticket_keys.clone(),
        };
        let spawned = spawn::spawn(&g.config, generation, &fds, &logs, &tls)?;
        let token = Token(self.next_token);
        self.next_token += 1;
        self.poll.registry().register(
            &mut SourceFd(&spawned.channel.stream().as_raw_fd()),
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        log::info!(
            "forked worker {} (generation {generation}, slot {slot})",
            spawned.pid
        );
        self.tokens.insert(token, spawned.pid);
        self.children.insert(
            spawned.pid,
            Child {
                pid: spawned.pid,
                generation,
                slot,
                listeners,
                token,
                channel: Some(spawned.channel),
                ready: false,
                draining: false,
                started: Instant::now(),
                connections: 0,
                requests: 0,
                responses: [0; 5],
                bytes: 0,
                file_cache: FileCacheStats::default(),
                upstreams: Vec::new(),
            },
        );
        Ok(())
    }

    /// Every worker of the starting generation is ready: it becomes the
    /// serving one and every older one drains.
    fn commit(&mut self, number: u64) {
        let Some(g) = self.generations.get_mut(&number) else {
            return;
        };
        g.phase = Phase::Serving;
        g.deadline = None;
        let grace = g.config.grace;
        let keep = g.addrs.clone();
        let config = Arc::clone(&g.config);
        self.cert_watch = certwatch::Watch::new(&g.tls, g.config.tls.watch_interval);
        let previous = std::mem::replace(&mut self.current, number);
        // Steer new connections away from removed or moved addresses before
        // the old generation sweeps their queues.
        self.retire_listeners(&keep, previous);
        let older: Vec<u64> = self
            .generations
            .iter()
            .filter(|(n, g)| **n != number && g.phase == Phase::Serving)
            .map(|(n, _)| *n)
            .collect();
        for old in &older {
            self.drain_generation(*old, grace);
        }
        let mut reload = self.reload.take();
        if let Some(r) = &reload {
            self.running_text = r.text.clone();
        }
        self.update_admin(&config);
        match self.lifecycle {
            Lifecycle::Starting => {
                self.lifecycle = Lifecycle::Running;
                let pid = std::process::id();
                if let Err(e) = pidfile::write(&self.pid_file, pid) {
                    // Everything else is up; a missing pidfile must not be
                    // silent, but it is not worth dropping the service for.
                    log::error!("cannot write pidfile {}: {e}", self.pid_file.display());
                }
                if let Some(r) = self.readiness.take() {
                    r.ready();
                }
                log::info!("ready: generation {number} serving, master pid {pid}");
                notify::ready(number);
                // A reload asked for while the server was starting.
                if let Some(next) = self.pending.pop() {
                    self.start_reload(next);
                }
            }
            _ => {
                if let Some(r) = reload.as_mut() {
                    // Done once the old workers have stopped accepting.
                    let waiting = self
                        .children
                        .values()
                        .filter(|c| older.contains(&c.generation) && c.channel.is_some())
                        .map(|c| c.pid)
                        .collect();
                    r.handover = Some(Handover {
                        waiting,
                        deadline: deadline::from_now(HANDOVER_TIMEOUT),
                    });
                }
                self.reload = reload;
                self.handover_progress(None, false);
            }
        }
    }

    /// An old worker stopped accepting (`Draining`) or ended (`pid`), or
    /// the wait timed out (`force`): once no old worker accepts, the reload
    /// is done.
    fn handover_progress(&mut self, pid: Option<Pid>, force: bool) {
        let Some(h) = self.reload.as_mut().and_then(|r| r.handover.as_mut()) else {
            return;
        };
        if let Some(p) = pid {
            h.waiting.retain(|w| *w != p);
        }
        if !(force || h.waiting.is_empty()) {
            return;
        }
        if force {
            log::warn!(
                "reload: workers {:?} of the old generation did not confirm they stopped accepting",
                h.waiting
            );
        }
        let Some(r) = self.reload.take() else {
            return;
        };
        let warning = if r.persist {
            self.persist_config(&r.text)
        } else {
            None
        };
        let outcome = Outcome::Ok {
            generation: r.generation,
            took: r.started.elapsed(),
            warning,
        };
        self.finish_reload(outcome, r.waiters);
    }

    fn drain_generation(&mut self, number: u64, grace: Duration) {
        let Some(g) = self.generations.get_mut(&number) else {
            return;
        };
        g.phase = Phase::Draining;
        g.deadline = Some(deadline::from_now(grace));
        for s in &mut g.slots {
            s.respawn_at = None;
        }
        log::info!(
            "generation {number} draining (grace {} s)",
            grace.as_secs_f64()
        );
        let held: Vec<(Pid, Vec<u32>)> = self
            .children
            .values()
            .filter(|c| c.generation == number)
            .map(|c| (c.pid, self.held_by(c)))
            .collect();
        for (pid, held) in held {
            let Some(child) = self.children.get_mut(&pid) else {
                continue;
            };
            if !held.is_empty() {
                send(child, &ToWorker::HoldListeners(held));
            }
            send(child, &ToWorker::Drain);
        }
        self.forget_generation_if_done(number);
    }

    /// The starting generation failed: kill it, keep the old one serving.
    fn fail_generation(&mut self, number: u64, reason: String) {
        let Some(g) = self.generations.remove(&number) else {
            return;
        };
        for child in self.children.values_mut() {
            if child.generation == number {
                kill_worker(child.pid);
            }
        }
        let _ = g;
        let reload = match &self.reload {
            Some(r) if r.generation == number => self.reload.take(),
            _ => None,
        };
        if let Some(r) = &reload {
            self.listeners.undo(&r.prepared);
        }
        let reason = format!("generation {number} failed to start: {reason}");
        match self.lifecycle {
            Lifecycle::Starting => self.startup_failure = Some(reason),
            _ => {
                let waiters = reload.map(|r| r.waiters).unwrap_or_default();
                self.finish_reload(Outcome::Failed(reason), waiters);
            }
        }
    }

    fn finish_reload(&mut self, outcome: Outcome, waiters: Vec<Waiter>) {
        match &outcome {
            Outcome::Ok { .. } => {
                self.reloads_ok += 1;
                log::info!("reload {}", outcome.describe());
            }
            _ => {
                self.reloads_failed += 1;
                log::error!(
                    "reload {}; generation {} keeps serving",
                    outcome.describe(),
                    self.current
                );
            }
        }
        for w in waiters {
            w.tell(&outcome);
        }
        self.last_reload = Some((SystemTime::now(), outcome));
        notify::ready(self.current);
        if !matches!(self.lifecycle, Lifecycle::Stopping { .. })
            && let Some(next) = self.pending.pop()
        {
            self.start_reload(next);
        }
    }

    /// Writes a config that `POST /config` sent, and that now runs, to the
    /// config file: the old file is kept as `FILE.bak`, the new one written
    /// to a temp file and renamed over it, so the file is never half
    /// written. Returns a warning if that failed.
    fn persist_config(&self, text: &str) -> Option<String> {
        let Source::File(path) = &self.source else {
            return Some("the server runs the embedded config: nothing was written".into());
        };
        let result = (|| -> io::Result<()> {
            let mut bak = path.as_os_str().to_owned();
            bak.push(".bak");
            if path.exists() {
                std::fs::copy(path, PathBuf::from(bak))?;
            }
            let mut tmp = path.as_os_str().to_owned();
            tmp.push(format!(".tmp{}", std::process::id()));
            let tmp = PathBuf::from(tmp);
            std::fs::write(&tmp, text)?;
            if let Ok(meta) = std::fs::metadata(path) {
                let _ = std::fs::set_permissions(&tmp, meta.permissions());
            }
            std::fs::rename(&tmp, path)
        })();
        match result {
            Ok(()) => {
                log::info!(
                    "wrote the new config to {} (the previous one is kept as .bak)",
                    path.display()
                );
                None
            }
            Err(e) => {
                let w = format!(
                    "cannot write {}: {e}; the running config differs from the file",
                    path.display()
                );
                log::error!("{w}");
                Some(w)
            }
        }
    }

    /// Follows a change of `[admin]` in a reloaded config. The listener is
    /// kept when only the token (or nothing) changed: a new token applies
    /// from the next request on.
    fn update_admin(&mut self, config: &Config) {
        match (self.admin.as_mut(), &config.admin) {
            (None, None) => return,
            (Some((_, old)), Some(new))
                if (&old.listen, old.mode, old.owner) == (&new.listen, new.mode, new.owner) =>
            {
                if old.token != new.token {
                    log::info!("admin API: token reloaded from {:?}", new.token_file);
                }
                *old = new.clone();
                return;
            }
            _ => {}
        }
        if let Some((mut old, _)) = self.admin.take() {
            let _ = self.poll.registry().deregister(&mut old);
            old.remove_file();
            log::info!("admin API closed");
        }
        if let Some(new) = &config.admin {
            match admin::Listener::bind(new) {
                Ok(mut l) => {
                    if self
                        .poll
                        .registry()
                        .register(&mut l, ADMIN, Interest::READABLE)
                        .is_ok()
                    {
                        log::info!("admin API on {}", new.listen);
                        self.admin = Some((l, new.clone()));
                    }
                }
                Err(e) => log::error!("cannot serve the admin API on {}: {e}", new.listen),
            }
        }
    }

    // ----- children -----------------------------------------------------

    fn on_channel(&mut self, pid: Pid) {
        let Some(child) = self.children.get_mut(&pid) else {
            return;
        };
        let Some(channel) = child.channel.as_mut() else {
            return;
        };
        // A large message (certificates) may still be queued.
        if channel.has_pending_output()
            && let Err(e) = channel.flush()
        {
            log::debug!("cannot send to worker {pid}: {e}");
        }
        let result = channel.receive::<ToMaster>();
        let eof = channel.eof();
        let failed = result.is_err();
        let mut became_ready = false;
        let mut failure = None;
        let mut reopened = None;
        let mut stopped_accepting = false;
        match result {
            Ok(messages) => {
                for m in messages {
                    match m {
                        ToMaster::Ready => {
                            if !child.ready {
                                child.ready = true;
                                became_ready = true;
                            }
                        }
                        ToMaster::Stats {
                            connections,
                            requests,
                            responses,
                            bytes,
                            file_cache,
                            upstreams,
                        } => {
                            child.connections = connections;
                            child.requests = requests;
                            child.responses = responses;
                            child.bytes = bytes;
                            child.file_cache = file_cache;
                            child.upstreams = upstreams;
                        }
                        ToMaster::Failed(reason) => failure = Some(reason),
                        ToMaster::ReopenDone => reopened = Some(Ok(())),
                        ToMaster::ReopenFailed(why) => reopened = Some(Err(why)),
                        ToMaster::Draining => stopped_accepting = true,
                    }
                }
            }
            Err(e) => {
                log::error!("worker {pid}: {e}; killing it");
                kill_worker(pid);
            }
        }
        if eof || failed {
            self.close_channel(pid);
        }
        let generation = child_generation(&self.children, pid);
        if let Some(result) = reopened {
            self.reopen_answered(pid, result);
        }
        if stopped_accepting {
            self.handover_progress(Some(pid), false);
        }
        if became_ready {
            self.on_ready(pid, generation);
        }
        if let Some(reason) = failure {
            log::error!("worker {pid} (generation {generation}) cannot serve: {reason}");
            let starting = self
                .generations
                .get(&generation)
                .is_some_and(|g| g.phase == Phase::Starting);
            if starting {
                self.fail_generation(generation, reason);
            }
        }
    }

    fn close_channel(&mut self, pid: Pid) {
        if let Some(child) = self.children.get_mut(&pid)
            && let Some(ch) = child.channel.take()
        {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&ch.stream().as_raw_fd()));
            self.tokens.remove(&child.token);
        }
    }

    fn on_ready(&mut self, pid: Pid, generation: u64) {
        let Some(g) = self.generations.get(&generation) else {
            return;
        };
        match g.phase {
            Phase::Starting => {
                let ready = self
                    .children
                    .values()
                    .filter(|c| c.generation == generation && c.ready)
                    .count();
                if ready == g.slots.len() {
                    self.commit(generation);
                }
            }
            Phase::Serving => log::info!("worker {pid} (generation {generation}) ready"),
            Phase::Draining => {
                // Raced with the drain order: it was sent before Ready.
            }
        }
    }

    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    self.on_child_exit(pid, format!("exited with status {code}"), code == 0)
                }
                Ok(WaitStatus::Signaled(pid, sig, core)) => self.on_child_exit(
                    pid,
                    format!(
                        "was killed by {sig}{}",
                        if core { " (core dumped)" } else { "" }
                    ),
                    false,
                ),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }

    fn on_child_exit(&mut self, pid: Pid, how: String, clean: bool) {
        // What it said before dying comes first (a `Failed` with its reason
        // may still sit in the channel when the exit is reaped).
        self.on_channel(pid);
        self.close_channel(pid);
        self.handover_progress(Some(pid), false);
        let Some(child) = self.children.remove(&pid) else {
            log::info!("process {pid} {how}");
            return;
        };
        // The workers' counters are their word: saturate, never overflow.
        self.requests_by_gone_workers =
            self.requests_by_gone_workers.saturating_add(child.requests);
        for (total, n) in self
            .responses_by_gone_workers
            .iter_mut()
            .zip(child.responses)
        {
            *total = total.saturating_add(n);
        }
        self.bytes_by_gone_workers = self.bytes_by_gone_workers.saturating_add(child.bytes);
        let gone = &mut self.file_cache_by_gone_workers;
        gone.0 = gone.0.saturating_add(child.file_cache.hits);
        gone.1 = gone.1.saturating_add(child.file_cache.misses);
        // A worker that ended has nothing left to reopen.
        self.reopen_answered(pid, Ok(()));
        let number = child.generation;
        let phase = self.generations.get(&number).map(|g| g.phase);
        let stopping = matches!(self.lifecycle, Lifecycle::Stopping { .. });
        match phase {
            Some(Phase::Draining) => {
                let line = format!("worker {pid} (generation {number}) {how} after draining");
                if clean {
                    log::info!("{line}");
                } else {
                    log::warn!("{line}");
                }
                self.forget_generation_if_done(number);
            }
            Some(Phase::Starting) => {
                log::error!("worker {pid} (generation {number}) {how} before it was ready");
                self.fail_generation(number, format!("worker {pid} {how} before it was ready"));
            }
            Some(Phase::Serving) if !stopping => {
                let now = Instant::now();
                let lived = now.duration_since(child.started);
                let Some(g) = self.generations.get_mut(&number) else {
                    return;
                };
                let slot = &mut g.slots[child.slot];
                let delay = slot.record_crash(lived, now);
                self.restarts += 1;
                let crashes = slot.crashes;
                if crashes >= CRASH_LOOP {
                    log::error!(
                        "worker {pid} (generation {number}, slot {}) {how}; crash loop: {crashes} \
                         deaths in a row, next restart in {} ms",
                        child.slot,
                        delay.as_millis()
                    );
                } else {
                    log::warn!(
                        "worker {pid} (generation {number}, slot {}) {how}; restarting it in {} ms",
                        child.slot,
                        delay.as_millis()
                    );
                }
            }
            _ => {
                log::info!("worker {pid} (generation {number}) {how}");
                if phase.is_some() {
                    self.forget_generation_if_done(number);
                }
            }
        }
    }

    /// Drops a draining (or, when stopping, any) generation with no worker
    /// left, and closes the listeners nobody holds any more.
    fn forget_generation_if_done(&mut self, number: u64) {
        let stopping = matches!(self.lifecycle, Lifecycle::Stopping { .. });
        let Some(g) = self.generations.get(&number) else {
            return;
        };
        if !(g.phase == Phase::Draining || stopping) {
            return;
        }
        if self.children.values().any(|c| c.generation == number) {
            return;
        }
        self.generations.remove(&number);
        log::info!("generation {number} has ended");
        self.close_unused_listeners();
    }

    // ----- stop ---------------------------------------------------------

    fn begin_stop(&mut self, fast: bool) {
        let grace = self
            .generations
            .get(&self.current)
            .map(|g| g.config.grace)
            .unwrap_or(Duration::from_secs(10));
        // A fast stop still gives workers a moment to exit by themselves.
        let wait = if fast { Duration::from_secs(2) } else { grace };
        self.lifecycle = Lifecycle::Stopping {
            deadline: deadline::from_now(wait),
            fast,
        };
        notify::stopping();
        log::info!(
            "{} stop: {} workers",
            if fast { "fast" } else { "graceful" },
            self.children.len()
        );
        if let Some(r) = self.reload.take() {
            self.listeners.undo(&r.prepared);
            for w in r.waiters {
                w.refuse("reload abandoned: the server is stopping");
            }
        }
        for request in self.pending.drain() {
            for w in request.waiters {
                w.refuse("reload abandoned: the server is stopping");
            }
        }
        for g in self.generations.values_mut() {
            g.phase = Phase::Draining;
            for s in &mut g.slots {
                s.respawn_at = None;
            }
        }
        let order = if fast {
            ToWorker::Stop
        } else {
            ToWorker::Drain
        };
        for child in self.children.values_mut() {
            send(child, &order);
        }
    }

    /// Kills every worker now (second stop signal, or the deadline).
    fn stop_now(&mut self, why: &str) {
        log::warn!("{why}: killing {} workers now", self.children.len());
        if !matches!(self.lifecycle, Lifecycle::Stopping { .. }) {
            self.begin_stop(true);
        }
        for child in self.children.values() {
            kill_worker(child.pid);
        }
        if let Lifecycle::Stopping { fast, .. } = self.lifecycle {
            // Reaping follows by SIGCHLD; no further deadline is needed.
            self.lifecycle = Lifecycle::Stopping {
                deadline: deadline::from_now(Duration::from_secs(3600)),
                fast,
            };
        }
    }

    fn exit_stopped(mut self) -> i32 {
        pidfile::remove_if_ours(&self.pid_file, std::process::id());
        self.listeners.close_all();
        if let Some((_, path)) = self.control.take() {
            let _ = std::fs::remove_file(&path);
        }
        if let Some((admin, _)) = self.admin.take() {
            admin.remove_file();
        }
        log::info!("stopped");
        // Dropping `self` closes the stop waiters' connections: their
        // `baton -s stop` returns now.
        0
    }

    fn exit_after_failed_start(mut self, reason: &str) -> i32 {
        log::error!("{reason}");
        // Nothing may stay listening: wait for the killed workers.
        for child in self.children.values() {
            kill_worker(child.pid);
            let _ = waitpid(child.pid, None);
        }
        self.listeners.close_all();
        if let Some((_, path)) = self.control.take() {
            let _ = std::fs::remove_file(&path);
        }
        if let Some((admin, _)) = self.admin.take() {
            admin.remove_file();
        }
        if let Some(r) = self.readiness.take() {
            r.failed(reason);
        }
        1
    }

    // ----- control socket -----------------------------------------------

    fn accept_control(&mut self) {
        let Some((listener, _)) = self.control.as_ref() else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    let mut conn = control::Conn::new(stream);
                    if self
                        .poll
                        .registry()
                        .register(&mut conn.stream, token, Interest::READABLE)
                        .is_ok()
                    {
                        self.control_conns.insert(token, conn);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("control socket accept failed: {e}");
                    break;
                }
            }
        }
    }

    fn on_control_readable(&mut self, token: Token) {
        let Some(conn) = self.control_conns.get_mut(&token) else {
            return;
        };
        let command = match conn.read_command() {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(_) => {
                if let Some(mut c) = self.control_conns.remove(&token) {
                    let _ = self.poll.registry().deregister(&mut c.stream);
                }
                return;
            }
        };
        let Some(mut conn) = self.control_conns.remove(&token) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        match command.as_str() {
            "reload" => self.request_reload(reload::Request {
                waiters: vec![Waiter::Control(conn)],
                text: None,
                restricted: false,
            }),
            "status" => {
                let text = report::text(&self.snapshot());
                conn.reply(status::OK, &text);
            }
            "reopen" => self.reopen_logs(conn),
            "stop" | "quit" => {
                conn.reply(status::OK, "");
                self.stop_waiters.push(conn);
                match self.lifecycle {
                    Lifecycle::Stopping { .. } if command == "stop" => {
                        self.stop_now("second fast stop")
                    }
                    Lifecycle::Stopping { .. } => {}
                    _ => self.begin_stop(command == "stop"),
                }
            }
            other => conn.reply(
                status::APPLY_FAILED,
                &format!("unknown command {other:?} (try reload, reopen, status, stop, quit)"),
            ),
        }
    }

    fn snapshot(&self) -> report::Snapshot {
        let now = Instant::now();
        let mut children: Vec<&Child> = self.children.values().collect();
        children.sort_by_key(|c| (c.generation, c.slot, c.pid.as_raw()));
        report::Snapshot {
            pid: std::process::id(),
            state: match self.lifecycle {
                Lifecycle::Starting => "starting",
                Lifecycle::Running => "running",
                Lifecycle::Stopping { .. } => "stopping",
            },
            config: self.source.to_string(),
            uptime_secs: self.started.elapsed().as_secs(),
            generation: self.current,
            generations: self
                .generations
                .values()
                .map(|g| (g.number, g.phase.name()))
                .collect(),
            workers: children
                .iter()
                .map(|c| report::WorkerView {
                    pid: c.pid.as_raw(),
                    generation: c.generation,
                    slot: c.slot,
                    state: c.state(),
                    connections: c.connections,
                    requests: c.requests,
                    responses: c.responses,
                    bytes: c.bytes,
                    file_cache: c.file_cache,
                    upstreams: c.upstreams.clone(),
                })
                .collect(),
            restarts: self.restarts,
            crash_loop: self
                .generations
                .get(&self.current)
                .map(|g| {
                    g.slots
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| s.crash_looping(now))
                        .map(|(i, s)| (i, s.crashes))
                        .collect()
                })
                .unwrap_or_default(),
            reloads_ok: self.reloads_ok,
            reloads_failed: self.reloads_failed,
            last_reload: self.last_reload.as_ref().map(|(at, outcome)| {
                let ago = at.elapsed().map(|d| d.as_secs()).unwrap_or(0);
                (outcome.clone(), ago)
            }),
            requests_by_gone_workers: self.requests_by_gone_workers,
            responses_by_gone_workers: self.responses_by_gone_workers,
            bytes_by_gone_workers: self.bytes_by_gone_workers,
            file_cache_by_gone_workers: self.file_cache_by_gone_workers,
            warnings: match (&self.cert_watch, self.generations.get(&self.current)) {
                (Some(watch), Some(g)) => watch.warnings(&g.tls),
                _ => Vec::new(),
            },
        }
    }

    // ----- admin API ----------------------------------------------------

    fn accept_admin(&mut self) {
        loop {
            let Some((listener, _)) = self.admin.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok(None) => {}
                Ok(Some(mut conn)) => {
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    if self
                        .poll
                        .registry()
                        .register(&mut conn.stream, token, Interest::READABLE)
                        .is_ok()
                    {
                        self.admin_conns.insert(token, conn);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("admin API accept failed: {e}");
                    break;
                }
            }
        }
    }

    fn on_admin_readable(&mut self, token: Token) {
        let Some(conn) = self.admin_conns.get_mut(&token) else {
            return;
        };
        // Judged by the `[admin]` in force now; none: the API was closed.
        let read = match &self.admin {
            Some((_, admin)) => conn.read_request(admin),
            None => Err(io::ErrorKind::NotConnected.into()),
        };
        let request = match read {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(_) => {
                if let Some(mut c) = self.admin_conns.remove(&token) {
                    let _ = self.poll.registry().deregister(&mut c.stream);
                }
                return;
            }
        };
        let Some(mut conn) = self.admin_conns.remove(&token) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        match request {
            Ok(req) => self.on_admin_request(req, conn),
            Err(refused) => {
                log::warn!(
                    "admin API: refused a request ({}): {}",
                    refused.status,
                    refused.message
                );
                let body = serde_json::json!({ "error": refused.message });
                conn.respond_json(refused.status, &body);
            }
        }
    }

    /// The admin API's endpoints (docs/admin-api.md).
    fn on_admin_request(&mut self, req: admin::Request, mut conn: admin::Conn) {
        use serde_json::json;
        let path = req.path.split('?').next().unwrap_or("").to_string();
        let allow = match path.as_str() {
            "/status" | "/metrics" => "GET",
            "/reload" | "/stop" => "POST",
            "/config" => "GET, POST",
            _ => {
                let body = json!({ "error": format!("no endpoint {path}") });
                return conn.respond_json(404, &body);
            }
        };
        match (req.method.as_str(), path.as_str()) {
            ("GET", "/status") => {
                let body = report::json(&self.snapshot());
                conn.respond_json(200, &body);
            }
            ("GET", "/metrics") => {
                let body = report::metrics(&self.snapshot());
                conn.respond(200, "text/plain; version=0.0.4", body.as_bytes());
            }
            ("GET", "/config") => {
                conn.respond(200, "application/toml", self.running_text.as_bytes());
            }
            ("POST", "/reload") => {
                log::info!("admin API: reload asked by {}", req.caller.who);
                self.request_reload(reload::Request {
                    waiters: vec![Waiter::Admin(conn)],
                    text: None,
                    restricted: false,
                })
            }
            ("POST", "/config") => {
                if self.source == Source::Embedded {
                    let body = json!({
                        "error": "the server runs the embedded default config: there is no config file to replace"
                    });
                    return conn.respond_json(409, &body);
                }
                let Ok(text) = String::from_utf8(req.body) else {
                    let body = json!({ "error": "the config must be UTF-8 text" });
                    return conn.respond_json(400, &body);
                };
                let caller = req.caller;
                if !caller.root
                    && let Err((status, body)) =
                        admin::guard::on_arrival(self.admin_running(), &text, &caller.who)
                {
                    return conn.respond_json(status, &body);
                }
                log::info!("admin API: a new config from {}", caller.who);
                self.request_reload(reload::Request {
                    waiters: vec![Waiter::Admin(conn)],
                    text: Some(text),
                    restricted: !caller.root,
                })
            }
            ("POST", "/stop") => {
                log::info!("admin API: stop asked by {}", req.caller.who);
                conn.respond_json(202, &json!({ "stopping": true }));
                if !matches!(self.lifecycle, Lifecycle::Stopping { .. }) {
                    self.begin_stop(false);
                }
            }
            _ => {
                let body = json!({ "error": format!("{} {path}: use {allow}", req.method) });
                conn.respond_json(405, &body);
            }
        }
    }

    /// What `admin::guard` compares a config from a caller who is not
    /// root with; `Err` when there is nothing to compare with yet.
    fn admin_running(&self) -> Result<admin::guard::Running<'_>, String> {
        let Source::File(path) = &self.source else {
            return Err("the server runs the embedded default config".into());
        };
        let Some(serving) = self.generations.get(&self.current) else {
            return Err("the server is starting: send the config again once it is ready".into());
        };
        Ok(admin::guard::Running {
            path,
            overrides: &self.overrides,
            text: &self.running_text,
            config: &serving.config,
        })
    }

    // ----- timers -------------------------------------------------------

    fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for g in self.generations.values() {
            consider(g.deadline);
            for s in &g.slots {
                consider(s.respawn_at);
            }
        }
        if let Lifecycle::Stopping { deadline, .. } = self.lifecycle {
            consider(Some(deadline));
        }
        consider(self.reopen.as_ref().map(|r| r.deadline));
        consider(self.cert_watch.as_ref().map(|w| w.due()));
        consider(self.listeners.next_linger_end());
        consider(Some(self.next_ticket_rotation));
        consider(
            self.reload
                .as_ref()
                .and_then(|r| r.handover.as_ref())
                .map(|h| h.deadline),
        );
        next
    }

    fn on_timers(&mut self, now: Instant) {
        if self.cert_watch.as_ref().is_some_and(|w| w.due() <= now) {
            self.check_certificates();
        }
        if self.next_ticket_rotation <= now {
            self.rotate_ticket_keys();
        }
        self.end_lingers(now);
        let handover_due = self
            .reload
            .as_ref()
            .and_then(|r| r.handover.as_ref())
            .is_some_and(|h| h.deadline <= now);
        if handover_due {
            self.handover_progress(None, true);
        }
        if self.reopen.as_ref().is_some_and(|r| r.deadline <= now) {
            self.reopen_timed_out();
        }
        let mut expired_starting = Vec::new();
        let mut expired_draining = Vec::new();
        let mut respawns = Vec::new();
        for (n, g) in &mut self.generations {
            match (g.phase, g.deadline) {
                (Phase::Starting, Some(d)) if d <= now => expired_starting.push(*n),
                (Phase::Draining, Some(d)) if d <= now => {
                    g.deadline = None;
                    expired_draining.push((*n, g.config.grace));
                }
                _ => {}
            }
            if g.phase == Phase::Serving {
                for (i, s) in g.slots.iter_mut().enumerate() {
                    if s.respawn_at.is_some_and(|t| t <= now) {
                        s.respawn_at = None;
                        respawns.push((*n, i));
                    }
                }
            }
        }
        for n in expired_starting {
            let timeout = self
                .generations
                .get(&n)
                .map(|g| g.config.worker_ready_timeout)
                .unwrap_or_default();
            let missing = self
                .children
                .values()
                .filter(|c| c.generation == n && !c.ready)
                .count();
            self.fail_generation(
                n,
                format!(
                    "{missing} worker(s) not ready within {} ms (worker_ready_timeout)",
                    timeout.as_millis()
                ),
            );
        }
        if !expired_draining.is_empty() {
            // Workers that already exited are not "left": reap them first.
            self.reap();
        }
        for (n, grace) in expired_draining {
            let left: Vec<Pid> = self
                .children
                .values()
                .filter(|c| c.generation == n)
                .map(|c| c.pid)
                .collect();
            if !left.is_empty() {
                log::warn!(
                    "generation {n}: {} workers still draining after the grace period ({} s); killing them",
                    left.len(),
                    grace.as_secs_f64()
                );
            }
            for pid in left {
                kill_worker(pid);
            }
        }
        for (n, slot) in respawns {
            if let Err(e) = self.spawn_worker(n, slot) {
                log::error!("cannot fork a replacement worker for generation {n}: {e}");
                if let Some(g) = self.generations.get_mut(&n) {
                    let s = &mut g.slots[slot];
                    s.record_crash(Duration::ZERO, now);
                }
            }
        }
        if let Lifecycle::Stopping { deadline, .. } = self.lifecycle
            && deadline <= now
            && !self.children.is_empty()
        {
            self.stop_now("stop deadline reached");
        }
    }
}

impl Master {
    /// The watcher's turn: if a certificate changed and verified, the
    /// serving generation's workers get the new set (no new generation).
    fn check_certificates(&mut self) {
        let current = self.current;
        let Some(g) = self.generations.get_mut(&current) else {
            return;
        };
        let Some(watch) = self.cert_watch.as_mut() else {
            return;
        };
        let Some(material) = watch.check(&g.tls) else {
            return;
        };
        g.tls = material;
        let message = ToWorker::Certificates(g.tls.bundles());
        let mut sent = 0;
        for child in self.children.values_mut() {
            if child.generation == current {
                send(child, &message);
                sent += 1;
            }
        }
        log::info!("new certificates sent to {sent} workers of generation {current}");
    }

    /// A new ticket key; the previous one still decrypts tickets it sealed.
    fn rotate_ticket_keys(&mut self) {
        let rotation = self
            .generations
            .get(&self.current)
            .map_or(Duration::from_secs(6 * 3600), |g| {
                g.config.tls.ticket_rotation
            });
        self.next_ticket_rotation = deadline::from_now(rotation);
        self.ticket_keys.insert(0, random_key());
        self.ticket_keys.truncate(2);
        let message = ToWorker::TicketKeys(self.ticket_keys.clone());
        for child in self.children.values_mut() {
            send(child, &message);
        }
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

fn send(child: &mut Child, msg: &ToWorker) {
    if msg == &ToWorker::Drain {
        child.draining = true;
    }
    if let Some(ch) = child.channel.as_mut()
        && let Err(e) = ch.send(msg)
    {
        log::debug!("cannot send {msg:?} to worker {}: {e}", child.pid);
    }
}

fn child_generation(children: &HashMap<Pid, Child>, pid: Pid) -> u64 {
    children.get(&pid).map(|c| c.generation).unwrap_or(0)
}

/// SIGKILLs a worker. A failure is logged: it means the worker lives on
/// (e.g. the service lacks CAP_KILL to signal a worker of another uid).
fn kill_worker(pid: Pid) {
    match kill(pid, Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => log::error!("cannot kill worker {pid}: {e}"),
    }
}
