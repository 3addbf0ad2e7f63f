//! `POST /config` from a caller who is not root: the config it sends may
//! change what is served, not the settings only root may change
//! (`baton_shared::config::root_only_changes` lists them). Checked twice:
//! when the request arrives, before anything is read or queued (so a
//! refused config never makes the master open a file named in it), and
//! again when its reload starts, against the config that runs then (a
//! reload queued before it may have changed that).
//!
//! A refusal is a 403 naming each setting and why; nothing is reloaded and
//! nothing is written.

use std::path::Path;

use baton_shared::config::{self, Config, RootOnly};
use serde_json::{Value, json};

use crate::reload::Outcome;
use crate::supervisor::Overrides;

/// What the comparison needs to know about the running server.
pub struct Running<'a> {
    /// The config file (`POST /config` writes there).
    pub path: &'a Path,
    pub overrides: &'a Overrides,
    /// The text the serving generation was loaded from.
    pub text: &'a str,
    /// The serving generation's config.
    pub config: &'a Config,
}

impl Running<'_> {
    /// `text` loaded as the config file would be, overrides applied, for
    /// the first check; no certificate or key is read. `None` if it does
    /// not validate: the reload reports that, with every error.
    pub fn parse(&self, text: &str) -> Option<Config> {
        let mut new = config::load_text_as_file(self.path, text).ok()?;
        self.overrides.apply(&mut new);
        Some(new)
    }

    /// The root-only settings `new` changes. The running side is its text
    /// loaded again the same way, so both compare as written: the serving
    /// config itself differs from its text where a reload could not apply
    /// a change (a new `pid_file` waits for a restart). If that text no
    /// longer loads (a root was removed since), the serving config stands
    /// in.
    pub fn changes(&self, new: &Config) -> Vec<RootOnly> {
        let reparsed = self.parse(self.text);
        let running = reparsed.as_ref().unwrap_or(self.config);
        config::root_only_changes(running, new, config::unprivileged_port_start())
    }
}

/// The first check, when a `POST /config` from a caller who is not root
/// arrives (`who`, for the log): `Err` with the reply to send instead of
/// queueing its reload. A config that does not validate goes on, for the
/// reload to report every error as it does for anyone.
pub fn on_arrival(
    running: Result<Running<'_>, String>,
    text: &str,
    who: &str,
) -> Result<(), (u16, Value)> {
    let running = running.map_err(|why| (503, json!({ "error": why })))?;
    let Some(new) = running.parse(text) else {
        return Ok(());
    };
    let changes = running.changes(&new);
    if changes.is_empty() {
        return Ok(());
    }
    log::warn!(
        "admin API: refused a config from {who}: {}",
        describe(&changes)
    );
    Err((403, forbidden(&changes)))
}

/// The second check, when its reload starts (`new` as loaded for it):
/// `Err` with the outcome to report instead of running it.
pub fn on_start(running: Result<Running<'_>, String>, new: &Config) -> Result<(), Outcome> {
    let changes = running.map_err(Outcome::Failed)?.changes(new);
    if changes.is_empty() {
        return Ok(());
    }
    log::warn!("admin API: refused a queued config: {}", describe(&changes));
    Err(Outcome::Forbidden(changes))
}

/// The 403 body: the first refused setting, and all of them.
pub fn forbidden(changes: &[RootOnly]) -> Value {
    let one = |r: &RootOnly| {
        let mut v = json!({ "field": r.field, "reason": r.reason });
        if r.pos.line > 0 {
            v["line"] = json!(r.pos.line);
            v["col"] = json!(r.pos.col);
        }
        v
    };
    let all: Vec<Value> = changes.iter().map(one).collect();
    let mut body = all.first().cloned().unwrap_or_else(|| json!({}));
    body["error"] = json!(describe(changes));
    body["refused"] = Value::Array(all);
    body
}

/// One line: "only root may change user, access_log".
pub fn describe(changes: &[RootOnly]) -> String {
    let mut fields: Vec<&str> = Vec::new();
    for c in changes {
        if !fields.contains(&c.field.as_str()) {
            fields.push(&c.field);
        }
    }
    let first = changes
        .first()
        .map(|c| format!(" ({}: {})", c.field, c.reason))
        .unwrap_or_default();
    format!(
        "only root may change {} through the admin API{first}; nothing was reloaded or written",
        fields.join(", ")
    )
}
