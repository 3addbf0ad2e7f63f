//! Config: TOML text → validated `Config`, with every error located.
//!
//! `-t`, start and reload all go through `load_file` (or `load_embedded`),
//! so they accept and refuse exactly the same configs with the same text.
//!
//! Loading goes in three steps, each collecting every error it finds:
//!
//! 1. `parse::syntax`: the TOML syntax (toml's own messages).
//! 2. `parse::read`: keys and value types and forms (durations, listen
//!    addresses, host names), with defaults filled in and relative paths
//!    resolved against the config file's directory.
//! 3. `validate::check`: what spans sites (an address listed twice, two
//!    sites claiming one host name on one address) and what needs the system
//!    (the root exists, a listen IP is this machine's, users exist), without
//!    side effects.
//!
//! Who workers run as: when the master is root, `user` (default "nobody")
//! and `group` (default that user's primary group); a user with uid 0 needs
//! `run_as_root = true`. When the master is not root it cannot switch user,
//! so there is no identity (`user` and `group` must still exist, and a
//! `user` other than the invoking one gets a warning).
//!
//! Errors read `FILE:LINE:COL: message`, in file order.

pub mod acme;
mod acme_check;
mod admin;
pub mod bounds;
pub mod compress;
mod duration;
mod http2;
mod listen;
mod locate;
mod model;
mod parse;
mod privileged;
mod suggest;
mod upstream;
mod upstream_check;
mod validate;

#[cfg(test)]
mod tests;

pub use http2::Http2Limits;
pub use model::*;
pub use parse::CIPHER_SUITES;
pub use privileged::{RootOnly, root_only_changes, unprivileged_port_start};
pub use upstream::*;

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use locate::{Errors, LineIndex};
use validate::System;

/// The default config used when no `-c` is given: a sample site on
/// 127.0.0.1:8080 that needs no root.
pub const EMBEDDED: &str = include_str!("default.toml");

/// Reads, parses and validates a config file. `path` may be relative; the
/// `Config` records it absolute.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let (abs, text) = read(path)?;
    let base = dir_of(&abs);
    load_text(&text, Source::File(abs), &base, &System::current())
}

/// Reads and validates a config file, returning its text too (what the
/// admin API's `GET /config` shows of the running config).
pub fn load_file_keeping_text(path: &Path) -> Result<(Config, String), ConfigErrors> {
    let (abs, text) = read(path)?;
    let base = dir_of(&abs);
    let config = load_text(&text, Source::File(abs), &base, &System::current())?;
    Ok((config, text))
}

/// Validates `text` as if it were the config file at `path`: same
/// positions, same relative paths (for the admin API's `POST /config`,
/// which writes the text there only once it runs).
pub fn load_text_as_file(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let base = dir_of(&abs);
    load_text(text, Source::File(abs), &base, &System::current())
}

/// Where the embedded config's sample site may be, first match wins. No
/// build path is baked into the binary (it would differ between two builds
/// of one commit, and name a directory that does not exist once installed):
/// - `BATON_SAMPLE_ROOT` at build time, a packager's choice
///   (`/usr/share/baton/sample-site` in the Debian package);
/// - `PREFIX/share/baton/sample-site` beside `PREFIX/sbin/baton` or
///   `PREFIX/bin/baton` (an install without that variable);
/// - `REPO/sample-site` beside `REPO/target/PROFILE/baton` (`cargo run`).
pub fn sample_site_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = option_env!("BATON_SAMPLE_ROOT") {
        out.push(PathBuf::from(p));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        if let Some(prefix) = dir.parent() {
            out.push(prefix.join("share/baton/sample-site"));
        }
        if let Some(repo) = dir.parent().and_then(Path::parent) {
            out.push(repo.join("sample-site"));
        }
    }
    // Unit tests run from target/PROFILE/deps; only they may know the
    // source tree (a path in a test binary ships nowhere).
    #[cfg(test)]
    out.push(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../sample-site")).to_path_buf());
    out
}

/// Parses and validates the embedded default config.
pub fn load_embedded() -> Result<Config, ConfigErrors> {
    let candidates = sample_site_candidates();
    let Some(sample) = candidates
        .iter()
        .find(|p| p.join("index.html").is_file())
        .map(|p| normalize(p))
    else {
        let looked: Vec<String> = candidates.iter().map(|p| format!("{p:?}")).collect();
        return Err(ConfigErrors(vec![ConfigError {
            file: Source::Embedded.to_string(),
            pos: Pos { line: 0, col: 0 },
            message: format!(
                "no configuration given and no sample site found (looked in {}): \
                 give one with -c FILE (the package's is /etc/baton/baton.toml)",
                looked.join(", ")
            ),
        }]));
    };
    let repo = sample
        .parent()
        .map_or_else(|| sample.clone(), Path::to_path_buf);
    // Into a TOML basic string.
    let quoted = sample
        .to_string_lossy()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    let text = EMBEDDED.replace("@SAMPLE_ROOT@", &quoted);
    load_text(&text, Source::Embedded, &repo, &System::current())
}

/// Just the pid_file a config names (or the default one), reading only as much
/// as needed, for `baton -s` to find the running master.
///
/// Only the TOML syntax and `pid_file` itself are checked: a mistake
/// elsewhere in the file must not keep `-s reload` from finding the master
/// (that reload will then report it).
pub fn pid_file_of(path: Option<&Path>) -> Result<PathBuf, ConfigErrors> {
    let Some(path) = path else {
        return Ok(default_pid_file());
    };
    let (abs, text) = read(path)?;
    let mut errs = Errors::new(Source::File(abs.clone()).to_string(), &text);
    let pid_file = parse::syntax(&text, &mut errs)
        .and_then(|table| parse::pid_file(&table, &dir_of(&abs), &mut errs));
    errs.finish()?;
    Ok(pid_file.unwrap_or_else(default_pid_file))
}

/// A duration as the config writes it (`"30s"`, `"500ms"`, `"1m30s"`, or a
/// number of seconds), for command-line options that take one.
pub fn parse_duration(text: &str) -> Option<Duration> {
    duration::parse(text)
}

/// A duration for the setting `key` given on the command line (`--grace`):
/// the config's form and the config's bounds, so an override cannot
/// carry a value the file would be refused for.
pub fn parse_setting_duration(key: &str, text: &str) -> Result<Duration, String> {
    let d = duration::parse(text)
        .ok_or_else(|| format!("{text:?} is not a duration like \"30s\" or \"500ms\""))?;
    let b = bounds::duration_bounds(key).unwrap_or(&bounds::DURATION_FALLBACK);
    b.check(d)
        .map(|()| d)
        .map_err(|why| format!("{key} {text:?} {why}"))
}

/// Where the pidfile goes when the config does not say: `/run/baton.pid`
/// for root, else `$XDG_RUNTIME_DIR/baton.pid` (if set and absolute), else
/// `/tmp/baton-UID.pid`.
pub fn default_pid_file() -> PathBuf {
    default_pid_file_for(
        nix::unistd::geteuid().as_raw(),
        std::env::var_os("XDG_RUNTIME_DIR"),
    )
}

fn default_pid_file_for(euid: u32, xdg_runtime_dir: Option<OsString>) -> PathBuf {
    if euid == 0 {
        return PathBuf::from("/run/baton.pid");
    }
    match xdg_runtime_dir.map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir.join("baton.pid"),
        _ => PathBuf::from(format!("/tmp/baton-{euid}.pid")),
    }
}

/// Parses and validates config text. `base` is the directory relative paths
/// are resolved against.
fn load_text(
    text: &str,
    source: Source,
    base: &Path,
    sys: &System,
) -> Result<Config, ConfigErrors> {
    let mut errs = Errors::new(source.to_string(), text);
    let config = parse::syntax(text, &mut errs).map(|table| {
        let raw = parse::read(&table, base, &mut errs);
        validate::check(raw, source, sys, &mut errs)
    });
    errs.finish()?;
    // `syntax` gives no table only after recording an error, so `finish`
    // returned it; this is never an empty error list.
    config.ok_or_else(|| ConfigErrors(Vec::new()))
}

/// The absolute path of the config and its text.
fn read(path: &Path) -> Result<(PathBuf, String), ConfigErrors> {
    let fail = |file: &Path, pos: Pos, message: String| {
        ConfigErrors(vec![ConfigError {
            file: file.display().to_string(),
            pos,
            message,
        }])
    };
    let abs = std::path::absolute(path)
        .map_err(|e| fail(path, Pos::default(), format!("cannot read config: {e}")))?;
    let bytes = std::fs::read(&abs)
        .map_err(|e| fail(&abs, Pos::default(), format!("cannot read config: {e}")))?;
    match String::from_utf8(bytes) {
        Ok(text) => Ok((abs, text)),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let prefix = std::str::from_utf8(&e.as_bytes()[..valid]).unwrap_or_default();
            let pos = LineIndex::new(prefix).pos(valid);
            Err(fail(
                &abs,
                pos,
                "invalid UTF-8: a config must be UTF-8 text".into(),
            ))
        }
    }
}

/// The directory of an absolute file path.
fn dir_of(file: &Path) -> PathBuf {
    file.parent().unwrap_or(Path::new("/")).to_path_buf()
}

/// `path` without `.` and `..` components, lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            _ => out.push(c),
        }
    }
    out
}
