//! The pidfile and the lock that keeps a second instance out.
//!
//! The lock is taken on a separate file, `PIDFILE.lock`, never on the pidfile
//! itself: the pidfile is written by renaming a temp file over it, and a lock
//! on the old inode would silently vanish with that rename. The lock file is
//! never unlinked either (a second instance could otherwise lock an unlinked
//! inode while a third creates a new file), and holds the master's pid so
//! that "already running (pid N)" can be said even before the pidfile exists.
//!
//! The pidfile is written only once the first generation is ready, holds the
//! master's pid (which no reload changes), and is removed at exit only if it
//! still holds that pid.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Held for the master's whole life; dropping it releases the lock.
#[derive(Debug)]
pub struct InstanceLock {
    #[allow(dead_code)] // kept open: the lock lives as long as this fd
    file: File,
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

    /// The lock a previous image of this process held, from its fd.
    pub fn adopt(fd: std::os::fd::OwnedFd) -> InstanceLock {
        InstanceLock {
            file: File::from(fd),
        }
    }
}

/// Takes the instance lock, or says who holds it.
pub fn acquire(pid_file: &Path) -> Result<InstanceLock, String> {
    let path = lock_path(pid_file);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&path)
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
    let write = |file: &mut File| -> io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())
    };
    write(&mut file).map_err(|e| format!("cannot write lock file {}: {e}", path.display()))?;
    Ok(InstanceLock { file })
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
}
