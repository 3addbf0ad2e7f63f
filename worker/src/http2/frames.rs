//! A watch on the frames going by, without parsing them (the `h2` crate
//! does that): frame headers are followed through the byte stream in both
//! directions, for what the engine does not count or bound itself.
//!
//! In: control frames (SETTINGS, PING, PRIORITY, RST_STREAM, empty DATA
//! without END_STREAM, unknown types) cost the server work and the client
//! nothing; a client may send `http2_max_control_frames` a second (a token
//! bucket holding as many), past which the connection is ended with GOAWAY
//! ENHANCE_YOUR_CALM: the 2019 floods (CVE-2019-9512, -9515, -9518) and a
//! slow rapid reset (CVE-2023-44487; a fast one the engine catches first).
//! RST_STREAM frames are counted for the metrics.
//!
//! Out: each GOAWAY's error code, for the metrics ("GOAWAYs sent by
//! reason").

use std::time::Instant;

const DATA: u8 = 0x0;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
/// Types above CONTINUATION (0x9) are extensions, ignored by the engine.
const LAST_KNOWN: u8 = 0x9;
const END_STREAM: u8 = 0x1;

/// The client's connection preface, before its first frame.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Where the scanner is in the byte stream.
#[derive(Debug)]
enum At {
    /// Inside the client preface: this many bytes of it still to come.
    Preface(usize),
    /// Inside a frame header: the bytes of it so far.
    Header { got: usize },
    /// Inside a payload: this many bytes still to come.
    Payload { left: usize },
}

#[derive(Debug)]
pub struct Scanner {
    at: At,
    header: [u8; 9],
    /// The current frame is a GOAWAY: its first 8 payload bytes (last
    /// stream id, error code) are kept.
    goaway: Option<([u8; 8], usize)>,
}

/// What one call to `feed` saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub control: u32,
    pub resets: u32,
}

impl Scanner {
    /// For the bytes a client sends (they start with the preface).
    pub fn incoming() -> Scanner {
        Scanner {
            at: At::Preface(PREFACE.len()),
            header: [0; 9],
            goaway: None,
        }
    }

    /// For the bytes the server sends.
    pub fn outgoing() -> Scanner {
        Scanner {
            at: At::Header { got: 0 },
            header: [0; 9],
            goaway: None,
        }
    }

    /// Follows `bytes`; each GOAWAY's error code completed goes to
    /// `on_goaway`.
    pub fn feed(&mut self, mut bytes: &[u8], mut on_goaway: impl FnMut(u32)) -> Seen {
        let mut seen = Seen::default();
        while !bytes.is_empty() {
            match &mut self.at {
                At::Preface(left) => {
                    let n = (*left).min(bytes.len());
                    *left -= n;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        self.at = At::Header { got: 0 };
                    }
                }
                At::Header { got } => {
                    let n = (9 - *got).min(bytes.len());
                    self.header[*got..*got + n].copy_from_slice(&bytes[..n]);
                    *got += n;
                    bytes = &bytes[n..];
                    if *got == 9 {
                        let len = usize::from(self.header[0]) << 16
                            | usize::from(self.header[1]) << 8
                            | usize::from(self.header[2]);
                        let kind = self.header[3];
                        let flags = self.header[4];
                        let control = match kind {
                            DATA => len == 0 && flags & END_STREAM == 0,
                            PRIORITY | SETTINGS | PING => true,
                            RST_STREAM => {
                                seen.resets += 1;
                                true
                            }
                            k => k > LAST_KNOWN,
                        };
                        if control {
                            seen.control += 1;
                        }
                        self.goaway = (kind == GOAWAY).then_some(([0; 8], 0));
                        self.at = At::Payload { left: len };
                        if len == 0 {
                            self.end_frame(&mut on_goaway);
                        }
                    }
                }
                At::Payload { left } => {
                    let n = (*left).min(bytes.len());
                    if let Some((buf, got)) = self.goaway.as_mut() {
                        let take = (8 - *got).min(n);
                        buf[*got..*got + take].copy_from_slice(&bytes[..take]);
                        *got += take;
                    }
                    *left -= n;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        self.end_frame(&mut on_goaway);
                    }
                }
            }
        }
        seen
    }

    fn end_frame(&mut self, on_goaway: &mut impl FnMut(u32)) {
        if let Some((buf, 8)) = self.goaway.take() {
            on_goaway(u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]));
        }
        self.at = At::Header { got: 0 };
    }
}

/// The control frames a client may still send: `rate` a second, at most
/// `rate` saved up.
#[derive(Debug)]
pub struct Bucket {
    tokens: f64,
    rate: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(rate: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(rate),
            rate: f64::from(rate),
            last: now,
        }
    }

    /// Takes `n` frames' worth; false once the client is over its rate.
    pub fn take(&mut self, n: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate) - f64::from(n);
        self.tokens >= 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn control_frames_are_counted_across_any_split() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, &[0; 6]));
        bytes.extend(frame(0x1, 0x4, &[0x82; 20])); // HEADERS: not control
        bytes.extend(frame(PING, 0, &[0; 8]));
        bytes.extend(frame(DATA, 0, &[])); // empty DATA: control
        bytes.extend(frame(DATA, END_STREAM, &[])); // ends a stream: not
        bytes.extend(frame(DATA, 0, &[1, 2, 3])); // carries data: not
        bytes.extend(frame(RST_STREAM, 0, &[0, 0, 0, 8]));
        bytes.extend(frame(0x20, 0, &[9; 3])); // unknown type
        for split in [1, 2, 7, 9, 10, 1000] {
            let mut s = Scanner::incoming();
            let mut total = Seen::default();
            for chunk in bytes.chunks(split) {
                let seen = s.feed(chunk, |_| {});
                total.control += seen.control;
                total.resets += seen.resets;
            }
            assert_eq!(
                total,
                Seen {
                    control: 5,
                    resets: 1
                },
                "split {split}"
            );
        }
    }

    #[test]
    fn goaway_codes_are_seen_going_out() {
        let mut bytes = frame(SETTINGS, 0, &[]);
        bytes.extend(frame(GOAWAY, 0, &[0, 0, 0, 7, 0, 0, 0, 11, b'x']));
        bytes.extend(frame(GOAWAY, 0, &[0, 0, 0, 9, 0, 0, 0, 0]));
        for split in [1, 3, 100] {
            let mut s = Scanner::outgoing();
            let mut codes = Vec::new();
            for chunk in bytes.chunks(split) {
                s.feed(chunk, |c| codes.push(c));
            }
            assert_eq!(codes, [11, 0], "split {split}");
        }
    }

    #[test]
    fn the_bucket_refills_at_its_rate() {
        let t = Instant::now();
        let mut b = Bucket::new(10, t);
        assert!(b.take(10, t));
        assert!(!b.take(1, t));
        // A second later, ten more (but never more than ten saved).
        let later = t + std::time::Duration::from_secs(5);
        assert!(b.take(10, later));
        assert!(!b.take(1, later));
    }
}
