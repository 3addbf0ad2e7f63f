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
//!
//! The walk opens the root and the directories on the way with `O_PATH`,
//! which takes search (`x`) permission only, as the kernel's own walk for
//! `follow` does: a file under a search-only (0711) directory is served
//! under every policy, not only under `follow`. Under every policy too, a
//! directory that can be searched but not read is still found (as an
//! `O_PATH` fd): its index file can be opened, and a listing of it fails
//! with 403 as it should.

use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use baton_shared::config::Symlinks;
use log::debug;
use nix::NixPath;
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, open, openat};
use nix::sys::stat::{Mode, SFlag, fstat, fstatat};

use super::path::UrlPath;
use crate::http::response::Status;

/// What is served is opened so.
const READ: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_NOCTTY)
    .union(OFlag::O_CLOEXEC);

/// A directory only walked through (or one that may not be read).
const SEARCH: OFlag = OFlag::O_PATH
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_CLOEXEC);

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
            let fd = open_target(AT_FDCWD, p.as_path(), OFlag::empty())
                .map_err(|e| status_for(e, &p))?;
            described(fd, &p)
        }
        Symlinks::Never | Symlinks::Owner => walk(root, segments, policy),
    }
}

/// Opens `url` under `root` (see `open_under`).
pub fn open_url(root: &Path, url: &UrlPath, policy: Symlinks) -> Result<(File, Metadata), Status> {
    open_under(root, &url.segments, policy)
}

/// Opens what a request names, for reading (`extra`: `O_NOFOLLOW` or
/// nothing). A directory that may be searched but not read comes back as
/// an `O_PATH` fd, which nothing reads from: its index files are opened
/// by path, and its listing through `/proc/self/fd`, which re-checks the
/// permission.
fn open_target<P: ?Sized + NixPath>(
    dir: BorrowedFd<'_>,
    name: &P,
    extra: OFlag,
) -> nix::Result<OwnedFd> {
    match openat(dir, name, READ | extra, Mode::empty()) {
        Err(Errno::EACCES) => {
            openat(dir, name, SEARCH | extra, Mode::empty()).map_err(|_| Errno::EACCES)
        }
        other => other,
    }
}

fn described(fd: OwnedFd, path: &Path) -> Result<(File, Metadata), Status> {
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| status_for(errno_of(&e), path))?;
    Ok((file, meta))
}

fn walk(root: &Path, segments: &[Vec<u8>], policy: Symlinks) -> Result<(File, Metadata), Status> {
    let status = |e: Errno| status_for(e, root);
    let Some((last, parents)) = segments.split_last() else {
        // The root itself (a symlink there is the configuration's).
        let fd = open_target(AT_FDCWD, root, OFlag::empty()).map_err(status)?;
        return described(fd, root);
    };
    let mut dir = open(root, SEARCH, Mode::empty()).map_err(status)?;
    for seg in parents {
        let name = OsStr::from_bytes(seg);
        dir = match openat(&dir, name, SEARCH | OFlag::O_NOFOLLOW, Mode::empty()) {
            Ok(fd) => fd,
            // Not a directory, or a symlink (which O_NOFOLLOW leaves as it
            // is, and O_DIRECTORY then refuses).
            Err(Errno::ENOTDIR) => through_link(dir.as_fd(), name, policy, SEARCH)?,
            Err(e) => return Err(status(e)),
        };
    }
    let name = OsStr::from_bytes(last);
    let fd = match open_target(dir.as_fd(), name, OFlag::O_NOFOLLOW) {
        Ok(fd) => fd,
        // ELOOP from O_NOFOLLOW: the last component is a symlink.
        Err(Errno::ELOOP) if policy == Symlinks::Owner => {
            through_link(dir.as_fd(), name, policy, OFlag::empty())?
        }
        Err(Errno::ELOOP) => return Err(Status::Forbidden),
        Err(e) => return Err(status(e)),
    };
    described(fd, root)
}

/// A component O_NOFOLLOW stopped at: a symlink is refused under `never`
/// and, under `owner`, followed (opened with `flags`, or for reading when
/// they are empty) if the link's owner owns what it leads to; anything
/// else is not a directory where one was needed (404).
fn through_link(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    policy: Symlinks,
    flags: OFlag,
) -> Result<OwnedFd, Status> {
    let status = |e: Errno| status_for(e, Path::new(name));
    let link = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(status)?;
    if SFlag::from_bits_truncate(link.st_mode) & SFlag::S_IFMT != SFlag::S_IFLNK {
        return Err(Status::NotFound);
    }
    if policy != Symlinks::Owner {
        return Err(Status::Forbidden);
    }
    let fd = if flags.is_empty() {
        open_target(dir, name, OFlag::empty())
    } else {
        openat(dir, name, flags, Mode::empty())
    }
    .map_err(status)?;
    let target = fstat(&fd).map_err(status)?;
    if target.st_uid != link.st_uid {
        debug!("symlink {name:?} and its target have different owners: refused");
        return Err(Status::Forbidden);
    }
    Ok(fd)
}

fn errno_of(e: &io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(0))
}

fn status_for(errno: Errno, path: &Path) -> Status {
    match errno {
        Errno::ENOENT | Errno::ENOTDIR | Errno::ENAMETOOLONG | Errno::ELOOP => Status::NotFound,
        Errno::EACCES | Errno::EPERM => Status::Forbidden,
        _ => {
            debug!("open under {}: {}", path.display(), errno.desc());
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
