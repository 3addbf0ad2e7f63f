//! Opening a path under the root, with the site's symlink policy.
//!
//! Every open is `O_NONBLOCK` (a FIFO cannot hang the worker) and
//! `O_NOCTTY`, and what is served is `fstat`ed on the open fd, never on the
//! path, which could change in between.
//!
//! - `follow`: one `open` of the whole path, as nginx does by default.
//! - `never`: the path is walked one component at a time with
//!   `openat(O_NOFOLLOW)` from the root, so no symlink is crossed anywhere
//!   in it, atomically (no check-then-open race).
//! - `owner`: the same walk; a component that is a symlink is followed only
//!   if the link's owner owns what the opened fd is (nginx's
//!   `disable_symlinks if_not_owner`). The target is checked on the fd that
//!   is then used, so swapping the target after the check serves nothing
//!   it did not check.

use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use baton_shared::config::Symlinks;
use log::debug;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstatat};

use super::path::UrlPath;
use crate::http::response::Status;

/// Opens `segments` (already safe: no `..`, no `/`) under `root`.
pub fn open_under(
    root: &Path,
    segments: &[Vec<u8>],
    policy: Symlinks,
) -> Result<(File, Metadata), Status> {
    match policy {
        Symlinks::Follow => {
            let len = segments.iter().map(|s| s.len() + 1).sum::<usize>();
            let mut p = PathBuf::with_capacity(root.as_os_str().len() + len);
            p.push(root);
            for s in segments {
                p.push(OsStr::from_bytes(s));
            }
            open_path(&p)
        }
        Symlinks::Never | Symlinks::Owner => walk(root, segments, policy),
    }
}

/// Opens `url` under `root` (see `open_under`).
pub fn open_url(root: &Path, url: &UrlPath, policy: Symlinks) -> Result<(File, Metadata), Status> {
    open_under(root, &url.segments, policy)
}

/// Opens a path, following symlinks.
fn open_path(path: &Path) -> Result<(File, Metadata), Status> {
    let result = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .and_then(|f| f.metadata().map(|m| (f, m)));
    result.map_err(|e| status_for(e.raw_os_error(), path))
}

fn walk(root: &Path, segments: &[Vec<u8>], policy: Symlinks) -> Result<(File, Metadata), Status> {
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let mut dir: OwnedFd = File::open(root)
        .map_err(|e| status_for(e.raw_os_error(), root))?
        .into();
    for seg in segments {
        let name = OsStr::from_bytes(seg);
        let fd = match openat(&dir, name, flags | OFlag::O_NOFOLLOW, Mode::empty()) {
            Ok(fd) => fd,
            // ELOOP from O_NOFOLLOW: the component is a symlink.
            Err(Errno::ELOOP) if policy == Symlinks::Owner => {
                let link = fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(|e| status_for(Some(e as i32), root))?;
                if SFlag::from_bits_truncate(link.st_mode) & SFlag::S_IFMT != SFlag::S_IFLNK {
                    return Err(Status::NotFound);
                }
                let fd = openat(&dir, name, flags, Mode::empty())
                    .map_err(|e| status_for(Some(e as i32), root))?;
                let target = File::from(fd.try_clone().map_err(|_| Status::InternalServerError)?)
                    .metadata()
                    .map_err(|e| status_for(e.raw_os_error(), root))?;
                if target.uid() != link.st_uid {
                    debug!("symlink {name:?} and its target have different owners: refused");
                    return Err(Status::Forbidden);
                }
                fd
            }
            Err(Errno::ELOOP) => return Err(Status::Forbidden),
            Err(e) => return Err(status_for(Some(e as i32), root)),
        };
        dir = fd;
    }
    let file = File::from(dir);
    let meta = file
        .metadata()
        .map_err(|e| status_for(e.raw_os_error(), root))?;
    Ok((file, meta))
}

fn status_for(errno: Option<i32>, path: &Path) -> Status {
    match errno {
        Some(libc::ENOENT | libc::ENOTDIR | libc::ENAMETOOLONG | libc::ELOOP) => Status::NotFound,
        Some(libc::EACCES | libc::EPERM) => Status::Forbidden,
        _ => {
            debug!(
                "open under {}: {}",
                path.display(),
                io::Error::from_raw_os_error(errno.unwrap_or(0))
            );
            Status::InternalServerError
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn segs(p: &str) -> Vec<Vec<u8>> {
        p.split('/')
            .filter(|s| !s.is_empty())
            .map(|s| s.as_bytes().to_vec())
            .collect()
    }

    #[test]
    fn symlink_policies() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::fs::write(root.join("real/f.txt"), "f").unwrap();
        std::fs::write(dir.path().join("outside.txt"), "secret").unwrap();
        symlink(root.join("real"), root.join("linkdir")).unwrap();
        symlink(dir.path().join("outside.txt"), root.join("out.txt")).unwrap();
        let open = |p: &str, pol| open_under(&root, &segs(p), pol).map(|(_, m)| m.len());

        assert_eq!(open("/real/f.txt", Symlinks::Never), Ok(1));
        assert_eq!(open("/linkdir/f.txt", Symlinks::Follow), Ok(1));
        assert_eq!(open("/out.txt", Symlinks::Follow), Ok(6));
        assert_eq!(
            open("/linkdir/f.txt", Symlinks::Never),
            Err(Status::Forbidden)
        );
        assert_eq!(open("/out.txt", Symlinks::Never), Err(Status::Forbidden));
        // Same owner here (the test's user owns all of it).
        assert_eq!(open("/linkdir/f.txt", Symlinks::Owner), Ok(1));
        assert_eq!(open("/missing", Symlinks::Never), Err(Status::NotFound));
        assert_eq!(
            open("/real/f.txt/x", Symlinks::Never),
            Err(Status::NotFound)
        );
    }
}
