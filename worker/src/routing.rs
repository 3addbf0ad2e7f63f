//! Which site answers a request: by the listener it came in on, then by Host.

use baton_shared::config::{Config, ListenAddr, Site};

/// The sites served on each listener, as indices into `config.sites`,
/// computed once at start (a reload forks new workers with a new config).
#[derive(Debug)]
pub struct Routes {
    per_listener: Vec<Vec<usize>>,
    /// Listeners that take cleartext HTTP/2 with prior knowledge (`h2c`).
    h2c: Vec<bool>,
}

impl Routes {
    pub fn new(config: &Config, addrs: &[ListenAddr]) -> Routes {
        let per_listener = addrs
            .iter()
            .map(|addr| {
                config
                    .sites
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.listen.iter().any(|l| &l.addr == addr))
                    .map(|(i, _)| i)
                    .collect()
            })
            .collect();
        let h2c = addrs
            .iter()
            .map(|addr| crate::http2::h2c_on(config, addr))
            .collect();
        Routes { per_listener, h2c }
    }

    /// Whether `listener` takes h2c with prior knowledge.
    pub fn h2c(&self, listener: usize) -> bool {
        self.h2c.get(listener).copied().unwrap_or(false)
    }

    /// Among the sites on `listener`: the one whose `names` has `host`
    /// (lowercase, no port), else the first with no names (the catch-all),
    /// else the first. `None` only if no site is on that listener.
    pub fn pick<'c>(
        &self,
        config: &'c Config,
        listener: usize,
        host: Option<&str>,
    ) -> Option<&'c Site> {
        let sites = || {
            self.per_listener
                .get(listener)
                .into_iter()
                .flatten()
                .filter_map(|&i| config.sites.get(i))
        };
        if let Some(host) = host
            && let Some(site) = sites().find(|s| s.names.iter().any(|n| n == host))
        {
            return Some(site);
        }
        sites()
            .find(|s| s.names.is_empty())
            .or_else(|| sites().next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_config::{config, site};

    fn tcp(s: &str) -> ListenAddr {
        ListenAddr::Tcp(s.parse().unwrap())
    }

    #[test]
    fn host_picks_the_named_site_else_the_catch_all_else_the_first() {
        let cfg = config(vec![
            site("/a", &["127.0.0.1:80"], &["a.example"]),
            site("/any", &["127.0.0.1:80"], &[]),
            site("/b", &["127.0.0.1:80", "127.0.0.1:81"], &["b.example"]),
            site("/c", &["127.0.0.1:81"], &["c.example"]),
        ]);
        let routes = Routes::new(&cfg, &[tcp("127.0.0.1:80"), tcp("127.0.0.1:81")]);
        let root = |l, h| {
            routes
                .pick(&cfg, l, h)
                .map(|s| s.root.as_ref().unwrap().to_str().unwrap())
        };
        assert_eq!(root(0, Some("a.example")), Some("/a"));
        assert_eq!(root(0, Some("b.example")), Some("/b"));
        assert_eq!(root(0, Some("c.example")), Some("/any")); // not on :80
        assert_eq!(root(0, None), Some("/any"));
        assert_eq!(root(1, Some("c.example")), Some("/c"));
        assert_eq!(root(1, Some("nope")), Some("/b")); // no catch-all: first
        assert_eq!(root(2, None), None);
    }
}
