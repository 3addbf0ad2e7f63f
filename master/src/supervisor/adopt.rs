//! An image started by a binary upgrade (or by the rollback of one): it
//! rebuilds the master from the state and the inherited fds, adopts the
//! workers (still its children: same pid) with their channels, reaps at
//! once what died during the exec, and then either starts its generation
//! (a new image) or tells the waiter the upgrade failed (the old image,
//! back again).
//!
//! Nothing is wrapped into an owning type before everything the state
//! names has been checked: a new image that gives up early re-executes the
//! old binary with the same state, and must not have closed or unlinked
//! anything on the way (dropping a `Resources` would remove the pidfile
//! and the control socket, which belong to this same pid).

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_shared::channel::Channel;
use baton_shared::config::{Config, Source};
use baton_shared::deadline;
use mio::unix::SourceFd;
use mio::{Interest, Poll};

use super::lifecycle::Lifecycle;
use super::timers::Owner;
use super::transaction::{Event, Request, Transaction};
use super::upgrade::Pending;
use super::{
    Endpoints, FIRST_DYNAMIC, History, Master, Overrides, ProcessTable, Resources, SIGNALS,
    TlsPush, load_config_text,
};
use crate::control::{self, status};
use crate::generation::{Child, Generation, Phase};
use crate::listeners::ListenerSet;
use crate::listeners::handoff::addr_in;
use crate::pidfile::InstanceLock;
use crate::reload::Waiter;
use crate::signals;
use crate::upgrade::exec::{self, Incoming};
use crate::upgrade::state::{self, Role, State};

/// Runs an image started by an upgrade; returns the exit status.
pub fn resume(incoming: Incoming) -> i32 {
    if let Err(e) = signals::block() {
        eprintln!("baton: cannot block signals: {e}");
    }
    let hook = crate::upgrade::hooks()
        .fail
        .as_deref()
        .filter(|_| incoming.failed.is_none());
    if hook == Some("state") {
        return give_up(&incoming, status::APPLY_FAILED, "test hook: fail=state");
    }
    let mut state = match state::from_fd(incoming.state_fd) {
        Ok(s) => s,
        Err(e) => {
            return give_up(
                &incoming,
                status::APPLY_FAILED,
                &format!("upgrade state: {e}"),
            );
        }
    };
    exec::note_exe(Some(state.exe.clone()));
    // Who am I: the old image back again (the state says so, or the new
    // image gave up before it could write one), or the new one.
    let rollback = match (&incoming.failed, &state.role) {
        (Some(f), _) => Some(parse_failed(f)),
        (None, Role::Rollback { status, reason }) => Some((*status, reason.clone())),
        (None, Role::Upgrade) => None,
    };
    let source = state.source.clone().map_or(Source::Embedded, Source::File);
    let overrides = Overrides {
        pid_file: state.pid_file_override.clone(),
        grace: state.grace_override_ms.map(Duration::from_millis),
    };
    // The serving generation's own config first (its workers run it); if
    // this code cannot read it any more (or a file it names changed), the
    // file as it is now.
    let loaded = load_config_text(&source, &overrides, Some(&state.running_text))
        .or_else(|_| load_config_text(&source, &overrides, None));
    let config = match loaded {
        Ok((config, _)) => config,
        Err(e) => {
            if rollback.is_none() {
                return give_up(
                    &incoming,
                    status::CONFIG_INVALID,
                    &format!("config invalid: {e}"),
                );
            }
            eprintln!("baton: the previous binary cannot read the config again: {e}");
            return 1;
        }
    };
    baton_shared::logging::init(&config.log_level);
    if incoming.failed.is_some()
        && let Some(fd) = state.old_exe.take()
    {
        // Its own state, handed back by a new image that gave up: the fd
        // it kept on this binary is no concern of this image.
        if fd_open(fd) {
            // SAFETY: the fd is open and nothing in this image owns it.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    if let Err(e) = check_fds(&state) {
        return give_up(&incoming, status::APPLY_FAILED, &e);
    }
    // From here on the fds are ours; each goes back to close-on-exec.
    for fd in state.fds() {
        let _ = exec::set_cloexec(fd, true);
    }
    let mut master = match Master::adopt(config, &state, source, overrides) {
        Ok(m) => m,
        Err(e) => {
            // The fds are wrapped now: this image cannot hand the same
            // state back. It serves nothing; the workers see their
            // channels close and drain.
            eprintln!("baton: cannot rebuild the master after the upgrade: {e}");
            return 1;
        }
    };
    let waiter = state.waiter.map(|fd| {
        // SAFETY: the previous image kept this connection open for us
        // (checked by `check_fds`); nothing else owns it.
        let stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
        Waiter::Control(control::Conn::new(mio::net::UnixStream::from_std(stream)))
    });
    log::info!(
        "{} image of {} adopted {} workers (generation {} serving)",
        if rollback.is_some() {
            "previous"
        } else {
            "new"
        },
        exec::exe().display(),
        master.procs.children.len(),
        master.procs.current
    );
    // SAFETY: the state fd came with the upgrade's variable and nothing
    // else in this image owns it. A new image keeps it until its
    // generation is ready (a crash hands it back to the old binary).
    let state_fd = unsafe { OwnedFd::from_raw_fd(incoming.state_fd) };
    // SIGCHLDs that came during the exec are pending in the signalfd too;
    // reaping now settles the table before anything else is decided.
    master.reap_now();
    match rollback {
        Some((code, reason)) => {
            drop(state_fd);
            master.rolled_back(waiter, code, &reason)
        }
        None => {
            let Some(old_exe) = incoming.old_exe else {
                // Cannot happen: the old image always passes its fd.
                log::error!("upgrade: no fd on the previous binary; no rollback possible");
                return master.run();
            };
            let waiter = waiter.and_then(|w| match w {
                Waiter::Control(c) => Some(c),
                Waiter::Admin(_) => None,
            });
            let guarded = crate::upgrade::guard::arm(
                std::os::fd::AsRawFd::as_raw_fd(&old_exe),
                std::os::fd::AsRawFd::as_raw_fd(&state_fd),
                state.fds(),
            );
            if let Err(e) = guarded {
                log::warn!(
                    "upgrade: no crash guard ({e}): a crash before ready is not rolled back"
                );
            }
            master.upgrade = Some(Pending::Adopted {
                old_exe,
                _state: state_fd,
                waiter,
                started: Instant::now(),
            });
            if hook == Some("adopt") {
                master.roll_back_upgrade(status::APPLY_FAILED, "test hook: fail=adopt");
            } else {
                if let Some(config) = master
                    .procs
                    .generations
                    .get(&master.procs.current)
                    .map(|g| Arc::clone(&g.config))
                {
                    master.helper_follow(&config);
                }
                master.feed(Event::ReloadRequested(Request {
                    waiters: Vec::new(),
                    text: None,
                    restricted: false,
                }));
                if hook == Some("crash") {
                    log::warn!("test hook: fail=crash");
                    // SAFETY: raise only sends a signal to this process.
                    unsafe { libc::raise(libc::SIGSEGV) };
                }
            }
        }
    }
    master.run()
}

/// `STATUS:REASON` from `BATON_UPGRADE_FAILED`.
fn parse_failed(text: &str) -> (i32, String) {
    match text.split_once(':') {
        Some((code, reason)) if code.parse::<i32>().is_ok() => (
            code.parse().unwrap_or(status::APPLY_FAILED),
            reason.to_string(),
        ),
        _ => (status::APPLY_FAILED, text.to_string()),
    }
}

/// The new image cannot even adopt: the old binary again, with the state
/// it wrote (untouched) and the reason. Returns only if that fails.
fn give_up(incoming: &Incoming, code: i32, reason: &str) -> i32 {
    eprintln!("baton: upgrade failed: {reason}; executing the previous binary again");
    let Some(old) = &incoming.old_exe else {
        eprintln!("baton: no previous binary to go back to");
        return 1;
    };
    let _ = exec::set_cloexec(incoming.state_fd, false);
    let failed = format!("{code}:{reason}");
    match exec::Vectors::new(incoming.state_fd, None, Some(&failed)) {
        Ok(v) => {
            let e = exec::exec_fd(old, &v);
            eprintln!("baton: cannot execute the previous binary again: {e}");
        }
        Err(e) => eprintln!("baton: cannot execute the previous binary again: {e}"),
    }
    1
}

fn fd_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only asks whether the number is an open fd.
    fd > 2 && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0
}

/// Every fd the state names is open, and none twice.
fn check_fds(state: &State) -> Result<(), String> {
    let mut fds = state.fds();
    if let Some(bad) = fds.iter().find(|fd| !fd_open(**fd)) {
        return Err(format!("fd {bad} named by the state is not open"));
    }
    fds.sort_unstable();
    if fds.windows(2).any(|w| w[0] == w[1]) {
        return Err("the state names one fd twice".into());
    }
    for l in &state.listeners {
        if !crate::activation::is_listening(l.fd) {
            return Err(format!("fd {} is not a listening socket", l.fd));
        }
    }
    Ok(())
}

fn phase_of(name: &str) -> Phase {
    match name {
        "starting" => Phase::Starting,
        "serving" => Phase::Serving,
        _ => Phase::Draining,
    }
}

impl Master {
    /// The master from a state whose fds were checked by `check_fds`.
    fn adopt(
        config: Config,
        state: &State,
        source: Source,
        overrides: Overrides,
    ) -> std::io::Result<Master> {
        let now = Instant::now();
        // SAFETY (for every from_raw_fd below): the previous image kept
        // these fds open for us, `check_fds` saw each open and named once,
        // and nothing else in this image owns them.
        let lock =
            InstanceLock::adopt(unsafe { OwnedFd::from_raw_fd(state.lock) }, &state.pid_file);
        let mut res = Resources::new(lock, state.pid_file.clone());
        res.listeners =
            ListenerSet::import(&state.listeners, now).map_err(std::io::Error::other)?;
        res.control = state.control.as_ref().map(|(fd, path)| {
            // SAFETY: as above.
            let std = unsafe { std::os::unix::net::UnixListener::from_raw_fd(*fd) };
            (mio::net::UnixListener::from_std(std), path.clone())
        });
        res.admin = state.admin.as_ref().and_then(|a| adopt_admin(a, &config));
        let poll = Poll::new()?;
        let signals = signals::open().map_err(std::io::Error::from)?;
        poll.registry().register(
            &mut SourceFd(&std::os::fd::AsRawFd::as_raw_fd(&signals)),
            SIGNALS,
            Interest::READABLE,
        )?;
        if let Some((control, _)) = res.control.as_mut() {
            poll.registry()
                .register(control, super::CONTROL, Interest::READABLE)?;
        }
        if let Some((listener, _)) = res.admin.as_mut() {
            poll.registry()
                .register(listener, super::ADMIN, Interest::READABLE)?;
        }
        let config = Arc::new(config);
        let mut tls = TlsPush::new(&config, now);
        if !state.ticket_keys.is_empty() {
            tls.ticket_keys = state.ticket_keys.clone();
        }
        let mut procs = ProcessTable::default();
        procs.continue_numbering(state.last_number);
        procs.current = state.current;
        procs.restarts = state.restarts;
        procs.gone = super::process_table::GoneTotals::restore(&state.gone);
        let mut master = Master {
            poll,
            signals,
            res,
            endpoints: Endpoints::default(),
            procs,
            tx: Transaction::idle(),
            staged: None,
            timers: super::Timers::default(),
            lifecycle: Lifecycle::Running,
            reopen: None,
            tls,
            history: History {
                last: None,
                ok: state.reloads_ok,
                failed: state.reloads_failed,
            },
            next_token: FIRST_DYNAMIC,
            running_text: state.running_text.clone(),
            source,
            overrides,
            readiness: None,
            started: now
                .checked_sub(Duration::from_millis(state.uptime_ms))
                .unwrap_or(now),
            startup_failure: None,
            idle: None,
            upgrade: None,
            // Carried across the upgrade: the new generation forks from it;
            // every server is checked again at once, and the first result of
            // each is pushed to every worker.
            health: crate::health::Checker::restore(&state.health, now),
            // Not handed over: the previous image's helper reads EOF at
            // the exec and exits; this image starts its own below.
            helper: Default::default(),
        };
        for g in &state.generations {
            let mut generation = Generation::new(g.number, Arc::clone(&config));
            generation.addrs = g.addrs.iter().map(addr_in).collect();
            generation.took_over = g
                .took_over
                .iter()
                .map(|(a, by)| (addr_in(a), addr_in(by)))
                .collect();
            generation.phase = phase_of(&g.phase);
            generation.access_logs = g
                .access_logs
                .iter()
                // SAFETY: as above.
                .map(|fd| unsafe { OwnedFd::from_raw_fd(*fd) })
                .collect();
            let slots = state
                .children
                .iter()
                .filter(|c| c.generation == g.number)
                .map(|c| c.slot.saturating_add(1))
                .max()
                .unwrap_or(0);
            if generation.slots.len() < slots {
                generation.slots.resize(slots, Default::default());
            }
            if let Some(ms) = g.drain_left_ms {
                master.timers.set(
                    Owner::Drain(g.number),
                    Some(deadline::after(now, Duration::from_millis(ms))),
                );
            }
            master.procs.generations.insert(g.number, generation);
        }
        if let Some(g) = master.procs.generations.get(&state.current) {
            master.tls.watch = crate::certwatch::Watch::new(&g.tls, config.tls.watch_interval);
        }
        for c in &state.children {
            let channel = match c.channel {
                Some(fd) => {
                    // SAFETY: as above.
                    let stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
                    Some(Channel::resume(stream, c.inbuf.clone(), c.outbuf.clone())?)
                }
                None => None,
            };
            let token = master.token();
            let child = Child {
                pid: nix::unistd::Pid::from_raw(c.pid),
                generation: c.generation,
                slot: c.slot,
                listeners: c.listeners.iter().map(addr_in).collect(),
                token,
                channel,
                ready: c.ready,
                draining: c.draining,
                started: now,
                connections: c.connections,
                requests: c.requests,
                responses: c.responses,
                bytes: c.bytes,
                file_cache: c.file_cache,
                upstreams: Vec::new(),
                http2: c.http2.clone(),
            };
            master.procs.adopt(master.poll.registry(), token, child)?;
        }
        Ok(master)
    }
}

/// The admin API's socket, kept if this image's config still serves it
/// there; otherwise closed (a reload's commit binds the new one).
fn adopt_admin(
    a: &state::Admin,
    config: &Config,
) -> Option<(crate::admin::Listener, baton_shared::config::Admin)> {
    use baton_shared::config::ListenAddr;
    let wanted = config.admin.as_ref();
    match a {
        state::Admin::Tcp { fd, port } => {
            // SAFETY: as in `adopt`.
            let std = unsafe { std::net::TcpListener::from_raw_fd(*fd) };
            let admin = wanted.filter(
                |w| matches!(w.listen, ListenAddr::Tcp(sa) if sa.port() == *port || sa.port() == 0),
            )?;
            Some((
                crate::admin::Listener::Tcp(mio::net::TcpListener::from_std(std), *port),
                admin.clone(),
            ))
        }
        state::Admin::Unix { fd, path } => {
            // SAFETY: as in `adopt`.
            let std = unsafe { std::os::unix::net::UnixListener::from_raw_fd(*fd) };
            let listener =
                crate::admin::Listener::Unix(mio::net::UnixListener::from_std(std), path.clone());
            match wanted.filter(|w| w.listen == ListenAddr::Unix(path.clone())) {
                Some(admin) => Some((listener, admin.clone())),
                None => {
                    listener.remove_file();
                    None
                }
            }
        }
    }
}
