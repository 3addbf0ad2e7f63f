//! What only root may change: the settings of a config sent to the admin
//! API (`POST /config`) by a caller who is not root, compared with the
//! config that runs.
//!
//! The master runs as root and acts on the config with root's rights: it
//! writes the pidfile and the logs, reads certificates and keys, binds
//! ports and sockets, and starts workers as `user`. A caller who may use
//! the API but is not root (the socket's `owner`, a token holder) may
//! change what is served and how, but not make the master use those
//! rights somewhere the running config does not already use them. So a
//! change to any of these is refused:
//!
//! - `user`, `group`, `run_as_root`: who the workers are;
//! - `pid_file`, `error_log`, `log_mode`, `log_owner`: files the master
//!   writes, and who may read the files it creates;
//! - the whole `[admin]` section: who may use the API;
//! - `acme_dir`, `acme_user`, `acme_ca`: the directory the master creates
//!   and gives to the certificate helper, who the helper runs as, and a
//!   file the master reads as root for it;
//! - an `access_log` in a directory the running config writes no log to;
//! - a certificate, key or OCSP file, or a `tls.dir`, in a directory the
//!   running config reads no TLS file from;
//! - a TCP port below `ip_unprivileged_port_start` (1024) that the running
//!   config does not listen on, and a unix socket in a directory where the
//!   running config has none;
//! - a document root outside the running config's roots, when workers run
//!   as root or as the master's own user (a non-root master): their reads
//!   are not confined to web files then.
//!
//! Paths compare lexically, and a path with a `..` component is never
//! "inside" anything: `/var/log/baton/../../etc/x` is not in
//! `/var/log/baton`.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use super::model::{Config, ListenAddr, Pos};

/// One root-only setting that a config changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootOnly {
    /// The key as written (`user`, `access_log`, `[admin]`, `tls.key`).
    pub field: String,
    /// Where it is in the new config; line 0 when it is not written there
    /// (a default) or the place is not kept.
    pub pos: Pos,
    /// Why a caller who is not root may not make this change.
    pub reason: String,
}

/// The kernel's lowest port an unprivileged process may bind
/// (`net.ipv4.ip_unprivileged_port_start`, 1024 unless changed).
pub fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1024)
}

/// Every root-only setting `new` changes from `running`; empty when a
/// caller who is not root may apply it. Both configs have the command
/// line's overrides applied.
pub fn root_only_changes(running: &Config, new: &Config, port_start: u16) -> Vec<RootOnly> {
    let mut out = Vec::new();
    let mut refuse = |field: &str, pos: Pos, reason: String| {
        out.push(RootOnly {
            field: field.to_owned(),
            pos,
            reason,
        })
    };

    let who = |c: &Config| c.identity.as_ref().map(|i| (i.user.clone(), i.uid, i.gid));
    if who(running) != who(new) {
        let user_same = matches!(
            (&running.identity, &new.identity),
            (Some(a), Some(b)) if a.user == b.user && a.uid == b.uid
        );
        let pos = new.identity.as_ref().map_or(Pos::default(), |i| i.pos);
        let (field, what) = if user_same {
            ("group", "the group workers run as")
        } else {
            ("user", "the user workers run as")
        };
        refuse(field, pos, format!("only root may change {what}"));
    }
    if running.run_as_root != new.run_as_root {
        refuse(
            "run_as_root",
            Pos::default(),
            "only root may decide whether workers run as root".into(),
        );
    }
    if running.pid_file != new.pid_file {
        refuse(
            "pid_file",
            Pos::default(),
            "the master writes and removes the pidfile as root".into(),
        );
    }
    if running.error_log != new.error_log {
        refuse(
            "error_log",
            Pos::default(),
            "the master opens the error log as root".into(),
        );
    }
    if running.log_mode != new.log_mode {
        refuse(
            "log_mode",
            Pos::default(),
            "it decides who may read the log files the master creates as root".into(),
        );
    }
    if running.log_owner != new.log_owner {
        refuse(
            "log_owner",
            Pos::default(),
            "it decides who owns the log files the master creates as root".into(),
        );
    }
    let admin_of = |c: &Config| {
        c.admin
            .as_ref()
            .map(|a| (a.listen.clone(), a.mode, a.owner, a.token_file.clone()))
    };
    if admin_of(running) != admin_of(new) {
        let pos = new.admin.as_ref().map_or(Pos::default(), |a| a.pos);
        refuse(
            "[admin]",
            pos,
            "it decides who may use the admin API; only root may change it".into(),
        );
    }

    if running.acme.dir != new.acme.dir {
        refuse(
            "acme_dir",
            Pos::default(),
            "the master creates it as root and gives it to the certificate helper".into(),
        );
    }
    let helper = |c: &Config| c.acme.user.as_ref().map(|i| (i.uid, i.gid));
    if helper(running) != helper(new) {
        let pos = new.acme.user.as_ref().map_or(Pos::default(), |i| i.pos);
        refuse(
            "acme_user",
            pos,
            "only root may change who the certificate helper runs as".into(),
        );
    }
    if running.acme.ca != new.acme.ca {
        refuse(
            "acme_ca",
            Pos::default(),
            "the master reads it as root and hands it to the certificate helper".into(),
        );
    }

    // Logs: only in directories where the running config already logs.
    let log_dirs: BTreeSet<&Path> = running
        .access_logs()
        .into_iter()
        .map(PathBuf::as_path)
        .chain(running.error_log.as_deref())
        .filter_map(Path::parent)
        .collect();
    let mut seen = BTreeSet::new();
    for site in &new.sites {
        let Some(log) = &site.access_log else {
            continue;
        };
        if inside_one_of(log, &log_dirs) || !seen.insert(log) {
            continue;
        }
        refuse(
            "access_log",
            site.pos,
            format!(
                "{} is not in a directory the running config logs to ({}); the master \
                 opens log files as root, so only root may choose a new place",
                log.display(),
                list(&log_dirs)
            ),
        );
    }

    // TLS files: only from directories the running config reads them from.
    let mut tls_dirs: BTreeSet<&Path> = BTreeSet::new();
    for tls in running.sites.iter().filter_map(|s| s.tls.as_ref()) {
        tls_dirs.extend(tls.dir.as_deref());
        for c in &tls.certs {
            for f in [Some(&c.cert), Some(&c.key), c.ocsp.as_ref()]
                .into_iter()
                .flatten()
            {
                tls_dirs.extend(f.parent());
            }
        }
    }
    let tls_reason = |path: &Path| {
        format!(
            "{} is not in a directory the running config reads certificates and keys from \
             ({}); the master reads them as root, so only root may name new ones",
            path.display(),
            list(&tls_dirs)
        )
    };
    let mut tls_refusals = Vec::new();
    for tls in new.sites.iter().filter_map(|s| s.tls.as_ref()) {
        if let Some(d) = &tls.dir
            && !(clean(d) && tls_dirs.contains(d.as_path()))
        {
            tls_refusals.push(("tls.dir", tls.pos, tls_reason(d)));
        }
        for c in &tls.certs {
            for (field, f) in [("tls.cert", Some(&c.cert)), ("tls.key", Some(&c.key))]
                .into_iter()
                .chain([("tls.ocsp", c.ocsp.as_ref())])
            {
                if let Some(f) = f
                    && !inside_one_of(f, &tls_dirs)
                {
                    tls_refusals.push((field, c.pos, tls_reason(f)));
                }
            }
        }
    }
    for (field, pos, reason) in tls_refusals {
        refuse(field, pos, reason);
    }

    // Listeners: no new privileged port, no socket in a new directory.
    let running_ports: BTreeSet<u16> = running
        .listens()
        .iter()
        .filter_map(|l| match &l.addr {
            ListenAddr::Tcp(a) => Some(a.port()),
            _ => None,
        })
        .collect();
    let running_sockets: Vec<&Path> = running
        .listens()
        .iter()
        .filter_map(|l| match &l.addr {
            ListenAddr::Unix(p) => Some(p.as_path()),
            _ => None,
        })
        .collect();
    let socket_dirs: BTreeSet<&Path> = running_sockets.iter().filter_map(|p| p.parent()).collect();
    for l in new.listens() {
        match &l.addr {
            ListenAddr::Tcp(a) if a.port() < port_start && !running_ports.contains(&a.port()) => {
                refuse(
                    "listen",
                    l.pos,
                    format!(
                        "port {} is below {port_start}: only root may bind it, and the \
                         master would do it as root",
                        a.port()
                    ),
                );
            }
            ListenAddr::Unix(p)
                if !running_sockets.contains(&p.as_path()) && !inside_one_of(p, &socket_dirs) =>
            {
                refuse(
                    "listen",
                    l.pos,
                    format!(
                        "unix:{} is not in a directory the running config has sockets in \
                         ({}); the master creates sockets as root",
                        p.display(),
                        list(&socket_dirs)
                    ),
                );
            }
            _ => {}
        }
    }

    // Document roots, when workers read with more than a web user's rights.
    let privileged_reader = match &running.identity {
        None => Some("the master's own user"),
        Some(i) if i.uid == 0 || running.run_as_root => Some("root"),
        Some(_) => None,
    };
    if let Some(reader) = privileged_reader {
        let roots: BTreeSet<&Path> = running
            .sites
            .iter()
            .filter_map(|s| s.root.as_deref())
            .collect();
        for site in &new.sites {
            // A site with no root serves no file.
            let Some(r) = &site.root else { continue };
            if clean(r) && roots.iter().any(|old| r.starts_with(old)) {
                continue;
            }
            refuse(
                "root",
                site.pos,
                format!(
                    "workers read files as {reader}, so a new document root could serve \
                     files only that user may read; a caller who is not root may only use \
                     the running config's roots ({}) and directories under them",
                    list(&roots)
                ),
            );
        }
    }
    out
}

/// `path`'s directory is one of `dirs` (and `path` has no `..`).
fn inside_one_of(path: &Path, dirs: &BTreeSet<&Path>) -> bool {
    clean(path) && path.parent().is_some_and(|p| dirs.contains(p))
}

/// No `..` component: lexical comparisons mean what they say.
fn clean(path: &Path) -> bool {
    !path.components().any(|c| c == Component::ParentDir)
}

fn list(paths: &BTreeSet<&Path>) -> String {
    if paths.is_empty() {
        return "none".into();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::System;
    use std::fs;

    struct Dir(tempfile::TempDir);

    impl Dir {
        fn new() -> Dir {
            let d = tempfile::tempdir().unwrap();
            for sub in ["www", "www/sub", "other", "logs", "elsewhere", "tls"] {
                fs::create_dir(d.path().join(sub)).unwrap();
            }
            Dir(d)
        }

        /// Loads `text` as `DIR/baton.toml` for a root master.
        fn load(&self, text: &str) -> Config {
            let file = self.0.path().join("baton.toml");
            match crate::config::load_text(
                text,
                crate::config::Source::File(file),
                self.0.path(),
                &System { euid: 0 },
            ) {
                Ok(c) => c,
                Err(e) => panic!("{e}\n{text}"),
            }
        }

        /// The fields `new` changes that need root, against `running`.
        fn refused(&self, running: &str, new: &str) -> Vec<String> {
            root_only_changes(&self.load(running), &self.load(new), 1024)
                .into_iter()
                .map(|r| r.field)
                .collect()
        }
    }

    const BASE: &str = "user = \"nobody\"\nerror_log = \"logs/error.log\"\n\
                        [[site]]\nlisten = [\"127.0.0.1:8080\"]\nroot = \"www\"\n\
                        access_log = \"logs/access.log\"\n";

    fn with(extra_globals: &str, site: &str) -> String {
        BASE.replacen("[[site]]", &format!("{extra_globals}\n[[site]]"), 1) + site
    }

    #[test]
    fn what_a_non_root_caller_may_change() {
        let d = Dir::new();
        // The same config, other sites, other settings, logs beside the
        // running ones, roots anywhere (workers are nobody), high ports.
        let allowed = with(
            "workers = 3\nlog_level = \"debug\"",
            "directory_listing = true\n\
             [[site]]\nlisten = [\"127.0.0.1:9090\"]\nroot = \"other\"\n\
             access_log = \"logs/other.log\"\n",
        );
        assert_eq!(d.refused(BASE, BASE), Vec::<String>::new());
        assert_eq!(d.refused(BASE, &allowed), Vec::<String>::new());
    }

    #[test]
    fn each_root_only_setting_is_named() {
        let d = Dir::new();
        let cases: &[(&str, &str)] = &[
            ("user", &BASE.replace("nobody", "daemon")),
            (
                "run_as_root",
                &BASE
                    .replace("nobody", "root")
                    .replacen("user", "run_as_root = true\nuser", 1),
            ),
            ("group", &with("group = \"daemon\"", "")),
            ("pid_file", &with("pid_file = \"logs/x.pid\"", "")),
            (
                "error_log",
                &BASE.replace("logs/error.log", "elsewhere/error.log"),
            ),
            ("log_mode", &with("log_mode = \"0644\"", "")),
            ("log_owner", &with("log_owner = \"daemon\"", "")),
            (
                "[admin]",
                &format!(
                    "{BASE}[admin]\nlisten = \"unix:{}/www/a.sock\"\n",
                    d.0.path().display()
                ),
            ),
            (
                "access_log",
                &BASE.replace("logs/access.log", "elsewhere/access.log"),
            ),
            (
                "access_log",
                &BASE.replace("logs/access.log", "logs/../elsewhere/a.log"),
            ),
            ("listen", &BASE.replace("8080", "80")),
            (
                "listen",
                &format!(
                    "{BASE}[[site]]\nlisten = [\"unix:{}/www/s.sock\"]\nroot = \"www\"\n",
                    d.0.path().display()
                ),
            ),
        ];
        for (field, new) in cases {
            let got = d.refused(BASE, new);
            assert!(
                got.contains(&field.to_string()),
                "{field}: got {got:?} for\n{new}"
            );
        }
        // Some of them at once: each is named.
        let many = BASE
            .replace("nobody", "daemon")
            .replace("logs/access.log", "/etc/cron.d/x");
        assert_eq!(d.refused(BASE, &many), vec!["user", "access_log"]);
    }

    #[test]
    fn tls_files_only_from_known_directories() {
        let d = Dir::new();
        let tls = |dir: &str| {
            format!(
                "[[site]]\nlisten = [\"127.0.0.1:8443\"]\nroot = \"www\"\n\
                 tls = {{ cert = \"{dir}/a.pem\", key = \"{dir}/a.key\" }}\n"
            )
        };
        // Loading only parses paths here; the files are read later.
        let running = format!("{BASE}{}", tls("tls"));
        assert_eq!(
            d.refused(&running, &format!("{BASE}{}", tls("tls"))),
            Vec::<String>::new()
        );
        assert_eq!(
            d.refused(&running, &format!("{BASE}{}", tls("elsewhere"))),
            vec!["tls.cert", "tls.key"]
        );
        assert_eq!(
            d.refused(&running, &format!("{BASE}{}", tls("tls/../elsewhere"))),
            vec!["tls.cert", "tls.key"]
        );
    }

    #[test]
    fn roots_are_root_only_when_workers_run_as_root() {
        let d = Dir::new();
        let as_root = BASE.replace("user = \"nobody\"", "user = \"root\"\nrun_as_root = true");
        let moved = as_root.replace("root = \"www\"", "root = \"other\"");
        let under = as_root.replace("root = \"www\"", "root = \"www/sub\"");
        let escape = as_root.replace("root = \"www\"", "root = \"www/..\"");
        assert_eq!(d.refused(&as_root, &moved), vec!["root"]);
        assert_eq!(d.refused(&as_root, &under), Vec::<String>::new());
        assert_eq!(d.refused(&as_root, &escape), vec!["root"]);
        // Workers as nobody read with nobody's rights: any root is fine.
        let moved = BASE.replace("root = \"www\"", "root = \"other\"");
        assert_eq!(d.refused(BASE, &moved), Vec::<String>::new());
    }
}
