//! The top-level `acme_*` keys and a site's `tls = { acme = ... }`,
//! checked for form. What needs the system or spans sites (users, a
//! plain-HTTP listener for HTTP-01) is `config::acme_check`'s.

use super::*;
use crate::config::acme::{Challenge, SiteAcme};

pub(crate) const ACME_KEYS: &[&str] = &["email", "directory", "challenge"];

/// The `acme_*` keys as written.
#[derive(Debug, Default)]
pub(crate) struct RawAcme {
    pub directory: Option<At<String>>,
    pub ca: Option<At<PathBuf>>,
    pub email: Option<At<String>>,
    pub dir: Option<At<PathBuf>>,
    pub user: Option<At<String>>,
    pub placeholder: bool,
    pub http_port: Option<u16>,
    pub tls_port: Option<u16>,
    pub renew_check: Option<Duration>,
    pub lock_stale: Option<Duration>,
}

impl Reader<'_, '_, '_> {
    /// One of the top-level `acme_*` keys.
    pub(super) fn acme_option(&mut self, key: &str, value: &Value<'_>, raw: &mut RawAcme) {
        match key {
            "acme_directory" => raw.directory = self.acme_directory(key, value),
            "acme_ca" => raw.ca = self.path(key, value),
            "acme_email" => raw.email = self.acme_email(key, value),
            "acme_dir" => raw.dir = self.path(key, value),
            "acme_user" => raw.user = self.name(key, value, "user"),
            "acme_placeholder" => {
                if let Some(b) = self.boolean(key, value) {
                    raw.placeholder = b;
                }
            }
            "acme_http_port" | "acme_tls_port" => {
                let port = self
                    .count(key, value, 1, 65535)
                    .and_then(|n| u16::try_from(n).ok());
                if key == "acme_http_port" {
                    raw.http_port = port.or(raw.http_port);
                } else {
                    raw.tls_port = port.or(raw.tls_port);
                }
            }
            "acme_renew_check" | "acme_lock_stale" => {
                let mut d = Duration::ZERO;
                let before = self.errs.len();
                self.duration(key, value, &mut d);
                if self.errs.len() == before {
                    if key == "acme_renew_check" {
                        raw.renew_check = Some(d);
                    } else {
                        raw.lock_stale = Some(d);
                    }
                }
            }
            _ => {}
        }
    }

    fn acme_directory(&mut self, key: &str, value: &Value<'_>) -> Option<At<String>> {
        let expected = "\"letsencrypt\", \"letsencrypt-staging\" or an https:// directory URL";
        let s = self.string(key, value, expected)?;
        let ok = matches!(s, "letsencrypt" | "letsencrypt-staging")
            || (s.starts_with("https://") && s.len() > 8 && !s.contains(char::is_whitespace));
        if !ok {
            self.wrong(key, value, expected);
            return None;
        }
        Some(At {
            value: s.to_owned(),
            pos: self.pos(value),
        })
    }

    fn acme_email(&mut self, key: &str, value: &Value<'_>) -> Option<At<String>> {
        let expected = "an email address like \"admin@example.org\"";
        let s = self.string(key, value, expected)?;
        let ok = s
            .split_once('@')
            .is_some_and(|(user, host)| !user.is_empty() && host.contains('.'))
            && !s.contains(|c: char| c.is_whitespace() || c.is_control() || c == ',');
        if !ok {
            self.wrong(key, value, expected);
            return None;
        }
        Some(At {
            value: s.to_owned(),
            pos: self.pos(value),
        })
    }

    /// A site's `acme`: `true`, `false` (none), or `{ email, directory,
    /// challenge }`.
    pub(super) fn site_acme(&mut self, value: &Value<'_>) -> Option<SiteAcme> {
        let pos = self.pos(value);
        let expected = "true or a table like { email = \"...\", challenge = \"http-01\" }";
        let table = match value.get_ref() {
            DeValue::Boolean(true) => {
                return Some(SiteAcme {
                    email: None,
                    directory: None,
                    challenge: Challenge::default(),
                    pos,
                });
            }
            DeValue::Boolean(false) => return None,
            DeValue::Table(t) => t,
            _ => {
                self.wrong("acme", value, expected);
                return None;
            }
        };
        let mut acme = SiteAcme {
            email: None,
            directory: None,
            challenge: Challenge::default(),
            pos,
        };
        for (key, v) in table.iter() {
            let name: &str = key.get_ref();
            match name {
                "email" => acme.email = self.acme_email(name, v).map(|a| a.value),
                "directory" => acme.directory = self.acme_directory(name, v).map(|a| a.value),
                "challenge" => {
                    let expected = "\"http-01\" or \"tls-alpn-01\"";
                    if let Some(s) = self.string(name, v, expected) {
                        match Challenge::parse(s) {
                            Some(c) => acme.challenge = c,
                            None => self.wrong(name, v, expected),
                        }
                    }
                }
                _ => {
                    let message = suggest::unknown_key(name, ACME_KEYS);
                    self.errs.at_span(&key.span(), message);
                }
            }
        }
        Some(acme)
    }
}
