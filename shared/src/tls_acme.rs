//! ACME certificates as the master loads them: from `acme_dir`, through
//! the same `tls::load_files` as configured files (so `-t`, start, reload
//! and the hot swap treat them alike), except that a missing or unusable
//! file is not a config error but a *pending* name: the server starts at
//! once and serves everything else while the helper orders it.
//!
//! A pending name's handshakes fail with an alert (its site has no
//! certificate, so the resolver finds none), or, with `acme_placeholder =
//! true`, get a self-signed placeholder made here. The placeholder carries
//! the ACME files' paths, so the certificate watch picks the real files up
//! the moment they appear, as it does any changed certificate.
//!
//! An ACME certificate's OCSP staple is `ocsp.der` beside it (the helper
//! fetches it when the certificate names a responder), loaded and watched
//! like a configured `ocsp` path. A certificate naming no responder (Let's
//! Encrypt's since 2025, pebble's) has no staple and needs none: no
//! warning for the missing file ([`no_staple_needed`]).

use rustls::pki_types::pem::PemObject;

use crate::config::{CertFiles, Config};
use crate::tls::{LoadedCert, Staple, load_files, verify};

/// The staple's file name in an ACME certificate's directory.
pub const STAPLE_FILE: &str = "ocsp.der";

/// A certificate whose staple file does not exist and which names no
/// OCSP responder has nothing to staple: its staple is `Absent`, not
/// refused with a warning (a debug line says so). Used when the master
/// loads ACME certificates and when its watch reloads any certificate.
pub fn no_staple_needed(c: &mut LoadedCert) {
    let Some(file) = &c.files.ocsp else { return };
    if !matches!(c.staple, Staple::Refused(_)) || file.exists() {
        return;
    }
    let leaf = rustls::pki_types::CertificateDer::pem_slice_iter(&c.cert_pem)
        .next()
        .and_then(Result::ok)
        .and_then(|der| crate::ocsp::Cert::from_der(&der).ok());
    if leaf.is_some_and(|l| l.responder_url().is_none()) {
        log::debug!(
            "certificate {} names no OCSP responder: served without a staple",
            c.files.cert.display()
        );
        c.staple = Staple::Absent;
    }
}

/// An ACME site without a usable certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub site: usize,
    /// Its certificate's id (the first name, its directory in `acme_dir`).
    pub id: String,
    pub names: Vec<String>,
    /// Why: not ordered yet, or what is wrong with the files.
    pub why: String,
    /// A self-signed placeholder is served meanwhile.
    pub placeholder: bool,
}

/// Loads every ACME site's certificate into `certs`; returns the pending
/// ones (with a placeholder in `certs` when configured).
pub(crate) fn load(config: &Config, certs: &mut Vec<LoadedCert>, now: i64) -> Vec<Pending> {
    let mut pending = Vec::new();
    for order in config.acme_orders() {
        let pos = config
            .sites
            .get(order.site)
            .and_then(|s| s.tls.as_ref())
            .map(|t| t.pos)
            .unwrap_or_default();
        let cert = order.cert_path(&config.acme.dir);
        let files = CertFiles {
            ocsp: Some(cert.with_file_name(STAPLE_FILE)),
            cert,
            key: order.key_path(&config.acme.dir),
            pos,
        };
        let why = if !files.cert.exists() {
            "not obtained yet: the certificate helper is ordering it".to_owned()
        } else {
            match load_files(&files, now) {
                Ok(mut c) => {
                    no_staple_needed(&mut c);
                    certs.push(LoadedCert {
                        site: order.site,
                        ..c
                    });
                    continue;
                }
                Err(e) => format!("{e}; the certificate helper is ordering a new one"),
            }
        };
        let mut placeholder = false;
        if config.acme.placeholder {
            match self_signed(&order.names, now) {
                Ok((cert_pem, key_pem)) => match verify(&cert_pem, &key_pem, None, now) {
                    Ok(v) => {
                        certs.push(LoadedCert {
                            site: order.site,
                            files: files.clone(),
                            cert_pem,
                            key_pem,
                            ocsp: None,
                            key: v.key,
                            staple: v.staple,
                        });
                        placeholder = true;
                    }
                    Err(e) => log::error!("placeholder certificate for {}: {e}", order.id),
                },
                Err(e) => log::error!("placeholder certificate for {}: {e}", order.id),
            }
        }
        pending.push(Pending {
            site: order.site,
            id: order.id,
            names: order.names,
            why,
            placeholder,
        });
    }
    pending
}

/// A self-signed ECDSA P-256 certificate for `names`, valid for a week
/// from an hour ago: (cert PEM, key PEM).
fn self_signed(names: &[String], now: i64) -> Result<(Vec<u8>, Vec<u8>), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(|e| e.to_string())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "Baton placeholder (ACME certificate pending)",
    );
    let at = |secs: i64| {
        let (y, m, d) = civil(secs.div_euclid(86400));
        rcgen::date_time_ymd(y, m, d)
    };
    params.not_before = at(now.saturating_sub(86400));
    params.not_after = at(now.saturating_add(7 * 86400));
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok((cert.pem().into_bytes(), key.serialize_pem().into_bytes()))
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (i32::try_from(y).unwrap_or(9999), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(11017), (2000, 3, 1));
        assert_eq!(civil(-1), (1969, 12, 31));
    }

    #[test]
    fn a_missing_staple_is_not_missed_for_a_certificate_naming_no_responder() {
        let dir = tempfile::tempdir().expect("dir");
        let now = crate::tls::unix_now();
        let (cert, key) = self_signed(&["a.example".into()], now).expect("made");
        std::fs::write(dir.path().join("cert.pem"), cert).expect("cert");
        std::fs::write(dir.path().join("key.pem"), key).expect("key");
        let files = CertFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            ocsp: Some(dir.path().join(STAPLE_FILE)),
            pos: Default::default(),
        };
        let mut c = load_files(&files, now).expect("loads");
        assert!(matches!(c.staple, Staple::Refused(_)), "{:?}", c.staple);
        no_staple_needed(&mut c);
        assert!(matches!(c.staple, Staple::Absent), "{:?}", c.staple);
        // A staple file that exists is judged as it is, never waved off.
        std::fs::write(dir.path().join(STAPLE_FILE), b"junk").expect("staple");
        let mut c = load_files(&files, now).expect("loads");
        no_staple_needed(&mut c);
        assert!(matches!(c.staple, Staple::Refused(_)), "{:?}", c.staple);
    }

    #[test]
    fn a_placeholder_verifies_for_its_names() {
        let now = crate::tls::unix_now();
        let (cert, key) = self_signed(&["a.example".into()], now).expect("made");
        assert!(verify(&cert, &key, None, now).is_ok());
    }
}
