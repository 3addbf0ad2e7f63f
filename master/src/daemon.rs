//! `--daemon`: fork to the background, and let the foreground parent exit
//! only when the outcome is known.
//!
//! The parent blocks on a pipe. The daemon writes `ok` once the first
//! generation is ready and the pidfile exists (parent exits 0), or the
//! startup error (parent prints it, exits 1). If the daemon dies without a
//! word, the pipe reaches EOF and the parent exits 1 too: an init script
//! never sees success for a server that is not serving.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::unistd::ForkResult;

/// The daemon's end of the pipe to the waiting parent.
pub struct Readiness {
    pipe: File,
}

impl Readiness {
    pub fn ready(mut self) {
        let _ = self.pipe.write_all(b"ok\n");
    }

    pub fn failed(mut self, error: &str) {
        let _ = self.pipe.write_all(format!("error\n{error}\n").as_bytes());
    }
}

/// Forks. Returns in the daemon child; the parent never returns (it exits
/// with the daemon's startup outcome).
///
/// `keep_stderr` is false when no `error_log` is configured: the daemon then
/// points stderr at /dev/null too, since whoever started it may be reading
/// that pipe to its end (`out=$(baton --daemon 2>&1)` would otherwise hang
/// for the server's whole life). Startup errors still reach the caller,
/// through the readiness pipe.
pub fn daemonize(keep_stderr: bool) -> std::io::Result<Readiness> {
    bind_thread_local_destructors();
    let (read_end, write_end) = nix::unistd::pipe()?;
    // SAFETY: called before any thread exists and before the master opens
    // anything but this pipe; the child continues as the master.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { .. } => {
            drop(write_end);
            std::process::exit(wait_for_daemon(read_end));
        }
        ForkResult::Child => {
            drop(read_end);
            nix::unistd::setsid()?;
            redirect_stdio_to_null(keep_stderr)?;
            Ok(Readiness {
                pipe: File::from(write_end),
            })
        }
    }
}

/// Registers a thread-local destructor, as the daemon's first log line
/// would (env_logger formats into a thread-local buffer). The first such
/// registration makes libc resolve its lazily bound call into the dynamic
/// linker (`_dl_find_dso_for_object`): a symbol lookup through the hash
/// tables of every loaded library. Done in the foreground process, the
/// resolved binding is inherited by the fork; done in the daemon, it left
/// about 200 KiB of ld.so's code and of the libraries' symbol tables mapped
/// in the master for good (smaps; `LD_DEBUG=bindings` shows the binding).
fn bind_thread_local_destructors() {
    thread_local! {
        static REGISTERED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    REGISTERED.with(|v| v.borrow_mut().clear());
}

fn wait_for_daemon(read_end: OwnedFd) -> i32 {
    let mut text = String::new();
    let _ = File::from(read_end).read_to_string(&mut text);
    let mut lines = text.splitn(2, '\n');
    match lines.next() {
        Some("ok") => 0,
        Some("error") => {
            eprint!("baton: {}", lines.next().unwrap_or("startup failed\n"));
            1
        }
        _ => {
            eprintln!("baton: the daemon exited during startup (see the error log)");
            1
        }
    }
}

/// stdin and stdout go to /dev/null, and stderr too unless `keep_stderr`
/// (then `error_log` replaces it right after).
fn redirect_stdio_to_null(keep_stderr: bool) -> std::io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let fds: &[i32] = if keep_stderr { &[0, 1] } else { &[0, 1, 2] };
    for &fd in fds {
        // SAFETY: dup2 between fds we own; replaces stdin/stdout atomically.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
