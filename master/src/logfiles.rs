//! Log files, opened by the master with its own privileges so that
//! workers need no write access to the log directory: append-only, created
//! with `log_mode` and handed to `log_owner` (logrotate's `create` can then
//! match). Workers get the files as inherited fds at fork, and new fds over
//! their channel when `baton -s reopen` follows a rotation.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use baton_shared::config::Config;

/// Opens `path` for appending, creating it with the config's mode and owner.
pub fn open(path: &Path, config: &Config) -> io::Result<OwnedFd> {
    let existed = path.exists();
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(config.log_mode)
        .open(path)?;
    if !existed && let Some((uid, gid)) = config.log_owner {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    }
    Ok(OwnedFd::from(file))
}

/// Opens every access log of `config`, in `Config::access_logs` order.
pub fn open_access_logs(config: &Config) -> Result<Vec<OwnedFd>, String> {
    config
        .access_logs()
        .into_iter()
        .map(|p| {
            open(p, config).map_err(|e| format!("cannot open access log {}: {e}", p.display()))
        })
        .collect()
}

/// Opens (or reopens) the error log and puts it on fd 2, where every
/// process writes its log lines.
pub fn redirect_stderr(path: &Path, config: &Config) -> io::Result<()> {
    let fd = open(path, config)?;
    // SAFETY: dup2 between two open fds; replaces fd 2 atomically so no log
    // line is lost or split.
    if unsafe { libc::dup2(fd.as_raw_fd(), 2) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
