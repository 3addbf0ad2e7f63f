//! Signals in a worker.
//!
//! The master orchestrates reloads, so a signal sent to the whole process
//! group (Ctrl-C in a terminal, `kill -- -PGID`) must end a worker the same
//! way as the master's orders, and must not kill it otherwise:
//!
//! - HUP, USR1, USR2 are ignored (they mean something to the master only),
//!   and so is PIPE (a peer that went away is an `EPIPE`, not a death);
//! - TERM and QUIT mean drain, INT means stop now; they stay blocked and are
//!   read from a signalfd in the event loop, never from a handler;
//! - everything else is unblocked (the master forked us with its signalfd
//!   mask still in place).

use std::os::fd::{AsRawFd, RawFd};

use log::debug;
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// What a signal asks of the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Drain,
    Stop,
    /// SIGUSR2 to a worker whose `Ready` a test hook holds: send it now.
    Release,
}

pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Sets the dispositions and mask described above and opens the signalfd.
    /// `release_on_usr2`: a test hook holds `Ready` (see `test_hooks`), so
    /// SIGUSR2 is read, not ignored.
    pub fn install(release_on_usr2: bool) -> nix::Result<Signals> {
        // Ignore first: a HUP already pending would otherwise kill us the
        // moment the mask below unblocks it.
        for sig in [
            Signal::SIGHUP,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
            Signal::SIGPIPE,
        ] {
            // SAFETY: SIG_IGN installs no handler, so there is no code that
            // could run in signal context; the worker is single-threaded.
            unsafe { signal(sig, SigHandler::SigIgn) }?;
        }
        let mut mask = SigSet::empty();
        for sig in [Signal::SIGTERM, Signal::SIGQUIT, Signal::SIGINT] {
            mask.add(sig);
        }
        if release_on_usr2 {
            mask.add(Signal::SIGUSR2);
        }
        // SIG_SETMASK: exactly these stay blocked, all others are unblocked
        // in one step. One that is already pending stays pending and is
        // read from the signalfd below.
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&mask), None)?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Signals { fd })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads every pending signal; returns the strongest order among them.
    pub fn read(&mut self) -> Option<Order> {
        let mut order = None;
        loop {
            match self.fd.read_signal() {
                Ok(Some(info)) => {
                    let sig = Signal::try_from(info.ssi_signo as i32);
                    debug!("received {sig:?}");
                    match sig {
                        Ok(Signal::SIGINT) => order = Some(Order::Stop),
                        Ok(Signal::SIGTERM | Signal::SIGQUIT) => {
                            order = order.or(Some(Order::Drain));
                        }
                        Ok(Signal::SIGUSR2) => order = order.or(Some(Order::Release)),
                        _ => {}
                    }
                }
                Ok(None) => break,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    debug!("signalfd read: {e}");
                    break;
                }
            }
        }
        order
    }
}
