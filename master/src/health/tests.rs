//! The checker's bookkeeping without sockets: rise and fall, what a
//! reconcile keeps, and the marks a worker of a given config gets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_shared::config::{Config, HealthCheck, Pos, Upstream, UpstreamAddr, UpstreamServer};
use mio::Poll;

use super::{Checker, Key};

fn server(port: u16) -> UpstreamServer {
    UpstreamServer {
        addr: UpstreamAddr::Tcp(format!("127.0.0.1:{port}").parse().unwrap()),
        weight: 1,
        backup: false,
        host: None,
        pos: Pos::default(),
    }
}

/// A config with upstream `app` of `ports`, checked with `rise`/`fall`.
fn config(ports: &[u16], rise: u32, fall: u32) -> Arc<Config> {
    let mut up = Upstream::with_defaults(
        "app".into(),
        ports.iter().map(|&p| server(p)).collect(),
        Pos::default(),
    );
    let mut check = HealthCheck::with_defaults(Pos::default());
    check.rise = rise;
    check.fall = fall;
    up.health = Some(check);
    let text = "[[site]]\nlisten = [\"127.0.0.1:8080\"]\nroot = \"/tmp\"\n";
    let mut c = baton_shared::config::load_text_as_file(std::path::Path::new("/tmp/t.toml"), text)
        .expect("config");
    c.proxy.upstreams.push(up);
    Arc::new(c)
}

fn key(port: u16) -> Key {
    ("app".into(), server(port).addr)
}

fn down(c: &Checker, config: &Config) -> Vec<u32> {
    c.marks_for(config)
        .iter()
        .filter(|m| !m.up)
        .map(|m| m.server)
        .collect()
}

#[test]
fn fall_and_rise_count_consecutive_results() {
    let poll = Poll::new().unwrap();
    let now = Instant::now();
    let cfg = config(&[1, 2], 2, 3);
    let mut c = Checker::default();
    assert!(!c.reconcile(vec![1], std::slice::from_ref(&cfg), poll.registry(), now));
    assert_eq!(c.deadline(), Some(now), "new servers are checked at once");
    let fail = || Err("refused".to_string());
    // The first result is always reported (adopted workers need it).
    assert!(c.finish_at(&key(1), fail(), now, now));
    assert!(!c.finish_at(&key(1), fail(), now, now));
    assert!(down(&c, &cfg).is_empty(), "two failures of fall = 3");
    // A pass in between starts the count again.
    assert!(!c.finish_at(&key(1), Ok(200), now, now));
    assert!(!c.finish_at(&key(1), fail(), now, now));
    assert!(!c.finish_at(&key(1), fail(), now, now));
    assert!(c.finish_at(&key(1), Ok(500), now, now), "the third failure");
    assert_eq!(down(&c, &cfg), [0]);
    assert!(!c.finish_at(&key(1), Ok(200), now, now));
    assert!(c.finish_at(&key(1), Ok(200), now, now), "rise = 2");
    assert!(down(&c, &cfg).is_empty());
    // The next check: one interval after this one started.
    let next = c.servers[&key(1)].next;
    assert_eq!(next, now + Duration::from_secs(5));
}

#[test]
fn a_reload_keeps_the_state_of_unchanged_servers_only() {
    let poll = Poll::new().unwrap();
    let now = Instant::now();
    let old = config(&[1, 2], 1, 1);
    let mut c = Checker::default();
    c.reconcile(vec![1], std::slice::from_ref(&old), poll.registry(), now);
    c.finish_at(&key(1), Err("down".into()), now, now);
    c.finish_at(&key(2), Ok(200), now, now);
    // Generation 2 drops server 2 and adds 3, in another order: by name
    // and address, 1 stays down, 3 is new and up.
    let new = config(&[3, 1], 1, 1);
    assert!(c.stale(&[1, 2]));
    c.reconcile(
        vec![1, 2],
        &[new.clone(), old.clone()],
        poll.registry(),
        now,
    );
    assert_eq!(down(&c, &new), [1], "server 1 is second in the new config");
    assert_eq!(down(&c, &old), [0]);
    // The old generation ends: 2 is forgotten, 1 and 3 stay.
    c.reconcile(vec![2], std::slice::from_ref(&new), poll.registry(), now);
    let servers: Vec<String> = c.view().iter().map(|v| v.server.clone()).collect();
    assert_eq!(servers, ["127.0.0.1:1", "127.0.0.1:3"]);
    // Forgetting a down server changes what the workers must be told.
    assert!(c.reconcile(vec![3], &[config(&[3], 1, 1)], poll.registry(), now));
    // A config without `health` has nothing checked.
    let mut plain = (*config(&[3], 1, 1)).clone();
    plain.proxy.upstreams[0].health = None;
    c.reconcile(vec![4], &[Arc::new(plain.clone())], poll.registry(), now);
    assert!(c.view().is_empty());
    assert!(c.marks_for(&plain).is_empty());
}
