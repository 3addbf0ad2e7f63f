//! The proxy's HTTP/1.1 response, as the exchange frames it for a client
//! (`proxy::exchange`: head, then a body with a length, chunked, or until
//! the end; or a WebSocket's 101 and its tunnel), read back into a head
//! and body data for HTTP/2 frames. The exchange made these bytes itself,
//! so they are well-formed; anything else is still refused, never
//! trusted.

/// Where the reading is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Length(u64),
    /// A chunk-size line.
    ChunkSize,
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer lines, up to the empty one.
    Trailers,
    /// Until the exchange is finished.
    Close,
    Done,
}

/// One piece of the response.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// An interim (1xx) head: status and fields; the final one follows.
    Interim(u16, Vec<(String, Vec<u8>)>),
    /// The final head: status and fields.
    Head(u16, Vec<(String, Vec<u8>)>),
    /// Body data: this many bytes at the start of the input, of which
    /// the caller takes what it can (`took`).
    Data(usize),
    /// The body's end.
    End,
    /// Nothing complete in the input yet.
    More,
}

pub struct Decoder {
    state: State,
    /// A HEAD request's response: no body whatever the head says.
    head_request: bool,
    /// A WebSocket over HTTP/2: the `Sec-WebSocket-Accept` the upstream's
    /// 101 must carry. That 101 becomes a 200 (RFC 8441 5), and then the
    /// bytes are the tunnel's until the exchange ends.
    websocket_accept: Option<String>,
}

impl Decoder {
    pub fn new(head_request: bool, websocket_accept: Option<String>) -> Decoder {
        Decoder {
            state: State::Head,
            head_request,
            websocket_accept,
        }
    }

    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Body framed by the connection's end: ends when the exchange does.
    pub fn close_delimited(&self) -> bool {
        self.state == State::Close
    }

    /// `n` bytes of the last `Data` were taken (consumed from the input).
    pub fn took(&mut self, n: usize) {
        let n = n as u64;
        self.state = match self.state {
            State::Length(left) if left <= n => State::Done,
            State::Length(left) => State::Length(left - n),
            State::ChunkData(left) if left <= n => State::ChunkEnd,
            State::ChunkData(left) => State::ChunkData(left - n),
            other => other,
        };
    }

    /// Reads what `input` starts with: `(bytes consumed, piece)`, `Err`
    /// for bytes that are not a response.
    pub fn next(&mut self, input: &[u8]) -> Result<(usize, Piece), ()> {
        match self.state {
            State::Done => Ok((0, Piece::End)),
            State::Head => {
                let mut slots = [httparse::EMPTY_HEADER; 128];
                let mut resp = httparse::Response::new(&mut slots);
                let n = match resp.parse(input) {
                    Ok(httparse::Status::Complete(n)) => n,
                    Ok(httparse::Status::Partial) => return Ok((0, Piece::More)),
                    Err(_) => return Err(()),
                };
                let code = resp.code.ok_or(())?;
                if let Some(accept) = &self.websocket_accept {
                    // Only a switch to the WebSocket, with the answer to
                    // our key, opens the tunnel; any other 2xx would tell
                    // the client it is open when it is not.
                    let switched = code == 101
                        && resp.headers.iter().any(|h| {
                            h.name.eq_ignore_ascii_case("sec-websocket-accept")
                                && h.value.trim_ascii() == accept.as_bytes()
                        });
                    if switched {
                        let fields = resp
                            .headers
                            .iter()
                            .filter(|h| !h.name.eq_ignore_ascii_case("sec-websocket-accept"))
                            .map(|h| (h.name.to_owned(), h.value.to_vec()))
                            .collect();
                        self.state = State::Close;
                        return Ok((n, Piece::Head(200, fields)));
                    }
                    if code == 101 || (200..300).contains(&code) {
                        return Err(());
                    }
                } else if code == 101 {
                    // A switch of protocols has no HTTP/2 form (RFC 9113
                    // 8.6) but as an extended CONNECT's tunnel (above).
                    return Err(());
                }
                if (100..200).contains(&code) {
                    // 100 Continue, 103 Early Hints: passed on as they
                    // come, before the final head.
                    let fields = resp
                        .headers
                        .iter()
                        .map(|h| (h.name.to_owned(), h.value.to_vec()))
                        .collect();
                    return Ok((n, Piece::Interim(code, fields)));
                }
                let mut fields = Vec::with_capacity(resp.headers.len());
                let mut length = None;
                let mut chunked = false;
                for h in resp.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<u64>().ok());
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        chunked = true;
                    }
                    fields.push((h.name.to_owned(), h.value.to_vec()));
                }
                self.state = if self.head_request || code == 204 || code == 304 {
                    State::Done
                } else if chunked {
                    State::ChunkSize
                } else {
                    match length {
                        Some(0) => State::Done,
                        Some(n) => State::Length(n),
                        None => State::Close,
                    }
                };
                Ok((n, Piece::Head(code, fields)))
            }
            State::Length(left) | State::ChunkData(left) => {
                if input.is_empty() {
                    return Ok((0, Piece::More));
                }
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                Ok((0, Piece::Data(n)))
            }
            State::Close => {
                if input.is_empty() {
                    return Ok((0, Piece::More));
                }
                Ok((0, Piece::Data(input.len())))
            }
            State::ChunkSize => {
                let Some(eol) = input.iter().position(|&b| b == b'\n') else {
                    return if input.len() > 1024 {
                        Err(())
                    } else {
                        Ok((0, Piece::More))
                    };
                };
                let line = input[..eol].strip_suffix(b"\r").unwrap_or(&input[..eol]);
                let digits = line.split(|&b| b == b';').next().unwrap_or_default();
                let text = std::str::from_utf8(digits).map_err(|_| ())?.trim();
                let size = u64::from_str_radix(text, 16).map_err(|_| ())?;
                self.state = if size == 0 {
                    State::Trailers
                } else {
                    State::ChunkData(size)
                };
                Ok((eol + 1, Piece::More))
            }
            State::ChunkEnd => {
                if input.len() < 2 {
                    return Ok((0, Piece::More));
                }
                if &input[..2] != b"\r\n" {
                    return Err(());
                }
                self.state = State::ChunkSize;
                Ok((2, Piece::More))
            }
            State::Trailers => {
                let Some(eol) = input.iter().position(|&b| b == b'\n') else {
                    return Ok((0, Piece::More));
                };
                if eol <= 1 {
                    self.state = State::Done;
                    return Ok((eol + 1, Piece::End));
                }
                // Trailer fields are not passed on.
                Ok((eol + 1, Piece::More))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything `bytes` says, fed in pieces of `split` bytes.
    fn read_all(bytes: &[u8], split: usize, head_request: bool) -> (u16, Vec<u8>, bool) {
        let mut d = Decoder::new(head_request, None);
        let mut buf = Vec::new();
        let mut fed = 0;
        let mut status = 0;
        let mut body = Vec::new();
        let mut ended = false;
        loop {
            let (n, piece) = d.next(&buf).expect("well-formed");
            buf.drain(..n);
            match piece {
                Piece::Head(code, _) => status = code,
                Piece::Interim(..) => {}
                Piece::Data(k) => {
                    body.extend_from_slice(&buf[..k]);
                    buf.drain(..k);
                    d.took(k);
                }
                Piece::End => {
                    ended = true;
                    break;
                }
                Piece::More if n > 0 => {}
                Piece::More => {
                    if fed >= bytes.len() {
                        break;
                    }
                    let end = (fed + split).min(bytes.len());
                    buf.extend_from_slice(&bytes[fed..end]);
                    fed = end;
                }
            }
        }
        (status, body, ended || d.done())
    }

    #[test]
    fn lengths_chunks_and_interim_heads() {
        let length =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let chunked = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n\
                        3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\n";
        for split in [1, 2, 5, 1000] {
            assert_eq!(
                read_all(length, split, false),
                (200, b"hello".to_vec(), true)
            );
            assert_eq!(
                read_all(chunked, split, false),
                (201, b"abcde".to_vec(), true)
            );
        }
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(read_all(head, 3, true), (200, Vec::new(), true));
        let mut d = Decoder::new(false, None);
        let (_, piece) = d.next(b"HTTP/1.1 200 OK\r\n\r\nrest").unwrap();
        assert!(matches!(piece, Piece::Head(200, _)));
        assert!(d.close_delimited());
        assert!(
            Decoder::new(false, None)
                .next(b"\x00garbage\r\n\r\n")
                .is_err()
        );
        let hints = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n";
        let (n, piece) = Decoder::new(false, None).next(hints).unwrap();
        assert_eq!(n, hints.len());
        assert_eq!(
            piece,
            Piece::Interim(103, vec![("Link".into(), b"</a.css>".to_vec())])
        );
        // No HTTP/2 form: refused, never passed on.
        assert!(
            Decoder::new(false, None)
                .next(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
                .is_err()
        );
    }
}
