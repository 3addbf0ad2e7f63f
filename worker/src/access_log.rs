//! The access log: one line per answered request, in nginx's "combined"
//! format (plus the request time and upstream time) or as JSON.
//!
//! The files are opened by the master (workers have no write access to the
//! log directory) and arrive as fds: inherited at fork, replaced on
//! `ReopenLogs`. Lines are buffered per file and written whole, one
//! write(2) per buffer, to an O_APPEND file: lines of different workers
//! never interleave mid-line. Buffers are written when they pass 64 KiB, on
//! the worker's one-second tick, before a reopen, and at exit.
//!
//! Along the way it counts responses by status class and body bytes, which
//! the worker reports to the master for the metrics.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_shared::config::{Config, LogFormat};

/// Write a file's buffer once it holds this much.
const FLUSH_AT: usize = 64 * 1024;

/// One request, as logged.
pub struct Entry<'a> {
    pub remote: &'a str,
    /// When the request head arrived.
    pub time: SystemTime,
    pub method: &'a str,
    pub target: &'a str,
    pub protocol: &'static str,
    pub host: Option<&'a str>,
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    pub referer: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    /// From the request head's arrival to the last byte sent.
    pub request_time: Duration,
    /// A proxied request: the upstream server's address, its response
    /// status, and how long its response head took.
    pub upstream: Option<&'a str>,
    pub upstream_status: Option<u16>,
    pub upstream_time: Option<Duration>,
}

struct LogFile {
    file: File,
    buf: Vec<u8>,
}

pub struct AccessLog {
    files: Vec<LogFile>,
    format: LogFormat,
    /// For each site of the config, its file in `files`.
    site_file: Vec<Option<usize>>,
    /// Responses by status class (1xx..5xx) and body bytes, for `Stats`.
    pub responses: [u64; 5],
    pub bytes: u64,
}

impl AccessLog {
    /// `fds` are the files of `config.access_logs()`, in that order.
    pub fn new(config: &Config, fds: Vec<OwnedFd>) -> AccessLog {
        let paths = config.access_logs();
        let site_file = config
            .sites
            .iter()
            .map(|s| {
                let p = s.access_log.as_ref()?;
                paths.iter().position(|q| *q == p)
            })
            .collect();
        AccessLog {
            files: fds
                .into_iter()
                .map(|fd| LogFile {
                    file: File::from(fd),
                    buf: Vec::new(),
                })
                .collect(),
            format: config.access_log_format,
            site_file,
            responses: [0; 5],
            bytes: 0,
        }
    }

    /// Whether any line is ever written (any site has a log): if not, the
    /// request headers only a line shows need not be kept.
    pub fn enabled(&self) -> bool {
        !self.files.is_empty()
    }

    /// Records a request answered for site number `site`.
    pub fn record(&mut self, site: Option<usize>, e: &Entry<'_>) {
        let class = usize::from(e.status / 100).clamp(1, 5) - 1;
        self.responses[class] += 1;
        self.bytes += e.bytes;
        let Some(i) = site.and_then(|s| self.site_file.get(s).copied().flatten()) else {
            return;
        };
        let Some(f) = self.files.get_mut(i) else {
            return;
        };
        match self.format {
            LogFormat::Combined => combined(&mut f.buf, e),
            LogFormat::Json => json(&mut f.buf, e),
        }
        if f.buf.len() >= FLUSH_AT {
            write_out(f);
        }
    }

    /// Writes every buffered line.
    pub fn flush(&mut self) {
        for f in &mut self.files {
            write_out(f);
        }
    }

    /// The master reopened the files (rotation): finish the old ones, then
    /// write to the new. A count that does not match keeps the old files
    /// and says why.
    pub fn replace(&mut self, fds: Vec<OwnedFd>) -> Result<(), String> {
        self.flush();
        if fds.len() != self.files.len() {
            return Err(format!(
                "{} access log files came for {} logs",
                fds.len(),
                self.files.len()
            ));
        }
        for (f, fd) in self.files.iter_mut().zip(fds) {
            f.file = File::from(fd);
        }
        Ok(())
    }
}

/// One write(2) for the whole buffer of whole lines. A failure (disk full)
/// drops the lines with one log line: serving goes on.
fn write_out(f: &mut LogFile) {
    if f.buf.is_empty() {
        return;
    }
    if let Err(e) = f.file.write_all(&f.buf) {
        log::warn!("access log write failed, {} bytes lost: {e}", f.buf.len());
    }
    f.buf.clear();
}

/// `127.0.0.1 - - [21/Nov/2026:12:00:00 +0000] "GET / HTTP/1.1" 200 26 "-" "curl/8" 0.001 -`
fn combined(out: &mut Vec<u8>, e: &Entry<'_>) {
    let mut line = String::with_capacity(160);
    let _ = write!(line, "{} - - [{}] \"", escape(e.remote), clf_time(e.time));
    let _ = write!(
        line,
        "{} {} {}\" {} {} \"{}\" \"{}\" {:.3}",
        escape(e.method),
        escape(e.target),
        e.protocol,
        e.status,
        e.bytes,
        e.referer.map_or("-".into(), escape),
        e.user_agent.map_or("-".into(), escape),
        e.request_time.as_secs_f64()
    );
    // Proxied: the upstream's time, address and status (nginx's
    // $upstream_response_time, $upstream_addr, $upstream_status); a
    // static response keeps the single "-".
    match (e.upstream, e.upstream_time) {
        (Some(addr), t) => {
            match t {
                Some(t) => {
                    let _ = write!(line, " {:.3}", t.as_secs_f64());
                }
                None => line.push_str(" -"),
            }
            let status = e.upstream_status.map_or("-".to_owned(), |s| s.to_string());
            let _ = write!(line, " {} {status}", escape(addr));
        }
        (None, _) => line.push_str(" -"),
    }
    line.push('\n');
    out.extend_from_slice(line.as_bytes());
}

fn json(out: &mut Vec<u8>, e: &Entry<'_>) {
    let v = serde_json::json!({
        "time": rfc3339(e.time),
        "remote": e.remote,
        "host": e.host,
        "method": e.method,
        "uri": e.target,
        "protocol": e.protocol,
        "status": e.status,
        "bytes": e.bytes,
        "referer": e.referer,
        "user_agent": e.user_agent,
        "request_time": e.request_time.as_secs_f64(),
        "upstream_time": e.upstream_time.map(|t| t.as_secs_f64()),
        "upstream_addr": e.upstream,
        "upstream_status": e.upstream_status,
    });
    out.extend_from_slice(v.to_string().as_bytes());
    out.push(b'\n');
}

/// As nginx does: `"`, `\` and bytes outside printable ASCII become `\xHH`,
/// so a client cannot forge a line or a field.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b as char);
        }
    }
    out
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The civil date of a day count since 1970-01-01 (Howard Hinnant's
/// algorithm); written out because the worker needs nothing else from a
/// date crate.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn split(t: SystemTime) -> (i64, u32, u32, u64, u32) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (y, m, d) = civil((secs / 86_400) as i64);
    (y, m, d, secs % 86_400, since.subsec_millis())
}

/// `21/Nov/2026:12:00:00 +0000` (UTC, as the log is read across zones).
fn clf_time(t: SystemTime) -> String {
    let (y, m, d, s, _) = split(t);
    format!(
        "{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// `2026-11-21T12:00:00.123Z`
fn rfc3339(t: SystemTime) -> String {
    let (y, m, d, s, ms) = split(t);
    format!(
        "{y}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(time: SystemTime) -> Entry<'static> {
        Entry {
            remote: "127.0.0.1",
            time,
            method: "GET",
            target: "/a\"b",
            protocol: "HTTP/1.1",
            host: Some("example.org"),
            status: 200,
            bytes: 26,
            referer: None,
            user_agent: Some("curl/8\n"),
            request_time: Duration::from_millis(12),
            upstream: None,
            upstream_status: None,
            upstream_time: None,
        }
    }

    #[test]
    fn dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(20_413), (2025, 11, 21));
        assert_eq!(civil(-1), (1969, 12, 31));
        assert_eq!(civil(11_016), (2000, 2, 29));
        let t = UNIX_EPOCH + Duration::from_millis(1_763_726_400_123);
        assert_eq!(clf_time(t), "21/Nov/2025:12:00:00 +0000");
        assert_eq!(rfc3339(t), "2025-11-21T12:00:00.123Z");
    }

    #[test]
    fn combined_line_escapes_what_a_client_sends() {
        let mut out = Vec::new();
        combined(&mut out, &entry(UNIX_EPOCH));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "127.0.0.1 - - [01/Jan/1970:00:00:00 +0000] \"GET /a\\x22b HTTP/1.1\" 200 26 \"-\" \"curl/8\\x0A\" 0.012 -\n"
        );
    }

    #[test]
    fn json_line_is_one_object() {
        let mut out = Vec::new();
        json(&mut out, &entry(UNIX_EPOCH));
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["uri"], "/a\"b");
        assert_eq!(v["user_agent"], "curl/8\n");
        assert!(v["upstream_time"].is_null());
    }
}
