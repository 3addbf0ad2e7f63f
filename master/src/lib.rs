//! Baton's master: binds the listen sockets, forks and supervises worker
//! generations, and hands the baton from one generation to the next on
//! reload. `docs/architecture.md` tells the story; `supervisor.rs` is the
//! loop.
//!
//! Startup order, and why:
//! 1. the config is loaded and validated (a bad one ends here, exit 1,
//!    nothing created);
//! 2. the master's signals are blocked, before anything can fork, so a
//!    signal can never hit a default handler;
//! 3. `--daemon` forks now, before any fd or lock exists that the parent
//!    would share;
//! 4. the instance lock (a second instance stops here, "already running");
//! 5. the error log, the listen sockets and the control socket;
//! 6. the first generation is forked; only when all of it is ready is the
//!    pidfile written and the daemon's parent released.
//!
//! Any failure before 6 completes exits 1 with the error and leaves nothing
//! listening and no pidfile.

mod activation;
mod admin;
mod certwatch;
mod control;
mod daemon;
mod generation;
mod health;
mod io_util;
mod listeners;
mod logfiles;
mod notify;
mod pidfile;
mod preflight;
mod reload;
mod report;
mod rlimit;
mod signals;
mod spawn;
mod spawn_helper;
mod supervisor;
pub mod upgrade;

use std::path::{Path, PathBuf};

use baton_shared::config::{Config, ConfigErrors, Source};

pub use control::status as exit_status;
pub use supervisor::{Overrides, load_config, load_config_text};

/// What `baton` was asked to do with a config.
#[derive(Debug, Clone)]
pub struct Options {
    /// `-c FILE`, or the embedded default config.
    pub source: Source,
    pub overrides: Overrides,
    pub daemon: bool,
}

/// Resolves `-c FILE` (made absolute once, so a reload re-reads the same
/// file whatever the working directory) or the embedded default.
pub fn source_of(path: Option<&Path>) -> Source {
    match path {
        Some(p) => Source::File(std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())),
        None => Source::Embedded,
    }
}

/// `baton -t`: validate and report, with no side effect at all.
pub fn test_config(options: &Options) -> Result<Config, ConfigErrors> {
    load_config(&options.source, &options.overrides)
}

/// `baton -tt`: `-t`, then the deep preflight (`preflight`): the listen
/// addresses can be bound (or are the running instance's), the workers can
/// enter the roots, the logs can be opened. Still no side effect.
pub fn test_config_deep(options: &Options) -> Result<Config, ConfigErrors> {
    let config = test_config(options)?;
    preflight::check(&config)?;
    Ok(config)
}

/// `baton -s COMMAND`: find the master through the config's pid_file and
/// run the command there.
pub fn send_command(options: &Options, command: &str) -> i32 {
    let pid_file = match &options.overrides.pid_file {
        Some(p) => p.clone(),
        None => {
            let path = match &options.source {
                Source::File(p) => Some(p.as_path()),
                Source::Embedded => None,
            };
            match baton_shared::config::pid_file_of(path) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("{e}");
                    return exit_status::CONFIG_INVALID;
                }
            }
        }
    };
    control::send(&pid_file, command)
}

/// Runs the server until it stops; returns the process exit status.
pub fn serve(options: Options) -> i32 {
    // An image started by a binary upgrade (or its rollback) adopts the
    // running server instead of starting one (`upgrade`).
    if let Some(incoming) = upgrade::exec::take_incoming() {
        return supervisor::resume(incoming);
    }
    upgrade::exec::note_exe(None);
    let (config, config_text) = match load_config_text(&options.source, &options.overrides, None) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    if let Err(e) = signals::block() {
        eprintln!("baton: cannot block signals: {e}");
        return 1;
    }
    baton_shared::logging::init(&config.log_level);
    if options.daemon
        && let Some(l) = config
            .listens()
            .into_iter()
            .find(|l| l.addr == baton_shared::config::ListenAddr::Stdin)
    {
        eprintln!(
            "{}",
            config.error_at(
                l.pos,
                "listen = \"stdin\" cannot be used with --daemon: the daemon detaches from stdin"
            )
        );
        return 1;
    }
    let readiness = if options.daemon {
        if config.error_log.is_none() {
            eprintln!(
                "baton: --daemon without error_log: the log is discarded once in the background"
            );
        }
        match daemon::daemonize(config.error_log.is_some()) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("baton: cannot start as a daemon: {e}");
                return 1;
            }
        }
    } else {
        None
    };
    match prepare(config, config_text, options.overrides) {
        Ok(setup) => {
            let setup = supervisor::Setup { readiness, ..setup };
            match supervisor::Master::new(setup) {
                Ok(master) => master.run(),
                Err(e) => fail(None, &format!("cannot start the master loop: {e}")),
            }
        }
        Err(e) => fail(readiness, &e),
    }
}

fn fail(readiness: Option<daemon::Readiness>, error: &str) -> i32 {
    match readiness {
        Some(r) => r.failed(error),
        None => log::error!("{error}"),
    }
    1
}

/// Steps 4 and 5 of the startup order. The resources are gathered in one
/// `Resources` as they are made: an error returns early and drops it,
/// which releases what was made so far (sockets closed, socket files
/// removed, the lock let go).
fn prepare(
    config: Config,
    config_text: String,
    overrides: Overrides,
) -> Result<supervisor::Setup, String> {
    let lock = pidfile::acquire(&config.pid_file)?;
    let mut res = supervisor::Resources::new(lock, config.pid_file.clone());
    if let Some(path) = &config.error_log {
        logfiles::redirect_stderr(path, &config)
            .map_err(|e| format!("cannot open error log {}: {e}", path.display()))?;
    }
    // Before any worker is forked (they inherit it), after the error log
    // (so a warning lands there).
    rlimit::apply(&config);
    res.listeners
        .adopt_passed(activation::take_systemd(), &config);
    let bound = res
        .listeners
        .adopt_stdin(&config)
        .and_then(|()| res.listeners.prepare(&config));
    match bound {
        // Nothing to roll back at start: the plan commits at once.
        Ok(plan) => {
            res.listeners.commit(&plan, config.defer_accept);
        }
        Err(b) => {
            return Err(config
                .error_at(
                    b.listen.pos,
                    format!("cannot bind {}: {}", b.listen.addr, b.error),
                )
                .to_string());
        }
    }
    for l in config.listens() {
        log::info!("listening on {}", l.addr);
    }
    let control_path: PathBuf = control::socket_path(&config.pid_file);
    let control = control::bind(&control_path).map_err(|e| {
        format!(
            "cannot create control socket {}: {e}",
            control_path.display()
        )
    })?;
    res.control = Some((control, control_path));
    if let Some(a) = &config.admin {
        let listener = admin::Listener::bind(a).map_err(|e| {
            config
                .error_at(
                    a.pos,
                    format!("cannot serve the admin API on {}: {e}", a.listen),
                )
                .to_string()
        })?;
        log::info!("admin API on {}", a.listen);
        res.admin = Some((listener, a.clone()));
    }
    let access_logs = logfiles::open_access_logs(&config)?;
    Ok(supervisor::Setup {
        config,
        config_text,
        access_logs,
        overrides,
        resources: res,
        readiness: None,
    })
}
