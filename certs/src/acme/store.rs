//! What the helper keeps in `acme_dir`, and how it writes it:
//!
//! ```text
//! acme_dir/                      0700, the helper's user
//!   accounts/HASH.json           account credentials (its private key), 0600
//!   ca.pem                       the acme_ca the master passed on
//!   certs/NAME/key.pem           the certificate's private key, 0600
//!   certs/NAME/cert.pem          the chain the CA issued, 0600
//!   certs/NAME/names             the names it was ordered for
//!   locks/NAME.lock              held while NAME is being ordered
//! ```
//!
//! Every file is written atomically: a temp file beside it (0600), fsync,
//! rename over the old one, fsync of the directory. A reader (the master,
//! another Baton sharing the directory) sees the old file or the new one,
//! never half of one. The key goes first and the certificate second, so a
//! certificate on disk always has its key there.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Writes `bytes` to `path` atomically, mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_all_atomic(&[(path, bytes)])
}

/// Writes several files of one directory, each atomically, all written
/// and synced before the first is renamed into place, then renamed in the
/// order given: a reader sees the new set a few microseconds apart (the
/// key then the certificate), never after a long write in between.
pub fn write_all_atomic(files: &[(&Path, &[u8])]) -> io::Result<()> {
    let mut tmps = Vec::with_capacity(files.len());
    let result = (|| {
        for (path, bytes) in files {
            let dir = parent(path)?;
            mkdir(dir)?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
            tmps.push(tmp.clone());
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| with_path(e, path))?;
            f.write_all(bytes).map_err(|e| with_path(e, path))?;
            f.sync_all().map_err(|e| with_path(e, path))?;
        }
        for ((path, _), tmp) in files.iter().zip(&tmps) {
            fs::rename(tmp, path).map_err(|e| with_path(e, path))?;
        }
        for (path, _) in files {
            File::open(parent(path)?)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        for tmp in &tmps {
            let _ = fs::remove_file(tmp);
        }
    }
    result
}

fn parent(path: &Path) -> io::Result<&Path> {
    path.parent()
        .ok_or_else(|| io::Error::other(format!("{} has no directory", path.display())))
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
}

/// `mkdir -p`, each directory made 0700.
pub fn mkdir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display())))
}

/// The account credentials file for a directory URL and contact.
pub fn account_path(dir: &Path, directory: &str, email: &str) -> PathBuf {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{directory}\n{email}").as_bytes(),
    );
    let hex: String = digest.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    dir.join("accounts").join(format!("{hex}.json"))
}

/// A lock on one certificate's order, shared by every Baton using the same
/// `acme_dir` (certmagic's scheme, which works over NFS where `flock` may
/// not): the file is created exclusively; its holder touches it every
/// third of `stale`; a file not touched for `stale` belongs to a holder
/// that died and is taken over.
pub struct Lock {
    path: PathBuf,
}

/// Why a lock was not taken.
pub enum NotLocked {
    /// Someone else holds it (a live holder: it was touched recently).
    Held(String),
    Failed(io::Error),
}

impl Lock {
    pub fn try_take(dir: &Path, id: &str, stale: Duration) -> Result<Lock, NotLocked> {
        let locks = dir.join("locks");
        mkdir(&locks).map_err(NotLocked::Failed)?;
        let path = locks.join(format!("{id}.lock"));
        for _ in 0..2 {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut f) => {
                    let _ = writeln!(f, "pid {} on {}", std::process::id(), hostname());
                    let _ = f.sync_all();
                    return Ok(Lock { path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let age = fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok());
                    match age {
                        Some(age) if age > stale => {
                            log::warn!(
                                "lock {} was not refreshed for {}s: its holder is gone, taking it over",
                                path.display(),
                                age.as_secs()
                            );
                            let _ = fs::remove_file(&path);
                        }
                        // Gone in between: try again.
                        None => {}
                        Some(_) => {
                            let who = fs::read_to_string(&path).unwrap_or_default();
                            if holder_died_here(&who) {
                                // A helper of this host killed mid-order (an
                                // upgrade, a SIGKILL): no need to wait.
                                log::info!(
                                    "lock {} was held by {}, which is gone: taking it over",
                                    path.display(),
                                    who.trim()
                                );
                                let _ = fs::remove_file(&path);
                                continue;
                            }
                            return Err(NotLocked::Held(who.trim().to_owned()));
                        }
                    }
                }
                Err(e) => return Err(NotLocked::Failed(e)),
            }
        }
        Err(NotLocked::Held("another instance (contended)".into()))
    }

    /// Tells the others the holder is alive.
    pub fn refresh(&self) {
        if let Ok(f) = OpenOptions::new().append(true).open(&self.path) {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether a lock file's `pid N on HOST` names a process of this host that
/// no longer exists. A pid reused since counts as alive: the lock then
/// goes stale by its age, the safe way.
fn holder_died_here(who: &str) -> bool {
    let Some((pid, host)) = who
        .trim()
        .strip_prefix("pid ")
        .and_then(|rest| rest.split_once(" on "))
    else {
        return false;
    };
    let Ok(pid) = pid.parse::<i32>() else {
        return false;
    };
    pid > 0
        && host == hostname()
        && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH)
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_exclusive_until_released_or_stale() {
        let dir = std::env::temp_dir().join(format!("baton-lock-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let long = Duration::from_secs(3600);
        let first = Lock::try_take(&dir, "a.example", long).ok().expect("taken");
        assert!(matches!(
            Lock::try_take(&dir, "a.example", long),
            Err(NotLocked::Held(_))
        ));
        drop(first);
        // A holder of this host that died is taken over at once.
        std::fs::create_dir_all(dir.join("locks")).expect("locks");
        std::fs::write(
            dir.join("locks/b.example.lock"),
            format!("pid {} on {}\n", i32::MAX - 1, hostname()),
        )
        .expect("lock");
        assert!(Lock::try_take(&dir, "b.example", long).is_ok());
        let again = Lock::try_take(&dir, "a.example", long)
            .ok()
            .expect("free again");
        // A holder that stopped refreshing is taken over.
        let old = SystemTime::now() - Duration::from_secs(120);
        File::options()
            .append(true)
            .open(again.path())
            .and_then(|f| f.set_modified(old))
            .expect("age it");
        std::mem::forget(again);
        assert!(Lock::try_take(&dir, "a.example", Duration::from_secs(60)).is_ok());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn atomic_writes_leave_no_temp_file() {
        let dir = std::env::temp_dir().join(format!("baton-store-test-{}", std::process::id()));
        let p = dir.join("certs/x/cert.pem");
        write_atomic(&p, b"one").expect("written");
        write_atomic(&p, b"two").expect("rewritten");
        assert_eq!(fs::read(&p).expect("read"), b"two");
        assert_eq!(
            fs::read_dir(p.parent().expect("dir")).expect("ls").count(),
            1
        );
        let k = dir.join("certs/x/key.pem");
        write_all_atomic(&[(&k, b"key"), (&p, b"three")]).expect("both");
        assert_eq!(fs::read(&k).expect("read"), b"key");
        assert_eq!(fs::read(&p).expect("read"), b"three");
        let count = || fs::read_dir(dir.join("certs/x")).expect("ls").count();
        assert_eq!(count(), 2);
        // A failure renames nothing and leaves no temp file.
        let bad = dir.join("certs/x/cert.pem/inside");
        assert!(write_all_atomic(&[(&k, b"new"), (&bad, b"x")]).is_err());
        assert_eq!(fs::read(&k).expect("read"), b"key");
        assert_eq!(count(), 2);
        let _ = fs::remove_dir_all(&dir);
    }
}
