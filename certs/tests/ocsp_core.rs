//! The OCSP checks (`baton_shared::ocsp`) against responses made by the
//! real `openssl ocsp` responder: good, revoked, expired, for another
//! certificate, forged, signed by a certificate that may not sign OCSP.

mod pki;

use baton_shared::ocsp::{self, Cert, Status};
use baton_shared::tls::unix_now;
use pki::{Leaf, Pki, openssl};

fn cert(path: &std::path::Path) -> Cert {
    let pem = std::fs::read(path).unwrap();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
    Cert::from_der(&der).unwrap()
}

use rustls::pki_types::pem::PemObject;

fn pair(pki: &Pki, leaf: &Leaf) -> (Cert, Cert) {
    (cert(&leaf.cert), cert(&pki.path("ca.pem")))
}

#[test]
fn the_request_is_what_openssl_sends() {
    let pki = Pki::new();
    let leaf = pki.leaf("a.test", "2A01", Some("http://127.0.0.1:1/"));
    let (l, ca) = pair(&pki, &leaf);
    let cert = leaf.cert.to_str().unwrap();
    openssl(
        pki.dir.path(),
        &[
            "ocsp",
            "-issuer",
            "ca.pem",
            "-cert",
            cert,
            "-no_nonce",
            "-reqout",
            "mine.der",
        ],
    );
    let theirs = std::fs::read(pki.path("mine.der")).unwrap();
    assert_eq!(ocsp::request(&l, &ca).unwrap(), theirs);
    assert_eq!(l.responder_url().as_deref(), Some("http://127.0.0.1:1/"));
}

#[test]
fn good_revoked_and_expired_responses() {
    let pki = Pki::new();
    let good = pki.leaf("a.test", "2A01", None);
    let bad = pki.leaf("b.test", "2A02", None);
    pki.index(&[(&good, false), (&bad, true)]);
    let (l, ca) = pair(&pki, &good);
    let der = pki.response(&good, 10);
    let now = unix_now();
    let c = ocsp::check(&der, &l, Some(&ca), now).unwrap();
    assert_eq!(c.status, Status::Good);
    assert!(c.signature_checked);
    assert!((c.this_update - now).abs() < 60, "{c:?}");
    assert_eq!(c.next_update, Some(c.this_update + 600));
    assert_eq!(c.refresh_at(now), Some(c.this_update + 300));
    // Without the issuer: serial only, signature not checked.
    let c2 = ocsp::check(&der, &l, None, now).unwrap();
    assert!(!c2.signature_checked);

    // Expired, and not yet valid (the responder's clock far ahead).
    let next = c.next_update.unwrap();
    let e = ocsp::check(&der, &l, Some(&ca), next).unwrap_err();
    assert!(e.contains("expired"), "{e}");
    let e = ocsp::check(&der, &l, Some(&ca), c.this_update - 3600).unwrap_err();
    assert!(e.contains("not valid yet"), "{e}");

    // Revoked: a valid response, which says so.
    let (lb, _) = pair(&pki, &bad);
    let der = pki.response(&bad, 10);
    let c = ocsp::check(&der, &lb, Some(&ca), now).unwrap();
    match c.status {
        Status::Revoked { at, reason } => {
            assert_eq!(at, 1_767_225_600, "2026-01-01T00:00:00Z");
            assert_eq!(reason.as_deref(), Some("KeyCompromise"));
        }
        s => panic!("{s:?}"),
    }
    // The staple check (what the master serves) refuses it loudly.
    let chain = [
        rustls::pki_types::CertificateDer::from(lb.der().to_vec()),
        rustls::pki_types::CertificateDer::from(ca.der().to_vec()),
    ];
    let e = ocsp::check_staple(&der, &chain, now).unwrap_err();
    assert!(e.contains("REVOKED"), "{e}");

    // Not in the index: unknown.
    let other = pki.leaf("c.test", "2A03", None);
    let (lc, _) = pair(&pki, &other);
    let c = ocsp::check(&pki.response(&other, 10), &lc, Some(&ca), now).unwrap();
    assert_eq!(c.status, Status::Unknown);

    // No nextUpdate (no -nmin): good, no refresh time of its own.
    let c = ocsp::check(&pki.response(&good, 0), &l, Some(&ca), now).unwrap();
    assert_eq!(c.next_update, None);
    assert_eq!(c.refresh_at(now), None);
}

#[test]
fn a_response_for_another_certificate_is_refused() {
    let pki = Pki::new();
    let a = pki.leaf("a.test", "2A01", None);
    let b = pki.leaf("b.test", "2A02", None);
    pki.index(&[(&a, false), (&b, false)]);
    let (la, ca) = pair(&pki, &a);
    let e = ocsp::check(&pki.response(&b, 10), &la, Some(&ca), unix_now()).unwrap_err();
    assert!(e.contains("another certificate"), "{e}");

    // Same serial, another CA: the issuer hashes tell them apart.
    let other = Pki::new();
    let same_serial = other.leaf("a.test", "2A01", None);
    other.index(&[(&same_serial, false)]);
    let der = other.response(&same_serial, 10);
    let e = ocsp::check(&der, &la, Some(&ca), unix_now()).unwrap_err();
    assert!(e.contains("another certificate"), "{e}");
    // Without the issuer at hand only the serial can be matched.
    assert!(ocsp::check(&der, &la, None, unix_now()).is_ok());
}

#[test]
fn signers_the_issuer_did_not_authorise_are_refused() {
    let pki = Pki::new();
    let a = pki.leaf("a.test", "2A01", None);
    pki.index(&[(&a, false)]);
    let (la, ca) = pair(&pki, &a);
    let d = pki.dir.path();
    let cert = a.cert.to_str().unwrap();
    openssl(
        d,
        &[
            "ocsp",
            "-issuer",
            "ca.pem",
            "-cert",
            cert,
            "-no_nonce",
            "-reqout",
            "q.der",
        ],
    );
    let respond = |signer: &str, key: &str, out: &str| {
        openssl(
            d,
            &[
                "ocsp",
                "-index",
                "index.txt",
                "-rsigner",
                signer,
                "-rkey",
                key,
                "-CA",
                "ca.pem",
                "-reqin",
                "q.der",
                "-respout",
                out,
                "-nmin",
                "10",
            ],
        );
        std::fs::read(d.join(out)).unwrap()
    };
    let now = unix_now();

    // The issuer itself (ECDSA): fine.
    let der = respond("ca.pem", "ca.key", "by-ca.der");
    assert_eq!(
        ocsp::check(&der, &la, Some(&ca), now).unwrap().status,
        Status::Good
    );

    // A certificate of the same CA without id-kp-OCSPSigning.
    let b = pki.leaf("b.test", "2A02", None);
    let der = respond(
        b.cert.to_str().unwrap(),
        b.key.to_str().unwrap(),
        "by-leaf.der",
    );
    let e = ocsp::check(&der, &la, Some(&ca), now).unwrap_err();
    assert!(e.contains("not for OCSP signing"), "{e}");

    // A responder certificate of another CA with the same name: forged.
    let rogue = Pki::new();
    let der = respond(
        rogue.path("rsp.pem").to_str().unwrap(),
        rogue.path("rsp.key").to_str().unwrap(),
        "rogue.der",
    );
    let e = ocsp::check(&der, &la, Some(&ca), now).unwrap_err();
    assert!(e.contains("does not verify"), "{e}");

    // The right responder, a flipped bit in the signed part.
    let mut der = respond("rsp.pem", "rsp.key", "good.der");
    assert!(ocsp::check(&der, &la, Some(&ca), now).is_ok());
    let at = der
        .windows(2)
        .position(|w| w == [0x80, 0x00])
        .expect("the good status");
    // thisUpdate follows: tag, length, "YYYYMMDDHHMMSS", "Z". A second
    // later is still a time, and no longer what was signed.
    assert_eq!(der[at + 2], 0x18);
    der[at + 4 + 13] ^= 0x01;
    let e = ocsp::check(&der, &la, Some(&ca), now).unwrap_err();
    assert!(e.contains("does not verify"), "{e}");
}

#[test]
fn malformed_responses_are_errors() {
    let pki = Pki::new();
    let a = pki.leaf("a.test", "2A01", None);
    pki.index(&[(&a, false)]);
    let (la, ca) = pair(&pki, &a);
    let der = pki.response(&a, 10);
    let now = unix_now();
    for cut in [0, 1, 5, der.len() / 2, der.len() - 1] {
        assert!(
            ocsp::check(&der[..cut], &la, Some(&ca), now).is_err(),
            "{cut}"
        );
    }
    assert!(ocsp::check(b"<html>oops</html>", &la, Some(&ca), now).is_err());
    // "tryLater", as responders under load say.
    let e = ocsp::check(&[0x30, 0x03, 0x0a, 0x01, 0x03], &la, Some(&ca), now).unwrap_err();
    assert!(e.contains("TryLater"), "{e}");
}

/// Every single-byte corruption and every truncation of a real response
/// is an error or a verdict, never a panic; and none of them passes as
/// the good, signed answer it was (the signature covers what matters).
#[test]
fn corrupted_responses_never_panic_and_never_pass_as_good() {
    let pki = Pki::new();
    let a = pki.leaf("a.test", "2A01", None);
    pki.index(&[(&a, false)]);
    let (la, ca) = pair(&pki, &a);
    let der = pki.response(&a, 10);
    let now = unix_now();
    let original = ocsp::check(&der, &la, Some(&ca), now).unwrap();
    let mut passed = Vec::new();
    for i in 0..der.len() {
        let mut bad = der.clone();
        bad[i] ^= 0xff;
        if let Ok(c) = ocsp::check(&bad, &la, Some(&ca), now) {
            passed.push((i, c));
        }
        let _ = ocsp::check(&der[..i], &la, Some(&ca), now);
    }
    // Only bytes outside the signed data may change without notice (in
    // practice: the NULL parameters of the signature algorithm, 1 byte
    // of 1067). Whatever passes says the same thing.
    assert!(passed.len() <= 4, "{} corruptions passed", passed.len());
    for (i, c) in &passed {
        assert_eq!(c.status, original.status, "byte {i}");
        assert_eq!(c.this_update, original.this_update, "byte {i}");
        assert_eq!(c.next_update, original.next_update, "byte {i}");
    }
}
