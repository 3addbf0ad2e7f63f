//! The access log's view of a connection's requests: what a request was,
//! recorded once its response is sent or abandoned.

use std::time::{Instant, SystemTime};

use super::{Connection, Ctx};
use crate::access_log::Entry;

/// A request being answered, as the access log will record it.
pub(super) struct LogStart {
    pub(super) time: SystemTime,
    pub(super) start: Instant,
    pub(super) method: String,
    pub(super) target: String,
    pub(super) protocol: &'static str,
    pub(super) host: Option<String>,
    pub(super) referer: Option<String>,
    pub(super) user_agent: Option<String>,
    pub(super) site: Option<usize>,
}

/// A response on its way out: logged once sent (or abandoned).
pub(super) struct PendingLog {
    pub(super) start: LogStart,
    pub(super) status: u16,
    pub(super) bytes: u64,
    /// A proxied response: the server, its status, and how long its
    /// response head took.
    pub(super) upstream: Option<String>,
    pub(super) upstream_status: Option<u16>,
    pub(super) upstream_time: Option<std::time::Duration>,
}

impl Connection {
    /// Logs the response just sent (`complete`) or abandoned: an abandoned
    /// one logs no body bytes, as nothing says how much the client got.
    pub(super) fn log_done(&mut self, ctx: &mut Ctx, complete: bool) {
        let Some(p) = self.pending_log.take() else {
            return;
        };
        let s = &p.start;
        // Only a log line shows it (the metrics count statuses and bytes).
        let remote = match self.peer {
            Some(ip) if ctx.access_log.enabled() => ip.to_string(),
            Some(_) => String::new(),
            None => "unix:".to_owned(),
        };
        ctx.access_log.record(
            s.site,
            &Entry {
                remote: &remote,
                time: s.time,
                method: &s.method,
                target: &s.target,
                protocol: s.protocol,
                host: s.host.as_deref(),
                status: p.status,
                bytes: if complete { p.bytes } else { 0 },
                referer: s.referer.as_deref(),
                user_agent: s.user_agent.as_deref(),
                request_time: ctx.now.saturating_duration_since(s.start),
                upstream: p.upstream.as_deref(),
                upstream_status: p.upstream_status,
                upstream_time: p.upstream_time,
            },
        );
    }
}
