//! WebSocket (and any Upgrade) through the proxy: a two-way tunnel after
//! the 101; across a reload the tunnels keep working on the old
//! generation until its grace, then each client gets a close frame 1001
//! at a frame boundary.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::backend::proxy_config;
use common::websocket::{WsBackend, WsClient};
use common::{Env, Server, wait_until};

fn start(env: &Env, ws: &WsBackend, grace: &str, route_extra: &str) -> Server {
    let text = proxy_config(
        env,
        "",
        &format!(
            "[[upstream]]\nname = \"ws\"\nservers = [\"127.0.0.1:{}\"]\n",
            ws.port
        ),
        &format!("[[site.route]]\npath = \"/ws\"\nproxy = \"ws\"\n{route_extra}"),
    )
    .replace("grace = \"5s\"", &format!("grace = \"{grace}\""));
    env.write_config(&text);
    env.start()
}

#[test]
fn a_websocket_echoes_through_the_proxy() {
    let env = Env::new();
    let ws = WsBackend::start();
    let _server = start(&env, &ws, "5s", "");
    let mut c = WsClient::connect(env.port, "/ws").unwrap();
    for i in 0..50 {
        assert!(c.echo(&format!("message {i}")));
    }
    let big = "x".repeat(300_000);
    assert!(c.echo(&big));
    // The client closes: the server's close comes back, then the end.
    c.w.write_all(&common::websocket::frame(0x8, &[0x03, 0xe8], true))
        .unwrap();
    let (op, _) = c.recv().unwrap();
    assert_eq!(op, 0x8);
    assert!(c.recv().is_err(), "the tunnel ends after the close");
}

#[test]
fn websocket_false_passes_no_upgrade() {
    let env = Env::new();
    let ws = WsBackend::start();
    let _server = start(&env, &ws, "5s", "websocket = false\n");
    let err = WsClient::connect(env.port, "/ws").err().unwrap();
    assert!(err.contains(" 426 "), "{err}");
    assert_eq!(ws.upgraded.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(ws.plain.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn a_hundred_tunnels_across_a_reload_get_close_1001_after_grace() {
    let env = Env::new();
    let ws = WsBackend::start();
    let server = start(&env, &ws, "3s", "");
    let mut clients: Vec<WsClient> = (0..100)
        .map(|i| WsClient::connect(env.port, "/ws").unwrap_or_else(|e| panic!("{i}: {e}")))
        .collect();
    for c in &mut clients {
        assert!(c.echo("before"));
    }
    let old = env.status().serving_pids();
    let reloaded = Instant::now();
    let out = env.reload();
    assert!(out.status.success());
    // The tunnels live on in the old generation, echoing.
    for c in &mut clients {
        assert!(c.echo("during the drain"));
    }
    // New connections reach the new generation.
    let mut fresh = WsClient::connect(env.port, "/ws").unwrap();
    assert!(fresh.echo("new generation"));
    // At the end of the grace, each gets a close frame 1001 (Going Away).
    for (i, c) in clients.iter_mut().enumerate() {
        c.r.get_ref()
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (op, payload) = c.recv().unwrap_or_else(|e| panic!("{i}: {e}"));
        assert_eq!((op, payload.as_slice()), (0x8, &[0x03, 0xe9][..]), "{i}");
    }
    let took = reloaded.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(6),
        "closed after {took:?} (grace 3 s, tunnels end 1.5 s into the drain)"
    );
    // The old workers exit once their tunnels are closed, before the
    // master would kill them.
    assert!(wait_until(Duration::from_secs(5), || old
        .iter()
        .all(|&p| !common::pid_alive(p))));
    assert!(
        !server
            .log_text()
            .contains("still draining after the grace period"),
        "{}",
        server.log_text()
    );
    assert!(fresh.echo("still there"));
}

#[test]
fn the_close_frame_never_lands_inside_a_frame() {
    let env = Env::new();
    let ws = WsBackend::start();
    let _server = start(&env, &ws, "2s", "");
    let mut c = WsClient::connect(env.port, "/ws").unwrap();
    assert!(c.echo("hello"));
    assert!(env.reload().status.success());
    // A 4 MiB frame trickles out over ~1.3 s, across the end of the grace
    // (tunnels end 1 s after the drain began, with grace = 2 s).
    c.send_text("big:4194304");
    c.r.get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (op, payload) = c.recv().unwrap();
    assert_eq!((op, payload.len()), (0x2, 4_194_304));
    assert!(payload.iter().all(|&b| b == 0x5a));
    let (op, payload) = c.recv().unwrap();
    assert_eq!((op, payload.as_slice()), (0x8, &[0x03, 0xe9][..]));
}
