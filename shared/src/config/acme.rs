//! ACME (RFC 8555) settings: the top-level `acme_*` keys and a site's
//! `tls = { acme = ... }`, as the master, the certificate helper and the
//! workers see them once validated.
//!
//! Where an ACME certificate lives is derived, never configured per site:
//! `acme_dir/certs/NAME/{cert.pem,key.pem}`, NAME being the site's first
//! name. The master loads those files exactly like configured ones
//! (`crate::tls::load`), except that missing or unusable files are not an
//! error but "pending": the helper is ordering them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::model::{Config, Identity, Pos};

/// Let's Encrypt's production directory, the default.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (`acme_directory = "letsencrypt-staging"`).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
/// Where the helper keeps accounts, keys, certificates and locks.
pub const DEFAULT_DIR: &str = "/var/lib/baton/acme";

/// How the CA checks that we control a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Challenge {
    /// `http-01`: the CA fetches `http://NAME/.well-known/acme-challenge/TOKEN`
    /// on port 80 (`acme_http_port`); any plain-HTTP listener answers.
    #[default]
    Http01,
    /// `tls-alpn-01`: the CA opens a TLS connection to NAME:443
    /// (`acme_tls_port`) offering only ALPN `acme-tls/1`.
    TlsAlpn01,
}

impl Challenge {
    pub fn as_str(self) -> &'static str {
        match self {
            Challenge::Http01 => "http-01",
            Challenge::TlsAlpn01 => "tls-alpn-01",
        }
    }

    pub fn parse(s: &str) -> Option<Challenge> {
        match s {
            "http-01" => Some(Challenge::Http01),
            "tls-alpn-01" => Some(Challenge::TlsAlpn01),
            _ => None,
        }
    }
}

/// A site's `acme` (in its `tls` table): `true`, or a table overriding the
/// global settings for this site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteAcme {
    pub email: Option<String>,
    /// A directory URL (or `letsencrypt`, `letsencrypt-staging`).
    pub directory: Option<String>,
    pub challenge: Challenge,
    pub pos: Pos,
}

/// The top-level `acme_*` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeOptions {
    /// `acme_directory`: the ACME server's directory URL.
    pub directory: String,
    /// `acme_ca`: a PEM CA certificate the helper trusts for the ACME
    /// server's HTTPS (a private CA such as pebble's); `None`: the system's.
    pub ca: Option<PathBuf>,
    /// `acme_email`: the account's contact.
    pub email: Option<String>,
    /// `acme_dir`: the helper's state (accounts, keys, certificates, locks).
    pub dir: PathBuf,
    /// `acme_user`, resolved; `None`: the workers' identity.
    pub user: Option<Identity>,
    /// `acme_placeholder = true`: a pending name gets a self-signed
    /// certificate instead of a failed handshake.
    pub placeholder: bool,
    /// `acme_http_port`: the port HTTP-01 validation connects to.
    pub http_port: u16,
    /// `acme_tls_port`: the port TLS-ALPN-01 validation connects to.
    pub tls_port: u16,
    /// `acme_renew_check`: how often the helper looks at expiry dates.
    pub renew_check: Duration,
    /// `acme_lock_stale`: a lock file not refreshed for this long is taken
    /// over (its holder died).
    pub lock_stale: Duration,
}

impl Default for AcmeOptions {
    fn default() -> AcmeOptions {
        AcmeOptions {
            directory: LETS_ENCRYPT.to_owned(),
            ca: None,
            email: None,
            dir: PathBuf::from(DEFAULT_DIR),
            user: None,
            placeholder: false,
            http_port: 80,
            tls_port: 443,
            renew_check: Duration::from_secs(600),
            lock_stale: Duration::from_secs(60),
        }
    }
}

/// One certificate the helper keeps: a site's names, ordered together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeOrder {
    /// Index of its site in `Config::sites`.
    pub site: usize,
    /// The directory name under `acme_dir/certs` (the first name).
    pub id: String,
    pub names: Vec<String>,
    pub directory: String,
    pub email: Option<String>,
    pub challenge: Challenge,
}

impl AcmeOrder {
    pub fn cert_path(&self, dir: &Path) -> PathBuf {
        cert_dir(dir, &self.id).join("cert.pem")
    }

    pub fn key_path(&self, dir: &Path) -> PathBuf {
        cert_dir(dir, &self.id).join("key.pem")
    }
}

/// `acme_dir/certs/ID`.
pub fn cert_dir(dir: &Path, id: &str) -> PathBuf {
    dir.join("certs").join(id)
}

/// `letsencrypt`, `letsencrypt-staging` or a URL, as a URL.
pub fn directory_url(text: &str) -> String {
    match text {
        "letsencrypt" => LETS_ENCRYPT.to_owned(),
        "letsencrypt-staging" => LETS_ENCRYPT_STAGING.to_owned(),
        url => url.to_owned(),
    }
}

/// Whether `name` can be ordered with HTTP-01 or TLS-ALPN-01: a DNS name
/// (letters, digits, `-`, dots between labels), no wildcard, no IP.
pub fn orderable_name(name: &str) -> Result<(), String> {
    if name.starts_with("*.") {
        return Err(format!(
            "{name:?} is a wildcard: HTTP-01 and TLS-ALPN-01 cannot validate wildcards \
             (give the names one by one)"
        ));
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "{name:?} is an IP address: ACME certificates here are for DNS names"
        ));
    }
    let labels_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !labels_ok {
        return Err(format!(
            "{name:?} is not a DNS name an ACME CA can validate"
        ));
    }
    Ok(())
}

impl Config {
    /// The certificates ACME keeps for this config, one per ACME site.
    pub fn acme_orders(&self) -> Vec<AcmeOrder> {
        self.sites
            .iter()
            .enumerate()
            .filter_map(|(i, site)| {
                let acme = site.tls.as_ref()?.acme.as_ref()?;
                let id = site.names.first()?.clone();
                Some(AcmeOrder {
                    site: i,
                    id,
                    names: site.names.clone(),
                    directory: acme
                        .directory
                        .as_deref()
                        .map_or_else(|| self.acme.directory.clone(), directory_url),
                    email: acme.email.clone().or_else(|| self.acme.email.clone()),
                    challenge: acme.challenge,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_an_acme_ca_can_validate() {
        assert!(orderable_name("example.org").is_ok());
        assert!(orderable_name("a-b.example").is_ok());
        assert!(orderable_name("*.example.org").is_err());
        assert!(orderable_name("127.0.0.1").is_err());
        assert!(orderable_name("-a.example").is_err());
        assert!(orderable_name("a..example").is_err());
        assert!(orderable_name("a_b.example").is_err());
        assert_eq!(directory_url("letsencrypt"), LETS_ENCRYPT);
        assert_eq!(directory_url("https://x/dir"), "https://x/dir");
    }
}
