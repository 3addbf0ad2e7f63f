//! Active health checks in status and metrics: the master's own state
//! (one per server), not a sum over workers.

use std::fmt::Write;

use serde_json::json;

use crate::health::View;

/// `upstream_health: app 127.0.0.1:9000 down (status 500, expected 200)`.
pub fn text(out: &mut String, list: &[View]) {
    for v in list {
        let state = match (v.up, v.checked) {
            (true, true) => "up",
            (true, false) => "up (not checked yet)",
            (false, _) => "down",
        };
        let why = v
            .last_error
            .as_ref()
            .map(|e| format!(" ({})", e.replace('\n', " ")))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "upstream_health: {} {} {state}{why}",
            v.upstream, v.server
        );
    }
}

pub fn json(list: &[View]) -> serde_json::Value {
    list.iter()
        .map(|v| {
            json!({
                "upstream": v.upstream,
                "server": v.server,
                "up": v.up,
                "checked": v.checked,
                "last_error": v.last_error,
            })
        })
        .collect()
}

/// `baton_upstream_health{upstream,server}`: 1 up, 0 down.
pub fn metrics(out: &mut String, list: &[View]) {
    if list.is_empty() {
        return;
    }
    let name = "baton_upstream_health";
    let _ = writeln!(
        out,
        "# HELP {name} Active health check state of an upstream server (1 up, 0 down)."
    );
    let _ = writeln!(out, "# TYPE {name} gauge");
    for v in list {
        let _ = writeln!(
            out,
            "{name}{{upstream=\"{}\",server=\"{}\"}} {}",
            super::label(&v.upstream),
            super::label(&v.server),
            u8::from(v.up)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_everywhere() {
        let list = vec![
            View {
                upstream: "app".into(),
                server: "127.0.0.1:9000".into(),
                up: false,
                checked: true,
                last_error: Some("status 500, expected 200".into()),
            },
            View {
                upstream: "a\"b".into(),
                server: "unix:/s".into(),
                up: true,
                checked: false,
                last_error: None,
            },
        ];
        let mut m = String::new();
        metrics(&mut m, &list);
        assert!(m.contains("baton_upstream_health{upstream=\"app\",server=\"127.0.0.1:9000\"} 0"));
        assert!(m.contains("baton_upstream_health{upstream=\"a\\\"b\",server=\"unix:/s\"} 1"));
        let mut t = String::new();
        text(&mut t, &list);
        assert!(t.contains("upstream_health: app 127.0.0.1:9000 down (status 500, expected 200)"));
        assert_eq!(json(&list)[1]["checked"], false);
    }
}
