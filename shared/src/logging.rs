//! Logging: `log` + env_logger, one line per record, always to fd 2.
//!
//! With `error_log` set, the master opens the file and puts it on fd 2 with
//! dup2, so every process (master and forked workers) writes its log lines
//! through the same fd without knowing where it goes. Reopening after a
//! rotation is one more dup2 in the master; each new generation inherits the
//! new file. env_logger writes a record with a single write(2), and the file
//! is O_APPEND, so lines from different processes never interleave.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// "master" until a forked child calls `set_role_worker`.
static IS_WORKER: AtomicBool = AtomicBool::new(false);

/// Sets up the global logger. `level` is the config's `log_level`; the
/// `BATON_LOG` environment variable (env_logger syntax) overrides it.
pub fn init(level: &str) {
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(level);
    if let Ok(spec) = std::env::var("BATON_LOG") {
        builder.parse_filters(&spec);
    }
    builder
        .target(env_logger::Target::Stderr)
        .format(|buf, record| {
            let role = if IS_CERTS.load(Ordering::Relaxed) {
                "certs"
            } else if IS_WORKER.load(Ordering::Relaxed) {
                "worker"
            } else {
                "master"
            };
            writeln!(
                buf,
                "{} [{}] baton {} {}: {}",
                buf.timestamp_millis(),
                record.level(),
                role,
                std::process::id(),
                record.args()
            )
        });
    // A second init (tests, or the daemon child) keeps the first logger.
    let _ = builder.try_init();
}

/// Changes the level after a reload changed `log_level`.
pub fn set_level(level: &str) {
    if std::env::var_os("BATON_LOG").is_some() {
        return; // the environment overrides the config, as at start
    }
    if let Ok(filter) = level.parse::<log::LevelFilter>() {
        log::set_max_level(filter);
    }
}

/// Called in a forked worker so its lines say "worker".
pub fn set_role_worker() {
    IS_WORKER.store(true, Ordering::Relaxed);
}

/// The certificate helper's lines say "certs".
static IS_CERTS: AtomicBool = AtomicBool::new(false);

/// Called in the forked certificate helper.
pub fn set_role_certs() {
    IS_CERTS.store(true, Ordering::Relaxed);
}

/// Opens `path` for appending (creating it 0640) and makes it fd 2.
pub fn redirect_stderr_to(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)?;
    // SAFETY: dup2 on two fds we own (`file` is open, 2 always exists or is
    // created by dup2); it atomically replaces fd 2 so no log line is lost.
    let rc = unsafe { libc::dup2(file.as_raw_fd(), 2) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
