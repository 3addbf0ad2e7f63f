//! The messages that cross the channel and their byte encoding: one
//! enum per direction, a tag per variant, and bodies checked against the
//! length each tag requires.

use super::{ChannelError, MAX_FRAME, MAX_FRAME_TO_WORKER};
use crate::tls::CertBundle;

/// Master → worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToWorker {
    /// Stop accepting, finish in-flight requests, exit at zero connections.
    Drain,
    /// Exit now (fast stop).
    Stop,
    /// Log files were reopened (rotation): `files` fds come with this
    /// message, the error log first if `error_log` is set.
    ReopenLogs { error_log: bool, files: u32 },
    /// The complete new set of certificates (a file changed, or a reload
    /// picked them up): the worker verifies them and swaps its store.
    Certificates(Vec<CertBundle>),
    /// The session ticket keys, newest first (rotated by the master).
    TicketKeys(Vec<[u8; 32]>),
    /// Sent just before `Drain`: keep accepting on these listeners (by
    /// their position in the worker's list) while draining, until
    /// `CloseListeners` names them. They are retired sockets on which
    /// connections may still arrive that only this generation can serve.
    HoldListeners(Vec<u32>),
    /// Stop accepting on these listeners: accept what is queued on them,
    /// then close them (nothing more can arrive on them).
    CloseListeners(Vec<u32>),
    /// The active health of upstream servers (checked by the master), by
    /// their position in this worker's config: the whole state of every
    /// checked server, sent whenever one changes. A server not listed is
    /// up as far as active checks go.
    UpstreamHealth(Vec<HealthMark>),
    /// The ACME challenge answers (HTTP-01 tokens, TLS-ALPN-01
    /// certificates) the certificate helper needs served now, whole
    /// (`super::certs`).
    AcmeChallenges(super::certs::Challenges),
}

/// One upstream server's active health, in `UpstreamHealth` and in a new
/// worker's setup: indices into `config.proxy.upstreams` and its servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthMark {
    pub upstream: u32,
    pub server: u32,
    pub up: bool,
}

/// A worker's file cache, in `Stats`: lookups answered from it, lookups
/// that went to the disk (totals since the worker started), and the bytes
/// it holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileCacheStats {
    pub hits: u64,
    pub misses: u64,
    pub bytes: u64,
}

/// A worker's HTTP/2 counters, in `Stats` (for `/metrics`): totals since
/// the worker started.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Http2Counters {
    /// Connections that spoke HTTP/2.
    pub connections: u64,
    /// Streams clients opened.
    pub streams: u64,
    /// RST_STREAM frames received.
    pub resets_received: u64,
    /// GOAWAY frames sent, by error code (the index; the last slot counts
    /// codes past HTTP_1_1_REQUIRED).
    pub goaways: [u64; HTTP2_CODES],
}

/// HTTP/2 error codes counted one by one (NO_ERROR to HTTP_1_1_REQUIRED),
/// plus one slot for any other.
pub const HTTP2_CODES: usize = 15;

impl Http2Counters {
    /// Counts a GOAWAY sent with `code`.
    pub fn goaway(&mut self, code: u32) {
        let i = usize::try_from(code)
            .unwrap_or(HTTP2_CODES - 1)
            .min(HTTP2_CODES - 1);
        self.goaways[i] = self.goaways[i].saturating_add(1);
    }

    /// Adds `other` (saturating: a worker's counters are its word).
    pub fn add(&mut self, other: &Http2Counters) {
        self.connections = self.connections.saturating_add(other.connections);
        self.streams = self.streams.saturating_add(other.streams);
        self.resets_received = self.resets_received.saturating_add(other.resets_received);
        for (a, b) in self.goaways.iter_mut().zip(other.goaways) {
            *a = a.saturating_add(b);
        }
    }

    fn words(&self) -> impl Iterator<Item = u64> + '_ {
        [self.connections, self.streams, self.resets_received]
            .into_iter()
            .chain(self.goaways)
    }
}

/// The name of an HTTP/2 error code (RFC 9113 7), by `goaways` slot.
pub fn http2_code_name(code: usize) -> &'static str {
    const NAMES: [&str; HTTP2_CODES] = [
        "no_error",
        "protocol_error",
        "internal_error",
        "flow_control_error",
        "settings_timeout",
        "stream_closed",
        "frame_size_error",
        "refused_stream",
        "cancel",
        "compression_error",
        "connect_error",
        "enhance_your_calm",
        "inadequate_security",
        "http_1_1_required",
        "other",
    ];
    NAMES.get(code).copied().unwrap_or("other")
}

/// One upstream server as a worker sees it, in `Stats` (for `/metrics`):
/// totals since the worker started, and its state now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamCounters {
    pub upstream: String,
    pub server: String,
    /// Requests sent to it (each attempt).
    pub requests: u64,
    /// Failures (connect, reset, timeout, a malformed response).
    pub failures: u64,
    /// Idle connections in this worker's pool.
    pub idle: u64,
    /// Marked down by passive health now.
    pub down: bool,
}

/// At most this many servers are reported (the frame to the master is
/// 64 KiB); names are cut to `MAX_NAME` bytes.
pub const MAX_UPSTREAM_COUNTERS: usize = 256;
pub(super) const MAX_NAME: usize = 96;

/// Worker → master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToMaster {
    /// The worker has dropped privileges and is accepting.
    Ready,
    /// Periodic counters, for status and metrics (totals since the worker
    /// started): open connections, requests, responses by status class
    /// (1xx..5xx), body bytes sent.
    Stats {
        connections: u64,
        requests: u64,
        responses: [u64; 5],
        bytes: u64,
        file_cache: FileCacheStats,
        /// Per upstream server (the first `MAX_UPSTREAM_COUNTERS`).
        upstreams: Vec<UpstreamCounters>,
        /// HTTP/2 (after the upstreams; absent from a worker of an older
        /// image, adopted across a binary upgrade: zeros then). Boxed: the
        /// other messages are small.
        http2: Box<Http2Counters>,
    },
    /// The worker cannot serve (say, a site root its user cannot reach) and
    /// is exiting; the reason is for the log and for whoever asked for the
    /// reload. Sent instead of `Ready`.
    Failed(String),
    /// The log files of a `ReopenLogs` are in use; the old ones are closed.
    ReopenDone,
    /// Draining: the listeners are closed, this worker accepts nothing more.
    Draining,
    /// The log files of a `ReopenLogs` could not be taken (fds missing or
    /// truncated, a file that cannot be used): the worker keeps its old
    /// ones; the reason is for whoever asked for the reopen.
    ReopenFailed(String),
    /// The `AcmeChallenges` of this version are being served.
    AcmeApplied(u64),
}

/// A message that can cross the channel.
pub trait Message: Sized {
    /// The largest frame this message type may come in.
    const MAX_LEN: usize = MAX_FRAME;
    /// Whether messages of this type may carry fds; any fd that arrives
    /// on a channel receiving a type that carries none is an error.
    const TAKES_FDS: bool = false;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(frame: &[u8]) -> Result<Self, ChannelError>;
}

pub(super) const TAG_DRAIN: u8 = 1;
pub(super) const TAG_STOP: u8 = 2;
pub(super) const TAG_REOPEN_LOGS: u8 = 3;
pub(super) const TAG_CERTIFICATES: u8 = 4;
pub(super) const TAG_TICKET_KEYS: u8 = 5;
pub(super) const TAG_HOLD_LISTENERS: u8 = 6;
pub(super) const TAG_CLOSE_LISTENERS: u8 = 7;
pub(super) const TAG_UPSTREAM_HEALTH: u8 = 8;
pub(super) const TAG_ACME_CHALLENGES: u8 = 9;
pub(super) const TAG_READY: u8 = 1;
pub(super) const TAG_STATS: u8 = 2;
pub(super) const TAG_FAILED: u8 = 3;
pub(super) const TAG_REOPEN_DONE: u8 = 4;
pub(super) const TAG_DRAINING: u8 = 5;
pub(super) const TAG_REOPEN_FAILED: u8 = 6;
pub(super) const TAG_ACME_APPLIED: u8 = 7;

impl Message for ToWorker {
    const MAX_LEN: usize = MAX_FRAME_TO_WORKER;
    const TAKES_FDS: bool = true;

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ToWorker::Drain => out.push(TAG_DRAIN),
            ToWorker::Stop => out.push(TAG_STOP),
            ToWorker::ReopenLogs { error_log, files } => {
                out.push(TAG_REOPEN_LOGS);
                out.push(u8::from(*error_log));
                out.extend_from_slice(&files.to_le_bytes());
            }
            ToWorker::Certificates(bundles) => {
                out.push(TAG_CERTIFICATES);
                out.extend_from_slice(&(bundles.len() as u32).to_le_bytes());
                for b in bundles {
                    out.extend_from_slice(&b.site.to_le_bytes());
                    for bytes in [&b.cert_pem, &b.key_pem, &b.ocsp] {
                        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                        out.extend_from_slice(bytes);
                    }
                }
            }
            ToWorker::TicketKeys(keys) => {
                out.push(TAG_TICKET_KEYS);
                for k in keys {
                    out.extend_from_slice(k);
                }
            }
            ToWorker::HoldListeners(list) | ToWorker::CloseListeners(list) => {
                out.push(match self {
                    ToWorker::HoldListeners(_) => TAG_HOLD_LISTENERS,
                    _ => TAG_CLOSE_LISTENERS,
                });
                for i in list {
                    out.extend_from_slice(&i.to_le_bytes());
                }
            }
            ToWorker::UpstreamHealth(marks) => {
                out.push(TAG_UPSTREAM_HEALTH);
                for m in marks {
                    out.extend_from_slice(&m.upstream.to_le_bytes());
                    out.extend_from_slice(&m.server.to_le_bytes());
                    out.push(u8::from(m.up));
                }
            }
            ToWorker::AcmeChallenges(c) => {
                out.push(TAG_ACME_CHALLENGES);
                super::certs::encode_challenges(c, out);
            }
        }
    }

    fn decode(frame: &[u8]) -> Result<Self, ChannelError> {
        let (&tag, body) = frame.split_first().ok_or(ChannelError::BadLength(0))?;
        match tag {
            TAG_DRAIN => expect_body(tag, body, 0).map(|()| ToWorker::Drain),
            TAG_STOP => expect_body(tag, body, 0).map(|()| ToWorker::Stop),
            TAG_REOPEN_LOGS => {
                expect_body(tag, body, 5)?;
                let mut n = [0u8; 4];
                n.copy_from_slice(&body[1..5]);
                Ok(ToWorker::ReopenLogs {
                    error_log: body[0] != 0,
                    files: u32::from_le_bytes(n),
                })
            }
            TAG_CERTIFICATES => {
                decode_certificates(body)
                    .map(ToWorker::Certificates)
                    .ok_or(ChannelError::BadBody {
                        tag,
                        len: body.len(),
                    })
            }
            TAG_TICKET_KEYS => {
                if body.len() % 32 != 0 {
                    return Err(ChannelError::BadBody {
                        tag,
                        len: body.len(),
                    });
                }
                let keys = body
                    .chunks_exact(32)
                    .map(|c| {
                        let mut k = [0u8; 32];
                        k.copy_from_slice(c);
                        k
                    })
                    .collect();
                Ok(ToWorker::TicketKeys(keys))
            }
            TAG_HOLD_LISTENERS | TAG_CLOSE_LISTENERS => {
                if body.len() % 4 != 0 {
                    return Err(ChannelError::BadBody {
                        tag,
                        len: body.len(),
                    });
                }
                let list = body
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Ok(if tag == TAG_HOLD_LISTENERS {
                    ToWorker::HoldListeners(list)
                } else {
                    ToWorker::CloseListeners(list)
                })
            }
            TAG_UPSTREAM_HEALTH => {
                if body.len() % 9 != 0 || body.chunks_exact(9).any(|c| c[8] > 1) {
                    return Err(ChannelError::BadBody {
                        tag,
                        len: body.len(),
                    });
                }
                let marks = body
                    .chunks_exact(9)
                    .map(|c| HealthMark {
                        upstream: u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                        server: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
                        up: c[8] == 1,
                    })
                    .collect();
                Ok(ToWorker::UpstreamHealth(marks))
            }
            TAG_ACME_CHALLENGES => super::certs::decode_challenges(body)
                .map(ToWorker::AcmeChallenges)
                .ok_or(ChannelError::BadBody {
                    tag,
                    len: body.len(),
                }),
            t => Err(ChannelError::UnknownTag(t)),
        }
    }
}

impl Message for ToMaster {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ToMaster::Ready => out.push(TAG_READY),
            ToMaster::Stats {
                connections,
                requests,
                responses,
                bytes,
                file_cache,
                upstreams,
                http2,
            } => {
                out.push(TAG_STATS);
                for n in [*connections, *requests]
                    .iter()
                    .chain(responses.iter())
                    .chain([*bytes, file_cache.hits, file_cache.misses, file_cache.bytes].iter())
                {
                    out.extend_from_slice(&n.to_le_bytes());
                }
                encode_upstreams(out, upstreams);
                for n in http2.words() {
                    out.extend_from_slice(&n.to_le_bytes());
                }
            }
            ToMaster::Failed(reason) => {
                out.push(TAG_FAILED);
                push_text(out, reason);
            }
            ToMaster::ReopenDone => out.push(TAG_REOPEN_DONE),
            ToMaster::Draining => out.push(TAG_DRAINING),
            ToMaster::ReopenFailed(reason) => {
                out.push(TAG_REOPEN_FAILED);
                push_text(out, reason);
            }
            ToMaster::AcmeApplied(version) => {
                out.push(TAG_ACME_APPLIED);
                out.extend_from_slice(&version.to_le_bytes());
            }
        }
    }

    fn decode(frame: &[u8]) -> Result<Self, ChannelError> {
        let (&tag, body) = frame.split_first().ok_or(ChannelError::BadLength(0))?;
        match tag {
            TAG_READY => {
                expect_body(tag, body, 0)?;
                Ok(ToMaster::Ready)
            }
            TAG_STATS => {
                let bad = ChannelError::BadBody {
                    tag,
                    len: body.len(),
                };
                let Some((fixed, rest)) = body.split_at_checked(11 * 8) else {
                    return Err(bad);
                };
                let (upstreams, rest) = decode_upstreams(rest).ok_or(bad)?;
                let http2 = decode_http2(rest).ok_or(ChannelError::BadBody {
                    tag,
                    len: body.len(),
                })?;
                let body = fixed;
                let mut n = body.chunks_exact(8).map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    u64::from_le_bytes(b)
                });
                let mut next = || n.next().unwrap_or(0);
                Ok(ToMaster::Stats {
                    connections: next(),
                    requests: next(),
                    responses: [next(), next(), next(), next(), next()],
                    bytes: next(),
                    file_cache: FileCacheStats {
                        hits: next(),
                        misses: next(),
                        bytes: next(),
                    },
                    upstreams,
                    http2: Box::new(http2),
                })
            }
            TAG_FAILED => Ok(ToMaster::Failed(String::from_utf8_lossy(body).into_owned())),
            TAG_REOPEN_DONE => expect_body(tag, body, 0).map(|()| ToMaster::ReopenDone),
            TAG_DRAINING => expect_body(tag, body, 0).map(|()| ToMaster::Draining),
            TAG_REOPEN_FAILED => Ok(ToMaster::ReopenFailed(
                String::from_utf8_lossy(body).into_owned(),
            )),
            TAG_ACME_APPLIED => body
                .try_into()
                .map(|b| ToMaster::AcmeApplied(u64::from_le_bytes(b)))
                .map_err(|_| ChannelError::BadBody {
                    tag,
                    len: body.len(),
                }),
            t => Err(ChannelError::UnknownTag(t)),
        }
    }
}

/// `Stats`' upstream counters: a count, then per server two short
/// strings (a length byte, the bytes) and four u64s. Bounded to fit the
/// frame: at most `MAX_UPSTREAM_COUNTERS` entries of at most 234 bytes.
pub(super) fn encode_upstreams(out: &mut Vec<u8>, list: &[UpstreamCounters]) {
    let n = list.len().min(MAX_UPSTREAM_COUNTERS);
    out.extend_from_slice(&(n as u16).to_le_bytes());
    for u in &list[..n] {
        for text in [&u.upstream, &u.server] {
            let mut end = text.len().min(MAX_NAME);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            out.push(end as u8);
            out.extend_from_slice(&text.as_bytes()[..end]);
        }
        for v in [u.requests, u.failures, u.idle, u64::from(u.down)] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// `Http2Counters` as `encode` wrote them, or nothing (an older worker).
fn decode_http2(b: &[u8]) -> Option<Http2Counters> {
    if b.is_empty() {
        return Some(Http2Counters::default());
    }
    if b.len() != (3 + HTTP2_CODES) * 8 {
        return None;
    }
    let mut n = b.chunks_exact(8).map(|c| {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        u64::from_le_bytes(w)
    });
    let mut next = || n.next().unwrap_or(0);
    let mut c = Http2Counters {
        connections: next(),
        streams: next(),
        resets_received: next(),
        goaways: [0; HTTP2_CODES],
    };
    for g in &mut c.goaways {
        *g = next();
    }
    Some(c)
}

/// The upstreams and what follows them; `None` if malformed; every length
/// is checked before use.
fn decode_upstreams(mut b: &[u8]) -> Option<(Vec<UpstreamCounters>, &[u8])> {
    if b.is_empty() {
        return Some((Vec::new(), b));
    }
    let (count, rest) = b.split_first_chunk::<2>()?;
    b = rest;
    let count = usize::from(u16::from_le_bytes(*count));
    if count > MAX_UPSTREAM_COUNTERS {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let mut text = || -> Option<String> {
            let (&len, rest) = b.split_first()?;
            let (t, rest) = rest.split_at_checked(usize::from(len))?;
            b = rest;
            Some(String::from_utf8_lossy(t).into_owned())
        };
        let upstream = text()?;
        let server = text()?;
        let mut num = || -> Option<u64> {
            let (v, rest) = b.split_first_chunk::<8>()?;
            b = rest;
            Some(u64::from_le_bytes(*v))
        };
        out.push(UpstreamCounters {
            upstream,
            server,
            requests: num()?,
            failures: num()?,
            idle: num()?,
            down: num()? != 0,
        });
    }
    Some((out, b))
}

/// A reason, kept well under MAX_FRAME, cut on a char boundary.
fn push_text(out: &mut Vec<u8>, reason: &str) {
    let mut end = reason.len().min(4096);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&reason.as_bytes()[..end]);
}

/// The body of a `Certificates` frame; `None` if it is malformed. Every
/// length is checked against what is left before it is used.
fn decode_certificates(body: &[u8]) -> Option<Vec<CertBundle>> {
    fn u32_at(b: &mut &[u8]) -> Option<u32> {
        let (head, rest) = b.split_first_chunk::<4>()?;
        *b = rest;
        Some(u32::from_le_bytes(*head))
    }
    fn bytes_at(b: &mut &[u8]) -> Option<Vec<u8>> {
        let len = u32_at(b)? as usize;
        if b.len() < len {
            return None;
        }
        let (head, rest) = b.split_at(len);
        *b = rest;
        Some(head.to_vec())
    }
    let mut b = body;
    let count = u32_at(&mut b)?;
    let mut out = Vec::new();
    for _ in 0..count {
        let site = u32_at(&mut b)?;
        out.push(CertBundle {
            site,
            cert_pem: bytes_at(&mut b)?,
            key_pem: bytes_at(&mut b)?,
            ocsp: bytes_at(&mut b)?,
        });
    }
    b.is_empty().then_some(out)
}

fn expect_body(tag: u8, body: &[u8], len: usize) -> Result<(), ChannelError> {
    if body.len() == len {
        Ok(())
    } else {
        Err(ChannelError::BadBody {
            tag,
            len: body.len(),
        })
    }
}
