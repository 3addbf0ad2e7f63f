//! The response side of an exchange: reading the upstream while the
//! client's buffer has room, parsing heads (interim ones passed on),
//! decoding the body and framing it for the client.

use std::io;

use super::failover::log_failure;
use super::{Env, Exchange, Failure, Resp};
use crate::compress::MAX_INPUT;
use crate::http::body::{BodyReader, Step};
use crate::proxy::head::{self, ClientFraming, Framing, ResponseHead};
use crate::proxy::{BUFFER, MAX_RESPONSE_HEAD, balance, transform};

impl Exchange {
    /// Reads the response while the client's buffer has room. `Err(Some)`
    /// is a failure that may go to another server, `Err(None)` one that
    /// ends the client connection.
    pub(super) fn receive(&mut self, env: &mut Env<'_>) -> Result<bool, Option<(Failure, String)>> {
        let mut progress = false;
        loop {
            if self.tunnel_closing() {
                return Ok(true);
            }
            if matches!(self.resp, Resp::Done) {
                return Ok(progress);
            }
            if self.client_pos >= self.to_client.len() && !self.to_client.is_empty() {
                self.to_client.clear();
                self.client_pos = 0;
            }
            if self.to_client.len() - self.client_pos >= BUFFER {
                return Ok(progress);
            }
            // A compressed body: the upstream is read only while the
            // encoder takes input (its output goes to `to_client`, which
            // the check above bounds).
            if self.encoder.as_ref().is_some_and(|e| !e.wants_input()) {
                return Ok(progress);
            }
            let Some(conn) = self.conn.as_mut() else {
                return Ok(progress);
            };
            if !conn.readable {
                return Ok(progress);
            }
            let n = match conn.read(env.scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.readable = false;
                    return Ok(progress);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Some((Failure::Broken, format!("read: {e}")))),
            };
            // A short read on TCP emptied the socket: the next bytes (or
            // FIN) raise a new event, for whoever owns the connection then.
            // Unless a FIN already came (the event said so): it raises none
            // again, so read on to the end of the stream.
            if n > 0
                && n < env.scratch.len()
                && !conn.peer_closed
                && conn.stream.short_read_means_empty()
            {
                conn.readable = false;
            }
            self.last_io = env.now;
            progress = true;
            if n == 0 {
                self.upstream_eof(env)?;
                continue;
            }
            self.got_response = true;
            // The worker's read buffer is lent out of `env` while its
            // bytes are handled (no copy), and put back whatever happens.
            let scratch = std::mem::take(&mut env.scratch);
            let handled = self.response_data(&scratch[..n], env);
            env.scratch = scratch;
            handled?;
        }
    }

    pub(super) fn upstream_eof(
        &mut self,
        env: &mut Env<'_>,
    ) -> Result<(), Option<(Failure, String)>> {
        self.reusable = false;
        match &self.resp {
            Resp::Head if !self.got_response => Err(Some((
                Failure::Broken,
                "closed the connection before responding".into(),
            ))),
            // Nothing of it reached the client (interim heads aside): a
            // 502, which `fail` logs.
            Resp::Head => Err(Some((Failure::Broken, "response head cut short".into()))),
            Resp::Body {
                close_delimited: true,
                ..
            } => {
                self.end_response(env);
                Ok(())
            }
            Resp::Body { .. } => {
                let up = &env.config.proxy.upstreams[self.upstream];
                log_failure(up, self.server.unwrap_or(0), "response body cut short");
                Err(None)
            }
            Resp::Tunnel { .. } => {
                // The upstream ended the tunnel: the client gets what
                // came, then the connection ends.
                self.resp = Resp::Done;
                Ok(())
            }
            Resp::Done => Ok(()),
        }
    }

    pub(super) fn response_data(
        &mut self,
        mut data: &[u8],
        env: &mut Env<'_>,
    ) -> Result<(), Option<(Failure, String)>> {
        if let Resp::Head = self.resp {
            let mut buf = std::mem::take(&mut self.head_buf);
            buf.extend_from_slice(data);
            return match self.parse_heads(&buf, env)? {
                None => Ok(()),
                Some(at) => self.body_data(&buf[at..], env),
            };
        }
        if let Resp::Done = self.resp {
            // Bytes after a complete response: the connection is not
            // in a state to reuse.
            self.reusable = false;
            data = &[];
        }
        self.body_data(data, env)
    }

    /// Parses heads at the start of `buf`: interim ones are passed on,
    /// the final one starts the body. `Some(offset)` of the body.
    pub(super) fn parse_heads(
        &mut self,
        buf: &[u8],
        env: &mut Env<'_>,
    ) -> Result<Option<usize>, Option<(Failure, String)>> {
        let mut at = 0;
        loop {
            let parsed = head::response(&buf[at..], self.is_head, MAX_RESPONSE_HEAD);
            let mut resp = match parsed {
                Ok(None) => {
                    self.head_buf = buf[at..].to_vec();
                    return Ok(None);
                }
                Ok(Some(r)) => r,
                // A bad head is the server's failure (`fail` logs it); not
                // retried: the server may have acted on the request.
                Err(why) => return Err(Some((Failure::Broken, why))),
            };
            at += resp.head_len;
            if (100..200).contains(&resp.status) && resp.status != 101 {
                // 100 Continue, 103 Early Hints: passed on to an HTTP/1.1
                // client (an HTTP/1.0 one does not know them).
                if !self.client_http10 {
                    let interim = head::interim_head(&resp);
                    self.to_client.extend_from_slice(&interim);
                }
                continue;
            }
            if let Some(pseudonym) = &self.via {
                let version = if resp.http10 { "1.0" } else { "1.1" };
                let value = transform::via_value(version, pseudonym);
                resp.headers.push(("Via".to_owned(), value));
            }
            if resp.status == 101 {
                if self.upgrade.is_none() {
                    // No tunnel was asked for (or allowed): not a response
                    // we can pass on.
                    return Err(Some((Failure::Broken, "101 without an upgrade".into())));
                }
                self.start_tunnel(&resp, env);
                return Ok(Some(at));
            }
            self.start_body(&mut resp, env)?;
            return Ok(Some(at));
        }
    }

    pub(super) fn start_body(
        &mut self,
        resp: &mut ResponseHead,
        env: &mut Env<'_>,
    ) -> Result<(), Option<(Failure, String)>> {
        if let Some(s) = self.server {
            balance::succeeded(&mut env.state.upstreams[self.upstream].servers[s]);
        }
        self.upstream_time = Some(env.now.saturating_duration_since(self.started));
        self.status = Some(resp.status);
        self.reusable = !resp.closes;
        if let Some(c) = self.compress.as_ref() {
            transform::not_modified_head(c, resp);
        }
        let coding = self
            .compress
            .as_ref()
            .and_then(|c| transform::compress_head(c, resp));
        let (mut client, reader, close_delimited) = match resp.framing {
            Framing::None => (ClientFraming::None, None, false),
            Framing::Length(n) => (ClientFraming::Length(n), Some(BodyReader::length(n)), false),
            Framing::Chunked if self.client_http10 => {
                (ClientFraming::Close, Some(BodyReader::chunked()), false)
            }
            Framing::Chunked => (ClientFraming::Chunked, Some(BodyReader::chunked()), false),
            Framing::Close if self.client_http10 => (ClientFraming::Close, None, true),
            Framing::Close => (ClientFraming::Chunked, None, true),
        };
        // The head's framing: a compressed body is chunked (or, for an
        // HTTP/1.0 client, ends with the connection), and a HEAD says
        // what its GET would.
        let mut head_framing = client;
        if let (Some(coding), Some(c)) = (coding, self.compress.as_ref()) {
            let chunked = !self.client_http10;
            let framed = if chunked {
                ClientFraming::Chunked
            } else {
                ClientFraming::Close
            };
            if resp.framing != Framing::None {
                let hint = match resp.framing {
                    Framing::Length(n) => Some(n),
                    _ => None,
                };
                let encoder =
                    transform::body_encoder(&c.setting, coding, hint, chunked).map_err(|e| {
                        log::warn!("cannot compress a proxied response: {e}");
                        None
                    })?;
                self.encoder = Some(encoder);
                client = framed;
            }
            head_framing = framed;
        }
        self.client_framing = client;
        let head = head::client_head(
            resp,
            head_framing,
            &self.route_headers,
            env.date,
            self.closes_client(),
            self.client_http10,
        );
        self.to_client.extend_from_slice(&head);
        match (reader, close_delimited) {
            (None, false) => self.end_response(env),
            (Some(BodyReader::Length { left: 0 }), _) => self.end_response(env),
            (reader, close_delimited) => {
                self.resp = Resp::Body {
                    reader,
                    close_delimited,
                }
            }
        }
        Ok(())
    }

    /// Response body bytes from the upstream.
    pub(super) fn body_data(
        &mut self,
        data: &[u8],
        env: &mut Env<'_>,
    ) -> Result<(), Option<(Failure, String)>> {
        if let Resp::Tunnel {
            frames, closing, ..
        } = &mut self.resp
        {
            let take = match frames {
                // Ending: nothing past the current frame goes to the client.
                Some(f) if *closing => {
                    if f.at_boundary() {
                        0
                    } else {
                        f.step(data)
                    }
                }
                Some(f) => {
                    f.advance(data);
                    data.len()
                }
                None if *closing => 0,
                None => data.len(),
            };
            self.to_client.extend_from_slice(&data[..take]);
            self.body_bytes = self.body_bytes.saturating_add(take as u64);
            return Ok(());
        }
        let mut at = 0;
        while at < data.len() {
            let Resp::Body { reader, .. } = &mut self.resp else {
                if at < data.len() {
                    self.reusable = false;
                }
                return Ok(());
            };
            let Some(r) = reader.as_mut() else {
                // Close-delimited: everything is body.
                let piece = &data[at..];
                return self.emit(piece, env);
            };
            if let Some(left) = r.data_left().filter(|&l| l > 0) {
                let n = usize::try_from(left).map_or(data.len() - at, |l| l.min(data.len() - at));
                let (used, step) = r.consume(&data[at..at + n], u64::MAX, 0);
                let piece = &data[at..at + used];
                at += used;
                self.emit(piece, env)?;
                if step == Step::Done {
                    self.end_response(env);
                }
                continue;
            }
            let (used, step) = r.consume_framing(&data[at..], u64::MAX, MAX_RESPONSE_HEAD);
            at += used;
            match step {
                Step::More => {}
                Step::Done => self.end_response(env),
                Step::Invalid(_) => {
                    let up = &env.config.proxy.upstreams[self.upstream];
                    log_failure(up, self.server.unwrap_or(0), "malformed chunked body");
                    return Err(None);
                }
            }
        }
        Ok(())
    }

    pub(super) fn emit(
        &mut self,
        piece: &[u8],
        env: &Env<'_>,
    ) -> Result<(), Option<(Failure, String)>> {
        if piece.is_empty() {
            return Ok(());
        }
        if let Some(encoder) = self.encoder.as_mut() {
            // The log records what was sent, as for a compressed file:
            // the compressed bytes, chunked framing included.
            for chunk in piece.chunks(MAX_INPUT) {
                if let Err(e) = encoder.push(chunk) {
                    let up = &env.config.proxy.upstreams[self.upstream];
                    log_failure(up, self.server.unwrap_or(0), &format!("compress: {e}"));
                    return Err(None);
                }
                self.to_client.extend_from_slice(encoder.pending());
                let n = encoder.pending().len();
                encoder.consume(n);
                self.body_bytes = self.body_bytes.saturating_add(n as u64);
            }
            return Ok(());
        }
        self.body_bytes = self.body_bytes.saturating_add(piece.len() as u64);
        if self.client_framing == ClientFraming::Chunked {
            self.to_client
                .extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            self.to_client.extend_from_slice(piece);
            self.to_client.extend_from_slice(b"\r\n");
        } else if !self.is_head {
            self.to_client.extend_from_slice(piece);
        }
        Ok(())
    }

    pub(super) fn end_response(&mut self, env: &mut Env<'_>) {
        if let Some(mut encoder) = self.encoder.take() {
            match encoder.finish() {
                Ok(()) => {
                    self.to_client.extend_from_slice(encoder.pending());
                    let n = encoder.pending().len() as u64;
                    self.body_bytes = self.body_bytes.saturating_add(n);
                }
                Err(e) => {
                    // The body cannot be completed: without its end (no
                    // last chunk) and with the connection closed after
                    // it, the client sees a truncated response.
                    let up = &env.config.proxy.upstreams[self.upstream];
                    log_failure(up, self.server.unwrap_or(0), &format!("compress: {e}"));
                    self.client_close = true;
                }
            }
        } else if self.client_framing == ClientFraming::Chunked {
            self.to_client.extend_from_slice(b"0\r\n\r\n");
        }
        self.resp = Resp::Done;
        let _ = env;
    }
}
