//! Streaming encoders: body chunks in, compressed chunks out, in bounded
//! memory.
//!
//! `Encoder` wraps one of flate2 (gzip), brotli and zstd behind one
//! interface: `write` compresses a chunk and appends whatever output the
//! coder has ready, `finish` flushes the rest and the coding's trailer.
//! Its memory is the coder's state, which is bounded by the window chosen
//! here (see `Encoder::new`), whatever the body's length.
//!
//! `BodyEncoder` adds what a connection needs to send a body of unknown
//! compressed length: HTTP/1.1 chunked framing (or none, for a
//! close-delimited body) and back-pressure. It holds at most one framed
//! chunk of output; `wants_input` is false until the caller has sent (and
//! `consume`d) all of it, so a producer that only reads more input when
//! `wants_input` says so (a file, an upstream socket) never makes it grow
//! past what one `push` of at most `MAX_INPUT` bytes produces.

use std::io::{self, Write};

use baton_shared::config::compress::Coding;

/// The largest input a `BodyEncoder::push` should be given (the caller's
/// read size): one socket read's worth.
pub const MAX_INPUT: usize = 16 * 1024;

/// Window sizes (log2 bytes) for brotli and zstd when the body's length
/// is unknown or large: 1 MiB for brotli, 512 KiB for zstd. Their
/// defaults (4 MiB, 2 to 8 MiB) would cost that much per connection; past
/// a few hundred KiB of history the gain on web text is a percent or two.
const BR_MAX_WINDOW: u32 = 20;
const ZSTD_MAX_WINDOW: u32 = 19;
/// brotli's window is never below 256 KiB, even for a small body: the
/// brotli crate at quality 5 with a 64 KiB window took 14 ms to compress
/// 64 KiB of HTML, against 1 ms with 256 KiB (measured, release build).
const BR_MIN_WINDOW: u32 = 18;

enum Inner {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    /// Finished (or failed): nothing more can be written.
    Done,
}

/// One body's compressor.
pub struct Encoder {
    inner: Inner,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Encoder")
    }
}

/// log2 of the smallest window covering `len` bytes, within `min..=max`.
fn window_for(len: Option<u64>, min: u32, max: u32) -> u32 {
    match len {
        Some(n) => (u64::BITS - n.saturating_sub(1).leading_zeros()).clamp(min, max),
        None => max,
    }
}

impl Encoder {
    /// An encoder for `coding` at `level` (as `Compress::level` gives
    /// it). `size_hint`: the input's length when known, which lets brotli
    /// and zstd use a window no larger than the body (less memory, and
    /// zstd records the size in its frame header). The same coding, level
    /// and hint always give the same output for the same input fed in the
    /// same chunks: the file cache's variants and a streamed response of
    /// the same file version are the same bytes, so their ETag is strong.
    pub fn new(coding: Coding, level: i32, size_hint: Option<u64>) -> io::Result<Encoder> {
        let inner = match coding {
            Coding::Gzip => {
                let level = u32::try_from(level.clamp(1, 9)).unwrap_or(6);
                Inner::Gzip(flate2::write::GzEncoder::new(
                    Vec::new(),
                    flate2::Compression::new(level),
                ))
            }
            Coding::Br => {
                let quality = u32::try_from(level.clamp(0, 11)).unwrap_or(5);
                let lgwin = window_for(size_hint, BR_MIN_WINDOW, BR_MAX_WINDOW);
                Inner::Br(Box::new(brotli::CompressorWriter::new(
                    Vec::new(),
                    4096,
                    quality,
                    lgwin,
                )))
            }
            Coding::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(Vec::new(), level.clamp(1, 19))?;
                e.set_pledged_src_size(size_hint)?;
                // zstd sizes its window down to a pledged size on its own;
                // a larger or unknown body gets the capped window.
                if size_hint.is_none_or(|n| n > 1 << ZSTD_MAX_WINDOW) {
                    e.window_log(ZSTD_MAX_WINDOW)?;
                }
                Inner::Zstd(e)
            }
        };
        Ok(Encoder { inner })
    }

    /// Compresses `input`; whatever output is ready is appended to `out`.
    pub fn write(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let result = match &mut self.inner {
            Inner::Gzip(e) => e.write_all(input).map(|()| out.append(e.get_mut())),
            Inner::Br(e) => e.write_all(input).map(|()| out.append(e.get_mut())),
            Inner::Zstd(e) => e.write_all(input).map(|()| out.append(e.get_mut())),
            Inner::Done => Err(io::Error::other("write after the encoder finished")),
        };
        if result.is_err() {
            self.inner = Inner::Done;
        }
        result
    }

    /// Ends the body: the coder's remaining output and trailer are
    /// appended to `out`. Writing after this is an error.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        match std::mem::replace(&mut self.inner, Inner::Done) {
            Inner::Gzip(mut e) => {
                e.try_finish()?;
                out.append(e.get_mut());
            }
            Inner::Br(e) => {
                // Writes the final metablock (a write into a Vec cannot
                // fail).
                let mut v = e.into_inner();
                out.append(&mut v);
            }
            Inner::Zstd(mut e) => {
                e.do_finish()?;
                out.append(e.get_mut());
            }
            Inner::Done => return Err(io::Error::other("encoder finished twice")),
        }
        Ok(())
    }
}

/// A whole body compressed at once, fed in `MAX_INPUT` chunks exactly as a
/// streamed response feeds it (so the bytes are the same).
pub fn encode_all(coding: Coding, level: i32, input: &[u8]) -> io::Result<Vec<u8>> {
    let mut e = Encoder::new(coding, level, Some(input.len() as u64))?;
    let mut out = Vec::with_capacity(input.len() / 3 + 64);
    for chunk in input.chunks(MAX_INPUT) {
        e.write(chunk, &mut out)?;
    }
    e.finish(&mut out)?;
    Ok(out)
}

/// A body being compressed as it is sent, framed for the wire, with
/// back-pressure (see the module's doc).
#[derive(Debug)]
pub struct BodyEncoder {
    encoder: Encoder,
    /// Framed output not yet sent, from `sent` on.
    pending: Vec<u8>,
    sent: usize,
    /// The coder's output before framing (reused).
    raw: Vec<u8>,
    /// HTTP/1.1 chunked framing; `false`: raw bytes, for a body the
    /// connection's close delimits.
    chunked: bool,
    finished: bool,
}

impl BodyEncoder {
    pub fn new(encoder: Encoder, chunked: bool) -> BodyEncoder {
        BodyEncoder {
            encoder,
            pending: Vec::new(),
            sent: 0,
            raw: Vec::new(),
            chunked,
            finished: false,
        }
    }

    /// Whether the caller may `push` more: everything framed so far has
    /// been sent, and the body is not finished. The back-pressure: read
    /// more input only when this is true.
    pub fn wants_input(&self) -> bool {
        !self.finished && self.sent == self.pending.len()
    }

    /// Compresses a chunk of the body (at most `MAX_INPUT` bytes keeps the
    /// memory bound) and frames what the coder produced.
    pub fn push(&mut self, input: &[u8]) -> io::Result<()> {
        self.compact();
        self.encoder.write(input, &mut self.raw)?;
        self.frame();
        Ok(())
    }

    /// Ends the body: the coder's tail, then (chunked) the last chunk.
    pub fn finish(&mut self) -> io::Result<()> {
        self.compact();
        self.encoder.finish(&mut self.raw)?;
        self.frame();
        if self.chunked {
            self.pending.extend_from_slice(b"0\r\n\r\n");
        }
        self.finished = true;
        Ok(())
    }

    /// Framed bytes waiting to be sent.
    pub fn pending(&self) -> &[u8] {
        &self.pending[self.sent..]
    }

    /// `n` bytes of `pending` were sent.
    pub fn consume(&mut self, n: usize) {
        self.sent = self.sent.saturating_add(n).min(self.pending.len());
    }

    /// `finish` was called: what is pending is the body's end.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Finished and all of it sent.
    pub fn is_done(&self) -> bool {
        self.finished && self.sent == self.pending.len()
    }

    /// Drops what was sent, keeping the buffer's capacity.
    fn compact(&mut self) {
        self.pending.drain(..self.sent);
        self.sent = 0;
    }

    /// Moves the coder's output into `pending`, as one chunk.
    fn frame(&mut self) {
        if self.raw.is_empty() {
            return; // a zero-size chunk would end the body
        }
        if self.chunked {
            let mut size = String::with_capacity(8);
            crate::http::response::push_hex(&mut size, self.raw.len() as u64);
            self.pending.extend_from_slice(size.as_bytes());
            self.pending.extend_from_slice(b"\r\n");
        }
        self.pending.append(&mut self.raw);
        if self.chunked {
            self.pending.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    pub(crate) fn decode(coding: Coding, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            Coding::Gzip => {
                flate2::read::GzDecoder::new(bytes)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Coding::Br => {
                brotli::Decompressor::new(bytes, 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Coding::Zstd => out = zstd::stream::decode_all(bytes).unwrap(),
        }
        out
    }

    /// Text that compresses, but not trivially: numbered lines.
    fn text(n: usize) -> Vec<u8> {
        let mut t = Vec::with_capacity(n);
        let mut i = 0u64;
        while t.len() < n {
            t.extend_from_slice(
                format!("<p>line {i} of the page, {}</p>\n", i * 7919 % 1000).as_bytes(),
            );
            i += 1;
        }
        t.truncate(n);
        t
    }

    /// Undoes chunked framing, checking it on the way.
    fn unchunk(mut wire: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let line_end = wire.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&wire[..line_end]).unwrap(), 16).unwrap();
            wire = &wire[line_end + 2..];
            if size == 0 {
                assert_eq!(wire, b"\r\n");
                return out;
            }
            out.extend_from_slice(&wire[..size]);
            assert_eq!(&wire[size..size + 2], b"\r\n");
            wire = &wire[size + 2..];
        }
    }

    #[test]
    fn every_coding_round_trips_at_every_size() {
        for coding in Coding::ALL {
            for len in [0, 1, 255, 16 * 1024, 100_000, 1 << 20] {
                let input = text(len);
                let encoded = encode_all(coding, 5, &input).unwrap();
                assert_eq!(decode(coding, &encoded), input, "{coding:?} {len}");
                if len >= 16 * 1024 {
                    assert!(encoded.len() < input.len() / 2, "{coding:?} {len}");
                }
            }
        }
    }

    #[test]
    fn streaming_gives_the_same_bytes_as_encode_all() {
        for coding in Coding::ALL {
            let input = text(200_000);
            let mut body = BodyEncoder::new(
                Encoder::new(coding, 3, Some(input.len() as u64)).unwrap(),
                true,
            );
            let mut wire = Vec::new();
            let mut chunks = input.chunks(MAX_INPUT);
            while !body.is_done() {
                if body.wants_input() {
                    match chunks.next() {
                        Some(c) => body.push(c).unwrap(),
                        None => body.finish().unwrap(),
                    }
                }
                // A slow reader: 1000 bytes at a time.
                let n = body.pending().len().min(1000);
                wire.extend_from_slice(&body.pending()[..n]);
                body.consume(n);
            }
            let payload = unchunk(&wire);
            assert_eq!(
                payload,
                encode_all(coding, 3, &input).unwrap(),
                "{coding:?}"
            );
            assert_eq!(decode(coding, &payload), input);
        }
    }

    #[test]
    fn output_held_stays_bounded_with_back_pressure() {
        // 8 MiB of incompressible-ish input pushed 16 KiB at a time: the
        // pending output never holds more than a bounded amount.
        for coding in Coding::ALL {
            let mut body = BodyEncoder::new(Encoder::new(coding, 3, None).unwrap(), false);
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            let mut chunk = vec![0u8; MAX_INPUT];
            let mut most = 0;
            let mut total_out = 0;
            for _ in 0..512 {
                assert!(body.wants_input());
                for b in chunk.iter_mut() {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    *b = b'a' + (seed % 16) as u8;
                }
                body.push(&chunk).unwrap();
                most = most.max(body.pending().len());
                total_out += body.pending().len();
                let n = body.pending().len();
                body.consume(n);
            }
            body.finish().unwrap();
            total_out += body.pending().len();
            assert!(total_out > 0);
            // A coder emits at most a block of buffered input at once.
            assert!(most <= 512 * 1024, "{coding:?}: {most}");
        }
    }

    #[test]
    fn a_finished_encoder_refuses_more() {
        let mut e = Encoder::new(Coding::Gzip, 6, None).unwrap();
        let mut out = Vec::new();
        e.finish(&mut out).unwrap();
        assert!(e.write(b"x", &mut out).is_err());
        assert!(e.finish(&mut out).is_err());
    }

    #[test]
    fn windows() {
        assert_eq!(window_for(Some(0), 10, 20), 10);
        assert_eq!(window_for(Some(1000), 10, 20), 10);
        assert_eq!(window_for(Some(1025), 10, 20), 11);
        assert_eq!(window_for(Some(1 << 20), 10, 20), 20);
        assert_eq!(window_for(Some(u64::MAX), 10, 20), 20);
        assert_eq!(window_for(None, 10, 19), 19);
    }
}
