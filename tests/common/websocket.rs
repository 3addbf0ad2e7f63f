//! A WebSocket echo backend and client, hand-written (RFC 6455 framing;
//! the backend answers the handshake's key with the right
//! `Sec-WebSocket-Accept`, which Baton checks when it makes the handshake
//! itself for a WebSocket over HTTP/2; the client does not check it).
//!
//! The backend echoes every data frame; a text frame `big:N` is answered
//! with one binary frame of N bytes sent in slow pieces (64 KiB every
//! 20 ms), so a test can catch the proxy in the middle of a frame.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

pub struct WsBackend {
    pub port: u16,
    /// Connections whose handshake was answered with a 101.
    pub upgraded: Arc<AtomicUsize>,
    /// Requests that came without an upgrade (answered 426).
    pub plain: Arc<AtomicUsize>,
}

impl WsBackend {
    pub fn start() -> WsBackend {
        WsBackend::start_with(None)
    }

    /// The same echo server speaking TLS with `tls`.
    pub fn start_tls(tls: Arc<rustls::ServerConfig>) -> WsBackend {
        WsBackend::start_with(Some(tls))
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> WsBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind ws backend");
        let port = listener.local_addr().expect("addr").port();
        let upgraded = Arc::new(AtomicUsize::new(0));
        let plain = Arc::new(AtomicUsize::new(0));
        let (u, p) = (upgraded.clone(), plain.clone());
        thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let (u, p) = (u.clone(), p.clone());
                s.set_nodelay(true).ok();
                match &tls {
                    None => {
                        thread::spawn(move || serve(s, &u, &p));
                    }
                    Some(tls) => {
                        let Ok(session) = rustls::ServerConnection::new(tls.clone()) else {
                            continue;
                        };
                        let stream = rustls::StreamOwned::new(session, s);
                        thread::spawn(move || serve(stream, &u, &p));
                    }
                }
            }
        });
        WsBackend {
            port,
            upgraded,
            plain,
        }
    }
}

/// `Sec-WebSocket-Accept` for `key` (RFC 6455 4.2.2).
pub fn accept_for(key: &str) -> String {
    use base64::prelude::{BASE64_STANDARD, Engine as _};
    let input = format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    BASE64_STANDARD.encode(ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        input.as_bytes(),
    ))
}

/// One connection: reads and writes go through one stream (TLS has no
/// separate halves), in turn.
fn serve<S: Read + Write>(s: S, upgraded: &AtomicUsize, plain: &AtomicUsize) {
    let mut r = BufReader::new(s);
    let mut upgrade = false;
    let mut key = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line.trim().is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("upgrade:") && lower.contains("websocket") {
            upgrade = true;
        }
        if lower.starts_with("sec-websocket-key:") {
            key = line["sec-websocket-key:".len()..].trim().to_owned();
        }
    }
    if !upgrade {
        plain.fetch_add(1, Ordering::SeqCst);
        let _ = r.get_mut().write_all(
            b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }
    let _ = r.get_mut().write_all(
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            accept_for(&key)
        )
        .as_bytes(),
    );
    upgraded.fetch_add(1, Ordering::SeqCst);
    while let Ok((opcode, payload)) = read_frame(&mut r) {
        if opcode == 0x8 {
            let _ = r.get_mut().write_all(&frame(0x8, &payload, false));
            return;
        }
        let text = String::from_utf8_lossy(&payload).into_owned();
        if let Some(n) = text
            .strip_prefix("big:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            // One frame, its payload trickling out.
            let mut head = frame(0x2, &[], false);
            head.truncate(0);
            head.push(0x82);
            head.push(127);
            head.extend_from_slice(&(n as u64).to_be_bytes());
            if r.get_mut().write_all(&head).is_err() {
                return;
            }
            let piece = vec![0x5a; 64 * 1024];
            let mut left = n;
            while left > 0 {
                let k = left.min(piece.len());
                if r.get_mut().write_all(&piece[..k]).is_err() {
                    return;
                }
                left -= k;
                thread::sleep(Duration::from_millis(20));
            }
            continue;
        }
        if r.get_mut()
            .write_all(&frame(opcode, &payload, false))
            .is_err()
        {
            return;
        }
    }
}

/// A frame; `masked` for client-to-server ones.
pub fn frame(opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let m = if masked { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => f.push(m | n as u8),
        n @ 126..=65535 => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x12, 0x34, 0x56, 0x78];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// Reads one frame: (opcode, unmasked payload).
pub fn read_frame<R: Read>(r: &mut R) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    r.read_exact(&mut h)?;
    let opcode = h[0] & 0x0f;
    let masked = h[1] & 0x80 != 0;
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            r.read_exact(&mut b)?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut key = [0u8; 4];
    if masked {
        r.read_exact(&mut key)?;
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    Ok((opcode, payload))
}

/// A client through the proxy at `port`, `path`: the handshake done.
pub struct WsClient {
    pub r: BufReader<TcpStream>,
    pub w: TcpStream,
}

impl WsClient {
    /// Connects and upgrades; `Err` with the status line if not a 101.
    pub fn connect(port: u16, path: &str) -> Result<WsClient, String> {
        let s = super::connect(port);
        s.set_nodelay(true).ok();
        let mut w = s.try_clone().expect("clone");
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        w.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut r = BufReader::new(s);
        let mut status = String::new();
        r.read_line(&mut status).map_err(|e| e.to_string())?;
        loop {
            let mut l = String::new();
            if r.read_line(&mut l).map_err(|e| e.to_string())? == 0 || l.trim().is_empty() {
                break;
            }
        }
        if !status.contains(" 101 ") {
            return Err(status);
        }
        Ok(WsClient { r, w })
    }

    pub fn send_text(&mut self, text: &str) {
        self.w
            .write_all(&frame(0x1, text.as_bytes(), true))
            .expect("send frame");
    }

    pub fn recv(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        read_frame(&mut self.r)
    }

    /// Sends `text` and expects it back.
    pub fn echo(&mut self, text: &str) -> bool {
        self.send_text(text);
        matches!(self.recv(), Ok((0x1, p)) if p == text.as_bytes())
    }
}
