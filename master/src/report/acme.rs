//! ACME certificates in status and metrics: per certificate (named by its
//! first name) its expiry, the last attempt and error, whether it is
//! pending (no usable certificate yet) and the failures counted.

use std::fmt::Write;

use serde_json::json;

/// One ACME certificate as the master knows it.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub id: String,
    pub names: Vec<String>,
    /// `valid`, `pending` (no usable certificate: handshakes fail or get
    /// the placeholder) or `ordering` (an order is under way).
    pub state: &'static str,
    /// Why it is pending.
    pub pending: Option<String>,
    pub placeholder: bool,
    /// notAfter of the certificate served, seconds since the epoch; 0: none.
    pub expires: i64,
    pub last_attempt: i64,
    pub last_error: Option<String>,
    pub next_attempt: i64,
    /// Failures in a row, and since the master started.
    pub failures: u64,
    pub failures_total: u64,
    /// Why it is being replaced out of turn (revoked), if it is.
    pub reason: Option<String>,
}

/// The helper and its certificates.
#[derive(Debug, Clone, Default)]
pub struct Acme {
    /// The helper's pid; `None` when none runs.
    pub helper: Option<i32>,
    pub helper_restarts: u64,
    pub certs: Vec<View>,
}

fn date(secs: i64) -> String {
    if secs <= 0 {
        "never".into()
    } else {
        baton_shared::tls::http_date(secs).replace(' ', "_")
    }
}

/// `acme: a.example state=valid expires=... last_attempt=... failures=0`.
pub fn text(out: &mut String, a: &Acme) {
    if a.certs.is_empty() && a.helper.is_none() {
        return;
    }
    let _ = writeln!(
        out,
        "acme_helper: {} (restarts {})",
        a.helper
            .map_or("not running".into(), |p| format!("pid {p}")),
        a.helper_restarts
    );
    for c in &a.certs {
        let mut line = format!(
            "acme: {} state={} names={} expires={} last_attempt={} next_attempt={} failures={} failures_total={}",
            c.id,
            c.state,
            c.names.join(","),
            date(c.expires),
            date(c.last_attempt),
            date(c.next_attempt),
            c.failures,
            c.failures_total
        );
        if c.placeholder {
            line.push_str(" placeholder=yes");
        }
        if let Some(p) = &c.pending {
            let _ = write!(line, " pending=\"{}\"", p.replace('\n', " "));
        }
        if let Some(e) = &c.last_error {
            let _ = write!(line, " last_error=\"{}\"", e.replace('\n', " "));
        }
        if let Some(r) = &c.reason {
            let _ = write!(line, " reason=\"{}\"", r.replace('\n', " "));
        }
        let _ = writeln!(out, "{line}");
    }
}

pub fn json(a: &Acme) -> serde_json::Value {
    let certs: Vec<_> = a
        .certs
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "names": c.names,
                "state": c.state,
                "pending": c.pending,
                "placeholder": c.placeholder,
                "expires": (c.expires > 0).then_some(c.expires),
                "last_attempt": (c.last_attempt > 0).then_some(c.last_attempt),
                "next_attempt": (c.next_attempt > 0).then_some(c.next_attempt),
                "last_error": c.last_error,
                "failures": c.failures,
                "failures_total": c.failures_total,
                "reason": c.reason,
            })
        })
        .collect();
    json!({
        "helper_pid": a.helper,
        "helper_restarts": a.helper_restarts,
        "certificates": certs,
    })
}

/// (name, type, help, value of one certificate).
type Family = (&'static str, &'static str, &'static str, fn(&View) -> i64);

pub fn metrics(out: &mut String, a: &Acme) {
    if a.certs.is_empty() {
        return;
    }
    let families: [Family; 3] = [
        (
            "baton_acme_failures_total",
            "counter",
            "Failed ACME orders of a certificate (each logged with the CA's problem document).",
            |c| i64::try_from(c.failures_total).unwrap_or(i64::MAX),
        ),
        (
            "baton_acme_certificate_expiry_seconds",
            "gauge",
            "notAfter of the ACME certificate served, in seconds since the epoch (0: none yet).",
            |c| c.expires,
        ),
        (
            "baton_acme_pending",
            "gauge",
            "1 while a name has no usable ACME certificate (handshakes fail or get the placeholder).",
            |c| i64::from(c.pending.is_some()),
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for c in &a.certs {
            let _ = writeln!(
                out,
                "{name}{{certificate=\"{}\"}} {}",
                super::label(&c.id),
                value(c)
            );
        }
    }
    let name = "baton_acme_helper_restarts_total";
    let _ = writeln!(
        out,
        "# HELP {name} Certificate helper processes restarted after dying."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    let _ = writeln!(out, "{name} {}", a.helper_restarts);
}
