//! `run()` for real: in a forked child (it changes the signal mask, which
//! must not leak into the test process), with a real TCP listener, a
//! socketpair channel and a temporary document root. Every wait is on an
//! event (a read with a timeout, a pidfd), never a fixed sleep.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_shared::channel::{Message, ToMaster, ToWorker, frame};
use baton_shared::config::{Config, Listen, ListenAddr, Pos, Site, Source};
use baton_worker::{Listener, Setup, run};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

const WAIT: Duration = Duration::from_secs(10);

struct TestWorker {
    pid: Pid,
    channel: Option<UnixStream>,
    addr: ListenAddr,
    _dir: tempfile::TempDir,
    reaped: bool,
}

fn config(addr: ListenAddr, root: PathBuf, tweak: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config {
        source: Source::Embedded,
        identity: None,
        run_as_root: false,
        workers: 1,
        pid_file: PathBuf::from("/nonexistent/baton.pid"),
        grace: Duration::from_secs(30),
        error_log: None,
        log_level: "warn".into(),
        worker_ready_timeout: Duration::from_secs(5),
        max_draining_generations: 8,
        drain_linger: Duration::from_secs(2),
        inetd_idle_exit: Duration::from_secs(60),
        keepalive_timeout: Duration::from_secs(60),
        header_timeout: Duration::from_secs(10),
        defer_accept: Duration::ZERO,
        http: Default::default(),
        sites: vec![Site {
            listen: vec![Listen {
                addr,
                backlog: 128,
                mode: 0o666,
                h2c: false,
                pos: Pos::default(),
            }],
            names: vec![],
            root: Some(root),
            routes: Vec::new(),
            index: vec!["index.html".into()],
            files: Default::default(),
            access_log: None,
            tls: None,
            redirect_https: None,
            http2: true,
            pos: Pos::default(),
        }],
        admin: None,
        access_log_format: Default::default(),
        log_mode: 0o640,
        log_owner: None,
        tls: Default::default(),
        worker_rlimit_nofile: None,
        tls_loaded: Default::default(),
        proxy: Default::default(),
        acme: Default::default(),
    };
    tweak(&mut config);
    config
}

impl TestWorker {
    /// Forks a worker serving a fresh tree on 127.0.0.1 and waits for its
    /// `Ready`.
    fn start(tweak: impl FnOnce(&mut Config)) -> TestWorker {
        TestWorker::start_on(false, tweak)
    }

    /// The same on a TCP or a unix listener.
    fn start_on(unix: bool, tweak: impl FnOnce(&mut Config)) -> TestWorker {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("dir")).unwrap();
        std::fs::write(root.join("hello.txt"), "hello world\n").unwrap();
        std::fs::write(root.join("index.html"), "<h1>index</h1>\n").unwrap();
        std::fs::write(root.join("dir/index.html"), "<h1>dir</h1>\n").unwrap();
        std::fs::write(root.join("big.bin"), big_body()).unwrap();
        std::fs::write(dir.path().join("secret.txt"), "TOP SECRET\n").unwrap();

        let (fd, addr) = if unix {
            let path = dir.path().join("http.sock");
            let listener = UnixListener::bind(&path).unwrap();
            listener.set_nonblocking(true).unwrap();
            (OwnedFd::from(listener), ListenAddr::Unix(path))
        } else {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let addr = listener.local_addr().unwrap();
            (OwnedFd::from(listener), ListenAddr::Tcp(addr))
        };
        let (master_end, worker_end) = UnixStream::pair().unwrap();
        let setup = Setup {
            config: Arc::new(config(addr.clone(), root, tweak)),
            generation: 1,
            slot: 0,
            listeners: vec![Listener {
                fd,
                addr: addr.clone(),
                taken_over: false,
            }],
            channel: worker_end,
            access_logs: Vec::new(),
            tls: Default::default(),
            ticket_keys: Vec::new(),
            health: Vec::new(),
        };
        // SAFETY: the child only closes fds and calls `run`, then exits; it
        // never returns into the test harness.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                // As the master does: keep only what this worker owns, so
                // sibling tests' sockets do not live on in this child.
                let keep = [setup.listeners[0].fd.as_raw_fd(), setup.channel.as_raw_fd()];
                for fd in 3..4096 {
                    if !keep.contains(&fd) {
                        // SAFETY: closing fds this child will never use.
                        unsafe { libc::close(fd) };
                    }
                }
                std::process::exit(run(setup));
            }
            ForkResult::Parent { child } => {
                // Our copies of the worker's listener and channel end go, so
                // that closing them in the worker is observable.
                drop(setup);
                master_end.set_read_timeout(Some(WAIT)).unwrap();
                let mut w = TestWorker {
                    pid: child,
                    channel: Some(master_end),
                    addr,
                    _dir: dir,
                    reaped: false,
                };
                assert_eq!(w.next_message(), Some(ToMaster::Ready));
                w
            }
        }
    }

    /// The next message from the worker; `None` at EOF (it exited).
    fn next_message(&mut self) -> Option<ToMaster> {
        let ch = self.channel.as_mut().unwrap();
        let mut len = [0u8; 4];
        match ch.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return None,
            Err(e) => panic!("channel read: {e}"),
        }
        let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
        ch.read_exact(&mut body).unwrap();
        Some(ToMaster::decode(&body).unwrap())
    }

    fn order(&mut self, msg: ToWorker) {
        let mut bytes = Vec::new();
        frame(&msg, &mut bytes);
        self.channel.as_mut().unwrap().write_all(&bytes).unwrap();
    }

    fn try_connect(&self) -> std::io::Result<Client> {
        let stream: Box<dyn Socket> = match &self.addr {
            ListenAddr::Tcp(a) => {
                let s = TcpStream::connect(a)?;
                s.set_read_timeout(Some(WAIT))?;
                Box::new(s)
            }
            ListenAddr::Unix(p) => {
                let s = UnixStream::connect(p)?;
                s.set_read_timeout(Some(WAIT))?;
                Box::new(s)
            }
            ListenAddr::Stdin => unreachable!("the tests bind real addresses"),
        };
        Ok(Client {
            stream,
            buf: Vec::new(),
        })
    }

    fn connect(&self) -> Client {
        self.try_connect().unwrap()
    }

    /// Waits until the worker has closed its listener (connections are
    /// refused): it is draining. Connections accepted meanwhile are dropped
    /// at once, which ends them on the worker's side too.
    fn wait_listener_closed(&self) {
        let start = Instant::now();
        loop {
            match self.try_connect() {
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
                // A handshake still in progress when the last holder of the
                // socket closed it (here the worker is the only one; in
                // production the master keeps it open).
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
                Err(e) => panic!("connect: {e}"),
                Ok(_) => assert!(start.elapsed() < WAIT, "listener still open"),
            }
        }
    }

    /// Waits for the child to exit, at most `WAIT`.
    fn wait_exit(&mut self) -> WaitStatus {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid.as_raw(), 0) };
        assert!(fd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
        // SAFETY: a fresh fd that nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut fds = [nix::poll::PollFd::new(
            pidfd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let n = nix::poll::poll(&mut fds, nix::poll::PollTimeout::try_from(WAIT).unwrap()).unwrap();
        assert_eq!(n, 1, "worker did not exit within {WAIT:?}");
        self.reaped = true;
        waitpid(self.pid, None).unwrap()
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}

fn big_body() -> Vec<u8> {
    (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect()
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

trait Socket: Read + Write {}
impl Socket for TcpStream {}
impl Socket for UnixStream {}

struct Client {
    stream: Box<dyn Socket>,
    buf: Vec<u8>,
}

impl Client {
    fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).unwrap();
    }

    fn get(&mut self, path: &str) -> Response {
        self.send(&format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"));
        self.response(false)
    }

    fn more(&mut self) -> usize {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk).unwrap();
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Reads one response; `head_only` for the answer to a HEAD.
    fn response(&mut self, head_only: bool) -> Response {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(n) = r.parse(&self.buf).unwrap() {
                let status = r.code.unwrap();
                let headers: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8(h.value.to_vec()).unwrap(),
                        )
                    })
                    .collect();
                self.buf.drain(..n);
                let mut resp = Response {
                    status,
                    headers,
                    body: Vec::new(),
                };
                let len: usize = resp.header("content-length").unwrap().parse().unwrap();
                if !head_only {
                    while self.buf.len() < len {
                        assert!(self.more() > 0, "EOF inside a body");
                    }
                    resp.body = self.buf.drain(..len).collect();
                }
                return resp;
            }
            assert!(self.more() > 0, "EOF before a response head");
        }
    }

    /// The server closed cleanly (EOF, not a reset) with nothing more sent.
    fn assert_closed(&mut self) {
        let mut chunk = [0u8; 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => assert!(self.buf.is_empty(), "unread bytes before EOF"),
            Ok(n) => panic!(
                "expected EOF, got {:?}",
                String::from_utf8_lossy(&chunk[..n])
            ),
            Err(e) => panic!("expected EOF, got {e}"),
        }
    }
}

#[test]
fn serves_files_then_drains() {
    let mut w = TestWorker::start(|_| {});
    let mut a = w.connect();

    // A file, with every header it should have.
    let r = a.get("/hello.txt");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello world\n");
    assert_eq!(r.header("content-length"), Some("12"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("server"), Some("baton"));
    assert!(httpdate::parse_http_date(r.header("date").unwrap()).is_ok());
    assert!(httpdate::parse_http_date(r.header("last-modified").unwrap()).is_ok());
    assert_eq!(r.header("connection"), None);

    // The same connection, kept alive: the index, HEAD, errors.
    let r = a.get("/");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"<h1>index</h1>\n"[..])
    );
    a.send("HEAD /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let r = a.response(true);
    assert_eq!((r.status, r.header("content-length")), (200, Some("12")));
    assert_eq!(a.get("/missing").status, 404);
    for escape in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/dir/../../secret.txt",
    ] {
        let r = a.get(escape);
        assert_eq!(r.status, 403, "{escape}");
        assert!(!String::from_utf8_lossy(&r.body).contains("SECRET"));
    }
    assert_eq!(a.get("/..%2fsecret.txt").status, 404);
    let r = a.get("/dir?x=1");
    assert_eq!((r.status, r.header("location")), (301, Some("/dir/?x=1")));
    assert_eq!(a.get("/dir/").body, b"<h1>dir</h1>\n");

    // A body is read and discarded; the connection goes on.
    a.send("POST /hello.txt HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nabcde");
    let r = a.response(false);
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    // Pipelined requests are answered in order.
    a.send(
        "GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n\
         GET /dir/ HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert_eq!(a.response(false).body, b"hello world\n");
    assert_eq!(a.response(false).body, b"<h1>dir</h1>\n");

    // `Connection: close` is honoured.
    let mut cl = w.connect();
    cl.send("GET /hello.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert_eq!(cl.response(false).header("connection"), Some("close"));
    cl.assert_closed();

    // HTTP/1.0 closes unless asked to keep alive.
    let mut b = w.connect();
    b.send("GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(b.response(false).header("connection"), Some("keep-alive"));
    b.send("GET /hello.txt HTTP/1.0\r\n\r\n");
    assert_eq!(b.response(false).header("connection"), Some("close"));
    b.assert_closed();

    // Broken heads get their status and a close.
    let mut c = w.connect();
    c.send("GET / HTTP/1.1\r\n\r\n");
    assert_eq!(c.response(false).status, 400);
    c.assert_closed();
    let mut c = w.connect();
    c.send("GET / HTTP/2.0\r\n\r\n");
    assert_eq!(c.response(false).status, 505);
    c.assert_closed();

    // A client that does not read its big file does not hold up others;
    // the file arrives whole once it reads.
    let mut slow = w.connect();
    slow.send("GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(w.connect().get("/hello.txt").status, 200);
    let r = slow.response(false);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert!(r.body == big_body(), "big body differs");

    // Now drain, with: `idle`, kept alive with nothing in progress; `late`,
    // idle too but sending within the linger; `partial`, half a head in.
    let mut idle = w.connect();
    assert_eq!(idle.get("/hello.txt").status, 200);
    let mut late = w.connect();
    assert_eq!(late.get("/hello.txt").status, 200);
    let mut pipe = w.connect();
    assert_eq!(pipe.get("/hello.txt").status, 200);
    let mut partial = w.connect();
    partial.send("GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n");
    assert_eq!(a.get("/hello.txt").status, 200); // `partial` is in before we drain
    drop(a);
    // The drain starts after this: the linger below is measured from here,
    // a lower bound whatever the machine's load.
    let ordered = Instant::now();
    w.order(ToWorker::Drain);
    w.wait_listener_closed();

    let r = late.get("/hello.txt");
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    late.assert_closed();
    // Two pipelined requests in one segment: the second is already there
    // when the first is answered, so both are served, the last with close.
    pipe.send(
        "GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n\
         GET /dir/ HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    let r = pipe.response(false);
    assert_eq!((r.status, r.header("connection")), (200, None));
    let r = pipe.response(false);
    assert_eq!(
        (r.body.as_slice(), r.header("connection")),
        (&b"<h1>dir</h1>\n"[..], Some("close"))
    );
    pipe.assert_closed();
    partial.send("\r\n");
    let r = partial.response(false);
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    partial.assert_closed();
    // The idle one is closed cleanly once the linger (2s) is over.
    idle.assert_closed();
    assert!(ordered.elapsed() > Duration::from_millis(1900));
    drop((idle, late, partial, pipe, b, slow));

    // No connection left: the worker exits 0 without waiting for `grace`.
    // Meanwhile it has reported what it served, about once a second.
    let mut served = 0;
    let mut said_draining = 0;
    while let Some(msg) = w.next_message() {
        match msg {
            ToMaster::Stats { requests, .. } => served = requests,
            ToMaster::Draining => said_draining += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        said_draining, 1,
        "Draining is said once, when it stops accepting"
    );
    assert!(served >= 20, "stats said {served} requests");
    assert_eq!(w.wait_exit(), WaitStatus::Exited(w.pid, 0));
    drop(w);
}

#[test]
fn an_orphaned_worker_drains_and_exits() {
    let mut w = TestWorker::start(|c| c.drain_linger = Duration::from_millis(300));
    let mut idle = w.connect();
    assert_eq!(idle.get("/hello.txt").status, 200);
    drop(w.channel.take()); // the master "dies"
    idle.assert_closed();
    drop(idle);
    assert_eq!(w.wait_exit(), WaitStatus::Exited(w.pid, 0));
}

#[test]
fn an_orphaned_worker_gives_up_after_the_grace_period() {
    let mut w = TestWorker::start(|c| {
        c.drain_linger = Duration::from_secs(600);
        c.header_timeout = Duration::from_secs(600);
        c.grace = Duration::from_millis(300);
    });
    // In flight for ever: half a head, never finished.
    let mut stuck = w.connect();
    stuck.send("GET / HTTP/1.1\r\n");
    assert_eq!(w.connect().get("/hello.txt").status, 200); // `stuck` is in
    drop(w.channel.take());
    assert_eq!(w.wait_exit(), WaitStatus::Exited(w.pid, 0));
}

#[test]
fn group_signals_are_ignored_and_term_drains() {
    let mut w = TestWorker::start(|_| {});
    for sig in [
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGPIPE,
    ] {
        kill(w.pid, sig).unwrap();
    }
    let mut c = w.connect();
    assert_eq!(c.get("/hello.txt").status, 200);
    kill(w.pid, Signal::SIGTERM).unwrap();
    // Idle keep-alive: closed after the linger; then the worker is done.
    c.assert_closed();
    drop(c);
    assert_eq!(w.wait_exit(), WaitStatus::Exited(w.pid, 0));
}

#[test]
fn stop_and_sigint_end_the_worker_at_once() {
    // Long timeouts: only an immediate exit can pass within WAIT.
    let long = |c: &mut Config| {
        c.drain_linger = Duration::from_secs(600);
        c.grace = Duration::from_secs(600);
    };
    let mut w = TestWorker::start(long);
    let mut c = w.connect();
    assert_eq!(c.get("/hello.txt").status, 200);
    w.order(ToWorker::Stop);
    assert_eq!(w.wait_exit(), WaitStatus::Exited(w.pid, 0));

    let mut w = TestWorker::start(long);
    let mut c = w.connect();
    assert_eq!(c.get("/hello.txt").status, 200);
    kill(w.pid, Signal::SIGINT).unwrap();
    assert_eq!(w.wait_exit(), WaitStatus::Exited(w.pid, 0));
}

#[test]
fn serves_on_a_unix_socket() {
    let mut w = TestWorker::start_on(true, |c| c.drain_linger = Duration::from_millis(200));
    let mut c = w.connect();
    let r = c.get("/hello.txt");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello world\n"[..]));
    let r = c.get("/big.bin");
    assert!(r.body == big_body(), "big body differs");
    w.order(ToWorker::Drain);
    w.wait_listener_closed();
    c.assert_closed();
    drop(c);
    assert_eq!(w.wait_exit(), WaitStatus::Exited(w.pid, 0));
}

#[test]
fn slow_and_idle_clients_time_out() {
    let w = TestWorker::start(|c| {
        c.header_timeout = Duration::from_millis(300);
        c.keepalive_timeout = Duration::from_millis(300);
    });
    // Half a head, never finished: 408, then a close.
    let mut slow = w.connect();
    slow.send("GET /hello.txt HTTP/1.1\r\nHost: local");
    let r = slow.response(false);
    assert_eq!((r.status, r.header("connection")), (408, Some("close")));
    slow.assert_closed();
    // Connected, silent: closed without a word.
    let mut silent = w.connect();
    silent.assert_closed();
    // Kept alive, then idle: closed.
    let mut idle = w.connect();
    assert_eq!(idle.get("/hello.txt").status, 200);
    idle.assert_closed();
    // Oversized heads.
    let mut big = w.connect();
    big.send(&format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
        "a".repeat(20000)
    ));
    assert_eq!(big.response(false).status, 431);
    big.assert_closed();
}

#[test]
fn a_refused_upload_is_answered_not_reset() {
    let w = TestWorker::start(|_| {});
    let mut c = w.connect();
    // 2 MiB is over the limit: 413 and close. The client is still sending;
    // the lingering close reads its bytes, so it gets the 413 and an EOF,
    // not a reset that could destroy the response before it is read.
    let body = vec![b'x'; 2 * 1024 * 1024];
    c.send("POST /hello.txt HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2097152\r\n\r\n");
    c.stream.write_all(&body).unwrap();
    let r = c.response(false);
    assert_eq!((r.status, r.header("connection")), (413, Some("close")));
    c.assert_closed();
}
