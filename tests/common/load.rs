//! A load generator for the reload tests: keep-alive clients that send one
//! request after another on a connection (reconnecting when the server says
//! `Connection: close`), and clients that open a connection per request.
//! Every response must be a 200 with the exact expected body; anything else
//! (a reset, an early EOF, a short body, another status) counts as failed.
//! Bounded: it stops when told, when dropped, and after `MAX_RUN` anyway.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::read_response;

const MAX_RUN: Duration = Duration::from_secs(120);

#[derive(Debug, Default)]
pub struct Counts {
    pub ok: u64,
    pub failed: u64,
    /// The first few failures, for the assertion message.
    pub errors: Vec<String>,
}

impl Counts {
    fn fail(&mut self, what: String) {
        self.failed += 1;
        if self.errors.len() < 10 {
            self.errors.push(what);
        }
    }

    fn add(&mut self, other: Counts) {
        self.ok += other.ok;
        self.failed += other.failed;
        for e in other.errors {
            if self.errors.len() < 10 {
                self.errors.push(e);
            }
        }
    }
}

pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Counts>>,
}

impl Load {
    pub fn start(port: u16, keepalive: usize, per_request: usize, expected: &[u8]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for i in 0..keepalive + per_request {
            let stop = Arc::clone(&stop);
            let expected = expected.to_vec();
            let keep = i < keepalive;
            threads.push(std::thread::spawn(move || {
                client(port, keep, &expected, &stop)
            }));
        }
        Load { stop, threads }
    }

    pub fn finish(mut self) -> Counts {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = Counts::default();
        for t in self.threads.drain(..) {
            match t.join() {
                Ok(c) => total.add(c),
                Err(_) => total.fail("client thread panicked".into()),
            }
        }
        total
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn client(port: u16, keepalive: bool, expected: &[u8], stop: &AtomicBool) -> Counts {
    let mut counts = Counts::default();
    let started = Instant::now();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let req: &[u8] = if keepalive {
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
    } else {
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    };
    'connections: while !stop.load(Ordering::SeqCst) && started.elapsed() < MAX_RUN {
        let stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                counts.fail(format!("connect: {e}"));
                continue;
            }
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = stream.set_nodelay(true);
        let mut writer = match stream.try_clone() {
            Ok(w) => w,
            Err(e) => {
                counts.fail(format!("clone: {e}"));
                continue;
            }
        };
        let mut reader = BufReader::new(stream);
        loop {
            if let Err(e) = writer.write_all(req) {
                counts.fail(format!("write after {} ok: {e}", counts.ok));
                continue 'connections;
            }
            let closes = match read_response(&mut reader, false) {
                Ok(r) if r.status == 200 && r.body == expected => {
                    counts.ok += 1;
                    r.closes()
                }
                Ok(r) => {
                    counts.fail(format!(
                        "status {} with {} body bytes",
                        r.status,
                        r.body.len()
                    ));
                    continue 'connections;
                }
                Err(e) => {
                    counts.fail(format!("read after {} ok: {e}", counts.ok));
                    continue 'connections;
                }
            };
            // A drained worker says `Connection: close`: reconnect, as
            // every HTTP client does.
            if !keepalive || closes || stop.load(Ordering::SeqCst) {
                continue 'connections;
            }
        }
    }
    counts
}
