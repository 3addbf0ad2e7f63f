//! TOML text → `Raw`: every key known, every value of the right type and
//! form, with its position. Nothing here looks at the system; that is
//! `validate`'s job.
//!
//! The TOML is walked as a `DeTable` (which keeps the byte span of every key
//! and value) rather than deserialised with serde, so that every error can
//! point at the exact key or value and all of them can be reported at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeArray, DeInteger, DeTable, DeValue};

use super::bounds;
use super::duration;
use super::listen;
use super::locate::Errors;
use super::model::{
    FileOptions, HttpLimits, Listen, ListenAddr, LogFormat, Pos, SiteTls, TlsOptions,
};
use super::suggest;

mod acme;
mod admin;
mod compress;
mod http2;
mod options;
mod site;
mod tls;
pub(crate) mod upstream;

pub(crate) use acme::RawAcme;
pub(crate) use upstream::{RawRoute, RawServer, RawUpstream};

pub use tls::CIPHER_SUITES;

pub(crate) const TOP_KEYS: &[&str] = &[
    "user",
    "group",
    "run_as_root",
    "workers",
    "pid_file",
    "worker_rlimit_nofile",
    "grace",
    "error_log",
    "log_level",
    "worker_ready_timeout",
    "max_draining_generations",
    "drain_linger",
    "inetd_idle_exit",
    "keepalive_timeout",
    "header_timeout",
    "defer_accept",
    "max_header_size",
    "max_headers",
    "max_uri_length",
    "max_body_size",
    "max_connections",
    "keepalive_requests",
    "body_timeout",
    "send_timeout",
    "server_token",
    "file_cache_size",
    "file_cache_max_file_size",
    "http2_max_concurrent_streams",
    "http2_max_pending_resets",
    "http2_max_error_resets",
    "http2_max_control_frames",
    "http2_window_size",
    "http2_connection_window_size",
    "http2_max_send_buffer",
    "access_log",
    "access_log_format",
    "log_mode",
    "log_owner",
    "site",
    "admin",
    "tls_min_version",
    "tls_ciphers",
    "tls_watch_interval",
    "tls_unknown_sni",
    "tls_ticket_rotation",
    "acme_directory",
    "acme_ca",
    "acme_email",
    "acme_dir",
    "acme_user",
    "acme_placeholder",
    "acme_http_port",
    "acme_tls_port",
    "acme_renew_check",
    "acme_lock_stale",
    "upstream",
    "trusted_proxies",
];
pub(crate) const SITE_KEYS: &[&str] = &[
    "listen",
    "names",
    "root",
    "index",
    "directory_listing",
    "dotfiles",
    "symlinks",
    "types",
    "default_type",
    "charset",
    "precompressed",
    "headers",
    "path_headers",
    "error_pages",
    "fallback",
    "access_log",
    "tls",
    "redirect_https",
    "compress",
    "route",
    "http2",
];
pub(crate) const LISTEN_KEYS: &[&str] = &["address", "backlog", "mode", "h2c"];
pub(crate) const ADMIN_KEYS: &[&str] = &["listen", "mode", "owner", "token_file"];
pub(crate) const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

pub(crate) const MAX_WORKERS: i64 = 1024;
/// Each draining generation is a set of live processes: a cap of a few
/// dozen is already more than any reload rate needs.
pub(crate) const MAX_DRAINING_GENERATIONS: u64 = 64;
pub(crate) const DEFAULT_BACKLOG: i32 = 511;
pub(crate) const DEFAULT_MODE: u32 = 0o666;

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct At<T> {
    pub value: T,
    pub pos: Pos,
}

/// The config as written, checked for form but not against the system.
/// Defaults are filled in; a value in error is left at its default (the
/// error is already recorded) so checking can go on.
#[derive(Debug)]
pub(crate) struct Raw {
    pub user: Option<At<String>>,
    pub group: Option<At<String>>,
    pub run_as_root: bool,
    pub workers: usize,
    /// Absolute (resolved against the config's directory).
    pub pid_file: Option<At<PathBuf>>,
    pub grace: Duration,
    pub error_log: Option<At<PathBuf>>,
    pub log_level: String,
    pub worker_ready_timeout: Duration,
    pub max_draining_generations: usize,
    pub drain_linger: Duration,
    pub inetd_idle_exit: Duration,
    pub keepalive_timeout: Duration,
    pub header_timeout: Duration,
    pub defer_accept: Duration,
    pub http: HttpLimits,
    pub sites: Vec<RawSite>,
    pub admin: Option<RawAdmin>,
    /// `access_log`: a path, or `None` inside for "off".
    pub access_log: Option<At<Option<PathBuf>>>,
    pub access_log_format: LogFormat,
    pub log_mode: u32,
    pub log_owner: Option<At<String>>,
    pub tls: TlsOptions,
    pub upstreams: Vec<RawUpstream>,
    pub trusted_proxies: Vec<super::upstream::Cidr>,
    pub worker_rlimit_nofile: Option<u64>,
    /// The `acme_*` keys.
    pub acme: RawAcme,
}

/// `[admin]`, as written.
#[derive(Debug)]
pub(crate) struct RawAdmin {
    pub pos: Pos,
    pub listen: Option<At<ListenAddr>>,
    pub mode: u32,
    pub owner: Option<At<String>>,
    /// Absolute (resolved against the config's directory).
    pub token_file: Option<At<PathBuf>>,
}

#[derive(Debug)]
pub(crate) struct RawSite {
    /// The `[[site]]` header.
    pub pos: Pos,
    pub listen: Vec<Listen>,
    /// Lowercased.
    pub names: Vec<At<String>>,
    /// Absolute. `None` if missing or in error.
    pub root: Option<At<PathBuf>>,
    pub index: Vec<String>,
    pub files: FileOptions,
    pub access_log: Option<At<Option<PathBuf>>>,
    pub tls: Option<SiteTls>,
    /// `redirect_https`: true (port 443) or a port number.
    pub redirect_https: Option<At<u16>>,
    /// `[[site.route]]`s, in order.
    pub routes: Vec<RawRoute>,
    /// `http2 = false` turns HTTP/2 off (default on).
    pub http2: Option<At<bool>>,
}

/// Parses the TOML syntax. `None` after recording the first syntax error
/// in the file: a half-parsed document is not worth checking further.
///
/// Only the first error, because the parser's recovery makes the ones after
/// it mostly echoes of it (a missing `]` gives five errors on the next
/// line). The first in the file, not the first the parser reports, which may
/// be a later one.
pub(crate) fn syntax<'t>(text: &'t str, errs: &mut Errors<'_>) -> Option<DeTable<'t>> {
    let (table, syntax_errors) = DeTable::parse_recoverable(text);
    let Some(first) = syntax_errors
        .iter()
        .min_by_key(|e| e.span().map_or(0, |s| s.start))
    else {
        return Some(table.into_inner());
    };
    let span = first.span().unwrap_or(0..0);
    // toml's message may go on over several lines; the first says it.
    let message = first.message().lines().next().unwrap_or("invalid TOML");
    errs.at_span(&span, message);
    None
}

/// Reads the whole top-level table. `base` is the directory relative paths
/// are resolved against.
pub(crate) fn read(table: &DeTable<'_>, base: &Path, errs: &mut Errors<'_>) -> Raw {
    let mut r = Reader { base, errs };
    let mut raw = Raw {
        user: None,
        group: None,
        run_as_root: false,
        workers: auto_workers(),
        pid_file: None,
        grace: Duration::from_secs(30),
        error_log: None,
        log_level: "info".to_owned(),
        worker_ready_timeout: Duration::from_secs(10),
        max_draining_generations: 8,
        drain_linger: Duration::from_secs(1),
        inetd_idle_exit: Duration::from_secs(60),
        keepalive_timeout: Duration::from_secs(75),
        header_timeout: Duration::from_secs(30),
        defer_accept: Duration::from_secs(1),
        http: HttpLimits::default(),
        sites: Vec::new(),
        admin: None,
        access_log: None,
        access_log_format: LogFormat::Combined,
        log_mode: 0o640,
        log_owner: None,
        tls: TlsOptions::default(),
        upstreams: Vec::new(),
        trusted_proxies: Vec::new(),
        worker_rlimit_nofile: None,
        acme: RawAcme::default(),
    };
    let mut have_site = false;
    for (key, value) in table.iter() {
        let name: &str = key.get_ref();
        match name {
            "user" => raw.user = r.name(name, value, "user"),
            "group" => raw.group = r.name(name, value, "group"),
            "run_as_root" => {
                if let Some(b) = r.boolean(name, value) {
                    raw.run_as_root = b;
                }
            }
            "workers" => {
                if let Some(n) = r.workers(value) {
                    raw.workers = n;
                }
            }
            "pid_file" => raw.pid_file = r.path(name, value),
            "worker_rlimit_nofile" => {
                if let Some(n) = r.rlimit_nofile(value) {
                    raw.worker_rlimit_nofile = n;
                }
            }
            "error_log" => raw.error_log = r.path(name, value),
            "log_level" => {
                if let Some(level) = r.log_level(value) {
                    raw.log_level = level;
                }
            }
            "grace" => r.duration(name, value, &mut raw.grace),
            "worker_ready_timeout" => r.duration(name, value, &mut raw.worker_ready_timeout),
            "max_draining_generations" => {
                if let Some(n) = r.count(name, value, 1, MAX_DRAINING_GENERATIONS) {
                    raw.max_draining_generations = n as usize;
                }
            }
            "drain_linger" => r.duration(name, value, &mut raw.drain_linger),
            "inetd_idle_exit" => r.duration(name, value, &mut raw.inetd_idle_exit),
            "keepalive_timeout" => r.duration(name, value, &mut raw.keepalive_timeout),
            "header_timeout" => r.duration(name, value, &mut raw.header_timeout),
            "defer_accept" => r.duration(name, value, &mut raw.defer_accept),
            "max_header_size"
            | "max_headers"
            | "max_uri_length"
            | "max_body_size"
            | "max_connections"
            | "keepalive_requests"
            | "body_timeout"
            | "send_timeout"
            | "server_token"
            | "file_cache_size"
            | "file_cache_max_file_size" => r.http_limit(name, value, &mut raw.http),
            _ if http2::HTTP2_KEYS.contains(&name) => {
                r.http2_limit(name, value, &mut raw.http.http2);
            }
            "site" => {
                have_site = true;
                raw.sites = r.sites(value);
            }
            "admin" => raw.admin = r.admin(value),
            "access_log" => raw.access_log = r.access_log(value),
            "access_log_format" => match r.string(name, value, "\"combined\" or \"json\"") {
                Some("combined") => raw.access_log_format = LogFormat::Combined,
                Some("json") => raw.access_log_format = LogFormat::Json,
                Some(_) => r.wrong(name, value, "\"combined\" or \"json\""),
                None => {}
            },
            "log_mode" => {
                let expected = "an octal file mode like \"0640\"";
                if let Some(text) = r.string(name, value, expected) {
                    match listen::parse_mode(text) {
                        Some(m) => raw.log_mode = m,
                        None => r.wrong(name, value, expected),
                    }
                }
            }
            "log_owner" => raw.log_owner = r.name(name, value, "user"),
            "tls_min_version"
            | "tls_ciphers"
            | "tls_watch_interval"
            | "tls_unknown_sni"
            | "tls_ticket_rotation" => r.tls_option(name, value, &mut raw.tls),
            n if n.starts_with("acme_") && TOP_KEYS.contains(&n) => {
                r.acme_option(name, value, &mut raw.acme)
            }
            "upstream" => raw.upstreams = r.upstreams(value),
            "trusted_proxies" => raw.trusted_proxies = r.trusted_proxies(value),
            _ => {
                let mut message = suggest::unknown_key(name, TOP_KEYS);
                if SITE_KEYS.contains(&name) {
                    message = format!(
                        "unknown key {name:?} at the top level: it belongs in a [[site]] table"
                    );
                }
                r.errs.at_span(&key.span(), message);
            }
        }
    }
    if !have_site {
        r.errs.at(
            Pos { line: 1, col: 1 },
            "no [[site]] in the config: nothing to serve",
        );
    }
    raw
}

/// Just `pid_file`, resolved, if the table has one (for `baton -s`).
pub(crate) fn pid_file(table: &DeTable<'_>, base: &Path, errs: &mut Errors<'_>) -> Option<PathBuf> {
    let value = table.get("pid_file")?;
    let mut r = Reader { base, errs };
    r.path("pid_file", value).map(|at| at.value)
}

/// The CPU count, for `workers = "auto"`.
fn auto_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(MAX_WORKERS as usize)
}

type Value<'t> = Spanned<DeValue<'t>>;

struct Reader<'a, 'e, 'l> {
    base: &'a Path,
    errs: &'e mut Errors<'l>,
}

impl Reader<'_, '_, '_> {
    fn pos(&self, value: &Value<'_>) -> Pos {
        self.errs.pos(&value.span())
    }

    /// `"KEY" must be EXPECTED, not VALUE`, at the value.
    fn wrong(&mut self, key: &str, value: &Value<'_>, expected: &str) {
        let message = format!(
            "{key:?} must be {expected}, not {}",
            describe(value.get_ref())
        );
        self.errs.at_span(&value.span(), message);
    }

    fn string<'v>(&mut self, key: &str, value: &'v Value<'_>, expected: &str) -> Option<&'v str> {
        match value.get_ref() {
            DeValue::String(s) => Some(s),
            _ => {
                self.wrong(key, value, expected);
                None
            }
        }
    }

    fn boolean(&mut self, key: &str, value: &Value<'_>) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong(key, value, "true or false");
                None
            }
        }
    }

    /// A user or group name.
    fn name(&mut self, key: &str, value: &Value<'_>, what: &str) -> Option<At<String>> {
        let expected = format!("a {what} name");
        let s = self.string(key, value, &expected)?;
        if s.is_empty() || s.contains(['\0', ':', '\n']) {
            self.wrong(key, value, &expected);
            return None;
        }
        Some(At {
            value: s.to_owned(),
            pos: self.pos(value),
        })
    }

    /// A path, resolved against the config's directory.
    fn path(&mut self, key: &str, value: &Value<'_>) -> Option<At<PathBuf>> {
        let expected = "a path";
        let s = self.string(key, value, expected)?;
        if s.is_empty() || s.contains('\0') {
            self.wrong(key, value, expected);
            return None;
        }
        Some(At {
            value: resolve(self.base, s),
            pos: self.pos(value),
        })
    }

    fn workers(&mut self, value: &Value<'_>) -> Option<usize> {
        let n = match value.get_ref() {
            DeValue::String(s) if s.as_ref() == "auto" => return Some(auto_workers()),
            DeValue::Integer(i) => integer(i),
            _ => None,
        };
        match n {
            Some(n @ 1..=MAX_WORKERS) => usize::try_from(n).ok(),
            _ => {
                let expected = format!("\"auto\" or a whole number from 1 to {MAX_WORKERS}");
                self.wrong("workers", value, &expected);
                None
            }
        }
    }

    /// `worker_rlimit_nofile`: "auto" (`Some(None)`) or a count within
    /// `bounds::COUNTS`.
    fn rlimit_nofile(&mut self, value: &Value<'_>) -> Option<Option<u64>> {
        const KEY: &str = "worker_rlimit_nofile";
        let b = bounds::count_bounds(KEY).unwrap_or(&bounds::COUNT_FALLBACK);
        let n = match value.get_ref() {
            DeValue::String(s) if s.as_ref() == "auto" => return Some(None),
            DeValue::Integer(i) => integer(i).and_then(|n| u64::try_from(n).ok()),
            _ => None,
        };
        match n {
            Some(n) if b.check(n).is_ok() => Some(Some(n)),
            _ => {
                let expected = format!("\"auto\" or a whole number from {} to {}", b.min, b.max);
                self.wrong(KEY, value, &expected);
                None
            }
        }
    }

    fn log_level(&mut self, value: &Value<'_>) -> Option<String> {
        if let DeValue::String(s) = value.get_ref() {
            let lower = s.to_ascii_lowercase();
            if LOG_LEVELS.contains(&lower.as_str()) {
                return Some(lower);
            }
        }
        let expected = format!("one of {}", LOG_LEVELS.join(", "));
        self.wrong("log_level", value, &expected);
        None
    }

    /// Sets `*out` if `value` is a duration within `key`'s bounds
    /// (`bounds::DURATIONS`).
    fn duration(&mut self, key: &str, value: &Value<'_>, out: &mut Duration) {
        let d = match value.get_ref() {
            DeValue::String(s) => duration::parse(s),
            DeValue::Integer(i) => integer(i)
                .and_then(|n| u64::try_from(n).ok())
                .map(Duration::from_secs),
            _ => None,
        };
        let Some(d) = d else {
            return self.wrong(key, value, "a duration like \"30s\" or \"500ms\"");
        };
        let bounds = bounds::duration_bounds(key);
        debug_assert!(bounds.is_some(), "{key} has no row in bounds::DURATIONS");
        match bounds.unwrap_or(&bounds::DURATION_FALLBACK).check(d) {
            Ok(()) => *out = d,
            Err(why) if why.starts_with("must") => {
                let message = format!("{key:?} {why}");
                self.errs.at_span(&value.span(), message);
            }
            Err(why) => self.out_of_range(key, value, &why),
        }
    }

    /// `KEY = VALUE is too long (at most 24h)`, at the value: the setting
    /// as written, then what is wrong with it.
    fn out_of_range(&mut self, key: &str, value: &Value<'_>, why: &str) {
        let message = format!("{key} = {} {why}", describe(value.get_ref()));
        self.errs.at_span(&value.span(), message);
    }

    fn array<'v, 't>(
        &mut self,
        key: &str,
        value: &'v Value<'t>,
        expected: &str,
    ) -> Option<&'v DeArray<'t>> {
        match value.get_ref() {
            DeValue::Array(a) => Some(a),
            _ => {
                self.wrong(key, value, expected);
                None
            }
        }
    }
}

/// `written` made absolute against `base` (the config's directory), with
/// `.` components dropped; `..` is kept, as symlinks may make it matter.
pub(crate) fn resolve(base: &Path, written: &str) -> PathBuf {
    let joined = base.join(written);
    std::path::absolute(&joined).unwrap_or(joined)
}

/// A TOML integer as i64, whatever its radix.
fn integer(i: &DeInteger<'_>) -> Option<i64> {
    i64::from_str_radix(i.as_str(), i.radix()).ok()
}

/// A value as the message should show it: strings quoted, numbers as
/// written, arrays and tables by kind.
fn describe(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(s) => format!("{s:?}"),
        DeValue::Integer(i) => i.to_string(),
        DeValue::Float(f) => f.to_string(),
        DeValue::Boolean(b) => b.to_string(),
        DeValue::Datetime(d) => d.to_string(),
        DeValue::Array(_) => "an array".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    }
}
