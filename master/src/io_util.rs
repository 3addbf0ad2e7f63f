//! The two small I/O loops the master's own sockets (control socket, admin
//! API) share: read what a non-blocking socket has, and write a short reply
//! the client is waiting for without letting it stall the master.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// Appends what is available to `buf` until the socket would block or
/// `buf` holds more than `cap`. `Err(UnexpectedEof)` if the peer closed.
pub fn read_available<R: Read>(stream: &mut R, buf: &mut Vec<u8>, cap: usize) -> io::Result<()> {
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if buf.len() > cap {
            return Ok(());
        }
    }
}

/// Writes `bytes` to a non-blocking socket, waiting for room for at most
/// one second: replies are small and their client is reading; one that
/// does not loses its reply rather than stall the master.
pub fn write_briefly<W: Write>(stream: &mut W, bytes: &[u8]) {
    let deadline = baton_shared::deadline::from_now(Duration::from_secs(1));
    let mut at = 0;
    while at < bytes.len() && Instant::now() < deadline {
        match stream.write(&bytes[at..]) {
            Ok(0) => return,
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
