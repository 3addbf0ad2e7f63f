//! The OCSP refresher against a real `openssl ocsp` responder on loopback:
//! it fetches, stores atomically, refreshes at half the validity window,
//! backs off while the responder is down and recovers when it is back,
//! keeps a current stored staple, reports a revoked certificate, and
//! reports bad chains and bad responders with the reason.

mod pki;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use baton_certs::ocsp::{Event, Settings, StapleJob, fetch::Limits, spawn};
use baton_shared::ocsp::{self, Cert};
use baton_shared::tls::unix_now;
use crossbeam_channel::{Receiver, unbounded};
use pki::{Leaf, Pki, free_port};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

fn quick() -> Settings {
    Settings {
        limits: Limits {
            timeout: Duration::from_secs(5),
            max_response: 64 * 1024,
        },
        backoff_min: Duration::from_millis(200),
        backoff_max: Duration::from_secs(1),
        chain_check: Duration::from_millis(200),
    }
}

fn job(leaf: &Leaf, staple: &Path, responder: Option<String>) -> StapleJob {
    StapleJob {
        chain: leaf.chain.clone(),
        staple: staple.to_path_buf(),
        responder,
    }
}

fn next(events: &Receiver<Event>, within: Duration) -> Event {
    events
        .recv_timeout(within)
        .unwrap_or_else(|e| panic!("no event within {within:?}: {e}"))
}

/// Whether `der` is a good staple for `leaf` now (what the master serves).
fn serves(der: &[u8], leaf: &Leaf) -> Result<Option<i64>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&leaf.chain)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    ocsp::check_staple(der, &chain, unix_now())
}

#[test]
fn fetches_stores_refreshes_at_half_validity_and_recovers_from_a_down_responder() {
    let pki = Pki::new();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let leaf = pki.leaf("a.test", "2A01", Some(&url));
    pki.index(&[(&leaf, false)]);
    let staple = pki.path("a.der");
    let (jobs, jobs_rx) = unbounded();
    let (events_tx, events) = unbounded();
    let thread = spawn(jobs_rx, events_tx, quick()).unwrap();
    jobs.send(vec![job(&leaf, &staple, None)]).unwrap();

    // Nothing listens yet: failures, retried at 0.2, 0.4, 0.8, then 1 s.
    let mut delays = Vec::new();
    while delays.len() < 5 {
        match next(&events, Duration::from_secs(10)) {
            Event::Failed {
                reason,
                failures,
                retry_in,
                ..
            } => {
                assert!(reason.contains(&url), "{reason}");
                assert_eq!(failures as usize, delays.len() + 1);
                delays.push(retry_in.as_millis());
            }
            e => panic!("{e:?}"),
        }
    }
    assert_eq!(delays, [200, 400, 800, 1000, 1000]);
    assert!(!staple.exists());

    // The responder comes up: the next retry stores a good staple,
    // valid for a minute, to be refreshed at its half.
    let _responder = pki.responder(port, 1);
    let (this_update, refresh_at) = match next(&events, Duration::from_secs(10)) {
        Event::Stored {
            this_update,
            next_update,
            refresh_at,
            ..
        } => {
            assert_eq!(next_update, Some(this_update + 60));
            assert_eq!(refresh_at, this_update + 30);
            (this_update, refresh_at)
        }
        e => panic!("{e:?}"),
    };
    let first = std::fs::read(&staple).unwrap();
    assert_eq!(serves(&first, &leaf), Ok(Some(this_update + 60)));

    // While it refreshes, a reader never sees half a file.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, staple) = (Arc::clone(&stop), staple.clone());
        let chain = leaf.chain.clone();
        std::thread::spawn(move || {
            let pem = std::fs::read(chain).unwrap();
            let ders: Vec<_> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .unwrap();
            let (leaf, ca) = (
                Cert::from_der(&ders[0]).unwrap(),
                Cert::from_der(&ders[1]).unwrap(),
            );
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let der = std::fs::read(&staple).unwrap();
                ocsp::check(&der, &leaf, Some(&ca), unix_now()).unwrap();
                reads += 1;
            }
            reads
        })
    };

    // Half way through: a fresh one, not before.
    match next(&events, Duration::from_secs(60)) {
        Event::Stored {
            this_update: again, ..
        } => {
            assert!(unix_now() >= refresh_at, "refreshed before the half-life");
            assert!(again >= refresh_at, "{again} < {refresh_at}");
        }
        e => panic!("{e:?}"),
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    let second = std::fs::read(&staple).unwrap();
    assert_ne!(first, second);
    assert!(serves(&second, &leaf).is_ok());
    let names: Vec<String> = std::fs::read_dir(pki.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(names.is_empty(), "temporary files left: {names:?}");

    drop(jobs);
    thread.join().unwrap();
}

#[test]
fn a_current_staple_is_kept_a_bad_one_replaced_and_a_revoked_certificate_reported() {
    let pki = Pki::new();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let good = pki.leaf("a.test", "2A01", Some(&url));
    let revoked = pki.leaf("b.test", "2A02", Some(&url));
    let replaced = pki.leaf("c.test", "2A03", Some(&url));
    pki.index(&[(&good, false), (&revoked, true), (&replaced, false)]);
    let _responder = pki.responder(port, 10);

    // a.test's staple is current: kept (not fetched: its overridden
    // responder is down, and no failure is reported). c.test's stored staple is another certificate's:
    // fetched. b.test has none: fetched.
    let kept = pki.path("a.der");
    std::fs::write(&kept, pki.response(&good, 10)).unwrap();
    let before = std::fs::read(&kept).unwrap();
    let b_staple = pki.path("b.der");
    let c_staple = pki.path("c.der");
    std::fs::write(&c_staple, &before).unwrap();
    let (jobs, jobs_rx) = unbounded();
    let (events_tx, events) = unbounded();
    let thread = spawn(jobs_rx, events_tx, quick()).unwrap();
    let down = format!("http://127.0.0.1:{}", free_port());
    jobs.send(vec![
        job(&good, &kept, Some(down)),
        job(&revoked, &b_staple, None),
        job(&replaced, &c_staple, None),
    ])
    .unwrap();
    for _ in 0..3 {
        match next(&events, Duration::from_secs(10)) {
            Event::Kept {
                job,
                next_update,
                refresh_at,
            } => {
                assert_eq!(job.chain, good.chain);
                assert_eq!(refresh_at, next_update - 300);
            }
            Event::Revoked { job, since, reason } => {
                assert_eq!(job.chain, revoked.chain);
                assert_eq!(since, 1_767_225_600);
                assert_eq!(reason.as_deref(), Some("KeyCompromise"));
            }
            Event::Stored { job, .. } => assert_eq!(job.chain, replaced.chain),
            e => panic!("{e:?}"),
        }
    }
    assert!(serves(&std::fs::read(&c_staple).unwrap(), &replaced).is_ok());
    // The revoked answer is stored, so that the master stops stapling an
    // old "good" one; it refuses this one.
    let der = std::fs::read(&b_staple).unwrap();
    let e = serves(&der, &revoked).unwrap_err();
    assert!(e.contains("REVOKED"), "{e}");

    // Every turn is done once the thread has ended: nothing more.
    drop(jobs);
    thread.join().unwrap();
    let rest: Vec<Event> = events.try_iter().collect();
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(std::fs::read(&kept).unwrap(), before);
}

#[test]
fn a_certificate_renewed_in_place_gets_its_own_staple_at_once() {
    let pki = Pki::new();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let old = pki.leaf("a.test", "2A01", Some(&url));
    let renewed = pki.leaf("a2.test", "2A05", Some(&url));
    pki.index(&[(&old, false), (&renewed, false)]);
    let _responder = pki.responder(port, 10);
    let staple = pki.path("a.der");
    let (jobs, jobs_rx) = unbounded();
    let (events_tx, events) = unbounded();
    let thread = spawn(jobs_rx, events_tx, quick()).unwrap();
    jobs.send(vec![job(&old, &staple, None)]).unwrap();
    let first = match next(&events, Duration::from_secs(10)) {
        Event::Stored { refresh_at, .. } => refresh_at,
        e => panic!("{e:?}"),
    };
    let old_staple = std::fs::read(&staple).unwrap();
    assert!(serves(&old_staple, &old).is_ok());
    assert!(serves(&old_staple, &renewed).is_err());

    // The chain file is replaced (renamed over, as certbot and the ACME
    // helper do): a fetch for the new certificate, long before `first`.
    let tmp = pki.path("a.test.chain.pem.tmp");
    std::fs::copy(&renewed.chain, &tmp).unwrap();
    std::fs::rename(&tmp, &old.chain).unwrap();
    match next(&events, Duration::from_secs(10)) {
        Event::Stored { .. } => assert!(unix_now() < first),
        e => panic!("{e:?}"),
    }
    let der = std::fs::read(&staple).unwrap();
    // (`old.chain` is the renewed chain now.)
    assert!(serves(&der, &renewed).is_ok());
    drop(jobs);
    thread.join().unwrap();
}

#[test]
fn a_chain_that_appears_is_fetched_at_once_not_after_the_backoff() {
    let pki = Pki::new();
    let port = free_port();
    let leaf = pki.leaf("a.test", "2A01", Some(&format!("http://127.0.0.1:{port}")));
    pki.index(&[(&leaf, false)]);
    let _responder = pki.responder(port, 10);
    let chain = pki.path("later.pem");
    let staple = pki.path("a.der");
    let (jobs, jobs_rx) = unbounded();
    let (events_tx, events) = unbounded();
    let settings = Settings {
        backoff_min: Duration::from_secs(600),
        backoff_max: Duration::from_secs(600),
        ..quick()
    };
    let thread = spawn(jobs_rx, events_tx, settings).unwrap();
    jobs.send(vec![StapleJob {
        chain: chain.clone(),
        staple: staple.clone(),
        responder: None,
    }])
    .unwrap();
    match next(&events, Duration::from_secs(10)) {
        Event::Failed {
            reason, retry_in, ..
        } => {
            assert!(reason.contains("later.pem"), "{reason}");
            assert_eq!(retry_in, Duration::from_secs(600));
        }
        e => panic!("{e:?}"),
    }
    std::fs::copy(&leaf.chain, &chain).unwrap();
    match next(&events, Duration::from_secs(10)) {
        Event::Stored { .. } => {}
        e => panic!("{e:?}"),
    }
    drop(jobs);
    thread.join().unwrap();
}

/// An HTTP server that answers every request with `reply`.
fn fake_responder(reply: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let _ = conn.write_all(&reply);
        }
    });
    url
}

#[test]
fn bad_chains_and_bad_responders_are_reported_with_the_reason() {
    let pki = Pki::new();
    let with_aia = pki.leaf("a.test", "2A01", Some("http://127.0.0.1:1/"));
    let without_aia = pki.leaf("b.test", "2A02", None);
    pki.index(&[(&with_aia, false), (&without_aia, false)]);
    let garbage = fake_responder(
        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world".to_vec(),
    );
    let error = fake_responder(
        b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
    );
    let mut huge =
        b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\nConnection: close\r\n\r\n".to_vec();
    huge.resize(huge.len() + 200_000, 0x30);
    let huge = fake_responder(huge);

    // A real responder for the one case that gets a good answer (and
    // then cannot store it).
    let port = free_port();
    let _responder = pki.responder(port, 10);
    let real = format!("http://127.0.0.1:{port}");
    let leaf_only = pki.path("leaf-only.pem");
    std::fs::copy(&with_aia.cert, &leaf_only).unwrap();
    let staple = |n: &str| pki.path(n);
    let cases: Vec<(StapleJob, &str)> = vec![
        (
            job(&with_aia, &staple("1.der"), Some(garbage)),
            "not valid DER",
        ),
        (
            job(&with_aia, &staple("2.der"), Some(error)),
            "answered HTTP 500",
        ),
        (
            job(&with_aia, &staple("3.der"), Some(huge)),
            "larger than 65536 bytes",
        ),
        (
            job(
                &with_aia,
                &staple("4.der"),
                Some("https://127.0.0.1:1/".into()),
            ),
            "only http://",
        ),
        (
            job(&without_aia, &staple("5.der"), None),
            "names no OCSP responder",
        ),
        (
            StapleJob {
                chain: leaf_only,
                staple: staple("6.der"),
                responder: None,
            },
            "no issuer certificate",
        ),
        (
            StapleJob {
                chain: pki.path("missing.pem"),
                staple: staple("7.der"),
                responder: None,
            },
            "missing.pem",
        ),
        (
            job(&with_aia, &pki.path("no-such-dir/8.der"), Some(real)),
            "cannot store OCSP staple",
        ),
    ];
    let (jobs, jobs_rx) = unbounded();
    let (events_tx, events) = unbounded();
    let thread = spawn(jobs_rx, events_tx, quick()).unwrap();
    jobs.send(cases.iter().map(|(j, _)| j.clone()).collect())
        .unwrap();
    let mut seen = std::collections::HashMap::new();
    while seen.len() < cases.len() {
        match next(&events, Duration::from_secs(20)) {
            Event::Failed { job, reason, .. } => {
                seen.entry(job).or_insert(reason);
            }
            e => panic!("{e:?}"),
        }
    }
    for (job, want) in &cases {
        let reason = &seen[job];
        assert!(reason.contains(want), "{job:?}: {reason}");
        assert!(!job.staple.exists(), "{job:?}");
    }
    drop(jobs);
    thread.join().unwrap();
}
