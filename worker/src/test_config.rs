//! Config values for unit tests, built from the model's struct literals.

use std::path::PathBuf;
use std::time::Duration;

use baton_shared::config::{Config, Listen, ListenAddr, Pos, Site, Source};

pub fn site(root: &str, listen: &[&str], names: &[&str]) -> Site {
    Site {
        listen: listen
            .iter()
            .map(|a| Listen {
                addr: ListenAddr::Tcp(a.parse().unwrap()),
                backlog: 128,
                mode: 0o666,
                h2c: false,
                pos: Pos::default(),
            })
            .collect(),
        names: names.iter().map(|n| n.to_string()).collect(),
        root: Some(PathBuf::from(root)),
        routes: Vec::new(),
        index: vec!["index.html".into()],
        files: Default::default(),
        access_log: None,
        tls: None,
        redirect_https: None,
        http2: true,
        pos: Pos::default(),
    }
}

pub fn config(sites: Vec<Site>) -> Config {
    Config {
        source: Source::Embedded,
        identity: None,
        run_as_root: false,
        workers: 1,
        pid_file: PathBuf::from("/nonexistent/baton.pid"),
        grace: Duration::from_secs(30),
        error_log: None,
        log_level: "warn".into(),
        worker_ready_timeout: Duration::from_secs(5),
        max_draining_generations: 8,
        drain_linger: Duration::from_secs(1),
        inetd_idle_exit: Duration::from_secs(60),
        keepalive_timeout: Duration::from_secs(60),
        header_timeout: Duration::from_secs(10),
        defer_accept: Duration::ZERO,
        admin: None,
        access_log_format: Default::default(),
        log_mode: 0o640,
        log_owner: None,
        http: Default::default(),
        sites,
        tls: Default::default(),
        worker_rlimit_nofile: None,
        tls_loaded: Default::default(),
        proxy: Default::default(),
        acme: Default::default(),
    }
}
