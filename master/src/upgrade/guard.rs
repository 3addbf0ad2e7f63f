//! The new image's safety net until its generation is ready: a fatal
//! signal (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT) or a panic executes
//! the old binary again, with the state the old image wrote, so the host
//! is never left without a master.
//!
//! Everything the handler needs is prepared when the guard is armed (the
//! argument and environment vectors, the fds to keep, the signal mask), so
//! the handler itself only calls async-signal-safe functions: `fcntl`,
//! `sigprocmask`, `execveat`. If the exec fails, the handler returns and
//! the signal's default action (the handler is reset on delivery) ends
//! the process as it would have without the guard.
//!
//! Limits (docs/architecture.md): the state describes the old image's fds
//! by number; if the new image closed one of them and the number was
//! reused before the crash, the old image adopts the wrong file there (it
//! checks every fd is open and every listener is listening). Workers the
//! new image forked are unknown to the old one: their channels close with
//! the crashed image, so they drain and exit, and are reaped as unknown
//! children. A SIGKILL (the OOM killer) cannot be caught at all.

use std::os::fd::RawFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use super::exec::Vectors;

struct Plan {
    vectors: Vectors,
    old_exe: RawFd,
    keep: Vec<RawFd>,
    mask: libc::sigset_t,
}

// SAFETY: the plan is written once before the guard is armed and only read
// afterwards (by the handler, or the panic hook); its raw pointers point
// into strings it owns, which live as long as the process.
unsafe impl Sync for Plan {}
// SAFETY: as above.
unsafe impl Send for Plan {}

static PLAN: OnceLock<Plan> = OnceLock::new();
static ARMED: AtomicBool = AtomicBool::new(false);

const FATAL: [libc::c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
];

/// Arms the guard: from now on a crash executes `old_exe` with the state
/// in `state_fd`, keeping `keep` (the fds that state names) open.
pub fn arm(old_exe: RawFd, state_fd: RawFd, mut keep: Vec<RawFd>) -> std::io::Result<()> {
    let why = "2:the new binary crashed before its generation was ready";
    let vectors = Vectors::new(state_fd, None, Some(why))?;
    keep.push(state_fd);
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
    let mut mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `mask` is a valid sigset_t.
    unsafe { libc::sigemptyset(&mut mask) };
    for s in crate::signals::HANDLED {
        // SAFETY: as above.
        unsafe { libc::sigaddset(&mut mask, s as libc::c_int) };
    }
    let plan = Plan {
        vectors,
        old_exe,
        keep,
        mask,
    };
    if PLAN.set(plan).is_err() {
        return Err(std::io::Error::other("the upgrade guard was armed twice"));
    }
    install_alt_stack();
    for sig in FATAL {
        // SAFETY: a zeroed sigaction is valid; the handler is an extern "C"
        // fn that only makes async-signal-safe calls.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as *const () as libc::sighandler_t;
            sa.sa_flags = libc::SA_ONSTACK | libc::SA_RESETHAND;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        fire();
    }));
    ARMED.store(true, Ordering::SeqCst);
    Ok(())
}

/// The new generation is ready (or the image rolls back by itself): from
/// now on a crash is a crash.
pub fn disarm() {
    if !ARMED.swap(false, Ordering::SeqCst) {
        return;
    }
    for sig in FATAL {
        // SAFETY: restoring the default disposition.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// A stack for the handler: a stack overflow is a SIGSEGV too.
fn install_alt_stack() {
    const SIZE: usize = 64 * 1024;
    // Leaked on purpose: it must outlive every signal.
    let stack: &'static mut [u8] = Box::leak(vec![0u8; SIZE].into_boxed_slice());
    let ss = libc::stack_t {
        ss_sp: stack.as_mut_ptr().cast(),
        ss_flags: 0,
        ss_size: SIZE,
    };
    // SAFETY: `ss` describes a valid, never-freed buffer.
    unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) };
}

extern "C" fn handler(_sig: libc::c_int) {
    fire();
}

/// Executes the old binary if the guard is armed; returns if it is not or
/// if the exec failed. Async-signal-safe.
fn fire() {
    if !ARMED.swap(false, Ordering::SeqCst) {
        return;
    }
    let Some(plan) = PLAN.get() else {
        return;
    };
    for fd in &plan.keep {
        // SAFETY: fcntl with integer arguments (clears close-on-exec).
        unsafe { libc::fcntl(*fd, libc::F_SETFD, 0) };
    }
    // The signal being handled is blocked while its handler runs; the old
    // image must start with the master's mask only, or its first fault
    // would kill it silently.
    // SAFETY: `plan.mask` is an initialised sigset_t.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &plan.mask, std::ptr::null_mut()) };
    let _ = super::exec::exec_fd_raw(plan.old_exe, &plan.vectors);
}
