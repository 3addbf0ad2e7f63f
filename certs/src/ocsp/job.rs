//! One staple's work, each step a function of files and a clock: read the
//! chain, look at the stored staple, ask the responder and check what it
//! says.

use std::path::PathBuf;

use baton_shared::config::Config;
use baton_shared::ocsp::{self, Cert, Checked};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::fetch::{self, Limits};

/// A certificate whose staple is kept fresh.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StapleJob {
    /// PEM: the certificate, then its issuer (a full chain file).
    pub chain: PathBuf,
    /// Where the DER response is stored (the site's `ocsp` path, or a
    /// file beside an ACME certificate).
    pub staple: PathBuf,
    /// The responder URL, instead of the certificate's own (AIA).
    pub responder: Option<String>,
}

/// The staple jobs a config asks for: every certificate entry with an
/// `ocsp` path, its responder the certificate's own (there is no config
/// key for another yet). Each job once, in config order. (Certificates
/// found in a `tls.dir` have no staple path; ACME ones are the ACME
/// side's to add, with a staple beside the certificate.)
pub fn jobs(config: &Config) -> Vec<StapleJob> {
    let mut jobs: Vec<StapleJob> = Vec::new();
    let entries = config
        .sites
        .iter()
        .filter_map(|s| s.tls.as_ref())
        .flat_map(|t| &t.certs);
    for files in entries {
        let Some(staple) = &files.ocsp else { continue };
        let job = StapleJob {
            chain: files.cert.clone(),
            staple: staple.clone(),
            responder: None,
        };
        if !jobs.contains(&job) {
            jobs.push(job);
        }
    }
    jobs
}

/// What a job needs from its chain file.
pub struct Chain {
    pub leaf: Cert,
    pub issuer: Cert,
    pub url: String,
}

impl StapleJob {
    /// Reads the chain: the leaf, its issuer (named by the leaf, found
    /// after it) and the responder URL.
    pub fn chain(&self) -> Result<Chain, String> {
        let file = self.chain.display();
        let ders: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.chain)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| format!("cannot read the certificate chain {file}: {e}"))?;
        let mut certs = ders.iter().map(|d| Cert::from_der(d));
        let leaf = certs
            .next()
            .ok_or_else(|| format!("{file} holds no certificate"))?
            .map_err(|e| format!("{file}: {e}"))?;
        let issuer = certs
            .filter_map(Result::ok)
            .find(|c| leaf.named_issuer_is(c))
            .ok_or_else(|| {
                format!(
                    "{file} holds no issuer certificate after the leaf: OCSP needs it \
                     (use the full chain file)"
                )
            })?;
        let url = match &self.responder {
            Some(url) => url.clone(),
            None => leaf.responder_url().ok_or_else(|| {
                format!(
                    "the certificate in {file} names no OCSP responder \
                     (Authority Information Access): configure one"
                )
            })?,
        };
        Ok(Chain { leaf, issuer, url })
    }

    /// The stored staple, if it is a good one for this certificate now.
    pub fn stored(&self, chain: &Chain, now: i64) -> Option<Checked> {
        let der = std::fs::read(&self.staple).ok()?;
        let checked = ocsp::check(&der, &chain.leaf, Some(&chain.issuer), now).ok()?;
        (checked.status == ocsp::Status::Good).then_some(checked)
    }

    /// Asks the responder; the checked response and its DER.
    pub fn fetch(
        &self,
        chain: &Chain,
        limits: &Limits,
        now: impl FnOnce() -> i64,
    ) -> Result<(Checked, Vec<u8>), String> {
        let request = ocsp::request(&chain.leaf, &chain.issuer)?;
        let der = fetch::fetch(&chain.url, &request, limits)?;
        let checked = ocsp::check(&der, &chain.leaf, Some(&chain.issuer), now())
            .map_err(|e| format!("OCSP responder {}: {e}", chain.url))?;
        Ok((checked, der))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_asks_for_one_job_per_certificate_with_a_staple_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baton.toml");
        let text = "\
[[site]]\nlisten = [\"127.0.0.1:8443\"]\nnames = [\"a.test\"]\nroot = \".\"\n\
tls = { cert = \"a.pem\", key = \"a.key\", ocsp = \"a.der\" }\n\
[[site]]\nlisten = [\"127.0.0.1:8443\"]\nnames = [\"b.test\"]\nroot = \".\"\n\
tls = { cert = \"b.pem\", key = \"b.key\" }\n\
[[site]]\nlisten = [\"127.0.0.1:8444\"]\nnames = [\"a.test\"]\nroot = \".\"\n\
tls = { cert = \"a.pem\", key = \"a.key\", ocsp = \"a.der\" }\n";
        let config = baton_shared::config::load_text_as_file(&path, text).unwrap();
        assert_eq!(
            jobs(&config),
            [StapleJob {
                chain: dir.path().join("a.pem"),
                staple: dir.path().join("a.der"),
                responder: None,
            }]
        );
    }
}
