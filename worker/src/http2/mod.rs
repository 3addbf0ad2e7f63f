//! HTTP/2 (RFC 9113): on TLS listeners by ALPN (`h2`, preferred over
//! `http/1.1`), and on plain listeners with `h2c = true` by prior knowledge
//! (a connection that opens with the preface). A connection starts as an
//! HTTP/1.1 `Connection`, which hands its socket over (`Handover`) the
//! moment it sees either; from then on it is an `Http2Connection`, in the
//! same slot of the loop, under the same token.
//!
//! - `engine`: the protocol, done by the `h2` crate (the only file that
//!   names it; a sans-IO engine can replace it behind the same methods);
//! - `io`: the socket as the engine reads and writes it, without a runtime;
//! - `frames`: a watch on the frames going by (control-frame floods, the
//!   resets received and GOAWAYs sent for the metrics);
//! - `connection`: the engine driven from the loop, timeouts, drain;
//! - `request`, `response`, `stream`: a stream answered by the same code
//!   as an HTTP/1.1 request (`handler`, `static_files`), framed for HTTP/2.

mod connection;
mod engine;
mod frames;
mod h1_request;
mod h1_response;
mod io;
mod proxy;
mod request;
mod response;
mod stream;

use baton_shared::config::{Config, ListenAddr};

pub use connection::{Handover, Http2Connection};
pub use frames::PREFACE;

/// Whether the sites on `addr` offer HTTP/2 (`http2`, on by default; the
/// config makes sites sharing an address agree).
pub fn offered(config: &Config, addr: &ListenAddr) -> bool {
    let mut sites = config
        .sites
        .iter()
        .filter(|s| s.listen.iter().any(|l| &l.addr == addr))
        .peekable();
    sites.peek().is_some() && sites.all(|s| s.http2)
}

/// Whether `addr` takes cleartext HTTP/2 with prior knowledge (`h2c`).
pub fn h2c_on(config: &Config, addr: &ListenAddr) -> bool {
    offered(config, addr)
        && config
            .sites
            .iter()
            .flat_map(|s| &s.listen)
            .any(|l| &l.addr == addr && l.h2c)
}

/// What the first bytes of a plain connection on an h2c listener say.
#[derive(Debug, PartialEq, Eq)]
pub enum Preface {
    /// The HTTP/2 preface (its request line, at least).
    Http2,
    /// Too few bytes yet to tell.
    Undecided,
    /// HTTP/1.1.
    Http1,
}

/// Tells an h2c client from an HTTP/1.1 one by its first bytes. The
/// preface's first line is a request line no HTTP/1.1 client sends
/// (`PRI * HTTP/2.0`), so its first 16 bytes decide.
pub fn preface(read: &[u8]) -> Preface {
    let line = &PREFACE[..16];
    let n = read.len().min(line.len());
    if read[..n] != line[..n] {
        Preface::Http1
    } else if n == line.len() {
        Preface::Http2
    } else {
        Preface::Undecided
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_is_told_from_http1() {
        assert_eq!(preface(b""), Preface::Undecided);
        assert_eq!(preface(b"PRI * HT"), Preface::Undecided);
        assert_eq!(preface(b"PRI * HTTP/2.0\r\n"), Preface::Http2);
        assert_eq!(preface(PREFACE), Preface::Http2);
        assert_eq!(preface(b"GET / HTTP/1.1\r\n"), Preface::Http1);
        assert_eq!(preface(b"PRI * HTTP/1.1\r\n"), Preface::Http1);
        assert_eq!(preface(b"P"), Preface::Undecided);
        assert_eq!(preface(b"X"), Preface::Http1);
    }
}
