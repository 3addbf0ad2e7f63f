//! One proxied request: the upstream connection, the request going up and
//! the response coming down, each through a bounded buffer.
//!
//! Failures before the response's first byte go to the next server when
//! nginx would (`ngx_http_upstream_next`): always when nothing of the
//! request was sent (the connect failed), and for idempotent methods also
//! after; a POST or PATCH whose bytes reached a server is never sent
//! twice. A reused (pooled) connection that fails that way is the
//! keep-alive race (the server closed it as we sent): retried once on a
//! fresh connection, not counted against the server.

use std::io;
use std::time::{Duration, Instant};

use baton_shared::config::Config;
use mio::{Registry, Token};

use super::head::{ClientFraming, RequestInfo};
use super::socket::UpConn;
use super::websocket::Frames;
use super::{BUFFER, ProxyState};
use crate::http::body::BodyReader;
use crate::http::request::BodyFraming;
use crate::limits::after;

mod failover;
mod response;
mod tunnel;

/// What the exchange borrows from the worker for a turn.
pub struct Env<'a> {
    pub config: &'a Config,
    pub state: &'a mut ProxyState,
    pub registry: &'a Registry,
    /// The upstream side's token of the client connection.
    pub token: Token,
    pub scratch: &'a mut [u8],
    pub now: Instant,
    pub date: &'a str,
}

/// How an exchange ended without a response to pass on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Nothing was sent to the client yet: answer with this status.
    Answer(u16, Option<Duration>),
    /// The response had started: the client connection must end, so the
    /// client sees a truncated response, never a wrong one.
    Abort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Refused,
    Timeout,
    Broken,
}

enum Resp {
    /// Reading the head (interim ones passed on as they come).
    Head,
    Body {
        reader: Option<BodyReader>,
        close_delimited: bool,
    },
    /// After a 101: bytes both ways as they come.
    Tunnel {
        /// The upstream-to-client frames, for a WebSocket.
        frames: Option<Frames>,
        /// Ending (a drain's grace is over): at the next frame boundary
        /// the client gets a close frame and the tunnel ends.
        closing: bool,
        /// The client sent its FIN (passed on to the upstream).
        client_eof: bool,
    },
    Done,
}

pub struct Exchange {
    pub upstream: usize,
    conn: Option<UpConn>,
    /// The server of the last connection, for the log.
    server: Option<usize>,
    /// Servers tried for this request.
    tried: Vec<usize>,
    /// The request head, then the framed body, as sent upstream.
    out: Vec<u8>,
    out_pos: usize,
    /// `out` still starts with the head and holds everything since: the
    /// request can be sent again on another connection.
    replayable: bool,
    chunked_body: bool,
    /// The whole request is in `out`.
    request_done: bool,
    /// Some bytes of this request reached a server.
    sent_any: bool,
    idempotent: bool,
    is_head: bool,
    hash_key: Option<Vec<u8>>,
    /// Retried on a fresh connection after a pooled one failed.
    stale_retried: bool,
    resp: Resp,
    head_buf: Vec<u8>,
    /// What goes to the client (head, body), and how far it went.
    pub to_client: Vec<u8>,
    pub client_pos: usize,
    client_framing: ClientFraming,
    /// Bytes of the response from the upstream (for the log).
    got_response: bool,
    /// The response's status, once its head came.
    pub status: Option<u16>,
    /// Body bytes passed to the client.
    pub body_bytes: u64,
    /// Whether the upstream connection may serve another request.
    reusable: bool,
    /// The client connection closes after this response.
    pub client_close: bool,
    /// The client said this request is its last (`Connection: close`, or
    /// HTTP/1.0 without keep-alive): once its body is read, nothing more
    /// comes, and the close needs no lingering.
    pub client_last: bool,
    pub client_http10: bool,
    started: Instant,
    connect_started: Instant,
    last_io: Instant,
    /// When the response head came.
    pub upstream_time: Option<Duration>,
    last_failure: Option<Failure>,
    /// The next attempt goes to the same server on a fresh connection
    /// (after a pooled one turned out closed).
    fresh_same_server: bool,
    /// The route's response headers.
    pub route_headers: Vec<(String, String)>,
    /// What the upstream was asked to switch to (`Upgrade`).
    upgrade: Option<String>,
    /// The request's side of `compress`, when the route compresses.
    pub compress: Option<super::transform::CompressRequest>,
    /// Compresses the response body (see `transform`).
    encoder: Option<crate::compress::BodyEncoder>,
    /// `via = true`: the pseudonym the response's `Via` names.
    pub via: Option<String>,
}

impl Exchange {
    pub fn new(
        upstream: usize,
        info: RequestInfo,
        body: BodyFraming,
        client_close: bool,
        client_http10: bool,
        now: Instant,
    ) -> Exchange {
        Exchange {
            upstream,
            conn: None,
            server: None,
            tried: Vec::new(),
            out: info.head,
            out_pos: 0,
            replayable: true,
            chunked_body: body == BodyFraming::Chunked,
            request_done: body == BodyFraming::None,
            sent_any: false,
            idempotent: info.idempotent,
            is_head: info.is_head,
            hash_key: info.hash_value.clone(),
            stale_retried: false,
            resp: Resp::Head,
            head_buf: Vec::new(),
            to_client: Vec::new(),
            client_pos: 0,
            client_framing: ClientFraming::None,
            got_response: false,
            status: None,
            body_bytes: 0,
            reusable: false,
            client_close,
            client_last: false,
            client_http10,
            started: now,
            connect_started: now,
            last_io: now,
            upstream_time: None,
            last_failure: None,
            fresh_same_server: false,
            route_headers: Vec::new(),
            upgrade: info.upgrade,
            compress: None,
            encoder: None,
            via: None,
        }
    }

    /// A compressing route: `If-None-Match` variant tags of compressed
    /// responses go up with the upstream's own tags beside them (see
    /// `transform`). Before anything is sent.
    pub fn translate_validators(&mut self) {
        if let Some(c) = self.compress.as_mut()
            && self.out_pos == 0
            && !self.sent_any
        {
            c.translated = super::transform::translate_if_none_match(&mut self.out);
        }
    }

    /// The upstream's address, for the log.
    pub fn server_addr(&self, config: &Config) -> Option<String> {
        let up = config.proxy.upstreams.get(self.upstream)?;
        Some(up.servers.get(self.server?)?.addr.to_string())
    }

    /// Body bytes the request side can take now.
    pub fn body_room(&self) -> usize {
        if matches!(self.resp, Resp::Done) {
            // The response is complete: the rest of the body is not
            // wanted (the client connection discards it).
            return 0;
        }
        BUFFER.saturating_sub(self.out.len() - self.out_pos)
    }

    pub fn wants_body(&self) -> bool {
        !self.request_done && !matches!(self.resp, Resp::Done)
    }

    /// Request body data from the client, framed for the upstream.
    pub fn push_body(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.compact();
        if self.chunked_body {
            self.out
                .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            self.out.extend_from_slice(data);
            self.out.extend_from_slice(b"\r\n");
        } else {
            self.out.extend_from_slice(data);
        }
    }

    /// The client's body ended.
    pub fn end_body(&mut self) {
        if self.chunked_body && !self.request_done {
            self.compact();
            self.out.extend_from_slice(b"0\r\n\r\n");
        }
        self.request_done = true;
    }

    fn compact_sent(&mut self) {
        if self.out_pos > 0 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
    }

    /// Drops what was sent, once the buffer would grow past its bound:
    /// the request can no longer be replayed on another server.
    fn compact(&mut self) {
        if self.out.len() >= BUFFER && self.out_pos > 0 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
            self.replayable = false;
        }
    }

    /// Everything for the client is produced and the upstream is done.
    pub fn finished(&self) -> bool {
        matches!(self.resp, Resp::Done) && self.client_pos >= self.to_client.len()
    }

    pub fn has_client_output(&self) -> bool {
        self.client_pos < self.to_client.len()
    }

    /// Whether the response head has been passed to the client.
    pub fn response_started(&self) -> bool {
        self.status.is_some()
    }

    /// The response's framing towards the client closes the connection.
    pub fn closes_client(&self) -> bool {
        self.client_close || self.client_framing == ClientFraming::Close
    }

    /// When this exchange times out, if it is waiting on the upstream.
    pub fn deadline(&self, config: &Config) -> Option<Instant> {
        let up = config.proxy.upstreams.get(self.upstream)?;
        let conn = self.conn.as_ref()?;
        if !conn.connected {
            return Some(after(self.connect_started, up.connect_timeout));
        }
        if self.is_tunnel() {
            // Idle both ways for read_timeout: closed.
            return Some(after(self.last_io, up.read_timeout));
        }
        if self.out_pos < self.out.len() || conn.has_pending() {
            return Some(after(self.last_io, up.send_timeout));
        }
        match self.resp {
            Resp::Done => None,
            // A full client buffer is the client's to drain (its own
            // send_timeout applies).
            _ if self.has_client_output() && self.to_client.len() - self.client_pos >= BUFFER => {
                None
            }
            _ => Some(after(self.last_io, up.read_timeout)),
        }
    }

    /// The upstream took too long.
    pub fn on_timeout(&mut self, env: &mut Env<'_>) -> Result<bool, Stop> {
        if self.is_tunnel() {
            // An idle tunnel, not a failing server.
            return Err(Stop::Abort);
        }
        self.fail(Failure::Timeout, "timed out", env)?;
        self.pump(env)
    }

    /// The poll id of the upstream connection in use (`tokens::Slot`),
    /// which says whose an event is when one client connection has many
    /// exchanges (HTTP/2).
    pub fn upstream_id(&self) -> Option<usize> {
        self.conn.as_ref().map(|c| c.slot.id())
    }

    /// Readiness of the upstream socket.
    /// `read_closed`: the event said the server sent its FIN (the
    /// connection cannot go back to the pool).
    pub fn on_ready(&mut self, readable: bool, writable: bool, read_closed: bool) {
        if let Some(c) = self.conn.as_mut() {
            c.readable |= readable;
            c.writable |= writable;
            c.peer_closed |= read_closed;
        }
    }

    /// Makes all the progress the upstream side can now: connect, send,
    /// receive (while the client's buffer has room). `Ok(progress)`, or
    /// how the exchange stopped.
    pub fn pump(&mut self, env: &mut Env<'_>) -> Result<bool, Stop> {
        let mut progress = false;
        loop {
            if matches!(self.resp, Resp::Done) {
                return Ok(progress);
            }
            progress |= self.tunnel_closing();
            if matches!(self.resp, Resp::Done) {
                return Ok(progress);
            }
            if self.conn.is_none() && self.is_tunnel() {
                return Err(Stop::Abort);
            }
            if self.conn.is_none() {
                self.open(env)?;
                progress = true;
            }
            let Some(conn) = self.conn.as_mut() else {
                return Ok(progress);
            };
            if !conn.connected {
                match conn.finish_connect() {
                    Ok(true) => {
                        self.last_io = env.now;
                        progress = true;
                    }
                    // Waiting for the connect or the TLS handshake.
                    Ok(false) => return Ok(progress),
                    Err(e) => {
                        self.fail(Failure::Refused, &format!("connect: {e}"), env)?;
                        continue;
                    }
                }
            }
            match self.send(env) {
                Ok(p) => progress |= p,
                Err(e) => {
                    self.fail(Failure::Broken, &format!("send: {e}"), env)?;
                    continue;
                }
            }
            match self.receive(env) {
                Ok(p) => progress |= p,
                Err(Some((kind, why))) => {
                    self.fail(kind, &why, env)?;
                    continue;
                }
                Err(None) => return Err(Stop::Abort),
            }
            return Ok(progress);
        }
    }

    /// Sends what is queued for the upstream.
    fn send(&mut self, env: &mut Env<'_>) -> io::Result<bool> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(false);
        };
        let mut progress = false;
        while conn.writable && self.out_pos < self.out.len() {
            match conn.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_pos += n;
                    self.sent_any = true;
                    self.last_io = env.now;
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // TLS records rustls holds after the last write (the socket was
        // full) go as soon as the socket takes them.
        if conn.writable && conn.has_pending() {
            match conn.flush_pending() {
                Ok(()) => progress = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.writable = false,
                Err(e) => return Err(e),
            }
        }
        if !self.replayable && self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        if let Resp::Tunnel {
            client_eof: true, ..
        } = self.resp
            && self.out_pos >= self.out.len()
            && !conn.has_pending()
        {
            conn.shutdown_write();
        }
        Ok(progress)
    }

    /// The exchange is over: its connection goes back to the pool if it
    /// can serve another request, else is closed.
    pub fn release(&mut self, env: &mut Env<'_>) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if let Some(s) = env.state.upstreams[self.upstream]
            .servers
            .get_mut(conn.server)
        {
            s.active = s.active.saturating_sub(1);
        }
        let clean = matches!(self.resp, Resp::Done)
            && self.reusable
            && self.request_done
            && self.out_pos >= self.out.len();
        if clean {
            env.state.put(env.config, self.upstream, conn, env.now);
        }
    }

    /// The client went away (or the connection is dropped): the upstream
    /// connection is closed, its server no longer busy with us.
    pub fn abandon(&mut self, state: &mut ProxyState) {
        if let Some(conn) = self.conn.take()
            && let Some(s) = state
                .upstreams
                .get_mut(self.upstream)
                .and_then(|u| u.servers.get_mut(conn.server))
        {
            s.active = s.active.saturating_sub(1);
        }
    }
}
