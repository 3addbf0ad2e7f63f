//! Request bodies, read and thrown away: static routes never use them, but
//! they must be consumed, exactly and within limits, so that the next
//! request on the connection is found where it starts.
//!
//! A `Content-Length` body is a count. A chunked one (RFC 9112 7.1) is
//! decoded strictly: hex sizes without sign or overflow, CRLF line ends, a
//! bounded line for the size and its extensions, bounded trailers. Anything
//! else is a 400, since past a framing error the next request cannot be
//! found; a body over `max_body_size` is a 413.

use super::response::Status;

/// Longest chunk-size line (size, extensions, CRLF) accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// Where in a chunked body the reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Reading a chunk-size line; `len` bytes of it seen so far.
    Size {
        len: usize,
        value: u64,
        digits: u32,
        in_ext: bool,
        cr: bool,
    },
    /// Inside a chunk's data.
    Data { left: u64 },
    /// After a chunk's data: the CR, then the LF.
    DataEnd { cr: bool },
    /// After the last chunk: trailer lines until an empty one; `line` bytes
    /// of the current one, `total` of all.
    Trailers { line: usize, total: usize, cr: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyReader {
    Length { left: u64 },
    Chunked { state: Chunk, data: u64 },
}

/// What reading some bytes led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The body goes on past these bytes.
    More,
    /// The body ended.
    Done,
    /// The body is malformed or too large: answer this and close.
    Invalid(Status),
}

const SIZE_START: Chunk = Chunk::Size {
    len: 0,
    value: 0,
    digits: 0,
    in_ext: false,
    cr: false,
};

impl BodyReader {
    pub fn length(n: u64) -> BodyReader {
        BodyReader::Length { left: n }
    }

    pub fn chunked() -> BodyReader {
        BodyReader::Chunked {
            state: SIZE_START,
            data: 0,
        }
    }

    /// How many bytes of chunk or body data come next before any framing
    /// (`None` between chunks): what a proxy forwards as they are.
    pub fn data_left(&self) -> Option<u64> {
        match self {
            BodyReader::Length { left } => Some(*left),
            BodyReader::Chunked {
                state: Chunk::Data { left },
                ..
            } => Some(*left),
            BodyReader::Chunked { .. } => None,
        }
    }

    /// Like `consume`, but stops where chunk data starts (a proxy takes
    /// the data itself, with `data_left`), so framing and data are told
    /// apart without copying.
    pub fn consume_framing(
        &mut self,
        buf: &[u8],
        max_data: u64,
        max_trailers: usize,
    ) -> (usize, Step) {
        match self {
            BodyReader::Length { .. } => (0, Step::More),
            BodyReader::Chunked { state, data } => {
                chunked(state, data, buf, max_data, max_trailers, true)
            }
        }
    }

    /// Consumes body bytes from the start of `buf`; returns how many were
    /// body and what that led to. `max_data` bounds the decoded size and
    /// `max_trailers` the trailer section.
    pub fn consume(&mut self, buf: &[u8], max_data: u64, max_trailers: usize) -> (usize, Step) {
        match self {
            BodyReader::Length { left } => {
                let n = usize::try_from(*left).map_or(buf.len(), |l| l.min(buf.len()));
                *left -= n as u64;
                (n, if *left == 0 { Step::Done } else { Step::More })
            }
            BodyReader::Chunked { state, data } => {
                chunked(state, data, buf, max_data, max_trailers, false)
            }
        }
    }
}

fn chunked(
    state: &mut Chunk,
    data: &mut u64,
    buf: &[u8],
    max_data: u64,
    max_trailers: usize,
    stop_at_data: bool,
) -> (usize, Step) {
    let mut i = 0;
    while i < buf.len() {
        let b = buf[i];
        match state {
            Chunk::Data { .. } if stop_at_data => return (i, Step::More),
            Chunk::Data { left } => {
                let n = usize::try_from(*left).map_or(buf.len() - i, |l| l.min(buf.len() - i));
                *left -= n as u64;
                i += n;
                if *left == 0 {
                    *state = Chunk::DataEnd { cr: false };
                }
                continue;
            }
            Chunk::Size {
                len,
                value,
                digits,
                in_ext,
                cr,
            } => {
                *len += 1;
                if *len > MAX_CHUNK_LINE {
                    return (i, Step::Invalid(Status::BadRequest));
                }
                if *cr {
                    if b != b'\n' || *digits == 0 {
                        return (i, Step::Invalid(Status::BadRequest));
                    }
                    let size = *value;
                    if size == 0 {
                        *state = Chunk::Trailers {
                            line: 0,
                            total: 0,
                            cr: false,
                        };
                    } else {
                        *data = data.saturating_add(size);
                        if *data > max_data {
                            return (i + 1, Step::Invalid(Status::PayloadTooLarge));
                        }
                        *state = Chunk::Data { left: size };
                    }
                } else if b == b'\r' {
                    *cr = true;
                } else if *in_ext {
                    // chunk-ext: printable, no bare LF; skipped.
                    if b == b'\n' || b == 0 {
                        return (i, Step::Invalid(Status::BadRequest));
                    }
                } else if let Some(d) = (b as char).to_digit(16) {
                    // 16 hex digits already fill a u64.
                    if *digits >= 16 {
                        return (i, Step::Invalid(Status::BadRequest));
                    }
                    *value = *value << 4 | u64::from(d);
                    *digits += 1;
                } else if b == b';' && *digits > 0 {
                    *in_ext = true;
                } else if (b == b' ' || b == b'\t') && *digits > 0 {
                    // BWS before an extension (RFC 9112 7.1.1).
                    *in_ext = true;
                } else {
                    return (i, Step::Invalid(Status::BadRequest));
                }
            }
            Chunk::DataEnd { cr } => match (*cr, b) {
                (false, b'\r') => *cr = true,
                (true, b'\n') => *state = SIZE_START,
                _ => return (i, Step::Invalid(Status::BadRequest)),
            },
            Chunk::Trailers { line, total, cr } => {
                *total += 1;
                if *total > max_trailers {
                    return (i, Step::Invalid(Status::HeaderFieldsTooLarge));
                }
                if *cr {
                    if b != b'\n' {
                        return (i, Step::Invalid(Status::BadRequest));
                    }
                    if *line == 0 {
                        return (i + 1, Step::Done);
                    }
                    *line = 0;
                    *cr = false;
                } else if b == b'\r' {
                    *cr = true;
                } else if b == b'\n' || b == 0 {
                    return (i, Step::Invalid(Status::BadRequest));
                } else {
                    *line += 1;
                }
            }
        }
        i += 1;
    }
    (i, Step::More)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns the final step and
    /// the bytes consumed in all.
    fn feed(input: &[u8], step: usize) -> (usize, Step) {
        let mut r = BodyReader::chunked();
        let mut used = 0;
        while used < input.len() {
            let end = (used + step).min(input.len());
            let (n, s) = r.consume(&input[used..end], 100, 1000);
            used += n;
            if s != Step::More {
                return (used, s);
            }
        }
        (used, Step::More)
    }

    #[test]
    fn chunked_bodies_end_where_they_end() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\nGET /";
        for step in [1, 2, 3, 7, body.len()] {
            assert_eq!(feed(body, step), (body.len() - 5, Step::Done), "{step}");
        }
        assert_eq!(feed(b"0\r\n\r\n", 1), (5, Step::Done));
        assert_eq!(feed(b"A\r\n0123456789\r\n0\r\n\r\n", 4).1, Step::Done);
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"-1\r\n",
            b"+1\r\n",
            b"\r\n",
            b" 1\r\n",
            b"1\n",
            b"1\r\nab",
            b"1\r\na\n",
            b"11111111111111111\r\n",
            b"0\r\nX: 1\n",
        ] {
            assert_eq!(
                feed(bad, 1).1,
                Step::Invalid(Status::BadRequest),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_ext = [b"1;".as_slice(), &[b'a'; MAX_CHUNK_LINE]].concat();
        assert_eq!(feed(&long_ext, 64).1, Step::Invalid(Status::BadRequest));
    }

    #[test]
    fn framing_and_data_are_told_apart() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
        let mut r = BodyReader::chunked();
        let mut data = Vec::new();
        let mut at = 0;
        loop {
            if let Some(n) = r.data_left().filter(|&n| n > 0) {
                let n = (n as usize).min(body.len() - at);
                data.extend_from_slice(&body[at..at + n]);
                assert_eq!(r.consume(&body[at..at + n], 100, 100), (n, Step::More));
                at += n;
                continue;
            }
            let (n, step) = r.consume_framing(&body[at..], 100, 100);
            at += n;
            if step == Step::Done {
                break;
            }
            assert_eq!(step, Step::More);
        }
        assert_eq!(at, body.len());
        assert_eq!(data, b"hello world");
    }

    #[test]
    fn bodies_are_bounded() {
        assert_eq!(feed(b"65\r\n", 1).1, Step::Invalid(Status::PayloadTooLarge));
        let mut r = BodyReader::chunked();
        let trailers = [b"0\r\n".as_slice(), &[b'a'; 2000]].concat();
        assert_eq!(
            r.consume(&trailers, 100, 1000).1,
            Step::Invalid(Status::HeaderFieldsTooLarge)
        );
        let mut r = BodyReader::length(5);
        assert_eq!(r.consume(b"abc", 0, 0), (3, Step::More));
        assert_eq!(r.consume(b"defGET", 0, 0), (2, Step::Done));
    }
}
