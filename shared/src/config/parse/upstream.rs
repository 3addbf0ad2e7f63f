//! `[[upstream]]`, `[[site.route]]` and `trusted_proxies`, checked for form.
//! Names are resolved (host names to addresses, `proxy` to an upstream) by
//! `validate::proxy`, which sees every upstream at once.

use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::{At, Reader, Value};
use crate::config::model::Pos;
use crate::config::suggest;
use crate::config::upstream::{Balance, Cidr, Expect, ExpectStatus, HealthCheck};

pub(crate) const UPSTREAM_KEYS: &[&str] = &[
    "name",
    "servers",
    "balance",
    "keepalive",
    "keepalive_requests",
    "keepalive_timeout",
    "connect_timeout",
    "read_timeout",
    "send_timeout",
    "max_fails",
    "fail_timeout",
    "health",
    "tls",
];
pub(crate) const UPSTREAM_TLS_KEYS: &[&str] = &["server_name", "ca", "cert", "key"];
pub(crate) const HEALTH_KEYS: &[&str] = &["path", "interval", "timeout", "expect", "rise", "fall"];
pub(crate) const SERVER_KEYS: &[&str] = &["address", "weight", "backup"];
pub(crate) const ROUTE_KEYS: &[&str] = &[
    "path",
    "proxy",
    "strip_prefix",
    "headers",
    "websocket",
    "compress",
    "via",
];
const BALANCES: &str = "\"round_robin\", \"least_conn\", \"ip_hash\" or \"header:NAME\"";

/// One server entry as written (resolved in validation).
#[derive(Debug)]
pub(crate) struct RawServer {
    pub address: At<String>,
    pub weight: u32,
    pub backup: bool,
}

/// `[[upstream]]`, as written.
#[derive(Debug)]
pub(crate) struct RawUpstream {
    pub pos: Pos,
    pub name: Option<At<String>>,
    pub servers: Vec<RawServer>,
    pub balance: Balance,
    pub keepalive: usize,
    pub keepalive_requests: u64,
    pub keepalive_timeout: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub send_timeout: Duration,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub health: Option<HealthCheck>,
    pub tls: Option<RawTls>,
}

/// An `[[upstream]]`'s `tls` table, as written (the files are read in
/// validation).
#[derive(Debug)]
pub(crate) struct RawTls {
    pub pos: Pos,
    pub server_name: Option<String>,
    pub ca: Option<At<std::path::PathBuf>>,
    pub cert: Option<At<std::path::PathBuf>>,
    pub key: Option<At<std::path::PathBuf>>,
}

/// `[[site.route]]`, as written.
#[derive(Debug)]
pub(crate) struct RawRoute {
    pub pos: Pos,
    pub path: Option<String>,
    /// An upstream name or an `http://` URL.
    pub proxy: Option<At<String>>,
    pub strip_prefix: bool,
    pub headers: Vec<(String, String)>,
    pub websocket: bool,
    /// `None`: the site's setting.
    pub compress: Option<Option<crate::config::compress::Compress>>,
    pub via: bool,
}

impl Reader<'_, '_, '_> {
    pub(super) fn upstreams(&mut self, value: &Value<'_>) -> Vec<RawUpstream> {
        let expected = "an array of tables, written [[upstream]]";
        let Some(array) = self.array("upstream", value, expected) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in array.iter() {
            match item.get_ref() {
                DeValue::Table(t) => out.push(self.upstream(self.pos(item), t)),
                _ => self.wrong("upstream", item, expected),
            }
        }
        out
    }

    fn upstream(&mut self, pos: Pos, table: &DeTable<'_>) -> RawUpstream {
        let d = crate::config::upstream::Upstream::with_defaults(String::new(), Vec::new(), pos);
        let mut up = RawUpstream {
            pos,
            name: None,
            servers: Vec::new(),
            balance: d.balance,
            keepalive: d.keepalive,
            keepalive_requests: d.keepalive_requests,
            keepalive_timeout: d.keepalive_timeout,
            connect_timeout: d.connect_timeout,
            read_timeout: d.read_timeout,
            send_timeout: d.send_timeout,
            max_fails: d.max_fails,
            fail_timeout: d.fail_timeout,
            health: None,
            tls: None,
        };
        let mut misspelt: Vec<&str> = Vec::new();
        for (key, value) in table.iter() {
            let name: &str = key.get_ref();
            match name {
                "name" => {
                    let expected = "a name like \"app\"";
                    if let Some(s) = self.string(name, value, expected) {
                        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic()) {
                            self.wrong(name, value, expected);
                        } else if s.contains("://") {
                            let message = format!(
                                "upstream name {s:?} looks like a URL: name it (\"app\") and \
                                 list the address in \"servers\""
                            );
                            self.errs.at_span(&value.span(), message);
                        } else {
                            up.name = Some(At {
                                value: s.to_owned(),
                                pos: self.pos(value),
                            });
                        }
                    }
                }
                "servers" => up.servers = self.servers(value),
                "balance" => {
                    let balance = match value.get_ref() {
                        DeValue::String(s) => match s.as_ref() {
                            "round_robin" => Some(Balance::RoundRobin),
                            "least_conn" => Some(Balance::LeastConn),
                            "ip_hash" => Some(Balance::IpHash),
                            other => other
                                .strip_prefix("header:")
                                .filter(|h| super::options::is_token(h))
                                .map(|h| Balance::Header(h.to_ascii_lowercase())),
                        },
                        _ => None,
                    };
                    match balance {
                        Some(b) => up.balance = b,
                        None => self.wrong(name, value, BALANCES),
                    }
                }
                "keepalive" => {
                    if let Some(n) = self.count(name, value, 0, 4096) {
                        up.keepalive = n as usize;
                    }
                }
                "keepalive_requests" => {
                    if let Some(n) = self.count(name, value, 1, u64::MAX >> 1) {
                        up.keepalive_requests = n;
                    }
                }
                "max_fails" => {
                    if let Some(n) = self.count(name, value, 0, 1000) {
                        up.max_fails = n as u32;
                    }
                }
                "keepalive_timeout" => self.duration(name, value, &mut up.keepalive_timeout),
                "connect_timeout" => self.duration(name, value, &mut up.connect_timeout),
                "read_timeout" => self.duration(name, value, &mut up.read_timeout),
                "send_timeout" => self.duration(name, value, &mut up.send_timeout),
                "fail_timeout" => self.duration(name, value, &mut up.fail_timeout),
                "health" => up.health = self.health(value),
                "tls" => up.tls = self.upstream_tls(value),
                _ => {
                    misspelt.extend(suggest::closest(name, UPSTREAM_KEYS));
                    let message = suggest::unknown_key(name, UPSTREAM_KEYS);
                    self.errs.at_span(&key.span(), message);
                }
            }
        }
        if !table.contains_key("name") && !misspelt.contains(&"name") {
            self.errs.at(
                pos,
                "this [[upstream]] has no \"name\" (for example name = \"app\")",
            );
        }
        if !table.contains_key("servers") && !misspelt.contains(&"servers") {
            self.errs.at(
                pos,
                "this [[upstream]] has no \"servers\" (for example servers = [\"127.0.0.1:9000\"])",
            );
        }
        up
    }

    /// `health = { path = "/healthz", interval = "5s", timeout = "2s",
    /// expect = 200, rise = 1, fall = 1 }`; `None` (and errors) if any
    /// value is wrong, so a half-read check never runs.
    fn health(&mut self, value: &Value<'_>) -> Option<HealthCheck> {
        let expected = "a table like { path = \"/healthz\", interval = \"5s\" }";
        let table = self.table("health", value, expected)?;
        let mut check = HealthCheck::with_defaults(self.pos(value));
        let before = self.errs.len();
        for (key, v) in table.iter() {
            let name: &str = key.get_ref();
            match name {
                "path" => {
                    let expected = "a URL path like \"/healthz\"";
                    if let Some(p) = self.string(name, v, expected) {
                        // Sent as the request target: no spaces or controls.
                        if !p.starts_with('/') || !p.bytes().all(|b| b.is_ascii_graphic()) {
                            self.wrong(name, v, expected);
                        } else if p.len() > 1024 {
                            self.wrong(name, v, "a path of at most 1024 bytes");
                        } else {
                            check.path = p.to_owned();
                        }
                    }
                }
                "interval" => self.duration(name, v, &mut check.interval),
                "timeout" => self.duration(name, v, &mut check.timeout),
                "expect" => {
                    if let Some(e) = self.expect(v) {
                        check.expect = e;
                    }
                }
                "rise" => {
                    if let Some(n) = self.count(name, v, 1, 100) {
                        check.rise = n as u32;
                    }
                }
                "fall" => {
                    if let Some(n) = self.count(name, v, 1, 100) {
                        check.fall = n as u32;
                    }
                }
                _ => {
                    let message = suggest::unknown_key(name, HEALTH_KEYS);
                    self.errs.at_span(&key.span(), message);
                }
            }
        }
        (self.errs.len() == before).then_some(check)
    }

    /// `expect = 200`, `expect = "2xx"` or a list of both:
    /// `expect = [200, 204, "3xx"]`.
    fn expect(&mut self, value: &Value<'_>) -> Option<Expect> {
        const EXPECTED: &str =
            "a status from 100 to 599, a class like \"2xx\", or a list of them like [200, \"3xx\"]";
        let one = |r: &mut Self, v: &Value<'_>| -> Option<ExpectStatus> {
            let parsed = match v.get_ref() {
                DeValue::Integer(_) => {
                    return r
                        .count("expect", v, 100, 599)
                        .map(|n| ExpectStatus::Code(n as u16));
                }
                DeValue::String(s) => match s.as_bytes() {
                    [d @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => {
                        Some(ExpectStatus::Class(u16::from(d - b'0')))
                    }
                    _ => None,
                },
                _ => None,
            };
            if parsed.is_none() {
                r.wrong("expect", v, EXPECTED);
            }
            parsed
        };
        match value.get_ref() {
            DeValue::Array(items) => {
                if items.is_empty() {
                    self.wrong("expect", value, EXPECTED);
                    return None;
                }
                let mut out = Vec::new();
                let mut ok = true;
                for item in items.iter() {
                    match one(self, item) {
                        Some(e) => out.push(e),
                        None => ok = false,
                    }
                }
                ok.then_some(Expect(out))
            }
            _ => one(self, value).map(|e| Expect(vec![e])),
        }
    }

    /// `tls = { server_name = "app.internal", ca = "ca.pem", cert = ..., key
    /// = ... }` (every key optional: `tls = {}` verifies against the system
    /// store and the servers' own names).
    fn upstream_tls(&mut self, value: &Value<'_>) -> Option<RawTls> {
        let expected =
            "a table like { server_name = \"app.internal\", ca = \"/etc/baton/app-ca.pem\" }";
        let table = self.table("tls", value, expected)?;
        let mut tls = RawTls {
            pos: self.pos(value),
            server_name: None,
            ca: None,
            cert: None,
            key: None,
        };
        let before = self.errs.len();
        for (key, v) in table.iter() {
            let name: &str = key.get_ref();
            match name {
                "server_name" => {
                    let expected = "a host name like \"app.internal\" or an IP address";
                    if let Some(s) = self.string(name, v, expected) {
                        if rustls::pki_types::ServerName::try_from(s).is_ok() {
                            tls.server_name = Some(s.to_ascii_lowercase());
                        } else {
                            self.wrong(name, v, expected);
                        }
                    }
                }
                "ca" => tls.ca = self.path(name, v),
                "cert" => tls.cert = self.path(name, v),
                "key" => tls.key = self.path(name, v),
                _ => {
                    let message = suggest::unknown_key(name, UPSTREAM_TLS_KEYS);
                    self.errs.at_span(&key.span(), message);
                }
            }
        }
        match (&tls.cert, &tls.key) {
            (Some(c), None) => self.errs.at(
                c.pos,
                "\"cert\" needs a \"key\" beside it (the client certificate's key)",
            ),
            (None, Some(k)) => self.errs.at(
                k.pos,
                "\"key\" needs a \"cert\" beside it (the client certificate)",
            ),
            _ => {}
        }
        (self.errs.len() == before).then_some(tls)
    }

    fn servers(&mut self, value: &Value<'_>) -> Vec<RawServer> {
        let expected = "an array of addresses like [\"127.0.0.1:9000\", \"unix:/run/app.sock\"]";
        let Some(array) = self.array("servers", value, expected) else {
            return Vec::new();
        };
        if array.is_empty() {
            self.errs.at_span(
                &value.span(),
                "\"servers\" must list at least one address, like [\"127.0.0.1:9000\"]",
            );
        }
        array.iter().filter_map(|item| self.server(item)).collect()
    }

    fn server(&mut self, item: &Value<'_>) -> Option<RawServer> {
        let address = |r: &mut Self, v: &Value<'_>| {
            let s = r.string("address", v, "an address like \"127.0.0.1:9000\"")?;
            Some(At {
                value: s.to_owned(),
                pos: r.pos(v),
            })
        };
        let table = match item.get_ref() {
            DeValue::String(_) => {
                return address(self, item).map(|address| RawServer {
                    address,
                    weight: 1,
                    backup: false,
                });
            }
            DeValue::Table(t) => t,
            _ => {
                self.wrong(
                    "servers",
                    item,
                    "an address like \"127.0.0.1:9000\" or a table with \"address\"",
                );
                return None;
            }
        };
        let mut server = RawServer {
            address: At {
                value: String::new(),
                pos: self.pos(item),
            },
            weight: 1,
            backup: false,
        };
        let mut ok = true;
        for (key, v) in table.iter() {
            let name: &str = key.get_ref();
            match name {
                "address" => match address(self, v) {
                    Some(a) => server.address = a,
                    None => ok = false,
                },
                "weight" => match self.count(name, v, 1, 1000) {
                    Some(n) => server.weight = n as u32,
                    None => ok = false,
                },
                "backup" => match self.boolean(name, v) {
                    Some(b) => server.backup = b,
                    None => ok = false,
                },
                _ => {
                    ok = false;
                    let message = suggest::unknown_key(name, SERVER_KEYS);
                    self.errs.at_span(&key.span(), message);
                }
            }
        }
        if !table.contains_key("address") {
            self.errs
                .at(server.address.pos, "this server table has no \"address\"");
            return None;
        }
        ok.then_some(server)
    }

    pub(super) fn routes(&mut self, value: &Value<'_>) -> Vec<RawRoute> {
        let expected = "an array of tables, written [[site.route]]";
        let Some(array) = self.array("route", value, expected) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in array.iter() {
            match item.get_ref() {
                DeValue::Table(t) => out.push(self.route(self.pos(item), t)),
                _ => self.wrong("route", item, expected),
            }
        }
        out
    }

    fn route(&mut self, pos: Pos, table: &DeTable<'_>) -> RawRoute {
        let mut route = RawRoute {
            pos,
            path: None,
            proxy: None,
            strip_prefix: false,
            headers: Vec::new(),
            websocket: true,
            compress: None,
            via: false,
        };
        let mut misspelt: Vec<&str> = Vec::new();
        for (key, value) in table.iter() {
            let name: &str = key.get_ref();
            match name {
                "path" => {
                    let expected = "a URL path prefix like \"/api/\"";
                    if let Some(p) = self.string(name, value, expected) {
                        if !p.starts_with('/') || !p.bytes().all(|b| b.is_ascii_graphic()) {
                            self.wrong(name, value, expected);
                        } else {
                            route.path = Some(p.to_owned());
                        }
                    }
                }
                "proxy" => {
                    let expected = "an [[upstream]] name or a URL like \"http://127.0.0.1:9000\"";
                    if let Some(p) = self.string(name, value, expected) {
                        if p.is_empty() {
                            self.wrong(name, value, expected);
                        } else {
                            route.proxy = Some(At {
                                value: p.to_owned(),
                                pos: self.pos(value),
                            });
                        }
                    }
                }
                "strip_prefix" => {
                    if let Some(b) = self.boolean(name, value) {
                        route.strip_prefix = b;
                    }
                }
                "websocket" => {
                    if let Some(b) = self.boolean(name, value) {
                        route.websocket = b;
                    }
                }
                "headers" => {
                    if let Some(h) = self.headers(name, value) {
                        route.headers = h;
                    }
                }
                "compress" => {
                    if let Some(c) = self.compress(value) {
                        route.compress = Some(c);
                    }
                }
                "via" => {
                    if let Some(b) = self.boolean(name, value) {
                        route.via = b;
                    }
                }
                _ => {
                    misspelt.extend(suggest::closest(name, ROUTE_KEYS));
                    let message = suggest::unknown_key(name, ROUTE_KEYS);
                    self.errs.at_span(&key.span(), message);
                }
            }
        }
        for required in ["path", "proxy"] {
            if !table.contains_key(required) && !misspelt.contains(&required) {
                let message = format!(
                    "this [[site.route]] has no {required:?} (for example path = \"/api/\", \
                     proxy = \"app\")"
                );
                self.errs.at(pos, message);
            }
        }
        route
    }

    pub(super) fn trusted_proxies(&mut self, value: &Value<'_>) -> Vec<Cidr> {
        let expected = "an array of addresses or CIDR ranges like [\"10.0.0.0/8\", \"::1\"]";
        let Some(array) = self.array("trusted_proxies", value, expected) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in array.iter() {
            let parsed = match item.get_ref() {
                DeValue::String(s) => Cidr::parse(s),
                _ => None,
            };
            match parsed {
                Some(c) => out.push(c),
                None => self.wrong("trusted_proxies", item, expected),
            }
        }
        out
    }
}
