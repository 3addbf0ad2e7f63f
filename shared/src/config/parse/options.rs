//! The HTTP engine's limits (top level) and a site's static-file options:
//! each value checked for form, with its own error at the value.

use toml::de::{DeTable, DeValue};

use super::{Reader, Value, integer};
use crate::config::bounds;
use crate::config::model::{FileOptions, HttpLimits, MAX_HEADERS_LIMIT, Symlinks};

const SYMLINKS: &[&str] = &["follow", "owner", "never"];

impl Reader<'_, '_, '_> {
    /// One of the HTTP engine's top-level keys.
    pub(super) fn http_limit(&mut self, key: &str, value: &Value<'_>, http: &mut HttpLimits) {
        match key {
            "max_header_size" => {
                if let Some(n) = self.size(key, value) {
                    http.max_header_size = n as usize;
                }
            }
            "max_uri_length" => {
                if let Some(n) = self.size(key, value) {
                    http.max_uri_length = n as usize;
                }
            }
            "max_body_size" => {
                if let Some(n) = self.size(key, value) {
                    http.max_body_size = n;
                }
            }
            "max_headers" => {
                if let Some(n) = self.count(key, value, 1, MAX_HEADERS_LIMIT as u64) {
                    http.max_headers = n as usize;
                }
            }
            "max_connections" => {
                if let Some(n) = self.count(key, value, 1, 1 << 20) {
                    http.max_connections = n as usize;
                }
            }
            "keepalive_requests" => {
                if let Some(n) = self.count(key, value, 1, u64::MAX >> 1) {
                    http.keepalive_requests = n;
                }
            }
            "file_cache_size" => {
                if let Some(n) = self.size(key, value) {
                    http.file_cache_size = n;
                }
            }
            "file_cache_max_file_size" => {
                if let Some(n) = self.size(key, value) {
                    http.file_cache_max_file_size = n;
                }
            }
            "body_timeout" => self.duration(key, value, &mut http.body_timeout),
            "send_timeout" => self.duration(key, value, &mut http.send_timeout),
            "server_token" => match value.get_ref() {
                DeValue::Boolean(false) => http.server_token = None,
                DeValue::String(s) if is_header_value(s) && !s.trim().is_empty() => {
                    http.server_token = Some(s.trim().to_owned());
                }
                _ => self.wrong(key, value, "a product name like \"baton\", or false"),
            },
            _ => {}
        }
    }

    /// One of a site's static-file keys.
    pub(super) fn file_option(&mut self, key: &str, value: &Value<'_>, files: &mut FileOptions) {
        match key {
            "directory_listing" => {
                if let Some(b) = self.boolean(key, value) {
                    files.directory_listing = b;
                }
            }
            "precompressed" => {
                if let Some(b) = self.boolean(key, value) {
                    files.precompressed = b;
                }
            }
            "dotfiles" => match value.get_ref() {
                DeValue::String(s) if s.as_ref() == "deny" => files.dotfiles = false,
                DeValue::String(s) if s.as_ref() == "allow" => files.dotfiles = true,
                _ => self.wrong(key, value, "\"deny\" or \"allow\""),
            },
            "symlinks" => match value.get_ref() {
                DeValue::String(s) if s.as_ref() == "follow" => files.symlinks = Symlinks::Follow,
                DeValue::String(s) if s.as_ref() == "owner" => files.symlinks = Symlinks::Owner,
                DeValue::String(s) if s.as_ref() == "never" => files.symlinks = Symlinks::Never,
                _ => {
                    let expected = format!("one of {}", SYMLINKS.join(", "));
                    self.wrong(key, value, &expected);
                }
            },
            "default_type" => {
                if let Some(t) = self.media_type(key, value) {
                    files.default_type = t;
                }
            }
            "charset" => match value.get_ref() {
                DeValue::Boolean(false) => files.charset = None,
                DeValue::String(s) if is_token(s) => files.charset = Some(s.to_string()),
                _ => self.wrong(key, value, "a charset like \"utf-8\", or false"),
            },
            "types" => {
                if let Some(table) =
                    self.table(key, value, "a table like { md = \"text/markdown\" }")
                {
                    for (ext, v) in table.iter() {
                        let name: &str = ext.get_ref();
                        let ext_ok = !name.is_empty()
                            && !name.starts_with('.')
                            && !name.contains(['/', '\0']);
                        if !ext_ok {
                            let message = format!(
                                "type extension {name:?} must be a file extension without its dot, like \"md\""
                            );
                            self.errs.at_span(&ext.span(), message);
                            continue;
                        }
                        if let Some(t) = self.media_type("types", v) {
                            files.types.push((name.to_ascii_lowercase(), t));
                        }
                    }
                }
            }
            "headers" => {
                if let Some(h) = self.headers(key, value) {
                    files.headers = h;
                }
            }
            "path_headers" => {
                let expected = "a table of URL path prefixes, like { \"/assets/\" = { \"Cache-Control\" = \"max-age=86400\" } }";
                if let Some(table) = self.table(key, value, expected) {
                    for (prefix, v) in table.iter() {
                        let p: &str = prefix.get_ref();
                        if !p.starts_with('/') {
                            let message = format!(
                                "path prefix {p:?} must start with \"/\", like \"/assets/\""
                            );
                            self.errs.at_span(&prefix.span(), message);
                            continue;
                        }
                        if let Some(h) = self.headers("path_headers", v) {
                            files.path_headers.push((p.to_owned(), h));
                        }
                    }
                }
            }
            "error_pages" => {
                if let Some(table) = self.table(key, value, "a table like { 404 = \"/404.html\" }")
                {
                    for (code, v) in table.iter() {
                        let c: &str = code.get_ref();
                        let Some(status) =
                            c.parse::<u16>().ok().filter(|s| (400..=599).contains(s))
                        else {
                            let message =
                                format!("error page status {c:?} must be a status from 400 to 599");
                            self.errs.at_span(&code.span(), message);
                            continue;
                        };
                        if let Some(path) = self.url_path("error_pages", v) {
                            files.error_pages.push((status, path));
                        }
                    }
                }
            }
            "fallback" => files.fallback = self.url_path(key, value),
            _ => {}
        }
    }

    pub(super) fn table<'v, 't>(
        &mut self,
        key: &str,
        value: &'v Value<'t>,
        expected: &str,
    ) -> Option<&'v DeTable<'t>> {
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.wrong(key, value, expected);
                None
            }
        }
    }

    /// A byte count: an integer, or a string with a `k`, `m`, `g` or `t`
    /// suffix (binary units: `"16k"` is 16384), within `key`'s bounds
    /// (`bounds::SIZES`).
    pub(super) fn size(&mut self, key: &str, value: &Value<'_>) -> Option<u64> {
        let n = match value.get_ref() {
            DeValue::Integer(i) => integer(i).and_then(|n| u64::try_from(n).ok()),
            DeValue::String(s) => parse_size(s),
            _ => None,
        };
        let Some(n) = n else {
            self.wrong(key, value, "a size like 16384 or \"16k\"");
            return None;
        };
        let bounds = bounds::size_bounds(key);
        debug_assert!(bounds.is_some(), "{key} has no row in bounds::SIZES");
        match bounds.unwrap_or(&bounds::SIZE_FALLBACK).check(n) {
            Ok(()) => Some(n),
            Err(why) => {
                self.out_of_range(key, value, &why);
                None
            }
        }
    }

    pub(crate) fn count(
        &mut self,
        key: &str,
        value: &Value<'_>,
        min: u64,
        max: u64,
    ) -> Option<u64> {
        let n = match value.get_ref() {
            DeValue::Integer(i) => integer(i).and_then(|n| u64::try_from(n).ok()),
            _ => None,
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                let expected = format!("a whole number from {min} to {max}");
                self.wrong(key, value, &expected);
                None
            }
        }
    }

    /// A `type/subtype` (parameters allowed: `text/plain; charset=latin1`).
    fn media_type(&mut self, key: &str, value: &Value<'_>) -> Option<String> {
        if let DeValue::String(s) = value.get_ref() {
            let essence = s.split(';').next().unwrap_or_default().trim();
            if let Some((a, b)) = essence.split_once('/')
                && is_token(a)
                && is_token(b)
                && is_header_value(s)
            {
                return Some(s.to_string());
            }
        }
        self.wrong(key, value, "a media type like \"text/markdown\"");
        None
    }

    /// A table of header names → values.
    pub(super) fn headers(
        &mut self,
        key: &str,
        value: &Value<'_>,
    ) -> Option<Vec<(String, String)>> {
        let expected = "a table like { \"Cache-Control\" = \"max-age=3600\" }";
        let table = self.table(key, value, expected)?;
        let mut out = Vec::new();
        for (name, v) in table.iter() {
            let n: &str = name.get_ref();
            if !is_token(n) {
                let message = format!("header name {n:?} is not a valid HTTP field name");
                self.errs.at_span(&name.span(), message);
                continue;
            }
            // Headers the server frames the response with are its own.
            const OWN: &[&str] = &[
                "content-length",
                "transfer-encoding",
                "connection",
                "date",
                "content-range",
                "keep-alive",
            ];
            if OWN.iter().any(|o| o.eq_ignore_ascii_case(n)) {
                let message = format!("header {n:?} is set by Baton itself and cannot be added");
                self.errs.at_span(&name.span(), message);
                continue;
            }
            match v.get_ref() {
                DeValue::String(s) if is_header_value(s) => out.push((n.to_owned(), s.to_string())),
                _ => self.wrong(n, v, "a header value (a string without line breaks)"),
            }
        }
        Some(out)
    }

    /// A URL path under the root, like `"/404.html"`.
    fn url_path(&mut self, key: &str, value: &Value<'_>) -> Option<String> {
        if let DeValue::String(s) = value.get_ref()
            && s.starts_with('/')
            && !s.contains(['?', '#', '\0'])
            && is_header_value(s)
        {
            return Some(s.to_string());
        }
        self.wrong(
            key,
            value,
            "a URL path under the root, like \"/index.html\"",
        );
        None
    }
}

/// `"16k"`, `"1m"`, `"2g"`, `"1t"`, `"100"`: bytes, binary units.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, unit) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        b't' | b'T' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

/// An RFC 9110 token (header names, media type parts, charsets).
pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Printable, no CR, LF or NUL: safe to put in a response head.
fn is_header_value(s: &str) -> bool {
    s.bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16k"), Some(16384));
        assert_eq!(parse_size("1M"), Some(1 << 20));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("k"), None);
        assert_eq!(parse_size("-1k"), None);
        assert_eq!(parse_size("99999999999999999999g"), None);
    }

    #[test]
    fn tokens_and_values() {
        assert!(is_token("Cache-Control"));
        assert!(!is_token("Bad Name"));
        assert!(!is_token(""));
        assert!(is_header_value("max-age=3600"));
        assert!(!is_header_value("a\r\nb"));
    }
}
