//! The harness for Baton's end-to-end tests: the real `baton` binary, run as
//! real processes, talked to over real sockets.
//!
//! - Each test gets its own temp dir (config, site, pidfile, logs) and its
//!   own free ports, so tests run in parallel.
//! - A started server is in its own process group; dropping the `Server`
//!   kills that group by its pid (never by name), so no test leaves
//!   processes behind even when it fails.
//! - Readiness is awaited, not slept on: the test is the server's
//!   `NOTIFY_SOCKET` and waits for `READY=1`; `baton -s reload` returns when
//!   the reload is done. Where the server has nothing to announce (a worker
//!   replaced, a process gone), `wait_until` polls the observable state with
//!   a deadline.

#![allow(dead_code)] // each test file uses its own part of the harness

pub mod acme;
pub mod admin;
pub mod backend;
pub mod h2;
pub mod load;
pub mod pki;
pub mod sockets;
pub mod tls;
pub mod upgrade;
pub mod websocket;

// Each test file uses its own part of the harness (as `dead_code` above).
#[allow(unused_imports)]
pub use admin::*;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_baton");

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A port nobody uses right now, for a server a test is about to start.
///
/// Taken below the kernel's ephemeral range, never from it: a port the
/// kernel picked for `bind(0)` is free again once the probe closes, and a
/// parallel test's `bind(0)` or outgoing connection could take it before
/// the server binds it (a decoy listener in `tests/activation.rs` did,
/// failing the start with EADDRINUSE). Below the range, only another
/// free_port can hand it out: within a test binary a counter makes each
/// port unique, and test binaries start from different points (their pid).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOWEST: u32 = 10_000;
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .filter(|&low| low > LOWEST + 1000)
        .unwrap_or(32_768);
    let span = ephemeral_low - LOWEST;
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOWEST + (start + n) % span;
        let port = u16::try_from(port).expect("port below the ephemeral range");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {LOWEST} and {ephemeral_low}");
}

/// Polls `cond` until it holds or `timeout` passes; for states nothing
/// announces. Returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn pid_alive(pid: i32) -> bool {
    // A zombie still "exists" for kill(0); read its state instead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Children of `pid` (from /proc), zombies included.
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat"))
            && let Some(rest) = stat.rsplit(')').next()
        {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.get(1).and_then(|f| f.parse::<i32>().ok()) == Some(pid) {
                out.push(p);
            }
        }
    }
    out
}

pub fn zombies_of(pid: i32) -> Vec<i32> {
    children_of(pid)
        .into_iter()
        .filter(|p| !pid_alive(*p))
        .collect()
}

pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A temp dir with a site, a config and a pidfile path.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("baton-test-")
            .tempdir()
            .expect("temp dir");
        // Workers run as nobody when the tests run as root: they must be able
        // to read the site.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let env = Env {
            dir,
            port: free_port(),
        };
        env.write_file("www/index.html", b"<h1>hello from baton</h1>\n");
        env
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write_file(&self, rel: &str, contents: &[u8]) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
            let mut d = parent.to_path_buf();
            while d.starts_with(self.dir.path()) {
                let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755));
                if !d.pop() {
                    break;
                }
            }
        }
        std::fs::write(&p, contents).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        p
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("baton.toml")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.path("baton.pid")
    }

    /// The global part every test config starts with: user (as root), the
    /// pidfile, a short grace, 2 workers.
    pub fn globals(&self) -> String {
        let user = if is_root() { "user = \"nobody\"\n" } else { "" };
        format!(
            "{user}workers = 2\npid_file = \"{}\"\ngrace = \"5s\"\nworker_ready_timeout = \"5s\"\n",
            self.pid_file().display()
        )
    }

    /// One site on 127.0.0.1:port serving `www/`.
    pub fn simple_config(&self) -> String {
        format!(
            "{}\n[[site]]\nlisten = [\"127.0.0.1:{}\"]\nroot = \"{}\"\n",
            self.globals(),
            self.port,
            self.path("www").display()
        )
    }

    /// `simple_config` with more top-level settings (TOML lines).
    pub fn simple_config_with(&self, extra_globals: &str) -> String {
        self.simple_config()
            .replacen("\n[[site]]", &format!("{extra_globals}\n\n[[site]]"), 1)
    }

    pub fn write_config(&self, text: &str) -> PathBuf {
        let p = self.config_path();
        std::fs::write(&p, text).expect("write config");
        p
    }

    /// Runs `baton -c CONFIG ARGS...` to completion.
    pub fn baton(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("-c")
            .arg(self.config_path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run baton")
    }

    pub fn reload(&self) -> Output {
        self.baton(&["-s", "reload"])
    }

    pub fn status(&self) -> Status {
        let out = self.baton(&["-s", "status"]);
        Status::parse(&String::from_utf8_lossy(&out.stdout))
    }

    /// Starts `baton -c CONFIG` in the foreground (as systemd would) and
    /// waits for READY=1. Panics with the server's stderr if it does not
    /// become ready.
    pub fn start(&self) -> Server {
        self.start_with(&[])
    }

    pub fn start_with(&self, extra_args: &[&str]) -> Server {
        let server = self.spawn(extra_args);
        server.wait_ready()
    }

    /// Starts the server without waiting.
    pub fn spawn(&self, extra_args: &[&str]) -> Server {
        let mut command = Command::new(BIN);
        command
            .arg("-c")
            .arg(self.config_path())
            .args(extra_args)
            .stdin(Stdio::null());
        self.spawn_command(command)
    }

    /// Starts `command` (which runs baton, perhaps through a wrapper that
    /// execs it) as a test server: notify socket, log, own process group.
    pub fn spawn_command(&self, mut command: Command) -> Server {
        let notify_path = self.path(&format!("notify-{}.sock", free_port()));
        let notify = UnixDatagram::bind(&notify_path).expect("notify socket");
        let log = self.path("stderr.log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        command
            .env("NOTIFY_SOCKET", &notify_path)
            .env("BATON_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0);
        // If the test process dies without running Drop (a timeout killed
        // it), the server must not outlive it: the kernel kills the master,
        // and its workers follow by their own parent-death signal.
        // SAFETY: prctl is async-signal-safe and touches no memory.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                Ok(())
            });
        }
        let child = command.spawn().expect("spawn baton");
        Server {
            child,
            reaped: false,
            notify,
            log,
            port: self.port,
        }
    }
}

/// `baton -s status`, parsed.
#[derive(Debug, Default, Clone)]
pub struct Status {
    pub raw: String,
    pub pid: i32,
    pub generation: u64,
    pub workers: Vec<WorkerStatus>,
    pub last_reload: String,
    pub crash_loop: String,
    pub generations: String,
}

#[derive(Debug, Clone)]
pub struct WorkerStatus {
    pub pid: i32,
    pub generation: u64,
    pub state: String,
}

impl Status {
    pub fn parse(text: &str) -> Status {
        let mut s = Status {
            raw: text.to_string(),
            ..Status::default()
        };
        for line in text.lines() {
            let Some((key, value)) = line.split_once(": ") else {
                continue;
            };
            match key {
                "pid" => s.pid = value.parse().unwrap_or(0),
                "generation" => s.generation = value.parse().unwrap_or(0),
                "last_reload" => s.last_reload = value.to_string(),
                "crash_loop" => s.crash_loop = value.to_string(),
                "generations" => s.generations = value.to_string(),
                "worker" => {
                    let field = |name: &str| {
                        value
                            .split_whitespace()
                            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                            .unwrap_or("")
                            .to_string()
                    };
                    s.workers.push(WorkerStatus {
                        pid: field("pid").parse().unwrap_or(0),
                        generation: field("generation").parse().unwrap_or(0),
                        state: field("state"),
                    });
                }
                _ => {}
            }
        }
        s
    }

    pub fn serving_pids(&self) -> Vec<i32> {
        self.workers
            .iter()
            .filter(|w| w.generation == self.generation && w.state == "serving")
            .map(|w| w.pid)
            .collect()
    }
}

/// A running server (its process group is killed on drop).
pub struct Server {
    pub child: Child,
    /// Set once `wait_exit` has reaped the master: from then on its pid,
    /// and so its process group id, may belong to anyone (pid_max can be as
    /// low as 32768 and the suite starts thousands of processes), so it is
    /// never signalled again.
    reaped: bool,
    notify: UnixDatagram,
    pub log: PathBuf,
    pub port: u16,
}

impl Server {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits for the next notify message containing `what` (e.g.
    /// "READY=1"); returns the whole message.
    pub fn wait_notify(&self, what: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.notify.set_read_timeout(Some(left)).ok()?;
            match self.notify.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                    if msg.lines().any(|l| l == what) {
                        return Some(msg);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// The next notify message, whatever it says.
    pub fn next_notify(&self, timeout: Duration) -> Option<String> {
        let mut buf = [0u8; 4096];
        self.notify.set_read_timeout(Some(timeout)).ok()?;
        let n = self.notify.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).to_string())
    }

    pub fn wait_ready(mut self) -> Server {
        if self
            .wait_notify("READY=1", Duration::from_secs(20))
            .is_none()
        {
            let diagnosis = self.diagnose();
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!(
                "baton did not become ready; {diagnosis}\nits log:\n{}",
                self.log_text()
            );
        }
        self
    }

    /// What the master process is doing, for a failure message.
    pub fn diagnose(&self) -> String {
        let pid = self.pid();
        let read = |what: &str| {
            std::fs::read_to_string(format!("/proc/{pid}/{what}"))
                .unwrap_or_else(|e| format!("({e})"))
        };
        format!(
            "master {pid}: stat {:?}, wchan {:?}, stack:\n{}children: {:?}",
            read("stat").trim(),
            read("wchan"),
            read("stack"),
            children_of(pid)
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        assert!(!self.reaped, "signal to a master already reaped");
        // SAFETY: kill on the pid of our own child, not yet reaped (so the
        // pid is still ours).
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits for the master to exit; returns its exit code (None: killed by
    /// a signal) or panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.reaped = true;
                return status.code();
            }
            if Instant::now() >= deadline {
                panic!(
                    "baton {} did not exit within {timeout:?}; log:\n{}",
                    self.pid(),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.reaped {
            // Its workers end by themselves (parent-death signal, channel
            // EOF); its pid may already be another test's server.
            return;
        }
        let pgid = self.pid();
        // SAFETY: kill on the process group our own child leads; the child
        // is not reaped, so its pid (the group id) cannot have been reused.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Reads a response's status line and header fields, up to the blank line.
pub fn read_head<R: BufRead>(reader: &mut R) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok((status, headers))
}

/// Reads one response from `reader` (Content-Length bodies; `head` when it
/// answers a HEAD request).
pub fn read_response<R: BufRead>(reader: &mut R, head: bool) -> std::io::Result<Response> {
    let (status, headers) = read_head(reader)?;
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if !head {
        let len: usize = resp
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        resp.body = vec![0; len];
        reader.read_exact(&mut resp.body)?;
    }
    Ok(resp)
}

pub fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s
}

/// One GET on a new connection.
pub fn get(port: u16, path: &str) -> std::io::Result<Response> {
    request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
}

/// Sends raw bytes on a new connection and reads one response.
pub fn request(port: u16, raw: &str) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(raw.as_bytes())?;
    let mut r = BufReader::new(s);
    read_response(&mut r, raw.starts_with("HEAD "))
}

// ---- Helpers for the static file and HTTP engine tests ----

impl Env {
    /// One site on 127.0.0.1:port serving `www/`, with `global` lines after
    /// the globals and `site` lines in the `[[site]]`.
    pub fn config_with(&self, global: &str, site: &str) -> String {
        format!(
            "{}{global}\n[[site]]\nlisten = [\"127.0.0.1:{}\"]\nroot = \"{}\"\n{site}\n",
            self.globals(),
            self.port,
            self.path("www").display()
        )
    }

    /// Writes `config_with(global, site)` and starts the server on it.
    pub fn start_config(&self, global: &str, site: &str) -> Server {
        self.write_config(&self.config_with(global, site));
        self.start()
    }
}

/// Sends `bytes` on a new connection, half-closes nothing, and reads until
/// the server closes the connection (or 10 s pass, which fails the caller's
/// checks): everything the server answered.
pub fn exchange(port: u16, bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut s = connect(port);
    s.write_all(bytes).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// Whether the server closed `s` (EOF or reset) within its read timeout,
/// discarding anything still sent before that.
pub fn closed_by_server(s: &mut TcpStream) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false, // timed out: still open
        }
    }
}

/// All the responses in `bytes` (Content-Length framed; `head` for
/// responses to HEAD requests).
pub fn parse_responses(bytes: &[u8], head: bool) -> Vec<Response> {
    let mut reader = BufReader::new(bytes);
    let mut out = Vec::new();
    while let Ok(r) = read_response(&mut reader, head) {
        out.push(r);
    }
    out
}

/// The first status code in raw response bytes, if any.
pub fn first_status(bytes: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(bytes);
    text.split_whitespace().nth(1)?.parse().ok()
}
