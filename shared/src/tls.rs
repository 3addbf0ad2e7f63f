//! Certificates and keys: read by the master, verified, handed to workers.
//!
//! The master reads every configured certificate, key and OCSP file (keys
//! may be readable by root only) and checks each pair before anything uses
//! it: the chain parses, the key parses and matches the certificate's public
//! key, the certificate is not expired. `-t`, start and reload all go
//! through `load`, so they refuse the same files with the same messages,
//! located at the config entry (`FILE:LINE:COL`).
//!
//! Workers never read these files: they inherit the loaded `Material` at
//! fork, and get replacements over the channel as PEM bytes, which they
//! verify again with `verify` (pure memory work, no file access).
//!
//! An OCSP staple is checked too (`ocsp::check_staple`: for this
//! certificate's serial and issuer, signed by the issuer or its delegated
//! responder, status good, not past its `nextUpdate`); a staple that fails
//! is not served, and the certificate is served without one (a staple file
//! that does not exist yet likewise). A staple that passes carries its
//! `nextUpdate` (`Staple::Served`): it must stop being served at that
//! moment, file change or not, so workers compare it with the clock at
//! every handshake and the master warns when it passes (`certwatch`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::config::{CertFiles, Config, ConfigErrors, Pos};

/// One verified certificate chain with its key (and staple, if any).
#[derive(Clone)]
pub struct LoadedCert {
    /// Index of its site in `Config::sites`.
    pub site: usize,
    /// The files it came from (the config entry, or a pair found in `dir`).
    pub files: CertFiles,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// The staple as read (DER), even if it is not served (see `key.ocsp`).
    pub ocsp: Option<Vec<u8>>,
    /// What rustls serves: chain, signing key, staple when valid.
    pub key: Arc<CertifiedKey>,
    /// What became of the staple.
    pub staple: Staple,
}

/// What became of a certificate's OCSP staple when it was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Staple {
    /// None configured (or an empty file).
    Absent,
    /// In `key.ocsp`, to be served until `next_update` (seconds since the
    /// epoch) if the response has one.
    Served { next_update: Option<i64> },
    /// Not served, and why (stale, for another certificate, not "good").
    Refused(String),
}

impl Staple {
    /// When a served staple stops being valid, if it ever does.
    pub fn expires(&self) -> Option<i64> {
        match self {
            Staple::Served { next_update } => *next_update,
            _ => None,
        }
    }
}

/// A verified chain and key, and its staple's fate.
pub struct Verified {
    pub key: Arc<CertifiedKey>,
    pub staple: Staple,
}

impl fmt::Debug for LoadedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key bytes.
        f.debug_struct("LoadedCert")
            .field("site", &self.site)
            .field("cert", &self.files.cert)
            .finish_non_exhaustive()
    }
}

/// Every certificate of a config.
#[derive(Debug, Clone, Default)]
pub struct Material {
    pub certs: Vec<LoadedCert>,
    /// ACME sites whose certificate is not there (yet), and why: their
    /// handshakes fail, or get a placeholder (`crate::tls_acme`).
    pub acme_pending: Vec<crate::tls_acme::Pending>,
}

/// A certificate as it travels over the channel: which site, and bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct CertBundle {
    pub site: u32,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub ocsp: Vec<u8>,
}

impl fmt::Debug for CertBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertBundle")
            .field("site", &self.site)
            .field("cert_pem", &self.cert_pem.len())
            .finish_non_exhaustive()
    }
}

impl Material {
    /// What to send to a worker for it to rebuild the same store.
    pub fn bundles(&self) -> Vec<CertBundle> {
        self.certs
            .iter()
            .map(|c| CertBundle {
                site: c.site as u32,
                cert_pem: c.cert_pem.clone(),
                key_pem: c.key_pem.clone(),
                ocsp: c.ocsp.clone().unwrap_or_default(),
            })
            .collect()
    }
}

/// Reads and verifies every certificate the config names. Errors are
/// located at the config entry that names the file.
pub fn load(config: &Config) -> Result<Material, ConfigErrors> {
    let mut certs = Vec::new();
    let mut errors = Vec::new();
    let now = unix_now();
    let tls13_only = config.tls.min_version == crate::config::TlsVersion::V13;
    if tls13_only
        && !config.tls.ciphers.is_empty()
        && !config.tls.ciphers.iter().any(|c| c.starts_with("TLS13_"))
    {
        errors.push(config.error_at(
            Pos::default(),
            "tls_ciphers names no TLS 1.3 suite, but tls_min_version = \"1.3\" allows only TLS 1.3",
        ));
    }
    for (i, site) in config.sites.iter().enumerate() {
        let Some(tls) = &site.tls else { continue };
        for files in &tls.certs {
            match load_files(files, now) {
                Ok(cert) => certs.push(LoadedCert { site: i, ..cert }),
                Err(e) => errors.push(config.error_at(files.pos, e)),
            }
        }
        if let Some(dir) = &tls.dir {
            match load_dir(dir, tls.pos, now) {
                Ok(found) => certs.extend(found.into_iter().map(|mut c| {
                    c.site = i;
                    c
                })),
                Err(e) => errors.push(config.error_at(tls.pos, e)),
            }
        }
    }
    let acme_pending = crate::tls_acme::load(config, &mut certs, now);
    if errors.is_empty() {
        Ok(Material {
            certs,
            acme_pending,
        })
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Reads one entry's files and verifies them (`site` is left 0 for the
/// caller to set). Used on load and by the master's watcher when a file
/// changes.
pub fn load_files(files: &CertFiles, now: i64) -> Result<LoadedCert, String> {
    let cert_pem = read(&files.cert, "certificate")?;
    let key_pem = read(&files.key, "key")?;
    if let Ok(meta) = std::fs::metadata(&files.key) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o004 != 0 {
            log::warn!(
                "key {} is readable by every user: chmod 600 it (only the master needs it)",
                files.key.display()
            );
        }
    }
    // A staple that does not exist yet (the certificate helper fetches it
    // after the server starts) is no reason not to serve the certificate.
    let not_yet = files
        .ocsp
        .as_deref()
        .filter(|p| std::fs::metadata(p).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound));
    let ocsp = match &files.ocsp {
        Some(p) if not_yet.is_none() => Some(read(p, "OCSP staple")?),
        _ => None,
    };
    let mut verified = verify(&cert_pem, &key_pem, ocsp.as_deref(), now).map_err(|e| {
        format!(
            "{} with key {}: {e}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    if let Some(p) = not_yet {
        verified.staple = Staple::Refused(format!(
            "{} does not exist (yet): the certificate is served without a staple until it does",
            p.display()
        ));
    }
    Ok(LoadedCert {
        site: 0,
        files: files.clone(),
        cert_pem,
        key_pem,
        ocsp,
        key: verified.key,
        staple: verified.staple,
    })
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            " (the master reads certificates and keys: make them readable by the user it runs as)"
        } else {
            ""
        };
        format!("cannot read {what} {}: {e}{hint}", path.display())
    })
}

/// Parses and checks a chain, its key and a staple. The staple is attached
/// only if it is valid for this certificate now; a bad one is logged and
/// left out (an invalid staple is worse than none).
pub fn verify(
    cert_pem: &[u8],
    key_pem: &[u8],
    ocsp: Option<&[u8]>,
    now: i64,
) -> Result<Verified, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the certificate file {}", pem_error(&e)))?;
    let Some(leaf) = chain.first() else {
        return Err("the certificate file holds no certificate".into());
    };
    for (i, c) in chain.iter().enumerate() {
        if validity(c).is_none() {
            return Err(format!(
                "certificate {} of the chain is not valid X.509",
                i + 1
            ));
        }
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("the key file {}", pem_error(&e)))?;
    let (not_before, not_after) = validity(leaf).unwrap_or((0, 0));
    if not_after <= now {
        return Err(format!(
            "the certificate expired on {}",
            http_date(not_after)
        ));
    }
    if not_before > now + 24 * 3600 {
        return Err("the certificate is not valid yet".into());
    }
    let provider = rustls::crypto::ring::default_provider();
    let mut certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            "the key does not match the certificate (they are not a pair)".to_owned()
        }
        e => format!("the key cannot be used: {e}"),
    })?;
    let mut staple = Staple::Absent;
    if let Some(der) = ocsp.filter(|s| !s.is_empty()) {
        staple = match crate::ocsp::check_staple(der, &certified.cert, now) {
            Ok(next_update) => {
                certified.ocsp = Some(der.to_vec());
                Staple::Served { next_update }
            }
            // The master logs it, naming the files, once its log is open
            // (`certwatch`); workers verify again what it already judged.
            Err(why) => Staple::Refused(why),
        };
    }
    Ok(Verified {
        key: Arc::new(certified),
        staple,
    })
}

/// Completes "the ... file ..." for a PEM error.
fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { .. } => {
            "ends in the middle of a PEM section (cut short, or still being written?)".into()
        }
        Error::IllegalSectionStart { .. } => "has a malformed PEM section".into(),
        Error::Base64Decode(_) => "has invalid base64 in a PEM section".into(),
        Error::NoItemsFound => "holds nothing of the expected kind (no PEM section)".into(),
        e => format!("does not parse as PEM: {e:?}"),
    }
}

/// Every cert/key pair in `dir`: each file may hold a chain or a key; a
/// key is paired with the chain whose certificate has its public key.
fn load_dir(dir: &Path, pos: Pos, now: i64) -> Result<Vec<LoadedCert>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read tls dir {}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let mut chains = Vec::new();
    let mut keys = Vec::new();
    for p in paths {
        let bytes = read(&p, "file")?;
        if PrivateKeyDer::from_pem_slice(&bytes).is_ok() {
            keys.push((p, bytes));
        } else if CertificateDer::pem_slice_iter(&bytes)
            .next()
            .is_some_and(|c| c.is_ok())
        {
            chains.push((p, bytes));
        }
    }
    let mut out = Vec::new();
    for (key_path, key_pem) in &keys {
        let found = chains.iter().find_map(|(cert_path, cert_pem)| {
            let ck = verify(cert_pem, key_pem, None, now).ok()?.key;
            Some((cert_path, cert_pem, ck))
        });
        let Some((cert_path, cert_pem, key)) = found else {
            return Err(format!(
                "no valid certificate in {} matches the key {}",
                dir.display(),
                key_path.display()
            ));
        };
        out.push(LoadedCert {
            site: 0,
            files: CertFiles {
                cert: cert_path.clone(),
                key: key_path.clone(),
                ocsp: None,
                pos,
            },
            cert_pem: cert_pem.clone(),
            key_pem: key_pem.clone(),
            ocsp: None,
            key,
            staple: Staple::Absent,
        });
    }
    if out.is_empty() {
        return Err(format!(
            "tls dir {} holds no certificate/key pair",
            dir.display()
        ));
    }
    Ok(out)
}

/// (notBefore, notAfter) of the first certificate of a PEM chain, in
/// seconds since the epoch (for the ACME helper's renewal).
pub fn pem_validity(pem: &[u8]) -> Option<(i64, i64)> {
    let first = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    validity(&first)
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `secs` (seconds since the epoch) as an HTTP date, for messages.
pub fn http_date(secs: i64) -> String {
    let secs = u64::try_from(secs).unwrap_or(0);
    httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

// --- A little DER, just what is needed: validity (OCSP is in `ocsp`). ---

/// One TLV: (tag, content, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | b as usize;
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;

/// The fields of a certificate's tbsCertificate, from the serial on.
fn tbs_fields(cert: &[u8]) -> Option<&[u8]> {
    let (tag, cert, _) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    // Optional [0] version.
    match tlv(tbs)? {
        (0xa0, _, rest) => Some(rest),
        _ => Some(tbs),
    }
}

/// (notBefore, notAfter) in seconds since the epoch.
fn validity(cert: &[u8]) -> Option<(i64, i64)> {
    let fields = tbs_fields(cert)?;
    let (_, _, rest) = tlv(fields)?; // serial
    let (_, _, rest) = tlv(rest)?; // signature algorithm
    let (_, _, rest) = tlv(rest)?; // issuer
    let (tag, validity, _) = tlv(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (t1, v1, rest) = tlv(validity)?;
    let (t2, v2, _) = tlv(rest)?;
    Some((time(t1, v1)?, time(t2, v2)?))
}

/// UTCTime (0x17) or GeneralizedTime (0x18), `Z` form, as epoch seconds.
fn time(tag: u8, v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let s = s.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 if s.len() >= 12 => {
            let yy: i64 = s.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, s.get(2..)?)
        }
        0x18 if s.len() >= 14 => (s.get(..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let num = |r: std::ops::Range<usize>| -> Option<i64> { rest.get(r)?.parse().ok() };
    let (mo, d, h, mi, se) = (num(0..2)?, num(2..4)?, num(4..6)?, num(6..8)?, num(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(year, mo, d) * 86400 + h * 3600 + mi * 60 + se)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
        assert_eq!(time(0x17, b"700101000010Z"), Some(10));
        assert_eq!(time(0x18, b"20000301000000Z"), Some(11017 * 86400));
        assert_eq!(time(0x18, b"2000030100000Z"), None);
    }

    #[test]
    fn tlv_rejects_truncation() {
        assert_eq!(tlv(&[0x30, 0x03, 1, 2]), None);
        assert_eq!(tlv(&[0x30, 0x82, 0x01]), None);
    }
}
