//! The protocol engine: framing, HPACK, flow control, stream states and
//! the protocol's own defences, done by the `h2` crate (maintained, and
//! fixed for the 2023-2025 HTTP/2 CVEs: rapid reset, CONTINUATION flood,
//! HPACK bombs). Everything the rest of the worker knows of it is in this
//! file: `Engine` (the connection: accept streams, shut down) and
//! `Outbound` / `Inbound` (one stream's response and request body). A
//! sans-IO engine can replace it behind the same methods; nothing else
//! names an `h2` type.

use std::future::Future;
use std::io;
use std::task::{Context, Poll};

use baton_shared::config::Config;
use bytes::Bytes;
use h2::server::{self, Handshake, SendResponse};
use h2::{Reason, RecvStream, SendStream};

use super::io::Io;

/// An HTTP/2 error code, as GOAWAY and RST_STREAM carry it.
pub use h2::Reason as Code;

/// A request's head, as the engine decoded and checked it.
pub type Head = http::request::Parts;

enum State {
    Handshaking(Box<Handshake<Io, Bytes>>),
    Open(Box<server::Connection<Io, Bytes>>),
    Done,
}

pub struct Engine {
    state: State,
    /// Asked before the handshake was over: applied once it is.
    graceful: bool,
    abrupt: Option<Reason>,
}

/// A stream the client opened.
pub struct Incoming {
    pub head: Head,
    pub body: Inbound,
    pub respond: Outbound,
}

/// How a connection ended.
#[derive(Debug)]
pub enum End {
    /// Cleanly: both sides are done (GOAWAY, or the client closed after
    /// its last stream).
    Clean,
    /// An error, ours or the client's, or the socket's.
    Error(String),
}

impl Engine {
    /// Starts the server side over `io`, with the config's limits.
    pub fn new(io: Io, config: &Config) -> Engine {
        let h2 = &config.http.http2;
        let mut builder = server::Builder::new();
        builder
            .max_concurrent_streams(h2.max_concurrent_streams)
            .initial_window_size(h2.window_size)
            .initial_connection_window_size(h2.connection_window_size)
            // HPACK bombs: the decoded header list is bounded by the same
            // limit as an HTTP/1.1 head (the engine refuses past it).
            .max_header_list_size(u32::try_from(config.http.max_header_size).unwrap_or(u32::MAX))
            .max_send_buffer_size(h2.max_send_buffer)
            .max_pending_accept_reset_streams(h2.max_pending_resets)
            .max_local_error_reset_streams(Some(h2.max_error_resets))
            // WebSocket over HTTP/2 (RFC 8441): extended CONNECT, proxied
            // to a route that allows WebSockets (`proxy`).
            .enable_connect_protocol();
        Engine {
            state: State::Handshaking(Box::new(builder.handshake(io))),
            graceful: false,
            abrupt: None,
        }
    }

    /// Whether the handshake (the client's preface and SETTINGS) is done.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    /// Drives the connection: reads and writes what it can, and returns
    /// the next stream the client opened. `Ready(Err)` when it is over.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Incoming, End>> {
        loop {
            match &mut self.state {
                State::Done => return Poll::Ready(Err(End::Clean)),
                State::Handshaking(h) => match std::pin::Pin::new(&mut **h).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(conn)) => {
                        self.state = State::Open(Box::new(conn));
                        if let Some(reason) = self.abrupt {
                            self.abrupt_shutdown(reason);
                        } else if self.graceful {
                            self.graceful_shutdown();
                        }
                    }
                    Poll::Ready(Err(e)) => {
                        self.state = State::Done;
                        return Poll::Ready(Err(End::Error(e.to_string())));
                    }
                },
                State::Open(conn) => {
                    return match conn.poll_accept(cx) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(None) => {
                            self.state = State::Done;
                            Poll::Ready(Err(End::Clean))
                        }
                        Poll::Ready(Some(Err(e))) => {
                            self.state = State::Done;
                            Poll::Ready(Err(end_of(&e)))
                        }
                        Poll::Ready(Some(Ok((request, respond)))) => {
                            let (head, body) = request.into_parts();
                            Poll::Ready(Ok(Incoming {
                                head,
                                body: Inbound(body),
                                respond: Outbound::Head(respond),
                            }))
                        }
                    };
                }
            }
        }
    }

    /// GOAWAY twice (RFC 9113 6.8): first with the largest stream id,
    /// then, after a PING round trip, with the last stream accepted;
    /// streams accepted before it are finished.
    pub fn graceful_shutdown(&mut self) {
        self.graceful = true;
        if let State::Open(conn) = &mut self.state {
            conn.graceful_shutdown();
        }
    }

    /// GOAWAY with `reason` now; open streams are dropped.
    pub fn abrupt_shutdown(&mut self, reason: Code) {
        self.abrupt = Some(reason);
        if let State::Open(conn) = &mut self.state {
            conn.abrupt_shutdown(reason);
        }
    }
}

/// The `:protocol` of an extended CONNECT (RFC 8441), if `head` is one.
pub fn protocol_of(head: &Head) -> Option<&str> {
    (head.method == http::Method::CONNECT)
        .then(|| head.extensions.get::<h2::ext::Protocol>())
        .flatten()
        .map(|p| p.as_str())
}

fn end_of(e: &h2::Error) -> End {
    if e.is_io()
        && e.get_io()
            .is_some_and(|io| io.kind() == io::ErrorKind::UnexpectedEof)
    {
        return End::Clean;
    }
    // The client's GOAWAY without an error, or ours.
    if e.is_go_away() && e.reason() == Some(Reason::NO_ERROR) {
        return End::Clean;
    }
    End::Error(e.to_string())
}

/// A request body as it arrives, with its flow-control credit.
pub struct Inbound(RecvStream);

impl Inbound {
    /// The request had no body (its HEADERS ended the stream).
    pub fn is_empty(&self) -> bool {
        self.0.is_end_stream()
    }

    /// The next chunk; `Ready(None)` at the end.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, String>>> {
        self.0
            .poll_data(cx)
            .map(|o| o.map(|r| r.map_err(|e| e.to_string())))
    }

    /// `n` bytes were passed on: the client may send that much more.
    pub fn release(&mut self, n: usize) {
        let _ = self.0.flow_control().release_capacity(n);
    }
}

/// A response: its head, then its body in chunks the flow-control
/// windows (the stream's and the connection's) have room for.
pub enum Outbound {
    Head(SendResponse<Bytes>),
    Body(SendStream<Bytes>),
    Done,
}

impl Outbound {
    /// Sends the head; `end` when there is no body.
    /// An interim (1xx) head, before the final one.
    pub fn send_interim(&mut self, head: http::Response<()>) -> Result<(), String> {
        let Outbound::Head(respond) = self else {
            return Err("interim head after the final one".to_owned());
        };
        respond.send_informational(head).map_err(|e| e.to_string())
    }

    pub fn send_head(&mut self, head: http::Response<()>, end: bool) -> Result<(), String> {
        let Outbound::Head(respond) = self else {
            return Err("response head sent twice".to_owned());
        };
        match respond.send_response(head, end) {
            Ok(stream) if !end => {
                *self = Outbound::Body(stream);
                Ok(())
            }
            Ok(_) => {
                *self = Outbound::Done;
                Ok(())
            }
            Err(e) => {
                *self = Outbound::Done;
                Err(e.to_string())
            }
        }
    }

    /// Room for up to `want` bytes now: `Ready(Ok(n))` with `n > 0`, or
    /// `Pending` until the windows open. `Err` when the stream is gone
    /// (reset by the client, or the connection ended).
    pub fn poll_room(&mut self, want: usize, cx: &mut Context<'_>) -> Poll<Result<usize, String>> {
        let Outbound::Body(stream) = self else {
            return Poll::Ready(Err("no body to send".to_owned()));
        };
        if stream.capacity() >= want.max(1) {
            return Poll::Ready(Ok(stream.capacity()));
        }
        stream.reserve_capacity(want);
        loop {
            match stream.poll_capacity(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Err("stream closed".to_owned())),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e.to_string())),
                Poll::Ready(Some(Ok(0))) => {}
                Poll::Ready(Some(Ok(n))) => return Poll::Ready(Ok(n)),
            }
        }
    }

    /// Sends body bytes (within the room `poll_room` gave); `end` with
    /// the last.
    pub fn send(&mut self, data: Bytes, end: bool) -> Result<(), String> {
        let Outbound::Body(stream) = self else {
            return Err("no body to send".to_owned());
        };
        let result = stream.send_data(data, end).map_err(|e| e.to_string());
        if end || result.is_err() {
            *self = Outbound::Done;
        }
        result
    }

    /// Ends the stream with RST_STREAM (a stream that made no progress).
    pub fn reset(&mut self, code: Code) {
        match self {
            Outbound::Head(r) => r.send_reset(code),
            Outbound::Body(s) => s.send_reset(code),
            Outbound::Done => {}
        }
        *self = Outbound::Done;
    }

    /// Whether the client reset the stream (checked while a response
    /// waits for something else, such as an upstream).
    pub fn poll_reset(&mut self, cx: &mut Context<'_>) -> bool {
        match self {
            Outbound::Head(r) => r.poll_reset(cx).is_ready(),
            Outbound::Body(s) => s.poll_reset(cx).is_ready(),
            Outbound::Done => false,
        }
    }
}
