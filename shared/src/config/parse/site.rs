//! `[[site]]` tables: listen addresses, host names, root, index and the
//! per-site options, each value checked for form at its position.

use super::*;

impl Reader<'_, '_, '_> {
    pub(super) fn sites(&mut self, value: &Value<'_>) -> Vec<RawSite> {
        let expected = "an array of tables, written [[site]]";
        let DeValue::Array(array) = value.get_ref() else {
            self.wrong("site", value, expected);
            return Vec::new();
        };
        if array.is_empty() {
            self.errs
                .at_span(&value.span(), "no [[site]] in the config: nothing to serve");
        }
        let mut sites = Vec::new();
        for item in array.iter() {
            match item.get_ref() {
                DeValue::Table(t) => sites.push(self.site(self.pos(item), t)),
                _ => self.wrong("site", item, expected),
            }
        }
        sites
    }

    pub(super) fn site(&mut self, pos: Pos, table: &DeTable<'_>) -> RawSite {
        let mut site = RawSite {
            pos,
            listen: Vec::new(),
            names: Vec::new(),
            root: None,
            index: vec!["index.html".to_owned()],
            files: FileOptions::default(),
            access_log: None,
            tls: None,
            redirect_https: None,
            routes: Vec::new(),
            http2: None,
        };
        let mut have_listen = false;
        // Required keys an unknown key was taken for ("rot": "root"), so
        // they are not reported missing as well.
        let mut misspelt: Vec<&str> = Vec::new();
        for (key, value) in table.iter() {
            let name: &str = key.get_ref();
            match name {
                "listen" => {
                    have_listen = true;
                    site.listen = self.listens(value);
                }
                "names" => site.names = self.names(value),
                "route" => site.routes = self.routes(value),
                "root" => site.root = self.path(name, value),
                "access_log" => site.access_log = self.access_log(value),
                "tls" => site.tls = self.site_tls(value),
                "http2" => {
                    let pos = self.pos(value);
                    site.http2 = self.boolean(name, value).map(|value| At { value, pos });
                }
                "redirect_https" => {
                    let pos = self.pos(value);
                    let port = match value.get_ref() {
                        DeValue::Boolean(true) => Some(443),
                        DeValue::Boolean(false) => None,
                        DeValue::Integer(i) => match integer(i) {
                            Some(n @ 1..=65535) => u16::try_from(n).ok(),
                            _ => {
                                self.wrong(name, value, "true or a port from 1 to 65535");
                                None
                            }
                        },
                        _ => {
                            self.wrong(name, value, "true or a port from 1 to 65535");
                            None
                        }
                    };
                    site.redirect_https = port.map(|value| At { value, pos });
                }
                "compress" => {
                    if let Some(c) = self.compress(value) {
                        site.files.compress = c;
                    }
                }
                "index" => {
                    if let Some(index) = self.index(value) {
                        site.index = index;
                    }
                }
                "directory_listing" | "dotfiles" | "symlinks" | "types" | "default_type"
                | "charset" | "precompressed" | "headers" | "path_headers" | "error_pages"
                | "fallback" => self.file_option(name, value, &mut site.files),
                _ => {
                    misspelt.extend(suggest::closest(name, SITE_KEYS));
                    let mut message = suggest::unknown_key(name, SITE_KEYS);
                    if TOP_KEYS.contains(&name) {
                        message = format!(
                            "unknown key {name:?} in a [[site]]: \
                             top-level keys go before the first [[site]]"
                        );
                    }
                    self.errs.at_span(&key.span(), message);
                }
            }
        }
        if !have_listen && !misspelt.contains(&"listen") {
            self.errs.at(
                pos,
                "this [[site]] has no \"listen\" (for example listen = [\"127.0.0.1:8080\"])",
            );
        }
        // A site whose requests all go to [[site.route]]s needs no files;
        // a path no route matches then gets a 404.
        if !table.contains_key("root") && !misspelt.contains(&"root") && site.routes.is_empty() {
            self.errs.at(
                pos,
                "this [[site]] has no \"root\" (the directory to serve) and no [[site.route]]",
            );
        }
        site
    }

    pub(super) fn listens(&mut self, value: &Value<'_>) -> Vec<Listen> {
        let expected = "an array of addresses like [\"127.0.0.1:8080\"]";
        let Some(array) = self.array("listen", value, expected) else {
            return Vec::new();
        };
        if array.is_empty() {
            self.errs.at_span(
                &value.span(),
                "\"listen\" must list at least one address, like [\"127.0.0.1:8080\"]",
            );
        }
        array.iter().filter_map(|item| self.listen(item)).collect()
    }

    /// One listen entry: an address string, a port number, or a table.
    pub(super) fn listen(&mut self, item: &Value<'_>) -> Option<Listen> {
        let pos = self.pos(item);
        let addr_value = match item.get_ref() {
            DeValue::Table(t) => {
                for (key, _) in t.iter() {
                    let name: &str = key.get_ref();
                    if !LISTEN_KEYS.contains(&name) {
                        let message = suggest::unknown_key(name, LISTEN_KEYS);
                        self.errs.at_span(&key.span(), message);
                    }
                }
                match t.get("address") {
                    Some(a) => a,
                    None => {
                        self.errs.at(pos, "listen table has no \"address\"");
                        return None;
                    }
                }
            }
            DeValue::String(_) | DeValue::Integer(_) => item,
            other => {
                let message = format!(
                    "each \"listen\" entry must be an address like \"127.0.0.1:8080\", \
                     a port or a table with \"address\", not {}",
                    describe(other)
                );
                self.errs.at(pos, message);
                return None;
            }
        };
        let addr = self.address(addr_value);
        let mut listen = Listen {
            addr: addr?,
            backlog: DEFAULT_BACKLOG,
            mode: DEFAULT_MODE,
            h2c: false,
            pos,
        };
        let DeValue::Table(t) = item.get_ref() else {
            return Some(listen);
        };
        let mut ok = true;
        if let Some(v) = t.get("backlog") {
            match v.get_ref() {
                DeValue::Integer(i) => match integer(i).and_then(|n| i32::try_from(n).ok()) {
                    Some(n @ 1..=65535) => listen.backlog = n,
                    _ => ok = false,
                },
                _ => ok = false,
            }
            if !ok {
                self.wrong("backlog", v, "a whole number from 1 to 65535");
            }
        }
        if let Some(v) = t.get("mode") {
            let mode = match v.get_ref() {
                DeValue::String(s) => listen::parse_mode(s),
                // A TOML octal literal (0o660) is a mode too; a decimal one
                // is almost surely a mistake.
                DeValue::Integer(i) if i.radix() == 8 => integer(i)
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|&m| m <= 0o777),
                _ => None,
            };
            match (mode, &listen.addr) {
                (None, _) => {
                    ok = false;
                    self.wrong("mode", v, "an octal file mode like \"0660\"");
                }
                (Some(_), a @ (ListenAddr::Tcp(_) | ListenAddr::Stdin)) => {
                    ok = false;
                    let message = format!("\"mode\" only applies to unix sockets, not to {a}");
                    self.errs.at_span(&v.span(), message);
                }
                (Some(m), ListenAddr::Unix(_)) => listen.mode = m,
            }
        }
        if let Some(v) = t.get("h2c") {
            match (self.boolean("h2c", v), &listen.addr) {
                (None, _) => ok = false,
                (Some(_), ListenAddr::Stdin) => {
                    ok = false;
                    self.errs
                        .at_span(&v.span(), "\"h2c\" does not apply to stdin (inetd)");
                }
                (Some(b), _) => listen.h2c = b,
            }
        }
        ok.then_some(listen)
    }

    /// `access_log`: a file path, or "off".
    pub(super) fn access_log(&mut self, value: &Value<'_>) -> Option<At<Option<PathBuf>>> {
        if let DeValue::String(s) = value.get_ref()
            && s.as_ref() == "off"
        {
            let pos = self.pos(value);
            return Some(At { value: None, pos });
        }
        self.path("access_log", value).map(|at| At {
            value: Some(at.value),
            pos: at.pos,
        })
    }

    pub(super) fn address(&mut self, value: &Value<'_>) -> Option<ListenAddr> {
        let parsed = match value.get_ref() {
            DeValue::String(s) => listen::parse_addr(s, self.base),
            DeValue::Integer(i) => match integer(i) {
                Some(n) => listen::port_addr(n),
                None => Err(format!("port {i} is out of range (1 to 65535)")),
            },
            _ => {
                let expected = "an address like \"127.0.0.1:8080\", a port or \"unix:/path\"";
                self.wrong("address", value, expected);
                return None;
            }
        };
        parsed
            .map_err(|message| self.errs.at_span(&value.span(), message))
            .ok()
    }

    pub(super) fn names(&mut self, value: &Value<'_>) -> Vec<At<String>> {
        let Some(array) = self.array("names", value, "an array of host names") else {
            return Vec::new();
        };
        let mut names: Vec<At<String>> = Vec::new();
        for item in array.iter() {
            let Some(s) = self.string("names", item, "an array of host names") else {
                continue;
            };
            let pos = self.pos(item);
            if let Err(why) = check_host_name(s) {
                self.errs.at(pos, format!("name {s:?} {why}"));
                continue;
            }
            let lower = s.to_ascii_lowercase();
            if let Some(first) = names.iter().find(|n| n.value == lower) {
                let message = format!(
                    "name {s:?} is already listed on line {} of this site",
                    first.pos.line
                );
                self.errs.at(pos, message);
                continue;
            }
            names.push(At { value: lower, pos });
        }
        names
    }

    pub(super) fn index(&mut self, value: &Value<'_>) -> Option<Vec<String>> {
        let expected = "an array of file names like [\"index.html\"]";
        let array = self.array("index", value, expected)?;
        let mut ok = true;
        let mut index = Vec::new();
        for item in array.iter() {
            let Some(s) = self.string("index", item, expected) else {
                ok = false;
                continue;
            };
            if s.is_empty() || s == "." || s == ".." || s.contains(['/', '\0']) {
                ok = false;
                let message = format!("index {s:?} must be a file name, without \"/\"");
                self.errs.at_span(&item.span(), message);
                continue;
            }
            index.push(s.to_owned());
        }
        ok.then_some(index)
    }
}

/// Is `name` a plausible host name (or IP address) for the Host header?
/// The error completes "name \"...\" ...".
fn check_host_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.contains(char::is_whitespace) {
        return Err("must not contain spaces");
    }
    if let Some(inner) = name.strip_prefix('[') {
        // An IPv6 literal, as Host carries it: "[::1]".
        return match inner.strip_suffix(']') {
            Some(ip) if ip.parse::<std::net::Ipv6Addr>().is_ok() => Ok(()),
            _ if inner.contains("]:") => Err("must not include a port"),
            _ => Err("is not a valid host name"),
        };
    }
    if let Some((_, port)) = name.rsplit_once(':') {
        return if !name[..name.len() - port.len() - 1].contains(':')
            && port.bytes().all(|b| b.is_ascii_digit())
        {
            Err("must not include a port")
        } else {
            Err("is not a valid host name (write an IPv6 address as \"[::1]\")")
        };
    }
    if name.len() > 253 {
        return Err("is too long for a host name");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err("is not a valid host name")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        for good in [
            "example.com",
            "EXAMPLE.com",
            "localhost",
            "a-b_c.example",
            "127.0.0.1",
            "[::1]",
            "xn--bcher-kva.example",
        ] {
            assert_eq!(check_host_name(good), Ok(()), "{good}");
        }
        assert_eq!(
            check_host_name("example.com:80"),
            Err("must not include a port")
        );
        assert_eq!(check_host_name("[::1]:80"), Err("must not include a port"));
        assert_eq!(check_host_name("a b"), Err("must not contain spaces"));
        assert_eq!(check_host_name(""), Err("is empty"));
        for bad in [
            "*.example.com",
            "a..b",
            ".a",
            "a.",
            "ex/ample",
            "bücher.de",
            "[::1",
        ] {
            assert!(check_host_name(bad).is_err(), "{bad}");
        }
        assert!(check_host_name("::1").is_err());
        assert!(check_host_name(&"a".repeat(64)).is_err());
        assert!(check_host_name(&["a"; 128].join(".")).is_err());
    }
}
