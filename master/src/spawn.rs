//! Forking one worker.
//!
//! Workers are forked, not exec'd: they inherit the parsed config and the
//! bound sockets. Fork copies everything else too, and CLOEXEC does nothing
//! without exec, so the child tidies up by hand before it serves: it keeps
//! only stdio, its channel and its generation's listeners (closing the
//! master's epoll fd, signalfd, lock file, control socket, other workers'
//! channels and the retired listeners it does not take over), drops
//! privileges, and only then calls the worker's `run`. The signal mask is
//! left as inherited (all the master's signals blocked) so no signal is
//! lost before the worker has its own signalfd; `run` sets the mask it
//! wants.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use baton_shared::channel::{Channel, HealthMark};
use baton_shared::config::{Config, Identity, ListenAddr};
use nix::unistd::{ForkResult, Pid};

/// A forked worker as the master sees it.
pub struct Spawned {
    pub pid: Pid,
    pub channel: Channel,
}

/// A listen socket a worker is given: the master's fd for it, the address
/// whose sites answer it, and whether it is a retired socket taken over
/// (see `baton_worker::Listener`).
pub struct ListenerFd {
    pub fd: RawFd,
    pub serves_as: ListenAddr,
    pub taken_over: bool,
}

/// What a worker inherits for TLS: the loaded certificates and keys (it
/// never reads key files) and the session ticket keys.
pub struct TlsHandoff {
    pub material: Arc<baton_shared::tls::Material>,
    pub ticket_keys: Vec<[u8; 32]>,
}

/// What the child takes over from the master's state at the fork.
struct Handoff<'a> {
    tls: &'a TlsHandoff,
    /// The active health state (`crate::health`) the worker starts from.
    health: &'a [HealthMark],
}

/// Which worker a fork makes: its generation and its slot in it.
#[derive(Debug, Clone, Copy)]
pub struct Place {
    pub generation: u64,
    pub slot: usize,
}

/// Forks the worker at `place` serving `listeners`.
pub fn spawn(
    config: &Arc<Config>,
    place: Place,
    listeners: &[ListenerFd],
    access_logs: &[RawFd],
    tls: &TlsHandoff,
    health: &[HealthMark],
) -> std::io::Result<Spawned> {
    let (master_end, worker_end) = UnixStream::pair()?;
    let master_pid = std::process::id();
    // SAFETY: the master is single-threaded (no other thread can hold a lock
    // the child would need), and the child only tidies fds, drops
    // privileges and runs the worker, then exits without returning.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => {
            drop(worker_end);
            Ok(Spawned {
                pid: child,
                channel: Channel::new(master_end)?,
            })
        }
        ForkResult::Child => {
            // A panic must never unwind into the master's stack frames in the
            // child; whatever happens, this process ends here.
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                child_main(
                    config,
                    place,
                    listeners,
                    access_logs,
                    Handoff { tls, health },
                    worker_end,
                    master_pid,
                )
            }))
            .unwrap_or(101);
            // SAFETY: _exit ends the child without running the master's
            // atexit handlers or flushing buffers it shares with the master.
            unsafe { libc::_exit(code) }
        }
    }
}

fn child_main(
    config: &Arc<Config>,
    place: Place,
    listeners: &[ListenerFd],
    access_logs: &[RawFd],
    handoff: Handoff<'_>,
    channel: UnixStream,
    master_pid: u32,
) -> i32 {
    let Handoff { tls, health } = handoff;
    baton_shared::logging::set_role_worker();
    let generation = place.generation;
    let mut keep: Vec<RawFd> = vec![0, 1, 2, channel.as_raw_fd()];
    keep.extend(listeners.iter().map(|l| l.fd));
    keep.extend_from_slice(access_logs);
    close_all_but(&mut keep);

    if let Err(e) = drop_privileges(config) {
        log::error!("worker of generation {generation}: {e}; exiting");
        return 3;
    }
    // SIGTERM makes the worker drain.
    if !die_with_master(master_pid) {
        log::warn!("master {master_pid} died while this worker started; exiting");
        return 1;
    }
    let listeners = listeners
        .iter()
        .map(|l| baton_worker::Listener {
            // SAFETY: the fd was inherited from the master and is kept open
            // by `close_all_but`; from here on this process owns it (the
            // master's objects for it are never dropped in the child, which
            // exits without unwinding).
            fd: unsafe { OwnedFd::from_raw_fd(l.fd) },
            addr: l.serves_as.clone(),
            taken_over: l.taken_over,
        })
        .collect();
    let access_logs = access_logs
        .iter()
        // SAFETY: as for the listeners: inherited, kept open, ours now.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(*fd) })
        .collect();
    baton_worker::run(baton_worker::Setup {
        config: Arc::clone(config),
        generation,
        slot: place.slot,
        listeners,
        access_logs,
        channel,
        tls: Arc::clone(&tls.material),
        ticket_keys: tls.ticket_keys.clone(),
        health: health.to_vec(),
    })
}

/// Closes every fd not in `keep` (which is sorted in place).
pub(crate) fn close_all_but(keep: &mut [RawFd]) {
    keep.sort_unstable();
    let mut next: u32 = 0;
    for &fd in keep.iter() {
        let fd = fd as u32;
        if fd > next {
            close_range(next, fd - 1);
        }
        next = fd + 1;
    }
    close_range(next, u32::MAX);
}

fn close_range(first: u32, last: u32) {
    // SAFETY: close_range(2) only closes fds; the fds closed here belong to
    // master objects the child never uses again.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    if rc != 0 {
        // Kernels before 5.9: close one by one up to the fd limit.
        let max = nix::unistd::sysconf(nix::unistd::SysconfVar::OPEN_MAX)
            .ok()
            .flatten()
            .unwrap_or(1024) as u32;
        for fd in first..=last.min(max) {
            // SAFETY: as above.
            unsafe { libc::close(fd as i32) };
        }
    }
}

/// setgroups, setgid, setuid, then proof that root is gone, and
/// no_new_privs so no exec could regain it. The groups were resolved by
/// the master (`Identity::groups`): initgroups here would run NSS in the
/// forked child.
fn drop_privileges(config: &Config) -> Result<(), String> {
    drop_to(config.identity.as_ref(), config.run_as_root)
}

/// `drop_privileges` for any identity (the certificate helper's may be
/// `acme_user`); `allow_root`: a uid 0 identity is accepted.
pub(crate) fn drop_to(identity: Option<&Identity>, allow_root: bool) -> Result<(), String> {
    if let Some(Identity {
        user,
        uid,
        gid,
        groups,
        ..
    }) = identity
        && nix::unistd::geteuid().is_root()
    {
        let gid = nix::unistd::Gid::from_raw(*gid);
        let uid = nix::unistd::Uid::from_raw(*uid);
        let groups: Vec<_> = groups
            .iter()
            .map(|g| nix::unistd::Gid::from_raw(*g))
            .collect();
        nix::unistd::setgroups(&groups)
            .map_err(|e| format!("setgroups({user}: {groups:?}) failed: {e}"))?;
        nix::unistd::setgid(gid).map_err(|e| format!("setgid({gid}) failed: {e}"))?;
        nix::unistd::setuid(uid).map_err(|e| format!("setuid({uid}) failed: {e}"))?;
        if !uid.is_root() {
            if nix::unistd::setuid(nix::unistd::Uid::from_raw(0)).is_ok()
                || nix::unistd::geteuid().is_root()
            {
                return Err("root privileges could be regained after setuid".into());
            }
        } else if !allow_root {
            return Err("refusing to run a worker as root".into());
        }
    }
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(format!(
            "PR_SET_NO_NEW_PRIVS failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// In a forked child (worker, certificate helper), after its credential
/// change: SIGTERM when the master dies. Set after the change because the
/// kernel clears the parent-death signal when the effective ids change.
/// False if the master died before it took effect (the child should exit).
pub(crate) fn die_with_master(master_pid: u32) -> bool {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGTERM as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    nix::unistd::getppid().as_raw() as u32 == master_pid
}
