//! The two ways in besides signals: the control socket (`baton -s`) and
//! the admin API. Both are accepted and read here the same way; each only
//! parses its request into a `Command` (see `commands`), which is decided
//! in one place whatever the transport.

use std::collections::HashMap;
use std::io;

use mio::event::Source;
use mio::{Interest, Registry, Token};

use super::Master;
use super::commands::Asker;
use crate::{admin, control};

/// An open connection on either endpoint, waiting for its request.
enum Open {
    Control(control::Conn),
    Admin(admin::Conn),
}

#[derive(Default)]
pub(super) struct Endpoints {
    open: HashMap<Token, Open>,
    /// `-s stop`/`-s quit` clients, answered by the master's exit (EOF).
    pub(super) stop_waiters: Vec<control::Conn>,
}

impl Endpoints {
    pub(super) fn owns(&self, token: Token) -> bool {
        self.open.contains_key(&token)
    }
}

/// Accepts every pending connection of `listener` (until WouldBlock).
fn accept_all<C>(
    what: &str,
    mut accept: impl FnMut() -> io::Result<Option<C>>,
    mut keep: impl FnMut(C),
) {
    loop {
        match accept() {
            Ok(Some(conn)) => keep(conn),
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("{what} accept failed: {e}");
                break;
            }
        }
    }
}

fn register(registry: &Registry, stream: &mut impl Source, token: Token) -> bool {
    registry.register(stream, token, Interest::READABLE).is_ok()
}

impl Master {
    pub(super) fn accept_control(&mut self) {
        let mut accepted = Vec::new();
        if let Some((listener, _)) = self.res.control.as_ref() {
            accept_all(
                "control socket",
                || listener.accept().map(|(s, _)| Some(control::Conn::new(s))),
                |c| accepted.push(c),
            );
        }
        for mut conn in accepted {
            let token = self.token();
            if register(self.poll.registry(), &mut conn.stream, token) {
                self.endpoints.open.insert(token, Open::Control(conn));
            }
        }
    }

    pub(super) fn accept_admin(&mut self) {
        let mut accepted = Vec::new();
        if let Some((listener, _)) = self.res.admin.as_ref() {
            accept_all("admin API", || listener.accept(), |c| accepted.push(c));
        }
        for mut conn in accepted {
            let token = self.token();
            if register(self.poll.registry(), &mut conn.stream, token) {
                self.endpoints.open.insert(token, Open::Admin(conn));
            }
        }
    }

    /// Reads what arrived on an open connection; once its request is whole
    /// it leaves the loop and goes to `commands`.
    pub(super) fn on_endpoint_readable(&mut self, token: Token) {
        enum Got {
            Line(String),
            Request(Result<admin::Request, admin::Refused>),
            Gone,
        }
        let got = match self.endpoints.open.get_mut(&token) {
            Some(Open::Control(conn)) => match conn.read_command() {
                Ok(None) => return,
                Ok(Some(line)) => Got::Line(line),
                Err(_) => Got::Gone,
            },
            // Judged by the `[admin]` in force now; none: it was closed.
            Some(Open::Admin(conn)) => {
                match self.res.admin.as_ref().map(|(_, c)| conn.read_request(c)) {
                    Some(Ok(None)) => return,
                    Some(Ok(Some(request))) => Got::Request(request),
                    Some(Err(_)) | None => Got::Gone,
                }
            }
            None => return,
        };
        let Some(open) = self.endpoints.open.remove(&token) else {
            return;
        };
        match (open, got) {
            (Open::Control(mut conn), Got::Line(line)) => {
                let _ = self.poll.registry().deregister(&mut conn.stream);
                self.on_control_line(&line, conn);
            }
            (Open::Admin(mut conn), Got::Request(request)) => {
                let _ = self.poll.registry().deregister(&mut conn.stream);
                match request {
                    Ok(req) => self.on_admin_request(req, conn),
                    Err(refused) => {
                        log::warn!(
                            "admin API: refused a request ({}): {}",
                            refused.status,
                            refused.message
                        );
                        let body = serde_json::json!({ "error": refused.message });
                        conn.respond_json(refused.status, &body);
                    }
                }
            }
            (Open::Control(mut conn), _) => {
                let _ = self.poll.registry().deregister(&mut conn.stream);
            }
            (Open::Admin(mut conn), _) => {
                let _ = self.poll.registry().deregister(&mut conn.stream);
            }
        }
    }

    /// Answers a command's asker with a status text or JSON.
    pub(super) fn keep_stop_waiter(&mut self, asker: Asker) {
        match asker {
            Asker::Control(mut conn) => {
                conn.reply(control::status::OK, "");
                self.endpoints.stop_waiters.push(conn);
            }
            Asker::Admin(mut conn) => {
                conn.respond_json(202, &serde_json::json!({ "stopping": true }));
            }
            Asker::Signal => {}
        }
    }
}
