//! `RawUpstream`s and `RawRoute`s → `Upstream`s and `Route`s: server
//! addresses resolved (host names looked up here, when the config loads,
//! never in a worker), unix sockets checked, every `proxy` matched to an
//! upstream.

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use super::locate::Errors;
use super::model::Pos;
use super::parse::{At, RawRoute, RawServer, RawUpstream};
use super::suggest;
use super::upstream::{Route, Upstream, UpstreamAddr, UpstreamServer};

/// Checks the upstreams, and the routes of every site (in site order);
/// routes written as URLs add an upstream each (one per distinct URL).
pub(crate) fn check(
    raw: Vec<RawUpstream>,
    site_routes: Vec<Vec<RawRoute>>,
    errs: &mut Errors<'_>,
) -> (Vec<Upstream>, Vec<Vec<Route>>) {
    let mut upstreams: Vec<Upstream> = Vec::new();
    for up in raw {
        // Servers are checked even in an upstream that is in error.
        let servers = servers(&up.servers, errs);
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
    if let Some(rest) = text.strip_prefix("http://") {
        if let Some(i) = upstreams.iter().position(|u| u.name == text) {
            return Some(i);
        }
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('/') {
            errs.at(
                proxy.pos,
                format!(
                    "proxy URL {text:?} has a path: only http://HOST[:PORT] is supported \
                     (strip_prefix removes the route's path)"
                ),
            );
            return None;
        }
        let with_port = if has_port(authority) {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
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
                pos: proxy.pos,
            })
            .collect();
        upstreams.push(Upstream::with_defaults(text.to_owned(), servers, proxy.pos));
        return Some(upstreams.len() - 1);
    }
    if text.contains("://") {
        let message = if text.starts_with("https://") {
            format!("proxy {text:?}: HTTPS upstreams are not supported yet, use http://")
        } else {
            format!("proxy {text:?}: only http:// URLs are supported")
        };
        errs.at(proxy.pos, message);
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
                pos,
            });
        }
    }
    out
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
