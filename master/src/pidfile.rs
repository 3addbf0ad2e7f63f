//! The pidfile and the lock that keeps a second instance out.
//!
//! The lock is taken on a separate file, `PIDFILE.lock`, never on the pidfile
//! itself: the pidfile is written by renaming a temp file over it, and a lock
//! on the old inode would silently vanish with that rename. It holds the
//! master's pid so that "already running (pid N)" can be said even before
//! the pidfile exists.
//!
//! The lock file is removed when the master exits, so nothing of it
//! outlives the server. Unlinking a lock file has a known race: B opens the
//! file, A unlinks it and exits, B locks the unlinked inode, and C creates a
//! new file and locks that: two instances. Two rules close it:
//! - the holder unlinks while it still holds the lock (`release`), and
//! - a taker, once it has the lock, checks that the path still names the
//!   inode it locked, and starts over if not (`acquire`).
//!
//! So a lock is only ever counted on an inode that was linked at the path
//! while locked; an inode unlinked under the lock is never trusted.
//!
//! The pidfile is written only once the first generation is ready, holds the
//! master's pid (which no reload changes), and is removed at exit only if it
//! still holds that pid.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Held for the master's whole life; dropping it releases the lock and
/// removes the lock file (see the module docs for why that is safe).
#[derive(Debug)]
pub struct InstanceLock {
    /// Kept open: the lock lives as long as this fd.
    file: File,
    path: PathBuf,
    /// A forked worker has a copy of this in memory: only the process that
    /// took the lock may remove the file.
    owner: u32,
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        // Unlinked while still locked, and only if the path is still our
        // inode (an operator may have removed it and another instance
        // created a new one, which is not ours to remove).
        if std::process::id() == self.owner
            && same_file(&self.file, &self.path)
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            log::warn!("cannot remove lock file {}: {e}", self.path.display());
        }
    }
}

/// Whether `path` names the inode `file` has open.
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

pub fn lock_path(pid_file: &Path) -> PathBuf {
    let mut s = pid_file.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

impl InstanceLock {
    /// Its fd, kept open across a binary upgrade: the lock belongs to the
    /// open file, so the next image holds it without a gap.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }

    /// The lock a previous image of this process (same pid) held, from
    /// its fd; `pid_file` names its lock file.
    pub fn adopt(fd: std::os::fd::OwnedFd, pid_file: &Path) -> InstanceLock {
        InstanceLock {
            file: File::from(fd),
            path: lock_path(pid_file),
            owner: std::process::id(),
        }
    }
}

/// Takes the instance lock, or says who holds it.
pub fn acquire(pid_file: &Path) -> Result<InstanceLock, String> {
    ensure_runtime_dir(pid_file)?;
    let path = lock_path(pid_file);
    // Bounded: each retry means a holder unlinked the file between our
    // open and our lock, which only an exiting master does.
    for _ in 0..100 {
        if let Some(lock) = try_acquire(&path)? {
            return Ok(lock);
        }
    }
    Err(format!(
        "cannot lock {}: the file keeps being replaced",
        path.display()
    ))
}

/// One attempt: `Ok(None)` if the file we locked was unlinked or replaced
/// meanwhile (start over), else the lock or who holds it.
fn try_acquire(path: &Path) -> Result<Option<InstanceLock>, String> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(|e| format!("cannot open lock file {}: {e}", path.display()))?;
    // SAFETY: flock on an fd we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let pid = text.trim();
            return Err(if pid.is_empty() {
                format!("already running (lock {} is held)", path.display())
            } else {
                format!("already running (pid {pid})")
            });
        }
        return Err(format!("cannot lock {}: {err}", path.display()));
    }
    if !same_file(&file, path) {
        return Ok(None);
    }
    let write = |file: &mut File| -> io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())
    };
    write(&mut file).map_err(|e| format!("cannot write lock file {}: {e}", path.display()))?;
    Ok(Some(InstanceLock {
        file,
        path: path.to_path_buf(),
        owner: std::process::id(),
    }))
}

/// Creates the pidfile's directory if it is missing (one level, 0755, as
/// systemd's `RuntimeDirectory=` would): `/run/baton` is gone after every
/// `systemctl stop` and every reboot, and the config check accepts a
/// missing one when its parent exists, so the start must be able to make it.
/// `EEXIST` is fine: an init script may be creating it at the same moment.
fn ensure_runtime_dir(pid_file: &Path) -> Result<(), String> {
    let Some(dir) = pid_file.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.is_dir() {
        return Ok(());
    }
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {
            log::info!("created the pidfile's directory {}", dir.display());
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(format!(
            "cannot create the pidfile's directory {}: {e}",
            dir.display()
        )),
    }
}

/// Writes `pid` to `path` atomically: a temp file in the same directory,
/// then rename(2) over the old one, so a reader never sees a partial file.
pub fn write(path: &Path, pid: u32) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{pid}"));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        writeln!(f, "{pid}")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The pid a pidfile holds, if it holds one.
pub fn read(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Removes the pidfile if it still holds `pid` (an operator or another
/// instance may have replaced it).
pub fn remove_if_ours(path: &Path, pid: u32) {
    if read(path) == Some(pid)
        && let Err(e) = std::fs::remove_file(path)
    {
        log::warn!("cannot remove pidfile {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_remove() {
        let dir = std::env::temp_dir().join(format!("baton-pidfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.pid");
        write(&p, 42).unwrap();
        assert_eq!(read(&p), Some(42));
        remove_if_ours(&p, 41);
        assert!(p.exists(), "not ours: kept");
        remove_if_ours(&p, 42);
        assert!(!p.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lock_file_removed_on_release_and_kept_if_replaced() {
        let dir = std::env::temp_dir().join(format!("baton-lock-{}", std::process::id()));
        let pid_file = dir.join("run/x.pid");
        std::fs::create_dir_all(&dir).unwrap();
        // The missing runtime directory is made.
        let lock = acquire(&pid_file).unwrap();
        let path = lock_path(&pid_file);
        assert!(path.exists());
        assert!(acquire(&pid_file).unwrap_err().contains("already running"));
        drop(lock);
        assert!(!path.exists(), "the lock file goes with the lock");
        // A file someone else put at the path is not ours to remove.
        let lock = acquire(&pid_file).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "other\n").unwrap();
        drop(lock);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "other\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
