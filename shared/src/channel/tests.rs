use super::messages::{
    MAX_NAME, TAG_CERTIFICATES, TAG_CLOSE_LISTENERS, TAG_STATS, TAG_TICKET_KEYS, encode_upstreams,
};
use super::*;
use crate::tls::CertBundle;
use std::os::fd::{AsRawFd, RawFd};

fn pair() -> (Channel, Channel) {
    let (a, b) = UnixStream::pair().unwrap();
    (Channel::new(a).unwrap(), Channel::new(b).unwrap())
}

#[test]
fn messages_round_trip_in_order() {
    let (mut m, mut w) = pair();
    m.send(&ToWorker::Drain).unwrap();
    m.send(&ToWorker::Stop).unwrap();
    assert_eq!(
        w.receive::<ToWorker>().unwrap(),
        vec![ToWorker::Drain, ToWorker::Stop]
    );
    let stats = ToMaster::Stats {
        connections: 7,
        requests: u64::MAX,
        responses: [1, 2, 3, 4, 5],
        bytes: 99,
        file_cache: FileCacheStats {
            hits: 10,
            misses: 11,
            bytes: u64::MAX - 1,
        },
        upstreams: vec![
            UpstreamCounters {
                upstream: "app".into(),
                server: "127.0.0.1:9000".into(),
                requests: 5,
                failures: 1,
                idle: 2,
                down: true,
            },
            UpstreamCounters {
                upstream: "\u{e9}".repeat(40),
                server: "unix:/run/app.sock".into(),
                ..Default::default()
            },
        ],
        http2: Box::new(Http2Counters {
            connections: 3,
            streams: u64::MAX,
            resets_received: 9,
            goaways: [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 2],
        }),
    };
    let failed = ToMaster::Failed("root \u{e9}t\u{e9} unreachable".into());
    w.send(&ToMaster::Ready).unwrap();
    w.send(&stats).unwrap();
    w.send(&failed).unwrap();
    assert_eq!(
        m.receive::<ToMaster>().unwrap(),
        vec![ToMaster::Ready, stats, failed]
    );
}

#[test]
fn certificates_and_ticket_keys_round_trip_and_bad_bodies_fail() {
    let (mut m, mut w) = pair();
    let bundles = vec![
        CertBundle {
            site: 3,
            cert_pem: vec![b'c'; 100_000],
            key_pem: b"key".to_vec(),
            ocsp: Vec::new(),
        },
        CertBundle {
            site: 0,
            cert_pem: b"x".to_vec(),
            key_pem: Vec::new(),
            ocsp: vec![1, 2, 3],
        },
    ];
    let certs = ToWorker::Certificates(bundles);
    let keys = ToWorker::TicketKeys(vec![[7; 32], [9; 32]]);
    let hold = ToWorker::HoldListeners(vec![0, 3, u32::MAX]);
    let health = ToWorker::UpstreamHealth(vec![
        HealthMark {
            upstream: 0,
            server: 2,
            up: false,
        },
        HealthMark {
            upstream: u32::MAX,
            server: 0,
            up: true,
        },
    ]);
    let mut frame = Vec::new();
    health.encode(&mut frame);
    assert_eq!(ToWorker::decode(&frame).unwrap(), health);
    assert!(ToWorker::decode(&frame[..frame.len() - 1]).is_err());
    let last = frame.len() - 1;
    frame[last] = 2;
    assert!(ToWorker::decode(&frame).is_err(), "a flag is 0 or 1");
    let close = ToWorker::CloseListeners(vec![]);
    m.send(&certs).unwrap();
    m.send(&keys).unwrap();
    m.send(&hold).unwrap();
    m.send(&close).unwrap();
    let mut got = Vec::new();
    while got.len() < 4 {
        m.flush().unwrap();
        got.extend(w.receive::<ToWorker>().unwrap());
    }
    assert_eq!(got, vec![certs, keys, hold, close]);
    assert!(ToWorker::decode(&[TAG_CLOSE_LISTENERS, 1, 2]).is_err());
    // Lengths that run past the body are refused, not trusted.
    let mut frame = vec![TAG_CERTIFICATES];
    frame.extend_from_slice(&1u32.to_le_bytes());
    frame.extend_from_slice(&0u32.to_le_bytes());
    frame.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        ToWorker::decode(&frame),
        Err(ChannelError::BadBody { .. })
    ));
    assert!(ToWorker::decode(&[TAG_TICKET_KEYS, 1, 2]).is_err());
    // The master still refuses frames from a worker above 64 KiB.
    const { assert!(ToWorker::MAX_LEN > MAX_FRAME && ToMaster::MAX_LEN == MAX_FRAME) };
}

#[test]
fn partial_frames_wait_for_the_rest() {
    let (a, b) = UnixStream::pair().unwrap();
    let mut r = Channel::new(b).unwrap();
    let mut bytes = Vec::new();
    frame(
        &ToMaster::Stats {
            connections: 1,
            requests: 2,
            responses: [0; 5],
            bytes: 0,
            file_cache: FileCacheStats::default(),
            upstreams: Vec::new(),
            http2: Default::default(),
        },
        &mut bytes,
    );
    (&a).write_all(&bytes[..5]).unwrap();
    assert!(r.receive::<ToMaster>().unwrap().is_empty());
    (&a).write_all(&bytes[5..]).unwrap();
    assert_eq!(r.receive::<ToMaster>().unwrap().len(), 1);
}

#[test]
fn upstream_counters_are_bounded_and_checked() {
    let many: Vec<UpstreamCounters> = (0..1000)
        .map(|i| UpstreamCounters {
            upstream: "u".repeat(500),
            server: format!("127.0.0.1:{i}"),
            ..Default::default()
        })
        .collect();
    let mut out = vec![TAG_STATS];
    out.extend_from_slice(&[0u8; 88]);
    encode_upstreams(&mut out, &many);
    assert!(out.len() < MAX_FRAME);
    let ToMaster::Stats { upstreams, .. } = ToMaster::decode(&out).unwrap() else {
        panic!("not stats");
    };
    assert_eq!(upstreams.len(), MAX_UPSTREAM_COUNTERS);
    assert_eq!(upstreams[0].upstream.len(), MAX_NAME);
    // Cut anywhere, or with bytes left over: refused.
    for cut in [90, 92, out.len() - 1] {
        assert!(ToMaster::decode(&out[..cut]).is_err(), "{cut}");
    }
    let mut long = out.clone();
    long.push(0);
    assert!(ToMaster::decode(&long).is_err());
}

#[test]
fn oversized_length_is_refused_before_allocating() {
    let (a, b) = UnixStream::pair().unwrap();
    let mut r = Channel::new(b).unwrap();
    (&a).write_all(&u32::MAX.to_le_bytes()).unwrap();
    assert!(matches!(
        r.receive::<ToMaster>(),
        Err(ChannelError::BadLength(_))
    ));
}

#[test]
fn unknown_tag_and_bad_body_are_errors() {
    let (a, b) = UnixStream::pair().unwrap();
    let mut r = Channel::new(b).unwrap();
    (&a).write_all(&[1, 0, 0, 0, 99]).unwrap();
    assert!(matches!(
        r.receive::<ToWorker>(),
        Err(ChannelError::UnknownTag(99))
    ));
    let (a, b) = UnixStream::pair().unwrap();
    let mut r = Channel::new(b).unwrap();
    (&a).write_all(&[2, 0, 0, 0, TAG_STATS, 1]).unwrap();
    assert!(matches!(
        r.receive::<ToMaster>(),
        Err(ChannelError::BadBody { .. })
    ));
}

#[test]
fn fds_travel_with_their_message() {
    use std::io::{Read, Seek};
    use std::os::fd::AsFd;
    let (mut m, mut w) = pair();
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(b"log line\n").unwrap();
    let msg = ToWorker::ReopenLogs {
        error_log: true,
        files: 1,
    };
    m.send_with_fds(&msg, &[file.as_fd()]).unwrap();
    assert_eq!(w.receive::<ToWorker>().unwrap(), vec![msg]);
    let mut got = w.take_fds(1).unwrap();
    let mut received = std::fs::File::from(got.remove(0));
    received.rewind().unwrap();
    let mut text = String::new();
    received.read_to_string(&mut text).unwrap();
    assert_eq!(text, "log line\n", "the same open file");
    assert!(matches!(
        w.take_fds(1),
        Err(ChannelError::MissingFds {
            expected: 1,
            got: 0
        })
    ));
}

/// How many fds of this process refer to the same open file as `fd`.
fn fds_on(fd: &impl AsRawFd) -> usize {
    let target = |p: std::path::PathBuf| std::fs::read_link(p).ok();
    let mine = target(format!("/proc/self/fd/{}", fd.as_raw_fd()).into());
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| target(e.path()) == mine)
        .count()
}

#[test]
fn any_number_of_fds_travel_in_batches_and_in_order() {
    use std::os::fd::AsFd;
    let (mut m, mut w) = pair();
    let file = tempfile::tempfile().unwrap();
    // More than the kernel carries in one message (253), and not a
    // multiple of the batch.
    let n = 3 * SCM_MAX_FD + 7;
    let fds: Vec<OwnedFd> = (0..n)
        .map(|_| file.as_fd().try_clone_to_owned().unwrap())
        .collect();
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
    let msg = ToWorker::ReopenLogs {
        error_log: false,
        files: n as u32,
    };
    m.send_with_fds(&msg, &borrowed).unwrap();
    m.send(&ToWorker::Drain).unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        m.flush().unwrap();
        got.extend(w.receive::<ToWorker>().unwrap());
    }
    assert_eq!(got, vec![msg, ToWorker::Drain], "carriers are not messages");
    let taken = w.take_fds(n).unwrap();
    assert_eq!(taken.len(), n);
    assert!(w.fds.is_empty());
    assert!(
        m.out_fds.is_empty(),
        "the sender's copies are closed once sent"
    );
}

#[test]
fn truncated_fds_fail_their_message_not_the_channel() {
    use std::os::fd::AsFd;
    let (mut m, mut w) = pair();
    w.fd_room = 4;
    let file = tempfile::tempfile().unwrap();
    let fds: Vec<OwnedFd> = (0..10)
        .map(|_| file.as_fd().try_clone_to_owned().unwrap())
        .collect();
    // A sender that ignores the batching: 10 fds on one carrier, for a
    // receiver that holds 4.
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    send_fds(&m.stream, &CARRIER, &fds).unwrap();
    drop(fds);
    let msg = ToWorker::ReopenLogs {
        error_log: false,
        files: raw.len() as u32,
    };
    m.send(&msg).unwrap();
    assert_eq!(w.receive::<ToWorker>().unwrap(), vec![msg]);
    assert!(matches!(w.take_fds(10), Err(ChannelError::TruncatedFds)));
    assert_eq!(fds_on(&file), 1, "the 4 fds that arrived were not closed");
    // The channel goes on, and so do later fds.
    let ok = ToWorker::ReopenLogs {
        error_log: false,
        files: 1,
    };
    m.send_with_fds(&ok, &[file.as_fd()]).unwrap();
    assert_eq!(w.receive::<ToWorker>().unwrap(), vec![ok]);
    assert_eq!(w.take_fds(1).unwrap().len(), 1);
}

#[test]
fn fds_to_a_side_that_takes_none_are_refused() {
    use std::os::fd::AsFd;
    let (mut m, mut w) = pair();
    let file = tempfile::tempfile().unwrap();
    w.send_with_fds(&ToMaster::Ready, &[file.as_fd()]).unwrap();
    assert!(matches!(
        m.receive::<ToMaster>(),
        Err(ChannelError::UnexpectedFds(1))
    ));
    assert!(m.fds.is_empty());
}

#[test]
fn eof_is_reported_after_the_last_message() {
    let (mut a, mut b) = pair();
    a.send(&ToWorker::Drain).unwrap();
    drop(a);
    assert_eq!(b.receive::<ToWorker>().unwrap(), vec![ToWorker::Drain]);
    assert!(b.eof());
}

#[test]
fn stats_of_a_worker_without_http2_counters_still_decode() {
    // A worker of an older image (adopted across a binary upgrade) sends
    // its upstreams last: its HTTP/2 counters read as zeros.
    let stats = ToMaster::Stats {
        connections: 1,
        requests: 2,
        responses: [0; 5],
        bytes: 3,
        file_cache: FileCacheStats::default(),
        upstreams: Vec::new(),
        http2: Default::default(),
    };
    let mut full = Vec::new();
    stats.encode(&mut full);
    let old = &full[..full.len() - (3 + HTTP2_CODES) * 8];
    assert_eq!(ToMaster::decode(old).unwrap(), stats);
    // Anything else after the upstreams is malformed.
    assert!(ToMaster::decode(&full[..full.len() - 1]).is_err());
}
