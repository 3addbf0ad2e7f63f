//! A client connection in the loop's slab: HTTP/1.1 (`connection`) until
//! it turns out to speak HTTP/2 (`http2`), which takes over its socket in
//! the same slot, under the same token and registration.

use std::os::fd::RawFd;
use std::time::Instant;

use baton_shared::config::Config;

use crate::connection::{Connection, Ctx, Drive};
use crate::http2::Http2Connection;
use crate::proxy::ProxyState;

#[expect(
    clippy::large_enum_variant,
    reason = "one per connection, in the slab: boxing the HTTP/1.1 side would cost every connection an allocation"
)]
pub enum Client {
    Http1(Connection),
    Http2(Box<Http2Connection>),
    /// Only between the two, while the socket changes hands.
    Switching,
}

impl Client {
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Client::Http1(c) => c.raw_fd(),
            Client::Http2(c) => c.raw_fd(),
            Client::Switching => -1,
        }
    }

    pub fn on_ready(&mut self, readable: bool, writable: bool, read_closed: bool) {
        match self {
            Client::Http1(c) => c.on_ready(readable, writable, read_closed),
            Client::Http2(c) => c.on_ready(readable, writable),
            Client::Switching => {}
        }
    }

    /// The upstream socket of a proxied request (HTTP/2: the one whose
    /// poll id is `id`). (`read_closed`: its FIN came.)
    pub fn on_upstream_ready(
        &mut self,
        id: Option<usize>,
        readable: bool,
        writable: bool,
        read_closed: bool,
    ) {
        match self {
            Client::Http1(c) => c.on_upstream_ready(readable, writable, read_closed),
            Client::Http2(c) => c.on_upstream_ready(id, readable, writable, read_closed),
            Client::Switching => {}
        }
    }

    pub fn take_write_interest(&mut self) -> bool {
        match self {
            Client::Http1(c) => c.take_write_interest(),
            Client::Http2(c) => c.take_write_interest(),
            Client::Switching => false,
        }
    }

    /// Makes all the progress possible now; an HTTP/1.1 connection that
    /// found HTTP/2 becomes an HTTP/2 one and goes on as such.
    pub fn drive(&mut self, ctx: &mut Ctx) -> Drive {
        if let Client::Http1(c) = self {
            let drive = c.drive(ctx);
            if !c.wants_http2() {
                return drive;
            }
            if let Client::Http1(c) = std::mem::replace(self, Client::Switching) {
                let h2 = Http2Connection::new(c.into_handover(), ctx.config, ctx.http2);
                *self = Client::Http2(Box::new(h2));
            }
        }
        match self {
            Client::Http1(c) => c.drive(ctx),
            Client::Http2(c) => c.drive(ctx),
            Client::Switching => Drive::Closed,
        }
    }

    pub fn deadline(&self, config: &Config, drain_started: Option<Instant>) -> Instant {
        match self {
            Client::Http1(c) => c.deadline(config, drain_started),
            Client::Http2(c) => c.deadline(config, drain_started),
            Client::Switching => Instant::now(),
        }
    }

    pub fn on_deadline(&mut self, ctx: &mut Ctx) {
        match self {
            Client::Http1(c) => c.on_deadline(ctx),
            Client::Http2(c) => c.on_deadline(ctx),
            Client::Switching => {}
        }
    }

    /// Releases what a dropped connection holds elsewhere.
    pub fn abandon(&mut self, proxy: &mut ProxyState) {
        match self {
            Client::Http1(c) => c.abandon_exchange(proxy),
            Client::Http2(c) => c.abandon(proxy),
            Client::Switching => {}
        }
    }
}
