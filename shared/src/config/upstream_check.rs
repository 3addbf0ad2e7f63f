//! `RawUpstream`s and `RawRoute`s → `Upstream`s and `Route`s: server
//! addresses resolved (host names looked up here, when the config loads,
//! never in a worker), unix sockets checked, every `proxy` matched to an
//! upstream.

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use super::locate::Errors;
use super::model::Pos;
use super::parse::upstream::RawTls;
use super::parse::{At, RawRoute, RawServer, RawUpstream};
use super::suggest;
use super::upstream::{Route, TlsClient, Upstream, UpstreamAddr, UpstreamServer, UpstreamTls};
use crate::upstream_tls;

/// Checks the upstreams, and the routes of every site (in site order);
/// routes written as URLs add an upstream each (one per distinct URL).
pub(crate) fn check(
    raw: Vec<RawUpstream>,
    site_routes: Vec<Vec<RawRoute>>,
    errs: &mut Errors<'_>,
) -> (Vec<Upstream>, Vec<Vec<Route>>) {
    let mut upstreams: Vec<Upstream> = Vec::new();
    // The system's trust store, read once per load (when needed).
    let mut system = SystemRoots::default();
    for up in raw {
        // Servers are checked even in an upstream that is in error.
        let servers = servers(&up.servers, errs);
        let tls = match &up.tls {
            Some(raw_tls) => match tls(raw_tls, &servers, &mut system, errs) {
                Some(t) => Some(t),
                None => continue,
            },
            None => None,
        };
        let Some(name) = up.name else { continue };
        if let Some(first) = upstreams.iter().find(|u| u.name == name.value) {
            let message = format!(
                "upstream {:?} is already defined on line {}",
                name.value, first.pos.line
            );
            errs.at(name.pos, message);
            continue;
        }
        if !up.servers.is_empty() && up.servers.iter().all(|s| s.backup) {
            errs.at(
                up.pos,
                format!(
                    "every server of upstream {:?} is a backup: at least one must not be",
                    name.value
                ),
            );
        }
        upstreams.push(Upstream {
            name: name.value,
            servers,
            balance: up.balance,
            keepalive: up.keepalive,
            keepalive_requests: up.keepalive_requests,
            keepalive_timeout: up.keepalive_timeout,
            connect_timeout: up.connect_timeout,
            read_timeout: up.read_timeout,
            send_timeout: up.send_timeout,
            max_fails: up.max_fails,
            fail_timeout: up.fail_timeout,
            health: up.health,
            tls,
            pos: up.pos,
        });
    }
    let named = upstreams.len();
    let mut routes = Vec::with_capacity(site_routes.len());
    for site in site_routes {
        let mut out: Vec<Route> = Vec::new();
        for r in site {
            let Some(proxy) = r.proxy else { continue };
            let upstream = target(&proxy, named, &mut upstreams, errs);
            let (Some(path), Some(upstream)) = (r.path, upstream) else {
                continue;
            };
            if let Some(first) = out.iter().find(|o| o.path == path) {
                let message = format!(
                    "route path {path:?} is already routed on line {} of this site",
                    first.pos.line
                );
                errs.at(r.pos, message);
                continue;
            }
            out.push(Route {
                path,
                upstream,
                strip_prefix: r.strip_prefix,
                headers: r.headers,
                websocket: r.websocket,
                compress: r.compress,
                via: r.via,
                pos: r.pos,
            });
        }
        routes.push(out);
    }
    (upstreams, routes)
}

/// The upstream `proxy` names: one of the first `named`, or one made for a
/// URL (shared by every route that writes the same URL).
fn target(
    proxy: &At<String>,
    named: usize,
    upstreams: &mut Vec<Upstream>,
    errs: &mut Errors<'_>,
) -> Option<usize> {
    let text = proxy.value.as_str();
    let url = match (text.strip_prefix("http://"), text.strip_prefix("https://")) {
        (Some(rest), _) => Some((rest, false)),
        (_, Some(rest)) => Some((rest, true)),
        _ => None,
    };
    if let Some((rest, https)) = url {
        if let Some(i) = upstreams.iter().position(|u| u.name == text) {
            return Some(i);
        }
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('/') {
            errs.at(
                proxy.pos,
                format!(
                    "proxy URL {text:?} has a path: only http[s]://HOST[:PORT] is supported \
                     (strip_prefix removes the route's path)"
                ),
            );
            return None;
        }
        let with_port = if has_port(authority) {
            authority.to_owned()
        } else if https {
            format!("{authority}:443")
        } else {
            format!("{authority}:80")
        };
        let host = host_name(&with_port);
        let addrs = resolve_tcp(&with_port).map_err(|why| {
            errs.at(proxy.pos, format!("proxy URL {text:?}: {why}"));
        });
        let servers = addrs
            .ok()?
            .into_iter()
            .map(|a| UpstreamServer {
                addr: UpstreamAddr::Tcp(a),
                weight: 1,
                backup: false,
                host: host.clone(),
                pos: proxy.pos,
            })
            .collect();
        let mut up = Upstream::with_defaults(text.to_owned(), servers, proxy.pos);
        if https {
            // The system's roots, the URL's host as the name.
            let raw = RawTls {
                pos: proxy.pos,
                server_name: None,
                ca: None,
                cert: None,
                key: None,
            };
            let mut system = SystemRoots::default();
            up.tls = Some(tls(&raw, &up.servers, &mut system, errs)?);
        }
        upstreams.push(up);
        return Some(upstreams.len() - 1);
    }
    if text.contains("://") {
        errs.at(
            proxy.pos,
            format!("proxy {text:?}: only http:// and https:// URLs are supported"),
        );
        return None;
    }
    if let Some(i) = upstreams[..named].iter().position(|u| u.name == text) {
        return Some(i);
    }
    let names: Vec<&str> = upstreams[..named].iter().map(|u| u.name.as_str()).collect();
    let message = match suggest::closest(text, &names) {
        Some(n) => format!("proxy {text:?} names no [[upstream]], did you mean {n:?}?"),
        None if names.is_empty() => format!(
            "proxy {text:?} names no [[upstream]] (there is none; or write a URL like \
             \"http://127.0.0.1:9000\")"
        ),
        None => format!(
            "proxy {text:?} names no [[upstream]] (defined: {})",
            names.join(", ")
        ),
    };
    errs.at(proxy.pos, message);
    None
}

fn servers(raw: &[RawServer], errs: &mut Errors<'_>) -> Vec<UpstreamServer> {
    let mut out = Vec::new();
    for s in raw {
        let written = s.address.value.as_str();
        let pos = s.address.pos;
        let host = host_name(written);
        let addrs = match written.strip_prefix("unix:") {
            Some(path) => unix(path, pos, errs).map(|p| vec![UpstreamAddr::Unix(p)]),
            None => match resolve_tcp(written) {
                Ok(list) => Some(list.into_iter().map(UpstreamAddr::Tcp).collect()),
                Err(why) => {
                    errs.at(pos, format!("server {written:?}: {why}"));
                    None
                }
            },
        };
        for addr in addrs.into_iter().flatten() {
            out.push(UpstreamServer {
                addr,
                weight: s.weight,
                backup: s.backup,
                host: host.clone(),
                pos,
            });
        }
    }
    out
}

/// The host name of `HOST:PORT` when it is a name (not an IP address,
/// not a unix socket), lowercase.
fn host_name(written: &str) -> Option<String> {
    if written.starts_with("unix:") || written.parse::<SocketAddr>().is_ok() {
        return None;
    }
    let (host, _) = written.rsplit_once(':')?;
    (!host.is_empty() && host.parse::<std::net::IpAddr>().is_err())
        .then(|| host.to_ascii_lowercase())
}

/// The system's trust anchors, read at most once per config load.
#[derive(Default)]
struct SystemRoots(Option<Result<Vec<rustls::pki_types::CertificateDer<'static>>, String>>);

impl SystemRoots {
    fn get(&mut self) -> &Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
        self.0.get_or_insert_with(|| {
            let path = upstream_tls::system_ca_file();
            upstream_tls::load_anchors(&path).map_err(|why| {
                format!(
                    "the system's trust store {} {why} (install ca-certificates, or give \
                     the upstream's CA with ca = \"/path/to/ca.pem\")",
                    path.display()
                )
            })
        })
    }
}

/// An upstream's `tls`: its files read and checked, its client made; and
/// a name to verify for every server. `None` after an error (recorded).
fn tls(
    raw: &RawTls,
    servers: &[UpstreamServer],
    system: &mut SystemRoots,
    errs: &mut Errors<'_>,
) -> Option<UpstreamTls> {
    let mut ok = true;
    for s in servers {
        let ip = match &s.addr {
            UpstreamAddr::Tcp(a) => Some(a.ip()),
            UpstreamAddr::Unix(_) => None,
        };
        let name = raw.server_name.as_deref().or(s.host.as_deref());
        if upstream_tls::server_name(name, None, ip).is_none() {
            let message = match name {
                Some(n) => format!(
                    "server {}: {n:?} is not a name a certificate can be verified against; \
                     set tls.server_name",
                    s.addr
                ),
                None => format!(
                    "server {} has no host name to verify its certificate against: \
                     set server_name in this upstream's tls",
                    s.addr
                ),
            };
            errs.at(s.pos, message);
            ok = false;
        }
    }
    let anchors = match &raw.ca {
        Some(ca) => match upstream_tls::load_anchors(&ca.value) {
            Ok(a) => Some(a),
            Err(why) => {
                errs.at(ca.pos, format!("the ca file {} {why}", ca.value.display()));
                None
            }
        },
        None => match system.get() {
            Ok(a) => Some(a.clone()),
            Err(why) => {
                errs.at(raw.pos, why.clone());
                None
            }
        },
    };
    let identity = match (&raw.cert, &raw.key) {
        (Some(cert), Some(key)) => match upstream_tls::load_identity(&cert.value, &key.value) {
            Ok(id) => Some(id),
            Err(why) => {
                errs.at(cert.pos, why);
                ok = false;
                None
            }
        },
        _ => None,
    };
    let anchors = anchors?;
    if !ok {
        return None;
    }
    let client = upstream_tls::client_config(&anchors, identity)
        .map_err(|why| errs.at(raw.cert.as_ref().map_or(raw.pos, |c| c.pos), why))
        .ok()?;
    Some(UpstreamTls {
        server_name: raw.server_name.clone(),
        ca: raw.ca.as_ref().map(|c| c.value.clone()),
        cert: raw
            .cert
            .as_ref()
            .zip(raw.key.as_ref())
            .map(|(c, k)| (c.value.clone(), k.value.clone())),
        client: TlsClient(client),
        pos: raw.pos,
    })
}

/// A unix socket server: an absolute path to an existing socket.
fn unix(path: &str, pos: Pos, errs: &mut Errors<'_>) -> Option<PathBuf> {
    let p = PathBuf::from(path);
    if !p.is_absolute() {
        errs.at(
            pos,
            format!("server \"unix:{path}\": the socket path must be absolute"),
        );
        return None;
    }
    // sun_path holds 108 bytes, the NUL included.
    if path.len() > 107 {
        errs.at(
            pos,
            format!("server \"unix:{path}\": the path is longer than a unix socket allows (107)"),
        );
        return None;
    }
    match std::fs::metadata(&p) {
        Ok(m) if m.file_type().is_socket() => Some(p),
        Ok(_) => {
            errs.at(pos, format!("server \"unix:{path}\" is not a socket"));
            None
        }
        Err(e) => {
            errs.at(pos, format!("server \"unix:{path}\": {e}"));
            None
        }
    }
}

/// Whether `authority` ends with `:PORT` (an IPv6 literal is bracketed).
fn has_port(authority: &str) -> bool {
    match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    }
}

/// `HOST:PORT` → its addresses (an IP literal, or a name looked up now).
fn resolve_tcp(text: &str) -> Result<Vec<SocketAddr>, String> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        if a.port() == 0 {
            return Err("port \"0\" must be a number from 1 to 65535".to_owned());
        }
        return Ok(vec![a]);
    }
    if !has_port(text) {
        return Err("needs a port, like \"127.0.0.1:9000\"".to_owned());
    }
    let (host, port) = text.rsplit_once(':').unwrap_or((text, ""));
    match port.parse::<u16>() {
        Ok(1..) => {}
        _ => return Err(format!("port {port:?} must be a number from 1 to 65535")),
    }
    if host.is_empty() || host.starts_with('[') {
        return Err("is not an address like \"127.0.0.1:9000\" or \"app.internal:9000\"".into());
    }
    let mut addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .collect();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(format!("{host:?} resolves to no address"));
    }
    Ok(addrs)
}
