//! A site's `tls` table and the global `tls_*` keys, checked for form. The
//! files themselves are read and verified by `crate::tls`, which the master
//! runs after validation (`-t`, start and reload alike).

use toml::de::{DeTable, DeValue};

use super::{Reader, Value};
use crate::config::model::{CertFiles, Pos, SiteTls, TlsOptions, TlsVersion};
use crate::config::suggest;

pub(crate) const TLS_KEYS: &[&str] = &["cert", "key", "ocsp", "dir", "default", "acme"];
pub(crate) const CERT_KEYS: &[&str] = &["cert", "key", "ocsp"];

/// The cipher suites `tls_ciphers` may name (those of rustls's ring provider).
pub const CIPHER_SUITES: &[&str] = &[
    "TLS13_AES_256_GCM_SHA384",
    "TLS13_AES_128_GCM_SHA256",
    "TLS13_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
];

impl Reader<'_, '_, '_> {
    /// One of the top-level `tls_*` keys.
    pub(super) fn tls_option(&mut self, key: &str, value: &Value<'_>, tls: &mut TlsOptions) {
        match key {
            "tls_min_version" => match value.get_ref() {
                DeValue::String(s) if s.as_ref() == "1.2" => tls.min_version = TlsVersion::V12,
                DeValue::String(s) if s.as_ref() == "1.3" => tls.min_version = TlsVersion::V13,
                _ => self.wrong(key, value, "\"1.2\" or \"1.3\""),
            },
            "tls_unknown_sni" => match value.get_ref() {
                DeValue::String(s) if s.as_ref() == "default" => tls.reject_unknown_sni = false,
                DeValue::String(s) if s.as_ref() == "reject" => tls.reject_unknown_sni = true,
                _ => self.wrong(key, value, "\"default\" or \"reject\""),
            },
            "tls_watch_interval" => self.duration(key, value, &mut tls.watch_interval),
            "tls_ticket_rotation" => self.duration(key, value, &mut tls.ticket_rotation),
            "tls_ciphers" => {
                let expected = "an array of cipher suite names";
                let Some(array) = self.array(key, value, expected) else {
                    return;
                };
                let mut ciphers = Vec::new();
                for item in array.iter() {
                    let Some(name) = self.string(key, item, expected) else {
                        continue;
                    };
                    let upper = name.to_ascii_uppercase();
                    if CIPHER_SUITES.contains(&upper.as_str()) {
                        ciphers.push(upper);
                        continue;
                    }
                    // `closest` compares in lowercase.
                    let lower: Vec<String> = CIPHER_SUITES
                        .iter()
                        .map(|c| c.to_ascii_lowercase())
                        .collect();
                    let known: Vec<&str> = lower.iter().map(String::as_str).collect();
                    let message = match suggest::closest(name, &known) {
                        Some(k) => format!(
                            "unknown cipher suite {name:?}, did you mean {:?}?",
                            k.to_ascii_uppercase()
                        ),
                        None => format!(
                            "unknown cipher suite {name:?} (known: {})",
                            CIPHER_SUITES.join(", ")
                        ),
                    };
                    self.errs.at_span(&item.span(), message);
                }
                if array.is_empty() {
                    self.errs.at_span(
                        &value.span(),
                        "\"tls_ciphers\" must name at least one cipher suite",
                    );
                }
                tls.ciphers = ciphers;
            }
            _ => {}
        }
    }

    /// A site's `tls` table.
    pub(super) fn site_tls(&mut self, value: &Value<'_>) -> Option<SiteTls> {
        let pos = self.pos(value);
        let DeValue::Table(table) = value.get_ref() else {
            self.wrong(
                "tls",
                value,
                "a table like { cert = \"site.pem\", key = \"site.key\" }",
            );
            return None;
        };
        let mut tls = SiteTls {
            certs: Vec::new(),
            dir: None,
            default: false,
            acme: None,
            pos,
        };
        for (key, v) in table.iter() {
            let name: &str = key.get_ref();
            match name {
                "cert" | "key" | "ocsp" => {}
                "acme" => tls.acme = self.site_acme(v),
                "dir" => tls.dir = self.path(name, v).map(|at| at.value),
                "default" => {
                    if let Some(b) = self.boolean(name, v) {
                        tls.default = b;
                    }
                }
                _ => {
                    let message = suggest::unknown_key(name, TLS_KEYS);
                    self.errs.at_span(&key.span(), message);
                }
            }
        }
        match table.get("cert").map(|v| (v, v.get_ref())) {
            Some((_, DeValue::Array(array))) => {
                // [[site.tls.cert]] entries: each its own cert, key, ocsp.
                for key in ["key", "ocsp"] {
                    if let Some(v) = table.get(key) {
                        let message = format!(
                            "\"{key}\" goes inside each [[site.tls.cert]] when there are several"
                        );
                        self.errs.at_span(&v.span(), message);
                    }
                }
                for item in array.iter() {
                    match item.get_ref() {
                        DeValue::Table(t) => {
                            let pos = self.pos(item);
                            if let Some(c) = self.cert_files(t, pos, true) {
                                tls.certs.push(c);
                            }
                        }
                        _ => self.wrong(
                            "cert",
                            item,
                            "a table with \"cert\" and \"key\" ([[site.tls.cert]])",
                        ),
                    }
                }
            }
            Some(_) => {
                if let Some(c) = self.cert_files(table, pos, false) {
                    tls.certs.push(c);
                }
            }
            None => {
                if let Some(v) = table.get("key") {
                    self.errs.at_span(
                        &v.span(),
                        "\"key\" without \"cert\": add cert = \"FILE.pem\"",
                    );
                }
                if tls.dir.is_none() && !table.contains_key("dir") && !table.contains_key("acme") {
                    self.errs.at(
                        pos,
                        "\"tls\" needs cert and key (cert = \"site.pem\", key = \"site.key\"), \
                         [[site.tls.cert]] entries or dir = \"DIRECTORY\"",
                    );
                }
            }
        }
        if let Some(acme) = &tls.acme
            && (!tls.certs.is_empty() || tls.dir.is_some())
        {
            self.errs.at(
                acme.pos,
                "\"acme\" and \"cert\"/\"dir\" in one tls table: ACME keeps the \
                 certificate itself; remove one of them",
            );
        }
        Some(tls)
    }

    /// `cert`, `key` and `ocsp` from `table` (the `tls` table itself, or one
    /// `[[site.tls.cert]]` when `entry`).
    fn cert_files(&mut self, table: &DeTable<'_>, pos: Pos, entry: bool) -> Option<CertFiles> {
        if entry {
            for (key, _) in table.iter() {
                let name: &str = key.get_ref();
                if !CERT_KEYS.contains(&name) {
                    let message = suggest::unknown_key(name, CERT_KEYS);
                    self.errs.at_span(&key.span(), message);
                }
            }
        }
        let cert = table.get("cert").and_then(|v| self.path("cert", v));
        let key = table.get("key").and_then(|v| self.path("key", v));
        let ocsp = table.get("ocsp").and_then(|v| self.path("ocsp", v));
        if !table.contains_key("key") {
            let at = table.get("cert").map_or(pos, |v| self.pos(v));
            self.errs
                .at(at, "\"cert\" without \"key\": add key = \"FILE.key\"");
        }
        Some(CertFiles {
            pos: cert.as_ref().map_or(pos, |c| c.pos),
            cert: cert?.value,
            key: key?.value,
            ocsp: ocsp.map(|o| o.value),
        })
    }
}
