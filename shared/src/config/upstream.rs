//! The reverse proxy's part of the config: `[[upstream]]` groups of
//! servers, each site's `[[site.route]]`s, and `trusted_proxies`.
//!
//! Everything here is resolved when the config loads (start, reload, `-t`):
//! host names become addresses and every route points at an upstream by
//! index, so a worker never resolves a name or looks anything up by name.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::model::Pos;

/// Where an upstream server is reached.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UpstreamAddr {
    Tcp(SocketAddr),
    /// `unix:/path/to/socket`
    Unix(PathBuf),
}

impl fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamAddr::Tcp(a) => write!(f, "{a}"),
            UpstreamAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// One server of an upstream. A host name that resolves to several
/// addresses becomes one server per address, as in nginx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamServer {
    pub addr: UpstreamAddr,
    /// Its share of the requests under `round_robin` (1 to 1000).
    pub weight: u32,
    /// Only used when every non-backup server is down.
    pub backup: bool,
    /// The host name the address was written with (`None` for an IP
    /// address or a unix socket): what an HTTPS upstream's certificate is
    /// verified against unless its `tls` names a `server_name`.
    pub host: Option<String>,
    pub pos: Pos,
}

/// How an upstream picks a server for a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Balance {
    /// Smooth weighted round robin (nginx's).
    #[default]
    RoundRobin,
    /// The server with the fewest requests in flight from this worker.
    LeastConn,
    /// A hash of the client's address.
    IpHash,
    /// A hash of a request header's value (its name, lowercase); requests
    /// without it go round robin.
    Header(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// As written; a route given as a URL gets an upstream named by it.
    pub name: String,
    pub servers: Vec<UpstreamServer>,
    pub balance: Balance,
    /// Idle connections kept per worker (0: none kept).
    pub keepalive: usize,
    /// Requests on one upstream connection before it is closed.
    pub keepalive_requests: u64,
    /// How long an idle pooled connection is kept.
    pub keepalive_timeout: Duration,
    pub connect_timeout: Duration,
    /// Longest wait between two reads of the response.
    pub read_timeout: Duration,
    /// Longest wait between two writes of the request.
    pub send_timeout: Duration,
    /// Failures within `fail_timeout` that mark a server down (0: never).
    pub max_fails: u32,
    /// The window for `max_fails`, and how long a server stays down.
    pub fail_timeout: Duration,
    /// Active health checks, run by the master (once per server, not per
    /// worker); `None`: only passive health.
    pub health: Option<HealthCheck>,
    /// HTTPS: connections to the servers speak TLS (`None`: plain HTTP).
    pub tls: Option<UpstreamTls>,
    pub pos: Pos,
}

/// `tls = { server_name, ca, cert, key }` of an `[[upstream]]`, or an
/// `https://` route URL: the files are read and the client configuration
/// built when the config loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The name certificates are verified against (and SNI), for every
    /// server; `None`: each server's `host`, else its IP address.
    pub server_name: Option<String>,
    /// The trust anchors' PEM file; `None`: the system's trust store.
    pub ca: Option<PathBuf>,
    /// The client certificate and key files (mTLS), if any.
    pub cert: Option<(PathBuf, PathBuf)>,
    pub client: TlsClient,
    pub pos: Pos,
}

/// The rustls client configuration made from an `UpstreamTls`'s files.
#[derive(Clone)]
pub struct TlsClient(pub std::sync::Arc<rustls::ClientConfig>);

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsClient")
    }
}

/// Two configs are compared by what they were written with (the files
/// named beside it); the rustls configuration made from them has no
/// equality of its own.
impl PartialEq for TlsClient {
    fn eq(&self, _: &TlsClient) -> bool {
        true
    }
}

impl Eq for TlsClient {}

/// A health check's `expect`: status codes and classes (`"2xx"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect(pub Vec<ExpectStatus>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectStatus {
    Code(u16),
    /// `"2xx"`: the hundreds digit.
    Class(u16),
}

impl Expect {
    pub fn accepts(&self, status: u16) -> bool {
        self.0.iter().any(|e| match *e {
            ExpectStatus::Code(c) => c == status,
            ExpectStatus::Class(c) => status / 100 == c,
        })
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(if i + 1 == self.0.len() { " or " } else { ", " })?;
            }
            match e {
                ExpectStatus::Code(c) => write!(f, "{c}")?,
                ExpectStatus::Class(c) => write!(f, "{c}xx")?,
            }
        }
        Ok(())
    }
}

/// `health = { path, interval, timeout, expect, rise, fall }` of an
/// `[[upstream]]`: the master sends `GET path HTTP/1.1` to each server
/// every `interval`; a check passes when the status line arrives within
/// `timeout` with a status `expect` accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// The statuses that pass.
    pub expect: Expect,
    /// Consecutive passing checks that bring a down server back up.
    pub rise: u32,
    /// Consecutive failing checks that mark an up server down.
    pub fall: u32,
    pub pos: Pos,
}

impl HealthCheck {
    /// The defaults (nginx-plus and HAProxy count rise and fall from 1).
    pub fn with_defaults(pos: Pos) -> HealthCheck {
        HealthCheck {
            path: "/".to_owned(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            expect: Expect(vec![ExpectStatus::Code(200)]),
            rise: 1,
            fall: 1,
            pos,
        }
    }
}

impl Upstream {
    /// An upstream with the defaults, for a route written as a URL.
    pub fn with_defaults(name: String, servers: Vec<UpstreamServer>, pos: Pos) -> Upstream {
        Upstream {
            name,
            servers,
            balance: Balance::RoundRobin,
            keepalive: 32,
            keepalive_requests: 1000,
            keepalive_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            health: None,
            tls: None,
            pos,
        }
    }
}

/// One `[[site.route]]`: requests whose path starts with `path` go to an
/// upstream (the longest matching prefix wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub path: String,
    /// Index into `ProxyConfig::upstreams`.
    pub upstream: usize,
    /// Remove `path` from the target sent upstream (keeping a leading `/`).
    pub strip_prefix: bool,
    /// Response headers set on what the upstream answers.
    pub headers: Vec<(String, String)>,
    /// Whether `Upgrade` requests (WebSocket) are tunnelled.
    pub websocket: bool,
    /// `compress` on the route: `None` takes the site's setting,
    /// `Some(None)` turns it off for the route.
    pub compress: Option<Option<crate::config::compress::Compress>>,
    /// Add a `Via` field to requests and responses (RFC 9110 7.6.3).
    pub via: bool,
    pub pos: Pos,
}

/// An address range in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// `"10.0.0.0/8"`, `"::1/128"` or a bare address (a /32 or /128).
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (text.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // A v4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The proxy settings of a config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProxyConfig {
    pub upstreams: Vec<Upstream>,
    /// Clients whose `X-Forwarded-*` headers are kept (and appended to);
    /// from anyone else they are replaced.
    pub trusted_proxies: Vec<Cidr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        let one = Cidr::parse("::1").unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("::2".parse().unwrap()));
        assert!(Cidr::parse("1.2.3.4/33").is_none());
        assert!(Cidr::parse("nope").is_none());
    }

    #[test]
    fn expected_statuses() {
        let e = Expect(vec![
            ExpectStatus::Code(200),
            ExpectStatus::Code(204),
            ExpectStatus::Class(3),
        ]);
        assert!(e.accepts(200) && e.accepts(204) && e.accepts(301) && e.accepts(399));
        assert!(!e.accepts(201) && !e.accepts(404));
        assert_eq!(e.to_string(), "200, 204 or 3xx");
        assert_eq!(Expect(vec![ExpectStatus::Class(2)]).to_string(), "2xx");
    }
}
