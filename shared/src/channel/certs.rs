//! The certificate helper's channel (master ↔ helper), and the ACME
//! challenge messages the master passes on to workers.
//!
//! Same framing as the workers' channel (`super::Channel`): one enum per
//! direction, a tag per variant, every length checked before use. Bodies
//! are sequences of fields: `u8`, `i64`/`u64` little-endian, and byte
//! strings as a u32 length then the bytes.

use super::{ChannelError, MAX_FRAME, MAX_FRAME_TO_WORKER, Message};
use crate::config::acme::Challenge;

/// One certificate the helper keeps, as the master describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderSpec {
    /// The first name: its directory under `acme_dir/certs`.
    pub id: String,
    pub names: Vec<String>,
    pub directory: String,
    pub email: String,
    pub challenge: Challenge,
}

/// What the helper works from: sent at start and after every reload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HelperSettings {
    pub dir: String,
    /// `acme_ca` as PEM text (read by the master, which may read what the
    /// helper's user cannot); empty: the system's roots.
    pub ca_pem: Vec<u8>,
    pub renew_check_ms: u64,
    pub lock_stale_ms: u64,
    pub orders: Vec<OrderSpec>,
    /// Certificates whose OCSP staple the helper keeps fresh.
    pub staples: Vec<StapleSpec>,
}

/// One certificate to staple: its chain file (PEM, the certificate then
/// its issuer) and where the DER response is stored (the site's `ocsp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StapleSpec {
    pub chain: String,
    pub staple: String,
}

/// Master → helper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToHelper {
    /// The whole configuration; replaces the previous one.
    Settings(HelperSettings),
    /// One per `Http` or `Alpn` received, in order: every live worker has
    /// confirmed it serves the answer (`ToMaster::AcmeApplied`), so the CA
    /// may be told to validate.
    Published,
}

/// How one certificate stands, for `GET /status`, `-s status` and
/// `/metrics`. Times are seconds since the epoch, 0 for never.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NameStatus {
    pub id: String,
    /// The served certificate's notAfter (0: none yet).
    pub expires: i64,
    pub last_attempt: i64,
    /// The last failure (with the CA's problem document), empty after a
    /// success.
    pub last_error: String,
    /// When the next attempt is due (0: none planned).
    pub next_attempt: i64,
    /// Failed attempts in a row.
    pub failures: u64,
    /// Total failed attempts since the helper started.
    pub failures_total: u64,
    /// An order is under way now.
    pub ordering: bool,
    /// Why the certificate is being replaced out of turn (empty: it is
    /// not): its OCSP responder said it is revoked.
    pub reason: String,
}

/// Helper → master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromHelper {
    /// Privileges dropped, settings awaited.
    Ready,
    /// Workers must answer `/.well-known/acme-challenge/TOKEN` with this
    /// key authorization (HTTP-01) until `HttpDone`.
    Http {
        token: String,
        key_auth: String,
    },
    HttpDone {
        token: String,
    },
    /// Workers must answer an `acme-tls/1` handshake for `name` with this
    /// certificate (TLS-ALPN-01) until `AlpnDone`.
    Alpn {
        name: String,
        cert_pem: Vec<u8>,
        key_pem: Vec<u8>,
    },
    AlpnDone {
        name: String,
    },
    /// A new certificate for `id` is in `acme_dir` (written atomically).
    Issued {
        id: String,
    },
    /// How `id` stands now.
    Status(NameStatus),
}

/// The challenge answers every worker holds, sent whole when one changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Challenges {
    /// Bumped at each change; a worker confirms the version it applied.
    pub version: u64,
    /// (token, key authorization).
    pub http: Vec<(String, String)>,
    /// (name, certificate PEM, key PEM).
    pub alpn: Vec<(String, Vec<u8>, Vec<u8>)>,
}

const TAG_SETTINGS: u8 = 1;
const TAG_PUBLISHED: u8 = 2;
const TAG_READY: u8 = 1;
const TAG_HTTP: u8 = 2;
const TAG_HTTP_DONE: u8 = 3;
const TAG_ALPN: u8 = 4;
const TAG_ALPN_DONE: u8 = 5;
const TAG_ISSUED: u8 = 6;
const TAG_STATUS: u8 = 7;

/// Appends fields to a body.
struct W<'a>(&'a mut Vec<u8>);

impl W<'_> {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(&b[..len as usize]);
        self
    }
    /// Text cut to `max` bytes on a char boundary (a frame is bounded).
    fn text(&mut self, s: &str, max: usize) -> &mut Self {
        let mut end = s.len().min(max);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.bytes(&s.as_bytes()[..end])
    }
}

/// Reads fields from a body; `None` on anything short or malformed.
struct R<'a>(&'a [u8]);

impl R<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&v, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(v)
    }
    fn u64(&mut self) -> Option<u64> {
        let (v, rest) = self.0.split_first_chunk::<8>()?;
        self.0 = rest;
        Some(u64::from_le_bytes(*v))
    }
    fn i64(&mut self) -> Option<i64> {
        let (v, rest) = self.0.split_first_chunk::<8>()?;
        self.0 = rest;
        Some(i64::from_le_bytes(*v))
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let (len, rest) = self.0.split_first_chunk::<4>()?;
        let (b, rest) = rest.split_at_checked(u32::from_le_bytes(*len) as usize)?;
        self.0 = rest;
        Some(b.to_vec())
    }
    fn text(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?).ok()
    }
    /// A count of items, each at least `min_size` bytes: bounded by what
    /// is left, so a forged count cannot make us allocate.
    fn count(&mut self, min_size: usize) -> Option<usize> {
        let n = usize::try_from(self.u64()?).ok()?;
        (n <= self.0.len() / min_size.max(1)).then_some(n)
    }
    fn end(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

fn bad(tag: u8, body: &[u8]) -> ChannelError {
    ChannelError::BadBody {
        tag,
        len: body.len(),
    }
}

fn challenge_byte(c: Challenge) -> u8 {
    match c {
        Challenge::Http01 => 1,
        Challenge::TlsAlpn01 => 2,
    }
}

impl Message for ToHelper {
    const MAX_LEN: usize = MAX_FRAME_TO_WORKER;

    fn encode(&self, out: &mut Vec<u8>) {
        let s = match self {
            ToHelper::Settings(s) => s,
            ToHelper::Published => {
                out.push(TAG_PUBLISHED);
                return;
            }
        };
        out.push(TAG_SETTINGS);
        let mut w = W(out);
        w.text(&s.dir, 4096)
            .bytes(&s.ca_pem)
            .u64(s.renew_check_ms)
            .u64(s.lock_stale_ms)
            .u64(s.orders.len() as u64);
        for o in &s.orders {
            w.text(&o.id, 255)
                .text(&o.directory, 4096)
                .text(&o.email, 255)
                .u8(challenge_byte(o.challenge))
                .u64(o.names.len() as u64);
            for n in &o.names {
                w.text(n, 255);
            }
        }
        w.u64(s.staples.len() as u64);
        for st in &s.staples {
            w.text(&st.chain, 4096).text(&st.staple, 4096);
        }
    }

    fn decode(frame: &[u8]) -> Result<Self, ChannelError> {
        let (&tag, body) = frame.split_first().ok_or(ChannelError::BadLength(0))?;
        if tag == TAG_PUBLISHED {
            return match body {
                [] => Ok(ToHelper::Published),
                _ => Err(bad(tag, body)),
            };
        }
        if tag != TAG_SETTINGS {
            return Err(ChannelError::UnknownTag(tag));
        }
        let read = || -> Option<HelperSettings> {
            let mut r = R(body);
            let dir = r.text()?;
            let ca_pem = r.bytes()?;
            let renew_check_ms = r.u64()?;
            let lock_stale_ms = r.u64()?;
            let n = r.count(29)?;
            let mut orders = Vec::with_capacity(n);
            for _ in 0..n {
                let id = r.text()?;
                let directory = r.text()?;
                let email = r.text()?;
                let challenge = match r.u8()? {
                    1 => Challenge::Http01,
                    2 => Challenge::TlsAlpn01,
                    _ => return None,
                };
                let count = r.count(4)?;
                let mut names = Vec::with_capacity(count);
                for _ in 0..count {
                    names.push(r.text()?);
                }
                orders.push(OrderSpec {
                    id,
                    names,
                    directory,
                    email,
                    challenge,
                });
            }
            // Two texts, each at least its 4-byte length.
            let n = r.count(8)?;
            let mut staples = Vec::with_capacity(n);
            for _ in 0..n {
                let chain = r.text()?;
                let staple = r.text()?;
                staples.push(StapleSpec { chain, staple });
            }
            r.end()?;
            Some(HelperSettings {
                dir,
                ca_pem,
                renew_check_ms,
                lock_stale_ms,
                orders,
                staples,
            })
        };
        read().map(ToHelper::Settings).ok_or_else(|| bad(tag, body))
    }
}

impl Message for FromHelper {
    const MAX_LEN: usize = MAX_FRAME;

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            FromHelper::Ready => out.push(TAG_READY),
            FromHelper::Http { token, key_auth } => {
                out.push(TAG_HTTP);
                W(out).text(token, 255).text(key_auth, 1024);
            }
            FromHelper::HttpDone { token } => {
                out.push(TAG_HTTP_DONE);
                W(out).text(token, 255);
            }
            FromHelper::Alpn {
                name,
                cert_pem,
                key_pem,
            } => {
                out.push(TAG_ALPN);
                W(out).text(name, 255).bytes(cert_pem).bytes(key_pem);
            }
            FromHelper::AlpnDone { name } => {
                out.push(TAG_ALPN_DONE);
                W(out).text(name, 255);
            }
            FromHelper::Issued { id } => {
                out.push(TAG_ISSUED);
                W(out).text(id, 255);
            }
            FromHelper::Status(s) => {
                out.push(TAG_STATUS);
                W(out)
                    .text(&s.id, 255)
                    .i64(s.expires)
                    .i64(s.last_attempt)
                    .text(&s.last_error, 8192)
                    .i64(s.next_attempt)
                    .u64(s.failures)
                    .u64(s.failures_total)
                    .u8(u8::from(s.ordering))
                    .text(&s.reason, 1024);
            }
        }
    }

    fn decode(frame: &[u8]) -> Result<Self, ChannelError> {
        let (&tag, body) = frame.split_first().ok_or(ChannelError::BadLength(0))?;
        let mut r = R(body);
        let msg = match tag {
            TAG_READY => Some(FromHelper::Ready),
            TAG_HTTP => (|| {
                Some(FromHelper::Http {
                    token: r.text()?,
                    key_auth: r.text()?,
                })
            })(),
            TAG_HTTP_DONE => r.text().map(|token| FromHelper::HttpDone { token }),
            TAG_ALPN => (|| {
                Some(FromHelper::Alpn {
                    name: r.text()?,
                    cert_pem: r.bytes()?,
                    key_pem: r.bytes()?,
                })
            })(),
            TAG_ALPN_DONE => r.text().map(|name| FromHelper::AlpnDone { name }),
            TAG_ISSUED => r.text().map(|id| FromHelper::Issued { id }),
            TAG_STATUS => (|| {
                Some(FromHelper::Status(NameStatus {
                    id: r.text()?,
                    expires: r.i64()?,
                    last_attempt: r.i64()?,
                    last_error: r.text()?,
                    next_attempt: r.i64()?,
                    failures: r.u64()?,
                    failures_total: r.u64()?,
                    ordering: match r.u8()? {
                        0 => false,
                        1 => true,
                        _ => return None,
                    },
                    reason: r.text()?,
                }))
            })(),
            t => return Err(ChannelError::UnknownTag(t)),
        };
        match msg {
            Some(m) if r.end().is_some() => Ok(m),
            _ => Err(bad(tag, body)),
        }
    }
}

/// `ToWorker::AcmeChallenges`' body.
pub(super) fn encode_challenges(c: &Challenges, out: &mut Vec<u8>) {
    let mut w = W(out);
    w.u64(c.version).u64(c.http.len() as u64);
    for (token, key_auth) in &c.http {
        w.text(token, 255).text(key_auth, 1024);
    }
    w.u64(c.alpn.len() as u64);
    for (name, cert, key) in &c.alpn {
        w.text(name, 255).bytes(cert).bytes(key);
    }
}

pub(super) fn decode_challenges(body: &[u8]) -> Option<Challenges> {
    let mut r = R(body);
    let version = r.u64()?;
    let n = r.count(8)?;
    let mut http = Vec::with_capacity(n);
    for _ in 0..n {
        http.push((r.text()?, r.text()?));
    }
    let n = r.count(12)?;
    let mut alpn = Vec::with_capacity(n);
    for _ in 0..n {
        alpn.push((r.text()?, r.bytes()?, r.bytes()?));
    }
    r.end()?;
    Some(Challenges {
        version,
        http,
        alpn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<M: Message + PartialEq + std::fmt::Debug>(m: M) {
        let mut out = Vec::new();
        m.encode(&mut out);
        assert_eq!(M::decode(&out).expect("decodes"), m);
        // Every cut short is refused, never a panic.
        for cut in 1..out.len() {
            let _ = M::decode(&out[..cut]);
        }
    }

    #[test]
    fn helper_messages_round_trip() {
        round_trip(ToHelper::Settings(HelperSettings {
            dir: "/var/lib/baton/acme".into(),
            ca_pem: b"-----BEGIN".to_vec(),
            renew_check_ms: 600_000,
            lock_stale_ms: 60_000,
            orders: vec![OrderSpec {
                id: "a.example".into(),
                names: vec!["a.example".into(), "www.a.example".into()],
                directory: "https://127.0.0.1:14000/dir".into(),
                email: String::new(),
                challenge: Challenge::TlsAlpn01,
            }],
            staples: vec![StapleSpec {
                chain: "/etc/baton/a.pem".into(),
                staple: "/var/lib/baton/ocsp/a.der".into(),
            }],
        }));
        round_trip(ToHelper::Published);
        round_trip(FromHelper::Ready);
        round_trip(FromHelper::Http {
            token: "t".into(),
            key_auth: "t.k".into(),
        });
        round_trip(FromHelper::HttpDone { token: "t".into() });
        round_trip(FromHelper::Alpn {
            name: "a.example".into(),
            cert_pem: vec![1, 2],
            key_pem: vec![3],
        });
        round_trip(FromHelper::AlpnDone { name: "n".into() });
        round_trip(FromHelper::Issued { id: "a".into() });
        round_trip(FromHelper::Status(NameStatus {
            id: "a".into(),
            expires: 5,
            last_attempt: -1,
            last_error: "urn:ietf:params:acme:error:connection".into(),
            next_attempt: 7,
            failures: 2,
            failures_total: 3,
            ordering: true,
            reason: "revoked".into(),
        }));
        let c = Challenges {
            version: 3,
            http: vec![("t".into(), "t.k".into())],
            alpn: vec![("a".into(), vec![1], vec![2])],
        };
        let mut out = Vec::new();
        encode_challenges(&c, &mut out);
        assert_eq!(decode_challenges(&out), Some(c.clone()));
        // And inside the frames workers and the master exchange.
        round_trip(super::super::ToWorker::AcmeChallenges(c));
        round_trip(super::super::ToMaster::AcmeApplied(u64::MAX));
    }

    #[test]
    fn forged_counts_do_not_allocate() {
        let mut body = vec![TAG_SETTINGS];
        W(&mut body)
            .text("d", 10)
            .bytes(b"")
            .u64(1)
            .u64(1)
            .u64(u64::MAX);
        assert!(ToHelper::decode(&body).is_err());
        assert!(decode_challenges(&u64::MAX.to_le_bytes()).is_none());
        assert!(FromHelper::decode(&[99]).is_err());
        assert!(FromHelper::decode(&[TAG_STATUS, 1, 2]).is_err());
    }
}
