//! Closing: at once when nothing more can come from the client, else a
//! lingering close (our FIN, then input discarded until the client's).

use std::io;
use std::time::Instant;

use super::{Budget, Connection, Drive, Phase, log_io};
use crate::limits::{LINGERING_CLOSE, after};

impl Connection {
    /// Closes after the last response: at once when the client has said
    /// it sends nothing more, all of that was read and nothing unread is
    /// known to be queued, as nginx does (`lingering_close on`); else (on
    /// every error close, every timeout, every close of our own) sends our
    /// FIN and discards input until the client's (lingering close),
    /// because closing a socket with unread input makes the kernel send an
    /// RST that can destroy the response before the client reads it. TLS
    /// always takes the second way, whose FIN follows a close_notify.
    pub(super) fn start_closing(&mut self, now: Instant) {
        // (An exchange still here is dropped: its upstream connection is
        // closed; the caller has logged and released what it could.)
        let nothing_coming =
            self.input_done && self.inbuf.is_empty() && !self.readable && !self.stream.is_tls();
        self.out = None;
        self.inbuf = Vec::new();
        self.body = None;
        self.held = None;
        if self.peer_eof || nothing_coming {
            self.phase = Phase::Closed;
            return;
        }
        match self.stream.shutdown_write() {
            Ok(()) => {
                self.phase = Phase::Lingering {
                    until: after(now, LINGERING_CLOSE),
                }
            }
            Err(e) => {
                log_io("shutdown", &e);
                self.phase = Phase::Closed;
            }
        }
    }

    pub(super) fn linger(&mut self, scratch: &mut [u8], budget: &mut Budget) -> Drive {
        while self.readable {
            if budget.bytes == 0 {
                return Drive::Again;
            }
            match self.stream.read(scratch) {
                Ok(0) => {
                    self.phase = Phase::Closed;
                    return Drive::Closed;
                }
                Ok(n) => budget.bytes = budget.bytes.saturating_sub(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.phase = Phase::Closed;
                    return Drive::Closed;
                }
            }
        }
        Drive::Wait
    }
}
