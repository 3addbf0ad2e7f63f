//! The control socket behind `baton -s`: a unix socket beside the pidfile
//! (`/run/baton.pid` → `/run/baton.ctl`), mode 0600, so only the master's
//! own user (root for a system instance) may use it.
//!
//! Protocol: the client sends one line, a command (`reload`, `status`,
//! `stop`, `quit`). The master answers when the command has run to its end
//! (a reload when the new generation is ready or the reload failed): a first
//! line with the exit status the client should end with, then free text,
//! then it closes. For `stop` and `quit` it answers at once and keeps the
//! connection open until the master exits, so the client returns when the
//! server is really gone.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};

use mio::net::{UnixListener, UnixStream};

/// Exit statuses of `baton -s`, also the first line of every reply.
pub mod status {
    pub const OK: i32 = 0;
    pub const CONFIG_INVALID: i32 = 1;
    pub const APPLY_FAILED: i32 = 2;
    pub const NOT_RUNNING: i32 = 3;
}

pub fn socket_path(pid_file: &Path) -> PathBuf {
    match pid_file.extension() {
        Some(ext) if ext == "pid" => pid_file.with_extension("ctl"),
        _ => {
            let mut s = pid_file.as_os_str().to_owned();
            s.push(".ctl");
            PathBuf::from(s)
        }
    }
}

/// Binds the control socket. The caller holds the instance lock, so a file
/// already at the path is a leftover of a dead master and is replaced.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => log::info!("removed stale control socket {}", path.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// A control connection whose command line is still arriving.
#[derive(Debug)]
pub struct Conn {
    pub stream: UnixStream,
    buf: Vec<u8>,
}

/// The longest command line accepted.
const MAX_LINE: usize = 256;

impl Conn {
    pub fn new(stream: UnixStream) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads what arrived. `Ok(Some(line))` once a whole line is there,
    /// `Ok(None)` if more is needed, `Err` if the peer left or misbehaved.
    pub fn read_command(&mut self) -> io::Result<Option<String>> {
        crate::io_util::read_available(&mut self.stream, &mut self.buf, MAX_LINE)?;
        if self.buf.len() > MAX_LINE {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
        match self.buf.iter().position(|&b| b == b'\n') {
            Some(i) => Ok(Some(
                String::from_utf8_lossy(&self.buf[..i]).trim().to_string(),
            )),
            None => Ok(None),
        }
    }

    /// Sends a reply. Replies are small and the client is waiting for them,
    /// so a short blocking write is fine; a client that does not read for a
    /// second loses its reply rather than stalling the master.
    pub fn reply(&mut self, code: i32, text: &str) {
        let mut msg = format!("{code}\n{text}");
        if !msg.ends_with('\n') {
            msg.push('\n');
        }
        crate::io_util::write_briefly(&mut self.stream, msg.as_bytes());
    }
}

/// `baton -s COMMAND`: sends the command to the master of `pid_file` and
/// returns the exit status to end with, having printed the master's answer.
pub fn send(pid_file: &Path, command: &str) -> i32 {
    let path = socket_path(pid_file);
    let stream = match StdUnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) => {
            let pid = crate::pidfile::read(pid_file);
            match pid {
                Some(pid)
                    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None)
                        .is_ok() =>
                {
                    eprintln!(
                        "baton: pid {pid} from {} is alive, but its control socket {} is not answering: {e}",
                        pid_file.display(),
                        path.display()
                    );
                }
                _ => eprintln!(
                    "baton: not running (no master answers on {}: {e})",
                    path.display()
                ),
            }
            return status::NOT_RUNNING;
        }
    };
    if let Err(e) = (&stream).write_all(format!("{command}\n").as_bytes()) {
        eprintln!("baton: cannot send {command:?} to {}: {e}", path.display());
        return status::NOT_RUNNING;
    }
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    if reader.read_line(&mut first).unwrap_or(0) == 0 {
        eprintln!("baton: the master closed the control connection without an answer");
        return status::APPLY_FAILED;
    }
    let code: i32 = first.trim().parse().unwrap_or(status::APPLY_FAILED);
    let mut rest = String::new();
    // For stop/quit this returns at EOF, i.e. when the master has exited.
    let _ = reader.read_to_string(&mut rest);
    if code == status::OK {
        print!("{rest}");
    } else {
        eprint!("{rest}");
    }
    code
}
