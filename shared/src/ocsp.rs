//! OCSP (RFC 6960, profiled by RFC 5019): the request for a certificate,
//! and the checks of a response, in one place for the master (which
//! staples only a response that passes) and the certificate helper (which
//! fetches, checks and stores them).
//!
//! Pure functions of bytes and a clock; no I/O. The DER structures are
//! RustCrypto's (`x509-cert`, `x509-ocsp`, `der`); digests and signatures
//! are ring's. Written here because no crate does it: picking the signer
//! (the issuer itself, or a delegated responder certificate the issuer
//! signed for `id-kp-OCSPSigning`), mapping signature algorithms to ring's,
//! and the validity rules.
//!
//! What a response must be to pass [`check`]: `successful`, of the basic
//! type; a `SingleResponse` whose CertID names this certificate (serial,
//! and the issuer's name and key hashes, with whichever of SHA-1/SHA-2 the
//! responder used); signed by the issuer or by a delegated responder
//! certificate issued by it, valid now, with the OCSP-signing purpose;
//! `thisUpdate` not in the future (past [`SKEW`]) and `nextUpdate`, if
//! present, still ahead. The certificate status (good, revoked, unknown)
//! is returned, not judged: the caller decides (a staple must be good).

use der::asn1::{Null, OctetString};
use der::oid::ObjectIdentifier;
use der::{Decode, Encode, Header, Reader, SliceReader};
use ring::{digest, signature};
use x509_cert::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{AuthorityInfoAccessSyntax, ExtendedKeyUsage};
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspRequest, OcspResponse, OcspResponseStatus, Request,
    ResponderId, TbsRequest, Version,
};

/// How far in the future a `thisUpdate` may be (the responder's clock
/// ahead of ours) before the response is refused as not valid yet.
pub const SKEW: i64 = 300;

const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const OCSP_BASIC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
const AD_OCSP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1");
const KP_OCSP_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.9");
const RSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const RSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const RSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// A certificate as the checks need it: parsed, with its DER kept.
#[derive(Clone)]
pub struct Cert {
    der: Vec<u8>,
    parsed: Certificate,
}

impl Cert {
    /// Parses a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Cert, String> {
        let parsed = Certificate::from_der(der)
            .map_err(|e| format!("the certificate is not valid X.509 DER: {e}"))?;
        Ok(Cert {
            der: der.to_vec(),
            parsed,
        })
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The serial number's content octets.
    pub fn serial(&self) -> &[u8] {
        self.parsed.tbs_certificate.serial_number.as_bytes()
    }

    /// Whether `issuer` issued this certificate by name (the signature is
    /// checked separately where it matters).
    pub fn named_issuer_is(&self, issuer: &Cert) -> bool {
        self.parsed.tbs_certificate.issuer == issuer.parsed.tbs_certificate.subject
    }

    /// The OCSP responder URL of its Authority Information Access, if any.
    pub fn responder_url(&self) -> Option<String> {
        let (_, aia) = self
            .parsed
            .tbs_certificate
            .get::<AuthorityInfoAccessSyntax>()
            .ok()??;
        aia.0.iter().find_map(|d| match &d.access_location {
            GeneralName::UniformResourceIdentifier(uri) if d.access_method == AD_OCSP => {
                Some(uri.to_string())
            }
            _ => None,
        })
    }

    /// The subjectPublicKey bits (what ring takes, and what key hashes hash).
    fn key_bits(&self) -> &[u8] {
        self.parsed
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes()
    }

    /// The digest of `subject` DER and of the key bits with `alg`.
    fn hashes(&self, alg: &'static digest::Algorithm) -> Result<(Vec<u8>, Vec<u8>), String> {
        let name = self
            .parsed
            .tbs_certificate
            .subject
            .to_der()
            .map_err(|e| format!("the issuer's name does not encode: {e}"))?;
        Ok((
            digest::digest(alg, &name).as_ref().to_vec(),
            digest::digest(alg, self.key_bits()).as_ref().to_vec(),
        ))
    }

    fn validity(&self) -> (i64, i64) {
        let v = &self.parsed.tbs_certificate.validity;
        (
            secs(v.not_before.to_unix_duration()),
            secs(v.not_after.to_unix_duration()),
        )
    }
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn digest_alg(oid: &ObjectIdentifier) -> Option<&'static digest::Algorithm> {
    match *oid {
        SHA1 => Some(&digest::SHA1_FOR_LEGACY_USE_ONLY),
        SHA256 => Some(&digest::SHA256),
        SHA384 => Some(&digest::SHA384),
        SHA512 => Some(&digest::SHA512),
        _ => None,
    }
}

/// The DER OCSPRequest for `leaf` issued by `issuer`: one CertID with
/// SHA-1 hashes (what RFC 5019 responders and caches expect), no nonce (a
/// nonce defeats the responders' caches, and staples are not nonced).
pub fn request(leaf: &Cert, issuer: &Cert) -> Result<Vec<u8>, String> {
    let (name_hash, key_hash) = issuer.hashes(&digest::SHA1_FOR_LEGACY_USE_ONLY)?;
    let bad = |e: der::Error| format!("cannot encode the OCSP request: {e}");
    let cert_id = CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: SHA1,
            parameters: Some(Null.into()),
        },
        issuer_name_hash: OctetString::new(name_hash).map_err(bad)?,
        issuer_key_hash: OctetString::new(key_hash).map_err(bad)?,
        serial_number: leaf.parsed.tbs_certificate.serial_number.clone(),
    };
    OcspRequest {
        tbs_request: TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list: vec![Request {
                req_cert: cert_id,
                single_request_extensions: None,
            }],
            request_extensions: None,
        },
        optional_signature: None,
    }
    .to_der()
    .map_err(bad)
}

/// A certificate's status, as the responder says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Good,
    Revoked {
        /// Seconds since the epoch.
        at: i64,
        reason: Option<String>,
    },
    Unknown,
}

/// A response that passed [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub status: Status,
    /// Seconds since the epoch.
    pub this_update: i64,
    /// Seconds since the epoch; `None` if the responder gave none (newer
    /// information may be available at any time).
    pub next_update: Option<i64>,
    /// Whether the signature was checked (it is unless the issuer was not
    /// at hand: a chain file without it, see [`check`]).
    pub signature_checked: bool,
}

impl Checked {
    /// When to fetch a fresh response: half way through the validity
    /// window (RFC 5019 §6 and nginx/Caddy practice), or, for a response
    /// already past its half-life (a cache served an old one), half way
    /// through what is left. `None` without a `nextUpdate`.
    pub fn refresh_at(&self, now: i64) -> Option<i64> {
        let next = self.next_update?;
        let half = self
            .this_update
            .saturating_add(next.saturating_sub(self.this_update) / 2);
        if half > now {
            Some(half)
        } else {
            Some(now.saturating_add((next.saturating_sub(now) / 2).max(1)))
        }
    }
}

/// Checks a DER OCSPResponse for `leaf` (see the module doc). `issuer`
/// `None` (not in the chain file): only the serial is matched and the
/// signature is not checked; the client checks it anyway.
pub fn check(der: &[u8], leaf: &Cert, issuer: Option<&Cert>, now: i64) -> Result<Checked, String> {
    let response = OcspResponse::from_der(der)
        .map_err(|e| format!("the OCSP response is not valid DER ({e})"))?;
    if response.response_status != OcspResponseStatus::Successful {
        return Err(format!(
            "the OCSP responder answered {:?}, not \"successful\"",
            response.response_status
        ));
    }
    let bytes = response
        .response_bytes
        .ok_or("the OCSP response is \"successful\" but has no response")?;
    if bytes.response_type != OCSP_BASIC {
        return Err(format!(
            "the OCSP response is of type {}, not basic",
            bytes.response_type
        ));
    }
    let basic_der = bytes.response.as_bytes();
    let basic = BasicOcspResponse::from_der(basic_der)
        .map_err(|e| format!("the basic OCSP response is not valid DER ({e})"))?;

    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|s| names(&s.cert_id, leaf, issuer))
        .ok_or(
            "the OCSP response is for another certificate (no response for its serial and issuer)",
        )?;

    let this_update = secs(single.this_update.0.to_unix_duration());
    let next_update = single.next_update.map(|t| secs(t.0.to_unix_duration()));
    if this_update > now.saturating_add(SKEW) {
        return Err(format!(
            "the OCSP response is not valid yet (thisUpdate {})",
            crate::tls::http_date(this_update)
        ));
    }
    if let Some(next) = next_update {
        if next <= now {
            return Err(format!(
                "the OCSP response has expired (nextUpdate {})",
                crate::tls::http_date(next)
            ));
        }
        if next < this_update {
            return Err("the OCSP response's nextUpdate is before its thisUpdate".into());
        }
    }
    let signature_checked = match issuer {
        Some(issuer) => {
            check_signature(basic_der, &basic, issuer, now)?;
            true
        }
        None => false,
    };

    let status = match &single.cert_status {
        CertStatus::Good(_) => Status::Good,
        CertStatus::Unknown(_) => Status::Unknown,
        CertStatus::Revoked(info) => Status::Revoked {
            at: secs(info.revocation_time.0.to_unix_duration()),
            reason: info.revocation_reason.map(|r| format!("{r:?}")),
        },
    };
    Ok(Checked {
        status,
        this_update,
        next_update,
        signature_checked,
    })
}

/// Checks a staple for the chain it is served with (leaf first): as
/// [`check`], with the issuer found in the chain (the leaf itself if it is
/// self-issued), and the status must be good. Returns its `nextUpdate`.
pub fn check_staple(
    der: &[u8],
    chain: &[rustls::pki_types::CertificateDer<'_>],
    now: i64,
) -> Result<Option<i64>, String> {
    let leaf = Cert::from_der(chain.first().ok_or("no certificate")?)?;
    let issuer = chain
        .iter()
        .skip(1)
        .filter_map(|c| Cert::from_der(c).ok())
        .find(|c| leaf.named_issuer_is(c));
    let issuer = match issuer {
        Some(c) => Some(c),
        None if leaf.named_issuer_is(&leaf) => Some(leaf.clone()),
        None => None,
    };
    let checked = check(der, &leaf, issuer.as_ref(), now)?;
    match checked.status {
        Status::Good => Ok(checked.next_update),
        Status::Revoked { at, reason } => Err(format!(
            "the OCSP response says the certificate is REVOKED (since {}{})",
            crate::tls::http_date(at),
            reason.map_or_else(String::new, |r| format!(", reason {r}"))
        )),
        Status::Unknown => {
            Err("the OCSP response says the certificate's status is \"unknown\"".into())
        }
    }
}

/// Whether a CertID names `leaf` (and `issuer`'s hashes, if known).
fn names(id: &CertId, leaf: &Cert, issuer: Option<&Cert>) -> bool {
    if id.serial_number.as_bytes() != leaf.serial() {
        return false;
    }
    let Some(issuer) = issuer else {
        return true;
    };
    let Some(alg) = digest_alg(&id.hash_algorithm.oid) else {
        return false;
    };
    issuer.hashes(alg).is_ok_and(|(name, key)| {
        id.issuer_name_hash.as_bytes() == name && id.issuer_key_hash.as_bytes() == key
    })
}

/// The signed part of a SEQUENCE { tbs, algorithm, signature } as it was
/// received (a decoded-and-encoded copy could differ from what was signed).
fn signed_part(der: &[u8]) -> Result<&[u8], der::Error> {
    let mut reader = SliceReader::new(der)?;
    let _outer = Header::decode(&mut reader)?;
    reader.tlv_bytes()
}

/// The response is signed by the issuer, or by a delegated responder
/// certificate (carried in the response) that the issuer signed for
/// `id-kp-OCSPSigning` and that is valid now.
fn check_signature(
    basic_der: &[u8],
    basic: &BasicOcspResponse,
    issuer: &Cert,
    now: i64,
) -> Result<(), String> {
    let tbs = signed_part(basic_der)
        .map_err(|e| format!("the basic OCSP response is not valid DER ({e})"))?;
    let sig = basic
        .signature
        .as_bytes()
        .ok_or("the OCSP response's signature is not whole bytes")?;
    let alg = &basic.signature_algorithm;
    let by_issuer = match &basic.tbs_response_data.responder_id {
        ResponderId::ByName(name) => *name == issuer.parsed.tbs_certificate.subject,
        ResponderId::ByKey(hash) => {
            hash.as_bytes()
                == digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, issuer.key_bits()).as_ref()
        }
    };
    if by_issuer {
        return verify_signature(issuer, alg, tbs, sig)
            .map_err(|e| format!("the OCSP response's signature by the issuer {e}"));
    }
    let delegated = basic
        .certs
        .iter()
        .flatten()
        .filter_map(|c| c.to_der().ok().and_then(|d| Cert::from_der(&d).ok()))
        .find(|c| match &basic.tbs_response_data.responder_id {
            ResponderId::ByName(name) => *name == c.parsed.tbs_certificate.subject,
            ResponderId::ByKey(hash) => {
                hash.as_bytes()
                    == digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, c.key_bits()).as_ref()
            }
        })
        .ok_or(
            "the OCSP response is signed neither by the certificate's issuer nor by a \
             responder certificate it carries",
        )?;
    if !delegated.named_issuer_is(issuer) {
        return Err(
            "the OCSP responder's certificate was not issued by the certificate's issuer".into(),
        );
    }
    let cert_tbs = signed_part(&delegated.der)
        .map_err(|e| format!("the OCSP responder's certificate is not valid DER ({e})"))?;
    let cert_sig = delegated
        .parsed
        .signature
        .as_bytes()
        .ok_or("the OCSP responder's certificate signature is not whole bytes")?;
    verify_signature(
        issuer,
        &delegated.parsed.signature_algorithm,
        cert_tbs,
        cert_sig,
    )
    .map_err(|e| format!("the OCSP responder's certificate: its signature by the issuer {e}"))?;
    let ocsp_signing = matches!(
        delegated.parsed.tbs_certificate.get::<ExtendedKeyUsage>(),
        Ok(Some((_, eku))) if eku.0.contains(&KP_OCSP_SIGNING)
    );
    if !ocsp_signing {
        return Err(
            "the OCSP responder's certificate is not for OCSP signing (no id-kp-OCSPSigning)"
                .into(),
        );
    }
    let (not_before, not_after) = delegated.validity();
    if now < not_before || now >= not_after {
        return Err("the OCSP responder's certificate is not valid now".into());
    }
    verify_signature(&delegated, alg, tbs, sig)
        .map_err(|e| format!("the OCSP response's signature by its delegated responder {e}"))
}

/// Verifies `sig` over `msg` with `signer`'s key; the error completes
/// "the signature ...".
fn verify_signature(
    signer: &Cert,
    alg: &AlgorithmIdentifierOwned,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), String> {
    let spki = &signer.parsed.tbs_certificate.subject_public_key_info;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    let ring_alg: &'static dyn signature::VerificationAlgorithm = match (alg.oid, curve) {
        (RSA_SHA256, _) => &signature::RSA_PKCS1_2048_8192_SHA256,
        (RSA_SHA384, _) => &signature::RSA_PKCS1_2048_8192_SHA384,
        (RSA_SHA512, _) => &signature::RSA_PKCS1_2048_8192_SHA512,
        (ECDSA_SHA256, Some(P256)) => &signature::ECDSA_P256_SHA256_ASN1,
        (ECDSA_SHA256, Some(P384)) => &signature::ECDSA_P384_SHA256_ASN1,
        (ECDSA_SHA384, Some(P256)) => &signature::ECDSA_P256_SHA384_ASN1,
        (ECDSA_SHA384, Some(P384)) => &signature::ECDSA_P384_SHA384_ASN1,
        (ED25519, _) => &signature::ED25519,
        (oid, _) => {
            return Err(format!(
                "uses algorithm {oid}, which Baton does not verify \
                 (RSA PKCS#1 and ECDSA with SHA-2, and Ed25519, are)"
            ));
        }
    };
    signature::UnparsedPublicKey::new(ring_alg, signer.key_bits())
        .verify(msg, sig)
        .map_err(|_| "does not verify".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_at_half_validity_or_half_what_is_left() {
        let c = Checked {
            status: Status::Good,
            this_update: 1000,
            next_update: Some(2000),
            signature_checked: true,
        };
        assert_eq!(c.refresh_at(1100), Some(1500));
        // Past the half-life already: half of what is left.
        assert_eq!(c.refresh_at(1800), Some(1900));
        assert_eq!(c.refresh_at(1999), Some(2000));
        let none = Checked {
            next_update: None,
            ..c.clone()
        };
        assert_eq!(none.refresh_at(1100), None);
        let huge = Checked {
            this_update: i64::MIN,
            next_update: Some(i64::MAX),
            ..c
        };
        let _ = huge.refresh_at(0);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let leaf = Cert::from_der(&[0x30, 0x00]);
        assert!(leaf.is_err());
        assert!(signed_part(&[]).is_err());
        assert!(signed_part(&[0x30, 0x05, 0x30]).is_err());
    }
}
