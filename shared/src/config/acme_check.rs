//! ACME settings against the rest of the config and the system: the names
//! a CA can validate, the listener each challenge needs, `acme_user`, the
//! CA file. Like all validation it has no side effect and never contacts
//! the CA (`-t` must work offline); `acme_dir` is created by the master
//! when it starts the helper.

use super::acme::{AcmeOptions, Challenge, orderable_name};
use super::locate::Errors;
use super::model::{Identity, ListenAddr, Pos};
use super::parse::{Raw, RawSite};
use super::validate::{System, lookup_user};

pub(crate) fn check(raw: &Raw, sys: &System, errs: &mut Errors<'_>) -> AcmeOptions {
    let a = &raw.acme;
    let defaults = AcmeOptions::default();
    let mut out = AcmeOptions {
        directory: a
            .directory
            .as_ref()
            .map_or(defaults.directory.clone(), |d| {
                super::acme::directory_url(&d.value)
            }),
        ca: a.ca.as_ref().map(|c| c.value.clone()),
        email: a.email.as_ref().map(|e| e.value.clone()),
        dir: a
            .dir
            .as_ref()
            .map_or(defaults.dir.clone(), |d| d.value.clone()),
        user: None,
        placeholder: a.placeholder,
        http_port: a.http_port.unwrap_or(defaults.http_port),
        tls_port: a.tls_port.unwrap_or(defaults.tls_port),
        renew_check: a.renew_check.unwrap_or(defaults.renew_check),
        lock_stale: a.lock_stale.unwrap_or(defaults.lock_stale),
    };
    let acme_sites: Vec<&RawSite> = raw
        .sites
        .iter()
        .filter(|s| s.tls.as_ref().is_some_and(|t| t.acme.is_some()))
        .collect();
    if acme_sites.is_empty() {
        return out;
    }
    if let Some(ca) = &a.ca {
        check_ca(&ca.value, ca.pos, errs);
    }
    if let Some(u) = &a.user {
        out.user = acme_identity(&u.value, u.pos, sys, errs);
    }
    let mut ids: Vec<(&str, &RawSite)> = Vec::new();
    for site in acme_sites {
        let Some(acme) = site.tls.as_ref().and_then(|t| t.acme.as_ref()) else {
            continue;
        };
        let Some(first) = site.names.first() else {
            errs.at(
                acme.pos,
                "an ACME site needs names = [...]: they are what the certificate is for",
            );
            continue;
        };
        for n in &site.names {
            if let Err(why) = orderable_name(&n.value) {
                errs.at(n.pos, why);
            }
        }
        if let Some((_, other)) = ids.iter().find(|(id, _)| *id == first.value) {
            let names =
                |s: &RawSite| -> Vec<String> { s.names.iter().map(|n| n.value.clone()).collect() };
            if names(other) != names(site) {
                errs.at(
                    first.pos,
                    format!(
                        "another ACME site starts its names with {:?} but lists other names: \
                         sites sharing a certificate must list the same names",
                        first.value
                    ),
                );
            }
        } else {
            ids.push((first.value.as_str(), site));
        }
        match acme.challenge {
            Challenge::Http01 => {
                let served = raw.sites.iter().any(|s| {
                    s.tls.is_none()
                        && s.listen.iter().any(
                            |l| matches!(&l.addr, ListenAddr::Tcp(a) if a.port() == out.http_port),
                        )
                });
                if !served {
                    errs.at(
                        acme.pos,
                        format!(
                            "ACME HTTP-01 needs a plain-HTTP site listening on port {port} \
                             (the CA connects to http://NAME:{port}/.well-known/acme-challenge/): \
                             add a [[site]] with listen = [\"0.0.0.0:{port}\"], \
                             or use acme = {{ challenge = \"tls-alpn-01\" }}",
                            port = out.http_port
                        ),
                    );
                }
            }
            Challenge::TlsAlpn01 => {
                let on_port = site
                    .listen
                    .iter()
                    .any(|l| matches!(&l.addr, ListenAddr::Tcp(a) if a.port() == out.tls_port));
                if !on_port {
                    errs.at(
                        acme.pos,
                        format!(
                            "ACME TLS-ALPN-01 connects to port {port}, where this site does not \
                             listen: add \"0.0.0.0:{port}\" to its listen, \
                             or set acme_tls_port",
                            port = out.tls_port
                        ),
                    );
                }
            }
        }
    }
    out
}

/// The CA file must hold a PEM certificate: the helper reads it (as its
/// user) when it connects, and a typo should fail `-t`, not an order.
fn check_ca(path: &std::path::Path, pos: Pos, errs: &mut Errors<'_>) {
    match std::fs::read_to_string(path) {
        Ok(text) if text.contains("-----BEGIN CERTIFICATE-----") => {}
        Ok(_) => errs.at(
            pos,
            format!(
                "acme_ca {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ),
        Err(e) => errs.at(pos, format!("cannot read acme_ca {}: {e}", path.display())),
    }
}

/// `acme_user` as an identity the helper switches to (only a root master
/// can switch; otherwise the helper runs as the invoking user, as workers do).
fn acme_identity(name: &str, pos: Pos, sys: &System, errs: &mut Errors<'_>) -> Option<Identity> {
    let user = lookup_user(name, pos, errs)?;
    if sys.euid != 0 {
        return None;
    }
    if user.uid.is_root() {
        errs.at(
            pos,
            "acme_user is root: the certificate helper must run unprivileged",
        );
        return None;
    }
    let gid = user.gid;
    let groups = std::ffi::CString::new(user.name.as_str())
        .ok()
        .and_then(|n| nix::unistd::getgrouplist(&n, gid).ok())
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|| vec![gid.as_raw()]);
    Some(Identity {
        user: user.name,
        uid: user.uid.as_raw(),
        gid: gid.as_raw(),
        groups,
        pos,
    })
}
