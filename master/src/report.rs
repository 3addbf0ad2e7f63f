//! What the master tells about itself: `baton -s status` (text), the admin
//! API's `GET /status` (JSON) and `GET /metrics` (Prometheus text format),
//! all three rendered from one `Snapshot` so they never disagree.

use std::fmt::Write;

use serde_json::json;

use baton_shared::channel::FileCacheStats;

use crate::reload::Outcome;

pub mod acme;
mod health;
mod metrics;

use metrics::label;
pub use metrics::metrics;

pub struct WorkerView {
    pub pid: i32,
    pub generation: u64,
    pub slot: usize,
    pub state: &'static str,
    pub connections: u64,
    pub requests: u64,
    pub responses: [u64; 5],
    pub bytes: u64,
    pub file_cache: FileCacheStats,
    /// Its upstream servers' counters.
    pub upstreams: Vec<baton_shared::channel::UpstreamCounters>,
    /// Its HTTP/2 counters.
    pub http2: baton_shared::channel::Http2Counters,
}

pub struct Snapshot {
    pub pid: u32,
    pub state: &'static str,
    pub config: String,
    pub uptime_secs: u64,
    pub generation: u64,
    /// (number, phase) of every live generation.
    pub generations: Vec<(u64, &'static str)>,
    pub workers: Vec<WorkerView>,
    pub restarts: u64,
    /// Slots of the serving generation that are crash-looping: (slot, crashes).
    pub crash_loop: Vec<(usize, u32)>,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// The last reload and how many seconds ago it ended.
    pub last_reload: Option<(Outcome, u64)>,
    /// Requests served by workers that have exited (their last report).
    pub requests_by_gone_workers: u64,
    pub responses_by_gone_workers: [u64; 5],
    pub bytes_by_gone_workers: u64,
    /// File cache (hits, misses) of workers that have exited.
    pub file_cache_by_gone_workers: (u64, u64),
    /// HTTP/2 counters of workers that have exited.
    pub http2_by_gone_workers: baton_shared::channel::Http2Counters,
    /// What an operator should act on (an OCSP staple refused or expired).
    pub warnings: Vec<String>,
    /// Where the reload transaction is: `idle`, or its state and the
    /// generation it is about.
    pub reload: String,
    /// Draining generations stopped early by `max_draining_generations`.
    pub draining_stopped: u64,
    /// Active health checks: the master's state of each checked server.
    pub health: Vec<crate::health::View>,
    /// ACME certificates and the helper.
    pub acme: acme::Acme,
}

/// `baton -s status`: one `key: value` line each, workers one per line.
pub fn text(s: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "pid: {}", s.pid);
    let _ = writeln!(out, "state: {}", s.state);
    let _ = writeln!(out, "config: {}", s.config);
    let _ = writeln!(out, "uptime: {}s", s.uptime_secs);
    let _ = writeln!(out, "generation: {}", s.generation);
    let _ = writeln!(out, "reload: {}", s.reload);
    let generations: Vec<String> = s
        .generations
        .iter()
        .map(|(n, phase)| format!("{n} {phase}"))
        .collect();
    let _ = writeln!(out, "generations: {}", generations.join(", "));
    for w in &s.workers {
        let _ = writeln!(
            out,
            "worker: pid={} generation={} slot={} state={} connections={} requests={}",
            w.pid, w.generation, w.slot, w.state, w.connections, w.requests
        );
    }
    let _ = writeln!(out, "restarts: {}", s.restarts);
    let _ = writeln!(out, "draining_stopped: {}", s.draining_stopped);
    let looping: Vec<String> = s
        .crash_loop
        .iter()
        .map(|(slot, crashes)| format!("slot {slot} ({crashes} crashes)"))
        .collect();
    let _ = writeln!(
        out,
        "crash_loop: {}",
        if looping.is_empty() {
            "no".to_string()
        } else {
            looping.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "reloads: {} ok, {} failed",
        s.reloads_ok, s.reloads_failed
    );
    match &s.last_reload {
        None => {
            let _ = writeln!(out, "last_reload: none");
        }
        Some((outcome, ago)) => {
            // Multi-line errors stay on one status line.
            let text = outcome.describe().replace('\n', " | ");
            let _ = writeln!(out, "last_reload: {text} ({ago}s ago)");
        }
    }
    health::text(&mut out, &s.health);
    acme::text(&mut out, &s.acme);
    for w in &s.warnings {
        let _ = writeln!(out, "warning: {}", w.replace('\n', " | "));
    }
    out
}

/// `GET /status`.
pub fn json(s: &Snapshot) -> serde_json::Value {
    let workers: Vec<_> = s
        .workers
        .iter()
        .map(|w| {
            json!({
                "pid": w.pid,
                "generation": w.generation,
                "slot": w.slot,
                "state": w.state,
                "connections": w.connections,
                "requests": w.requests,
                "file_cache": {
                    "hits": w.file_cache.hits,
                    "misses": w.file_cache.misses,
                    "bytes": w.file_cache.bytes,
                },
            })
        })
        .collect();
    let last_reload = s.last_reload.as_ref().map(|(outcome, ago)| {
        let (result, error) = match outcome {
            Outcome::Ok { .. } => ("ok", None),
            Outcome::Invalid(e) => ("invalid", Some(e.to_string())),
            Outcome::Failed(e) => ("failed", Some(e.clone())),
            Outcome::Forbidden(_) => ("refused", Some(outcome.describe())),
        };
        let mut v = json!({
            "result": result,
            "error": error,
            "seconds_ago": ago,
            "detail": outcome.http().1,
        });
        if let Outcome::Ok { generation, .. } = outcome {
            v["generation"] = json!(generation);
        }
        v
    });
    json!({
        "pid": s.pid,
        "state": s.state,
        "config": s.config,
        "uptime_seconds": s.uptime_secs,
        "generation": s.generation,
        "workers": workers,
        "restarts": s.restarts,
        "reload": s.reload,
        "draining_stopped": s.draining_stopped,
        "crash_loop": s.crash_loop.iter().map(|(slot, n)| json!({"slot": slot, "crashes": n})).collect::<Vec<_>>(),
        "reloads": { "ok": s.reloads_ok, "failed": s.reloads_failed },
        "last_reload": last_reload,
        "warnings": s.warnings,
        "upstream_health": health::json(&s.health),
        "acme": acme::json(&s.acme),
    })
}

#[cfg(test)]
mod tests {
    use super::metrics::upstream_metrics;
    use super::*;

    /// Workers report their own counters: the largest ones, from two
    /// workers and from workers gone, saturate instead of panicking.
    #[test]
    fn upstream_metrics_sum_the_workers() {
        use baton_shared::channel::UpstreamCounters;
        let worker = |requests, down| WorkerView {
            pid: 1,
            generation: 1,
            slot: 0,
            state: "serving",
            connections: 0,
            requests: 0,
            responses: [0; 5],
            bytes: 0,
            file_cache: FileCacheStats::default(),
            http2: Default::default(),
            upstreams: vec![UpstreamCounters {
                upstream: "app".into(),
                server: "127.0.0.1:9000".into(),
                requests,
                failures: 1,
                idle: 2,
                down,
            }],
        };
        let mut out = String::new();
        let s = Snapshot {
            pid: 1,
            state: "running",
            config: String::new(),
            uptime_secs: 0,
            generation: 1,
            generations: Vec::new(),
            workers: vec![worker(3, true), worker(4, false)],
            restarts: 0,
            crash_loop: Vec::new(),
            reloads_ok: 0,
            reloads_failed: 0,
            last_reload: None,
            requests_by_gone_workers: 0,
            responses_by_gone_workers: [0; 5],
            bytes_by_gone_workers: 0,
            file_cache_by_gone_workers: (0, 0),
            http2_by_gone_workers: Default::default(),
            warnings: Vec::new(),
            reload: "idle".into(),
            draining_stopped: 0,
            health: Vec::new(),
            acme: Default::default(),
        };
        upstream_metrics(&mut out, &s);
        let l = "{upstream=\"app\",server=\"127.0.0.1:9000\"}";
        for line in [
            format!("baton_upstream_requests_total{l} 7"),
            format!("baton_upstream_failures_total{l} 2"),
            format!("baton_upstream_idle_connections{l} 4"),
            format!("baton_upstream_down_workers{l} 1"),
        ] {
            assert!(out.lines().any(|x| x == line), "{line} in\n{out}");
        }
    }

    #[test]
    fn counters_the_workers_report_saturate() {
        let worker = |pid| WorkerView {
            pid,
            generation: 1,
            slot: 0,
            state: "serving",
            connections: u64::MAX,
            requests: u64::MAX,
            responses: [u64::MAX; 5],
            bytes: u64::MAX,
            file_cache: FileCacheStats {
                hits: u64::MAX,
                misses: u64::MAX,
                bytes: u64::MAX,
            },
            upstreams: Vec::new(),
            http2: Default::default(),
        };
        let s = Snapshot {
            pid: 1,
            state: "running",
            config: "/c.toml".into(),
            uptime_secs: 0,
            generation: 1,
            generations: vec![(1, "serving")],
            workers: vec![worker(2), worker(3)],
            restarts: 0,
            crash_loop: Vec::new(),
            reloads_ok: 0,
            reloads_failed: 0,
            last_reload: None,
            requests_by_gone_workers: u64::MAX,
            responses_by_gone_workers: [u64::MAX; 5],
            bytes_by_gone_workers: u64::MAX,
            file_cache_by_gone_workers: (u64::MAX, u64::MAX),
            http2_by_gone_workers: Default::default(),
            warnings: Vec::new(),
            reload: "idle".into(),
            draining_stopped: 0,
            health: Vec::new(),
            acme: Default::default(),
        };
        let m = metrics(&s);
        assert!(
            m.contains(&format!("baton_requests_total {}", u64::MAX)),
            "{m}"
        );
        assert!(m.contains(&format!(
            "baton_connections{{generation=\"1\"}} {}",
            u64::MAX
        )));
        let _ = text(&s);
        let _ = json(&s);
    }
}
