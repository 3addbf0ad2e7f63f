//! The master's signals, read from a signalfd in its event loop.
//!
//! The signals are blocked before anything else happens (so none can arrive
//! through a default handler and kill the master), then read one by one
//! from the signalfd. A signalfd merges identical pending signals: SIGCHLD
//! only means "some children changed", so the reaper loops on waitpid.

use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// What the master does for a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Reload,
    GracefulStop,
    FastStop,
    ReapChildren,
    /// USR2: binary upgrade in place.
    Upgrade,
}

pub const HANDLED: [Signal; 7] = [
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGTERM,
    Signal::SIGQUIT,
    Signal::SIGINT,
    Signal::SIGCHLD,
];

fn set() -> SigSet {
    let mut set = SigSet::empty();
    for s in HANDLED {
        set.add(s);
    }
    set
}

/// Blocks the master's signals. Call first thing, before forking anything:
/// children inherit the mask, so they cannot be killed by a group signal
/// before they set up their own handling.
pub fn block() -> nix::Result<()> {
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set()), None)?;
    // The master writes to sockets; a peer hanging up must be an error
    // return, not a fatal signal.
    // SAFETY: installing SIG_IGN has no handler code to race with.
    unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn) }?;
    Ok(())
}

pub fn open() -> nix::Result<SignalFd> {
    SignalFd::with_flags(&set(), SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

/// Every pending signal, as orders, in the order the kernel hands them
/// (lowest signal number first, so a stop is seen before the SIGCHLD of a
/// worker that the same group signal killed).
pub fn drain(fd: &mut SignalFd) -> Vec<Order> {
    let mut out = Vec::new();
    while let Ok(Some(info)) = fd.read_signal() {
        let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
            continue;
        };
        if sig != Signal::SIGCHLD {
            log::info!("received {sig} from pid {}", info.ssi_pid);
        }
        out.push(match sig {
            Signal::SIGHUP | Signal::SIGUSR1 => Order::Reload,
            Signal::SIGTERM | Signal::SIGQUIT => Order::GracefulStop,
            Signal::SIGINT => Order::FastStop,
            Signal::SIGCHLD => Order::ReapChildren,
            Signal::SIGUSR2 => Order::Upgrade,
            _ => continue,
        });
    }
    out
}
