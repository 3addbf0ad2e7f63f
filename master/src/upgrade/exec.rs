//! The system side of an upgrade: the preflight child, the fd kept on the
//! old executable, close-on-exec, and `execve` itself.
//!
//! `execve(2)` and `execveat(2)` are called directly (not through
//! `std::process::Command`, which forks): this process must become the new
//! image, keeping its pid, its children, its blocked signal mask (a signal
//! that arrives meanwhile stays pending for the new image's signalfd) and
//! exactly the fds whose close-on-exec flag was cleared.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use nix::unistd::Pid;

/// The environment variable that tells an image it was executed by an
/// upgrade: `STATE_FD:OLD_EXE_FD` (`-` for no old executable).
pub const STATE_VAR: &str = "BATON_UPGRADE_STATE";
/// Set by an image that gives up before it could write a state of its
/// own: the old image reads its own state back and treats it as a
/// rollback for this reason.
pub const FAILED_VAR: &str = "BATON_UPGRADE_FAILED";
/// Set for the preflight `-t` child: it must answer with `handshake()`.
pub const PREFLIGHT_VAR: &str = "BATON_UPGRADE_PREFLIGHT";

/// The line a binary that can read this state format prints on `-t` under
/// `PREFLIGHT_VAR`. A binary that does not print it (an old Baton, a
/// script, something that exits at once) is never executed in place.
pub fn handshake() -> String {
    format!("baton-upgrade-state v{}", super::state::VERSION)
}

static EXE: OnceLock<PathBuf> = OnceLock::new();

/// The binary's path as installed, noted once per image: at a fresh start
/// from /proc/self/exe (before any package upgrade can replace it), after
/// an upgrade from the state.
pub fn note_exe(path: Option<PathBuf>) {
    let path = path
        .or_else(|| std::env::current_exe().ok())
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
    let _ = EXE.set(path);
}

pub fn exe() -> PathBuf {
    EXE.get()
        .cloned()
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"))
}

/// The preflight: `NEW -t [-c CONFIG] [--pid-file P]` with its output in a
/// memfd (no pipe to fill up and block it). Returns at once; its exit is
/// reaped with the workers', by SIGCHLD.
pub fn spawn_preflight(
    exe: &Path,
    config: Option<&Path>,
    pid_file: Option<&Path>,
) -> io::Result<(Pid, std::fs::File)> {
    // SAFETY: memfd_create with a valid C string; the result is ours.
    let fd = unsafe { libc::memfd_create(c"baton-preflight".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and belongs to nobody else.
    let output = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut command = Command::new(exe);
    command.arg("-t");
    if let Some(c) = config {
        command.arg("-c").arg(c);
    }
    if let Some(p) = pid_file {
        command.arg("--pid-file").arg(p);
    }
    command
        .env(PREFLIGHT_VAR, "1")
        .env_remove(STATE_VAR)
        .env_remove(FAILED_VAR)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output.try_clone()?)
        // Its own group: a signal to the server's group is not for it.
        .process_group(0);
    let child = command.spawn()?;
    Ok((Pid::from_raw(child.id() as i32), output))
}

/// The first 64 KiB of the preflight's output.
pub fn read_output(file: &mut std::fs::File) -> String {
    use std::io::{Read, Seek};
    let mut text = String::new();
    if file.rewind().is_ok() {
        let _ = file.take(64 * 1024).read_to_string(&mut text);
    }
    text
}

/// An fd on the executable this image runs, to go back to it even after
/// the package manager unlinked the file.
/// `O_PATH`: executing needs no read permission on the file (a binary of
/// mode 0711 run by a master that is not root).
pub fn open_self_exe() -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open("/proc/self/exe")?;
    Ok(OwnedFd::from(file))
}

pub fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on an fd number with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::other("a NUL byte in an argument"))
}

/// The argument and environment vectors for the next image: this image's
/// own arguments (so `ps` shows the same command line) and environment,
/// with the upgrade's variables set as given.
pub struct Vectors {
    _args: Vec<CString>,
    _env: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl Vectors {
    pub fn new(
        state_fd: RawFd,
        old_exe: Option<RawFd>,
        failed: Option<&str>,
    ) -> io::Result<Vectors> {
        let args = std::env::args_os()
            .map(|a| cstring(&a))
            .collect::<io::Result<Vec<_>>>()?;
        let mut env = Vec::new();
        for (k, v) in std::env::vars_os() {
            if k == STATE_VAR || k == FAILED_VAR || k == PREFLIGHT_VAR {
                continue;
            }
            let mut kv = OsString::from(&k);
            kv.push("=");
            kv.push(&v);
            env.push(cstring(&kv)?);
        }
        let old = old_exe.map_or_else(|| "-".to_string(), |fd| fd.to_string());
        env.push(cstring(OsStr::new(&format!(
            "{STATE_VAR}={state_fd}:{old}"
        )))?);
        if let Some(why) = failed {
            let why: String = why.chars().filter(|c| *c != '\0').collect();
            env.push(cstring(OsStr::new(&format!("{FAILED_VAR}={why}")))?);
        }
        let mut argv: Vec<_> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<_> = env.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        Ok(Vectors {
            _args: args,
            _env: env,
            argv,
            envp,
        })
    }
}

/// Executes `path`; returns only on failure.
pub fn exec_path(path: &Path, v: &Vectors) -> io::Error {
    let Ok(path) = cstring(path.as_os_str()) else {
        return io::Error::other("a NUL byte in the binary's path");
    };
    // SAFETY: every pointer is a NUL-terminated string owned by `v` or
    // `path`, both alive across the call; the vectors end with NULL.
    unsafe { libc::execve(path.as_ptr(), v.argv.as_ptr(), v.envp.as_ptr()) };
    io::Error::last_os_error()
}

/// Executes the file open at `fd` (`execveat(fd, "", ..., AT_EMPTY_PATH)`,
/// which works after the file was unlinked); returns only on failure.
pub fn exec_fd(fd: &OwnedFd, v: &Vectors) -> io::Error {
    exec_fd_raw(fd.as_raw_fd(), v)
}

/// `exec_fd` on a raw fd; async-signal-safe (the upgrade guard calls it
/// from a signal handler).
pub fn exec_fd_raw(fd: RawFd, v: &Vectors) -> io::Error {
    // SAFETY: as `exec_path`; the empty path with AT_EMPTY_PATH names the
    // file open at `fd`.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd,
            c"".as_ptr(),
            v.argv.as_ptr(),
            v.envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    io::Error::last_os_error()
}

/// The upgrade variables this image was started with, removed from the
/// environment so nothing started later sees them. Call while the process
/// is single-threaded.
pub struct Incoming {
    pub state_fd: RawFd,
    pub old_exe: Option<OwnedFd>,
    pub failed: Option<String>,
}

pub fn take_incoming() -> Option<Incoming> {
    let value = std::env::var(STATE_VAR).ok()?;
    let failed = std::env::var(FAILED_VAR).ok();
    for var in [STATE_VAR, FAILED_VAR] {
        // SAFETY: the process has no other thread yet.
        unsafe { std::env::remove_var(var) };
    }
    let (state, old) = value.split_once(':')?;
    let state_fd: RawFd = state.parse().ok()?;
    let old_exe = old.parse::<RawFd>().ok().filter(|fd| {
        // SAFETY: F_GETFD only asks whether the number is open.
        *fd > 2 && unsafe { libc::fcntl(*fd, libc::F_GETFD) } >= 0
    });
    // Both are ours from here on, and must not leak into workers or later
    // images unless chosen again.
    let _ = set_cloexec(state_fd, true);
    Some(Incoming {
        state_fd,
        old_exe: old_exe.map(|fd| {
            let _ = set_cloexec(fd, true);
            // SAFETY: the previous image left this fd open for us, and
            // nothing else in this image has claimed it.
            unsafe { OwnedFd::from_raw_fd(fd) }
        }),
        failed,
    })
}
