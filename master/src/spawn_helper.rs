//! Forking the certificate helper (`baton_certs`), with a worker's
//! hygiene (`spawn`): every fd but stdio and its channel closed, the
//! credentials of `acme_user` (else the workers' user) taken, then
//! PDEATHSIG and NO_NEW_PRIVS. It has no listen socket and inherits no
//! key: the loaded certificates stay in the master's memory, which the
//! helper never touches again after `close_all_but` and the exec-less
//! fork (its copy of them is never read, and it cannot read the files).
//!
//! Before the fork the master makes `acme_dir` (0700, owned by the
//! helper's user): the helper could not create it under `/var/lib`.

use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;

use baton_shared::channel::Channel;
use baton_shared::config::{Config, Identity};
use nix::unistd::{ForkResult, Pid};

/// The helper as the master sees it.
pub struct Spawned {
    pub pid: Pid,
    pub channel: Channel,
}

/// Who the helper runs as: `acme_user`, else the workers' user.
pub fn identity(config: &Config) -> Option<&Identity> {
    config.acme.user.as_ref().or(config.identity.as_ref())
}

/// Creates `acme_dir` if needed, 0700 and owned by the helper's user (its
/// parents with the usual mode, so the helper can reach it). An existing
/// directory is used as it is if the helper's user owns it, and refused
/// otherwise: the master never gives away a directory it did not make
/// (`acme_dir = "/etc"` must not chown /etc).
pub fn prepare_dir(config: &Config) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let dir = &config.acme.dir;
    let fail = |e: std::io::Error| format!("acme_dir {}: {e}", dir.display());
    let helper_uid = identity(config)
        .filter(|_| nix::unistd::geteuid().is_root())
        .map(|i| i.uid);
    match std::fs::metadata(dir) {
        Ok(meta) => {
            let owner = meta.uid();
            let wanted = helper_uid.unwrap_or_else(|| nix::unistd::geteuid().as_raw());
            if owner != wanted {
                return Err(format!(
                    "acme_dir {} belongs to uid {owner}, not to the certificate helper's user \
                     (uid {wanted}): chown it to that user, or remove it and Baton creates it",
                    dir.display()
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent).map_err(fail)?;
            }
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(fail)?;
            if let Some(id) = identity(config)
                && helper_uid.is_some()
            {
                chown(dir, id)?;
            }
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)
        }
        Err(e) => Err(fail(e)),
    }
}

fn chown(dir: &Path, id: &Identity) -> Result<(), String> {
    nix::unistd::chown(
        dir,
        Some(nix::unistd::Uid::from_raw(id.uid)),
        Some(nix::unistd::Gid::from_raw(id.gid)),
    )
    .map_err(|e| format!("cannot give acme_dir {} to {}: {e}", dir.display(), id.user))
}

/// Forks the helper.
pub fn spawn(config: &Config) -> std::io::Result<Spawned> {
    let (master_end, helper_end) = UnixStream::pair()?;
    let master_pid = std::process::id();
    let identity = identity(config).cloned();
    // SAFETY: the master is single-threaded (no lock can be held by
    // another thread in the child); the child tidies its fds, drops
    // privileges and runs the helper, then exits without returning.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => {
            drop(helper_end);
            Ok(Spawned {
                pid: child,
                channel: Channel::new(master_end)?,
            })
        }
        ForkResult::Child => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                child_main(identity.as_ref(), helper_end, master_pid)
            }))
            .unwrap_or(101);
            // SAFETY: _exit ends the child without running the master's
            // atexit handlers or flushing buffers it shares with the master.
            unsafe { libc::_exit(code) }
        }
    }
}

fn child_main(identity: Option<&Identity>, channel: UnixStream, master_pid: u32) -> i32 {
    baton_shared::logging::set_role_certs();
    let mut keep = vec![0, 1, 2, channel.as_raw_fd()];
    crate::spawn::close_all_but(&mut keep);
    if let Err(e) = crate::spawn::drop_to(identity, false) {
        log::error!("certificate helper: {e}; exiting");
        return 3;
    }
    if !crate::spawn::die_with_master(master_pid) {
        return 1;
    }
    baton_certs::run(baton_certs::Setup { channel })
}
