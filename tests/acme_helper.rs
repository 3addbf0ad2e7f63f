//! The certificate helper process's life, without a CA (the name stays
//! pending): unprivileged, restarted after SIGKILL, stopped when no site
//! uses ACME any more, replaced by a binary upgrade; and a pending name's
//! handshake fails with an alert while everything else is served.

mod common;

use std::time::Duration;

use common::tls::{ECDSA, client, https_get};
use common::*;

const NAME: &str = "a.baton.test";

/// The helper's pid, from `baton -s status`.
fn helper(raw: &str) -> Option<i32> {
    raw.lines()
        .find_map(|l| l.strip_prefix("acme_helper: pid "))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
}

/// Socket inodes `pid` holds that are TCP listeners.
fn listening_inodes_of(pid: i32) -> Vec<String> {
    let held: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.display().to_string();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut listening = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(3) == Some(&"0A") && f.get(9).is_some_and(|i| held.iter().any(|h| h == i)) {
                listening.push(f[9].to_owned());
            }
        }
    }
    listening
}

/// A plain-HTTP site and an ACME site whose CA does not exist.
fn config(env: &Env, http: u16) -> String {
    format!(
        "{}acme_directory = \"https://127.0.0.1:1/dir\"\nacme_dir = \"{}\"\nacme_http_port = {http}\n\
         \n[[site]]\nlisten = [\"127.0.0.1:{http}\"]\nroot = \"{www}\"\n\n\
         [[site]]\nlisten = [\"127.0.0.1:{}\"]\nnames = [\"{NAME}\"]\nroot = \"{www}\"\n\
         tls = {{ acme = true }}\n",
        env.globals(),
        env.path("acme").display(),
        env.port,
        www = env.path("www").display()
    )
}

#[test]
fn a_killed_helper_is_restarted_and_no_helper_runs_without_acme() {
    let env = Env::new();
    let http = free_port();
    // No CA at all: the name stays pending; the helper still runs.
    env.write_config(&config(&env, http));
    let server = env.start();
    let first = helper(&env.status().raw).expect("a helper");
    assert!(children_of(server.pid()).contains(&first));
    // Unprivileged like a worker, with no listen socket.
    assert!(
        listening_inodes_of(first).is_empty(),
        "the helper holds a listener"
    );
    if is_root() {
        let status = std::fs::read_to_string(format!("/proc/{first}/status")).expect("status");
        let uid = status.lines().find(|l| l.starts_with("Uid:")).expect("uid");
        assert!(
            uid.split_whitespace().nth(1).is_some_and(|u| u != "0"),
            "{uid}"
        );
    }
    // SAFETY: kill on the helper's pid, a child of our server (checked above).
    unsafe { libc::kill(first, libc::SIGKILL) };
    let mut second = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            second = helper(&env.status().raw).filter(|p| *p != first);
            second.is_some()
        }),
        "not restarted; log:\n{}",
        server.log_text()
    );
    assert!(env.status().raw.contains("restarts 1"));
    assert_eq!(zombies_of(server.pid()), Vec::<i32>::new());
    // A pending name's handshake fails with an alert; the server serves
    // everything else meanwhile.
    let pending = https_get(&client(ECDSA), env.port, Some(NAME), "/");
    assert!(
        pending.as_ref().is_err_and(|e| e.contains("alert")),
        "{pending:?}"
    );
    assert_eq!(get(http, "/").expect("plain HTTP").status, 200);
    // The pending name is reported with why.
    let raw = env.status().raw;
    assert!(raw.contains(&format!("acme: {NAME} state=")), "{raw}");
    assert!(raw.contains("pending=\""), "{raw}");

    // A reload to a config without ACME stops it.
    env.write_config(&env.simple_config());
    let out = env.reload();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        wait_until(Duration::from_secs(10), || helper(&env.status().raw)
            .is_none()
            && !children_of(server.pid()).contains(&second.unwrap_or(0))),
        "helper still there; log:\n{}",
        server.log_text()
    );
    assert!(!env.status().raw.contains("acme_helper"));
}

#[test]
fn a_binary_upgrade_replaces_the_helper() {
    use common::upgrade::{Upgradable, describe};
    let u = Upgradable::new("baton-old");
    let http = free_port();
    u.env.write_config(&config(&u.env, http));
    let server = u.start();
    let old = helper(&u.env.status().raw).expect("a helper");
    u.install_build();
    let out = u.upgrade();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let mut new = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            new = helper(&u.env.status().raw).filter(|p| *p != old);
            new.is_some() && !pid_alive(old)
        }),
        "the new image runs a helper of its own; log:\n{}",
        server.log_text()
    );
    let new = new.unwrap_or(0);
    assert!(children_of(server.pid()).contains(&new));
    // The old one is reaped by the new image.
    assert!(
        wait_until(Duration::from_secs(10), || zombies_of(server.pid())
            .is_empty()),
        "zombies: {:?}",
        zombies_of(server.pid())
    );
}
