//! What a reload request carries, and how its one outcome is told to
//! everyone waiting for it, whichever way they asked: `baton -s reload`
//! (an exit status and text) or the admin API (an HTTP status and JSON).
//! Signals wait for nothing; they only get the log line.

use std::time::Duration;

use baton_shared::config::{ConfigErrors, RootOnly};
use serde_json::json;

use crate::admin;
use crate::control::{self, status};

/// How a reload ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Ok {
        generation: u64,
        took: Duration,
        /// Something went wrong after the reload succeeded (writing the
        /// config file a `POST /config` sent).
        warning: Option<String>,
    },
    /// The config did not validate: the old generation was not touched.
    Invalid(ConfigErrors),
    /// The config was fine but applying it failed (bind, worker start).
    Failed(String),
    /// A `POST /config` from a caller who is not root changes settings
    /// only root may (`admin::guard`); nothing was applied or written.
    Forbidden(Vec<RootOnly>),
}

impl Outcome {
    pub fn exit_status(&self) -> i32 {
        match self {
            Outcome::Ok { .. } => status::OK,
            Outcome::Invalid(_) => status::CONFIG_INVALID,
            Outcome::Failed(_) | Outcome::Forbidden(_) => status::APPLY_FAILED,
        }
    }

    /// One line for the log and for status.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Ok {
                generation,
                took,
                warning,
            } => {
                let mut s = format!(
                    "ok: generation {generation} serving after {} ms",
                    took.as_millis()
                );
                if let Some(w) = warning {
                    s.push_str(&format!(" (but {w})"));
                }
                s
            }
            Outcome::Invalid(e) => format!("failed: config invalid: {e}"),
            Outcome::Failed(e) => format!("failed: {e}"),
            Outcome::Forbidden(c) => format!("refused: {}", admin::guard::describe(c)),
        }
    }

    /// What `baton -s reload` prints.
    fn text(&self) -> String {
        match self {
            Outcome::Ok {
                generation,
                took,
                warning,
            } => {
                let mut s = format!(
                    "reloaded: generation {generation} in {} ms",
                    took.as_millis()
                );
                if let Some(w) = warning {
                    s.push_str(&format!("\nwarning: {w}"));
                }
                s
            }
            Outcome::Invalid(e) => e.to_string(),
            Outcome::Failed(e) => e.clone(),
            Outcome::Forbidden(c) => admin::guard::describe(c),
        }
    }

    /// The admin API's reply: 200, 422 with the first error's place (and
    /// all of them), or 500.
    pub fn http(&self) -> (u16, serde_json::Value) {
        match self {
            Outcome::Ok {
                generation,
                took,
                warning,
            } => (
                200,
                json!({
                    "generation": generation,
                    "took_ms": took.as_millis() as u64,
                    "warning": warning,
                }),
            ),
            Outcome::Invalid(errors) => {
                let all: Vec<_> = errors
                    .0
                    .iter()
                    .map(|e| {
                        json!({
                            "file": e.file,
                            "line": e.pos.line,
                            "col": e.pos.col,
                            "message": e.message,
                        })
                    })
                    .collect();
                let mut body = all.first().cloned().unwrap_or_else(|| json!({}));
                body["errors"] = serde_json::Value::Array(all);
                (422, body)
            }
            Outcome::Failed(e) => (500, json!({ "error": e })),
            Outcome::Forbidden(c) => (403, admin::guard::forbidden(c)),
        }
    }
}

/// Someone waiting for a reload's outcome.
pub enum Waiter {
    Control(control::Conn),
    Admin(admin::Conn),
}

impl Waiter {
    pub fn tell(self, outcome: &Outcome) {
        match self {
            Waiter::Control(mut c) => c.reply(outcome.exit_status(), &outcome.text()),
            Waiter::Admin(mut c) => {
                let (code, body) = outcome.http();
                c.respond_json(code, &body);
            }
        }
    }

    /// The reload will not happen (the server is stopping).
    pub fn refuse(self, why: &str) {
        match self {
            Waiter::Control(mut c) => c.reply(status::APPLY_FAILED, why),
            Waiter::Admin(mut c) => c.respond_json(503, &json!({ "error": why })),
        }
    }
}
