//! Frame boundaries of a WebSocket stream (RFC 6455 5.2), so that a close
//! frame of our own can go between two frames, never into one.
//!
//! Only lengths are read: 2 header bytes, a 16- or 64-bit extended length,
//! a 4-byte masking key if the mask bit is set, then the payload. Control
//! frames may come between the fragments of a message, so any boundary is
//! a place for a close frame.

/// Close frame, status 1001 (Going Away), unmasked (server to client).
pub const CLOSE_GOING_AWAY: [u8; 4] = [0x88, 0x02, 0x03, 0xE9];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `have` header bytes seen of `need` (`need` known after 2 bytes).
    Header {
        buf: [u8; 14],
        have: usize,
    },
    Payload {
        left: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frames {
    state: State,
}

impl Default for Frames {
    fn default() -> Frames {
        Frames {
            state: State::Header {
                buf: [0; 14],
                have: 0,
            },
        }
    }
}

impl Frames {
    /// Between two frames.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header { have: 0, .. })
    }

    /// Consumes bytes up to the end of the current frame at most; returns
    /// how many. Call again for the rest.
    pub fn step(&mut self, data: &[u8]) -> usize {
        let mut used = 0;
        while used < data.len() {
            match &mut self.state {
                State::Payload { left } => {
                    let n = usize::try_from(*left)
                        .map_or(data.len() - used, |l| l.min(data.len() - used));
                    *left -= n as u64;
                    used += n;
                    if *left == 0 {
                        *self = Frames::default();
                        return used;
                    }
                }
                State::Header { buf, have } => {
                    buf[*have] = data[used];
                    *have += 1;
                    used += 1;
                    if *have < 2 {
                        continue;
                    }
                    let masked = buf[1] & 0x80 != 0;
                    let len7 = buf[1] & 0x7f;
                    let ext = match len7 {
                        126 => 2,
                        127 => 8,
                        _ => 0,
                    };
                    let need = 2 + ext + if masked { 4 } else { 0 };
                    if *have < need {
                        continue;
                    }
                    let len = match ext {
                        2 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
                        8 => {
                            let mut b = [0u8; 8];
                            b.copy_from_slice(&buf[2..10]);
                            u64::from_be_bytes(b)
                        }
                        _ => u64::from(len7),
                    };
                    if len == 0 {
                        *self = Frames::default();
                        return used;
                    }
                    self.state = State::Payload { left: len };
                }
            }
        }
        used
    }

    /// Consumes all of `data`.
    pub fn advance(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = self.step(data);
            data = &data[n..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize, masked: bool) -> Vec<u8> {
        let mut f = vec![0x82];
        let m = if masked { 0x80 } else { 0 };
        match len {
            0..=125 => f.push(m | len as u8),
            126..=65535 => {
                f.push(m | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(m | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(0x55, len));
        f
    }

    #[test]
    fn boundaries_in_any_split() {
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for (len, masked) in [
            (0, false),
            (5, true),
            (125, false),
            (126, false),
            (70_000, true),
        ] {
            stream.extend(frame(len, masked));
            ends.push(stream.len());
        }
        for piece in [1, 3, 7, 1000, stream.len()] {
            let mut f = Frames::default();
            let mut at = 0;
            let mut seen = Vec::new();
            while at < stream.len() {
                let end = (at + piece).min(stream.len());
                let n = f.step(&stream[at..end]);
                at += n;
                if f.at_boundary() {
                    seen.push(at);
                }
            }
            assert_eq!(seen, ends, "piece {piece}");
        }
    }
}
