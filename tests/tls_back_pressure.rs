//! TLS responses larger than what the socket takes at once: the worker
//! must go on sending each time the socket drains, whether the body is in
//! memory (the file cache) or read from disk in chunks, and whether the
//! client reads steadily or stops reading for a while and resumes.
//!
//! Certificates are made at test time, never committed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::tls::*;
use common::*;
use rustls::ClientConnection;
use rustls::pki_types::ServerName;

/// Writes a certificate for a.test and a config serving `www/` over TLS on
/// `env.port`, with `globals` (TOML lines) at the top, and starts it.
fn serve_tls(env: &Env, globals: &str) -> Server {
    let pair = ecdsa_cert(&["a.test"]);
    env.write_file("tls/a.pem", pair.0.as_bytes());
    let key = env.write_file("tls/a.key", pair.1.as_bytes());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).unwrap();
    env.write_config(&format!(
        "{}{globals}\n[[site]]\nlisten = [\"127.0.0.1:{}\"]\nnames = [\"a.test\"]\nroot = \"{}\"\n\
         tls = {{ cert = \"{}\", key = \"{}\" }}\n",
        env.globals(),
        env.port,
        env.path("www").display(),
        env.path("tls/a.pem").display(),
        env.path("tls/a.key").display(),
    ));
    env.start()
}

/// Bytes that differ from one position to the next, so a lost or repeated
/// chunk shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len as u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// The body of `response` (after its head) is `expected`.
fn assert_body(response: &[u8], expected: &[u8]) {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    assert_eq!(first_status(response), Some(200));
    assert_eq!(response.len() - split - 4, expected.len(), "body length");
    assert!(response[split + 4..] == *expected, "body intact");
}

/// A body held in memory (a file from the file cache) and larger than the
/// socket and rustls buffers together: it leaves in many writes, each
/// resumed on a writable event. It used to stall for good after the first
/// one, as soon as rustls's buffer was full when the socket drained: the
/// write then took nothing, flushed rustls into the emptied socket and still
/// reported WouldBlock, so the connection waited for an edge that a socket
/// which never refused a write does not raise (see `TlsStream::write`).
#[test]
fn an_in_memory_body_larger_than_the_socket_goes_out_whole_over_tls() {
    let env = Env::new();
    let big = pattern(8 << 20);
    env.write_file("www/big.bin", &big);
    let _server = serve_tls(
        &env,
        "file_cache_size = \"64m\"\nfile_cache_max_file_size = \"16m\"\n",
    );
    let seen = https_get(&client(ANY), env.port, Some("a.test"), "/big.bin")
        .expect("the whole response within the client's 10 s read timeout");
    assert_body(&seen.response, &big);
}

/// A TLS client on a socket with a small receive buffer: the server's
/// socket fills again and again while it reads.
fn https_get_small_window(port: u16, path: &str) -> Result<Vec<u8>, String> {
    let name = ServerName::try_from("a.test").unwrap();
    let mut conn = ClientConnection::new(client(ANY), name).map_err(|e| e.to_string())?;
    let mut sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let size: libc::c_int = 8 * 1024;
    // SAFETY: setsockopt on an open socket with a valid int of the size
    // passed.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUF");
    sock.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let req = format!("GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    match tls.read_to_end(&mut response) {
        Ok(_) => Ok(response),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {
            Ok(response)
        }
        Err(e) => Err(format!("after {} bytes: {e}", response.len())),
    }
}

/// File bodies read from disk in chunks into rustls, to clients whose
/// small receive buffers keep the server's socket filling up: each time,
/// rustls's buffer fills behind it. A file's last 16 KiB go out like an
/// in-memory body (read into the buffer the head went from), and used to
/// stall the same way when they met rustls's buffer full after the socket
/// drained. Several sizes, so that the last time the socket fills falls at
/// different places in the file: on the old code one of them stalled on
/// every run.
#[test]
fn file_bodies_reach_clients_that_read_slowly_over_tls() {
    let env = Env::new();
    let sizes: Vec<usize> = (0..12).map(|i| (256 << 10) + i * 5 * 1024 + 123).collect();
    for (i, &len) in sizes.iter().enumerate() {
        env.write_file(&format!("www/f{i}.bin"), &pattern(len));
    }
    let _server = serve_tls(&env, "file_cache_max_file_size = 0\n");
    let port = env.port;
    let clients: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            std::thread::spawn(move || {
                let got = https_get_small_window(port, &format!("/f{i}.bin"));
                (len, got)
            })
        })
        .collect();
    for c in clients {
        let (len, got) = c.join().unwrap();
        let response = got.unwrap_or_else(|e| panic!("{len} bytes: {e}"));
        assert_body(&response, &pattern(len));
    }
}
