//! Everything that asks the master to act, in one type: a signal, a
//! `baton -s` line and an admin API request are each parsed into a
//! `Command` with its `Asker` (who to answer, and how), and `execute`
//! decides, the same whatever the transport.

use serde_json::{Value, json};

use super::Master;
use super::transaction::{Event, Request};
use crate::control::status;
use crate::reload::Waiter;
use crate::{admin, control, report, signals};

/// What the master can be asked to do.
pub(super) enum Command {
    /// Reload: re-read the config file, or run `text` (`POST /config`;
    /// `restricted` when its sender is not root).
    Reload {
        text: Option<String>,
        restricted: bool,
    },
    /// Reopen the log files (after a rotation).
    Reopen,
    /// Show the master's state.
    Show(View),
    /// Stop, gracefully or fast (see `lifecycle` for a second one).
    Stop { fast: bool },
    /// Re-execute the binary in place (`upgrade`).
    Upgrade,
}

/// What `Show` shows.
pub(super) enum View {
    StatusText,
    StatusJson,
    Metrics,
    Config,
}

/// Who asked, and so how the answer goes back.
pub(super) enum Asker {
    /// A signal: nobody waits, the log says what happened.
    Signal,
    Control(control::Conn),
    Admin(admin::Conn),
}

impl Asker {
    fn waiter(self) -> Option<Waiter> {
        match self {
            Asker::Signal => None,
            Asker::Control(c) => Some(Waiter::Control(c)),
            Asker::Admin(c) => Some(Waiter::Admin(c)),
        }
    }
}

impl Master {
    /// The one place that decides what a command does.
    pub(super) fn execute(&mut self, command: Command, asker: Asker) {
        match command {
            Command::Reload { text, restricted } => {
                if self.tx.phase() != super::transaction::Phase::Idle {
                    log::info!("reload requested while one is running: queued");
                }
                let request = Request {
                    waiters: asker.waiter().into_iter().collect(),
                    text,
                    restricted,
                };
                self.feed(Event::ReloadRequested(request));
            }
            Command::Reopen => match asker {
                Asker::Control(conn) => self.reopen_logs(conn),
                // Signals reopen the error log as part of a reload; the
                // admin API has no reopen.
                Asker::Signal | Asker::Admin(_) => {}
            },
            Command::Show(view) => self.show(view, asker),
            Command::Stop { fast } => {
                self.keep_stop_waiter(asker);
                self.stop(fast);
            }
            Command::Upgrade => match asker {
                Asker::Control(conn) => self.begin_upgrade(Some(conn)),
                Asker::Signal => self.begin_upgrade(None),
                // The admin API has no upgrade endpoint.
                Asker::Admin(_) => {}
            },
        }
    }

    fn show(&mut self, view: View, asker: Asker) {
        match (view, asker) {
            (View::StatusText, Asker::Control(mut conn)) => {
                conn.reply(status::OK, &report::text(&self.snapshot()));
            }
            (View::StatusJson, Asker::Admin(mut conn)) => {
                conn.respond_json(200, &report::json(&self.snapshot()));
            }
            (View::Metrics, Asker::Admin(mut conn)) => {
                let body = report::metrics(&self.snapshot());
                conn.respond(200, "text/plain; version=0.0.4", body.as_bytes());
            }
            (View::Config, Asker::Admin(mut conn)) => {
                conn.respond(200, "application/toml", self.running_text.as_bytes());
            }
            _ => {}
        }
    }

    pub(super) fn on_signal(&mut self, order: signals::Order) {
        let command = match order {
            signals::Order::Reload => Command::Reload {
                text: None,
                restricted: false,
            },
            signals::Order::GracefulStop => Command::Stop { fast: false },
            signals::Order::FastStop => Command::Stop { fast: true },
            signals::Order::ReapChildren => return self.reap_now(),
            signals::Order::Upgrade => Command::Upgrade,
        };
        self.execute(command, Asker::Signal);
    }

    /// A `baton -s` command line.
    pub(super) fn on_control_line(&mut self, line: &str, mut conn: control::Conn) {
        let command = match line {
            "reload" => Command::Reload {
                text: None,
                restricted: false,
            },
            "status" => Command::Show(View::StatusText),
            "reopen" => Command::Reopen,
            "stop" => Command::Stop { fast: true },
            "quit" => Command::Stop { fast: false },
            "upgrade" => Command::Upgrade,
            other => {
                let text = format!(
                    "unknown command {other:?} (try reload, reopen, status, stop, quit, upgrade)"
                );
                return conn.reply(status::APPLY_FAILED, &text);
            }
        };
        self.execute(command, Asker::Control(conn));
    }

    /// An admin API request (docs/admin-api.md).
    pub(super) fn on_admin_request(&mut self, req: admin::Request, mut conn: admin::Conn) {
        match self.admin_command(req) {
            Ok(command) => self.execute(command, Asker::Admin(conn)),
            Err((code, body)) => conn.respond_json(code, &body),
        }
    }

    fn admin_command(&self, req: admin::Request) -> Result<Command, (u16, Value)> {
        let path = req.path.split('?').next().unwrap_or("").to_string();
        let allow = match path.as_str() {
            "/status" | "/metrics" => "GET",
            "/reload" | "/stop" => "POST",
            "/config" => "GET, POST",
            _ => return Err((404, json!({ "error": format!("no endpoint {path}") }))),
        };
        let who = &req.caller.who;
        match (req.method.as_str(), path.as_str()) {
            ("GET", "/status") => Ok(Command::Show(View::StatusJson)),
            ("GET", "/metrics") => Ok(Command::Show(View::Metrics)),
            ("GET", "/config") => Ok(Command::Show(View::Config)),
            ("POST", "/reload") => {
                log::info!("admin API: reload asked by {who}");
                Ok(Command::Reload {
                    text: None,
                    restricted: false,
                })
            }
            ("POST", "/config") => self.posted_config(req),
            ("POST", "/stop") => {
                log::info!("admin API: stop asked by {who}");
                Ok(Command::Stop { fast: false })
            }
            _ => Err((
                405,
                json!({ "error": format!("{} {path}: use {allow}", req.method) }),
            )),
        }
    }

    /// `POST /config`: a whole config to run. A caller who is not root is
    /// checked at once against the settings only root may change (and again
    /// when the reload starts, against the config running then).
    fn posted_config(&self, req: admin::Request) -> Result<Command, (u16, Value)> {
        if self.source == baton_shared::config::Source::Embedded {
            let error =
                "the server runs the embedded default config: there is no config file to replace";
            return Err((409, json!({ "error": error })));
        }
        let Ok(text) = String::from_utf8(req.body) else {
            return Err((400, json!({ "error": "the config must be UTF-8 text" })));
        };
        let caller = req.caller;
        if !caller.root {
            admin::guard::on_arrival(self.admin_running(), &text, &caller.who)?;
        }
        log::info!("admin API: a new config from {}", caller.who);
        Ok(Command::Reload {
            text: Some(text),
            restricted: !caller.root,
        })
    }
}
