//! `GET /metrics`: the `Snapshot` in the Prometheus text exposition
//! format, one function per family group.

use std::fmt::Write;

use super::{Snapshot, acme, health};

/// `GET /metrics`, in the Prometheus text exposition format. Counters
/// include what workers that have since exited had reported, so they never
/// go down across reloads.
pub fn metrics(s: &Snapshot) -> String {
    let mut out = String::new();
    master_metrics(&mut out, s);
    worker_gauges(&mut out, s);
    traffic_counters(&mut out, s);
    upstream_metrics(&mut out, s);
    health::metrics(&mut out, &s.health);
    acme::metrics(&mut out, &s.acme);
    out
}

/// One metric family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A family with one unlabelled sample.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// What the master itself knows: generations, reloads, restarts.
fn master_metrics(out: &mut String, s: &Snapshot) {
    single(
        out,
        "baton_generation",
        "gauge",
        "The serving worker generation.",
        s.generation,
    );
    single(
        out,
        "baton_uptime_seconds",
        "gauge",
        "Seconds since the master started.",
        s.uptime_secs,
    );
    family(out, "baton_reloads_total", "counter", "Reloads by result.");
    let _ = writeln!(out, "baton_reloads_total{{result=\"ok\"}} {}", s.reloads_ok);
    let _ = writeln!(
        out,
        "baton_reloads_total{{result=\"failed\"}} {}",
        s.reloads_failed
    );
    single(
        out,
        "baton_worker_restarts_total",
        "counter",
        "Workers of the serving generation replaced after dying.",
        s.restarts,
    );
    single(
        out,
        "baton_draining_generations_stopped_total",
        "counter",
        "Draining generations stopped early because more than max_draining_generations were draining.",
        s.draining_stopped,
    );
}

/// The live workers, by generation.
fn worker_gauges(out: &mut String, s: &Snapshot) {
    family(
        out,
        "baton_workers",
        "gauge",
        "Worker processes by generation and state.",
    );
    let mut counts: Vec<((u64, &str), u64)> = Vec::new();
    for w in &s.workers {
        match counts
            .iter_mut()
            .find(|(k, _)| *k == (w.generation, w.state))
        {
            Some((_, n)) => *n += 1,
            None => counts.push(((w.generation, w.state), 1)),
        }
    }
    for ((generation, state), n) in &counts {
        let _ = writeln!(
            out,
            "baton_workers{{generation=\"{generation}\",state=\"{state}\"}} {n}"
        );
    }
    let mut by_gen: Vec<(u64, u64, u64)> = Vec::new();
    for w in &s.workers {
        match by_gen.iter_mut().find(|(g, _, _)| *g == w.generation) {
            Some((_, c, r)) => {
                *c = c.saturating_add(w.connections);
                *r = r.saturating_add(w.requests);
            }
            None => by_gen.push((w.generation, w.connections, w.requests)),
        }
    }
    family(
        out,
        "baton_connections",
        "gauge",
        "Open client connections, by generation.",
    );
    for (generation, connections, _) in &by_gen {
        let _ = writeln!(
            out,
            "baton_connections{{generation=\"{generation}\"}} {connections}"
        );
    }
    family(
        out,
        "baton_generation_requests",
        "gauge",
        "Requests served by the live workers of each generation.",
    );
    for (generation, _, requests) in &by_gen {
        let _ = writeln!(
            out,
            "baton_generation_requests{{generation=\"{generation}\"}} {requests}"
        );
    }
}

/// Requests, responses, bytes and the file cache, since the master started.
fn traffic_counters(out: &mut String, s: &Snapshot) {
    let live = total(s.workers.iter().map(|w| w.requests));
    single(
        out,
        "baton_requests_total",
        "counter",
        "Requests served since the master started.",
        live.saturating_add(s.requests_by_gone_workers),
    );
    family(
        out,
        "baton_responses_total",
        "counter",
        "Responses by status class since the master started.",
    );
    for (i, gone) in s.responses_by_gone_workers.iter().enumerate() {
        let live = total(s.workers.iter().map(|w| w.responses[i]));
        let _ = writeln!(
            out,
            "baton_responses_total{{class=\"{}xx\"}} {}",
            i + 1,
            live.saturating_add(*gone)
        );
    }
    let live = total(s.workers.iter().map(|w| w.bytes));
    single(
        out,
        "baton_sent_bytes_total",
        "counter",
        "Response body bytes sent since the master started.",
        live.saturating_add(s.bytes_by_gone_workers),
    );
    let (gone_hits, gone_misses) = s.file_cache_by_gone_workers;
    let hits = total(s.workers.iter().map(|w| w.file_cache.hits));
    single(
        out,
        "baton_file_cache_hits_total",
        "counter",
        "Static file lookups answered from a worker's file cache.",
        hits.saturating_add(gone_hits),
    );
    let misses = total(s.workers.iter().map(|w| w.file_cache.misses));
    single(
        out,
        "baton_file_cache_misses_total",
        "counter",
        "Static file lookups that went to the disk.",
        misses.saturating_add(gone_misses),
    );
    let held = total(s.workers.iter().map(|w| w.file_cache.bytes));
    single(
        out,
        "baton_file_cache_bytes",
        "gauge",
        "Bytes of files the workers' caches hold now.",
        held,
    );
    http2_metrics(out, s);
}

/// HTTP/2: connections, streams, resets received, GOAWAYs sent by reason;
/// live workers' counters plus those of workers that have exited.
fn http2_metrics(out: &mut String, s: &Snapshot) {
    use baton_shared::channel::{HTTP2_CODES, Http2Counters, http2_code_name};
    let mut sum: Http2Counters = s.http2_by_gone_workers.clone();
    for w in &s.workers {
        sum.add(&w.http2);
    }
    single(
        out,
        "baton_http2_connections_total",
        "counter",
        "Connections that spoke HTTP/2.",
        sum.connections,
    );
    single(
        out,
        "baton_http2_streams_total",
        "counter",
        "HTTP/2 streams opened by clients.",
        sum.streams,
    );
    single(
        out,
        "baton_http2_resets_received_total",
        "counter",
        "RST_STREAM frames received from HTTP/2 clients.",
        sum.resets_received,
    );
    family(
        out,
        "baton_http2_goaways_sent_total",
        "counter",
        "GOAWAY frames sent, by error code (no_error: drains and idle closes; enhance_your_calm: floods and rapid resets).",
    );
    for code in 0..HTTP2_CODES {
        let n = sum.goaways[code];
        // The usual reasons always, so a dashboard has a series to show.
        if n > 0 || matches!(code, 0 | 1 | 11) {
            let _ = writeln!(
                out,
                "baton_http2_goaways_sent_total{{reason=\"{}\"}} {n}",
                http2_code_name(code)
            );
        }
    }
}

/// Per upstream server, summed over the live workers (each worker has its
/// own pools and passive health; a replaced worker's counts go with it,
/// which Prometheus reads as a counter reset).
pub(super) fn upstream_metrics(out: &mut String, s: &Snapshot) {
    use std::collections::BTreeMap;
    // (upstream, server) -> (requests, failures, idle, workers marking it down)
    let mut by: BTreeMap<(&str, &str), [u64; 4]> = BTreeMap::new();
    for w in &s.workers {
        for u in &w.upstreams {
            let e = by.entry((&u.upstream, &u.server)).or_default();
            e[0] = e[0].saturating_add(u.requests);
            e[1] = e[1].saturating_add(u.failures);
            e[2] = e[2].saturating_add(u.idle);
            e[3] = e[3].saturating_add(u64::from(u.down));
        }
    }
    if by.is_empty() {
        return;
    }
    for (i, (name, kind, help)) in [
        (
            "baton_upstream_requests_total",
            "counter",
            "Requests sent to an upstream server (each attempt).",
        ),
        (
            "baton_upstream_failures_total",
            "counter",
            "Upstream failures: connect, reset, timeout, malformed response.",
        ),
        (
            "baton_upstream_idle_connections",
            "gauge",
            "Idle pooled connections to an upstream server.",
        ),
        (
            "baton_upstream_down_workers",
            "gauge",
            "Workers whose passive health has the server marked down.",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for ((up, server), v) in &by {
            let _ = writeln!(
                out,
                "{name}{{upstream=\"{}\",server=\"{}\"}} {}",
                label(up),
                label(server),
                v[i]
            );
        }
    }
}

/// A label value, escaped as the text format wants.
pub(super) fn label(t: &str) -> String {
    t.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sum of counters the workers report: they are the workers' word, so
/// it saturates rather than overflow (and panic) in the master.
fn total(counts: impl Iterator<Item = u64>) -> u64 {
    counts.fold(0, u64::saturating_add)
}
