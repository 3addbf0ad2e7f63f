//! An exchange after a 101: a two-way tunnel, and how a drain ends it
//! (a WebSocket at a frame boundary, with a close frame 1001).

use super::{Env, Exchange, Resp};
use crate::proxy::balance;
use crate::proxy::head::{self, ClientFraming, ResponseHead};
use crate::proxy::websocket::{CLOSE_GOING_AWAY, Frames};

impl Exchange {
    /// A tunnel (after a 101): the client's bytes go up as they are.
    pub fn is_tunnel(&self) -> bool {
        matches!(self.resp, Resp::Tunnel { .. })
    }

    /// A tunnel's bytes from the client, as much as `body_room` allowed.
    pub fn push_raw(&mut self, data: &[u8]) {
        if let Resp::Tunnel { closing: false, .. } = self.resp {
            self.compact_sent();
            self.out.extend_from_slice(data);
        }
    }

    /// The tunnel's client sent its FIN: the upstream gets one too, once
    /// what came before it is sent.
    pub fn client_eof(&mut self) {
        if let Resp::Tunnel { client_eof, .. } = &mut self.resp {
            *client_eof = true;
        }
    }

    /// Being ended (`end_tunnel`), at the next frame boundary.
    pub fn tunnel_ending(&self) -> bool {
        matches!(self.resp, Resp::Tunnel { closing: true, .. })
    }

    /// The drain's grace is over: end the tunnel (at a frame boundary for
    /// a WebSocket, with a close frame 1001).
    pub fn end_tunnel(&mut self) {
        if let Resp::Tunnel { closing, .. } = &mut self.resp {
            *closing = true;
        }
    }

    /// A tunnel being ended at a frame boundary: once there, the close
    /// frame goes after what the client has, and the tunnel is over.
    pub(super) fn tunnel_closing(&mut self) -> bool {
        let Resp::Tunnel {
            frames, closing, ..
        } = &self.resp
        else {
            return false;
        };
        if !*closing || frames.is_some_and(|f| !f.at_boundary()) {
            return false;
        }
        if frames.is_some() {
            self.to_client.extend_from_slice(&CLOSE_GOING_AWAY);
        }
        self.reusable = false;
        self.resp = Resp::Done;
        true
    }

    /// A 101: the head goes to the client and the connection becomes a
    /// tunnel.
    pub(super) fn start_tunnel(&mut self, resp: &ResponseHead, env: &mut Env<'_>) {
        if let Some(s) = self.server {
            balance::succeeded(&mut env.state.upstreams[self.upstream].servers[s]);
        }
        self.upstream_time = Some(env.now.saturating_duration_since(self.started));
        self.status = Some(101);
        self.reusable = false;
        self.replayable = false;
        self.request_done = true;
        self.client_close = true;
        let websocket = self
            .upgrade
            .as_deref()
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
        let head = head::client_head(
            resp,
            ClientFraming::None,
            &self.route_headers,
            env.date,
            true,
            false,
        );
        self.to_client.extend_from_slice(&head);
        self.resp = Resp::Tunnel {
            frames: websocket.then(Frames::default),
            closing: false,
            client_eof: false,
        };
    }
}
