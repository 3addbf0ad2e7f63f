//! The worker's small-file cache (`file_cache_size`): what it serves is
//! always what is on disk now. Every change a deploy or an editor makes is
//! followed by a request on a new connection, with no sleep in between,
//! and must be answered from the changed file: the cache has no
//! time-to-live to wait out.
//!
//! One worker, so that every request meets the same cache, and a check
//! that the cache really holds the file (its inotify watches are in the
//! worker's `/proc/PID/fdinfo`), so these tests fail if the cache is
//! bypassed rather than pass vacuously.

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::time::{Duration, SystemTime};

use common::*;

fn req(port: u16, path: &str, extra: &str) -> Response {
    request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n"),
    )
    .expect("request")
}

/// A one-worker config for `root` with `global` and `site` lines added.
fn config(env: &Env, root: &str, global: &str, site: &str) -> String {
    env.config_with(global, site)
        .replacen("workers = 2", "workers = 1", 1)
        .replacen(
            &format!("root = \"{}\"", env.path("www").display()),
            &format!("root = \"{}\"", env.path(root).display()),
            1,
        )
}

fn start(env: &Env, root: &str, global: &str, site: &str) -> Server {
    env.write_config(&config(env, root, global, site));
    env.start()
}

/// inotify watches held by the serving worker (0 without an inotify fd).
fn worker_watches(env: &Env) -> usize {
    let pids = env.status().serving_pids();
    assert_eq!(pids.len(), 1, "one worker: {pids:?}");
    let fds = std::fs::read_dir(format!("/proc/{}/fd", pids[0])).expect("fd dir");
    let mut watches = 0;
    for fd in fds.flatten() {
        let is_inotify = std::fs::read_link(fd.path())
            .is_ok_and(|t| t.to_string_lossy() == "anon_inode:inotify");
        if is_inotify {
            let info = std::fs::read_to_string(format!(
                "/proc/{}/fdinfo/{}",
                pids[0],
                fd.file_name().to_string_lossy()
            ))
            .expect("fdinfo");
            watches += info
                .lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count();
        }
    }
    watches
}

/// GETs `path` and checks the body; returns the response.
fn expect_body(env: &Env, path: &str, body: &[u8]) -> Response {
    let r = req(env.port, path, "");
    assert_eq!(r.status, 200, "{path}: {r:?}");
    assert_eq!(r.body, body, "{path}: {}", String::from_utf8_lossy(&r.body));
    r
}

fn write(path: &std::path::Path, contents: &[u8]) {
    std::fs::write(path, contents).expect("write");
}

#[test]
fn every_change_to_a_cached_file_is_served_at_once() {
    let env = Env::new();
    let f = env.write_file("www/dir/a.txt", b"first version");
    let _s = start(&env, "www", "", "index = [\"first.html\", \"index.html\"]");
    expect_body(&env, "/dir/a.txt", b"first version");
    let r = expect_body(&env, "/dir/a.txt", b"first version");
    assert!(worker_watches(&env) > 0, "the file was not cached");
    let etag = r.header("etag").expect("etag").to_owned();

    // A range and a conditional request, answered from the cache.
    let r = req(env.port, "/dir/a.txt", "Range: bytes=6-12\r\n");
    assert_eq!((r.status, r.body.as_slice()), (206, &b"version"[..]));
    assert_eq!(r.header("content-range"), Some("bytes 6-12/13"));
    let r = req(
        env.port,
        "/dir/a.txt",
        &format!("If-None-Match: {etag}\r\n"),
    );
    assert_eq!(r.status, 304);

    // Rewritten in place, same length (and very likely the same second,
    // so the same ETag): the new bytes.
    write(&f, b"FIRST VERSION");
    expect_body(&env, "/dir/a.txt", b"FIRST VERSION");
    // Another length: new bytes, new ETag.
    write(&f, b"second, longer version");
    let r = expect_body(&env, "/dir/a.txt", b"second, longer version");
    assert_ne!(r.header("etag"), Some(etag.as_str()));

    // Replaced by a rename, as deploy tools do.
    let tmp = env.write_file("www/dir/.a.txt.tmp", b"renamed into place");
    std::fs::rename(&tmp, &f).expect("rename");
    expect_body(&env, "/dir/a.txt", b"renamed into place");

    // Touched: a new Last-Modified.
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(&f)
        .expect("open")
        .set_modified(old)
        .expect("touch");
    let r = expect_body(&env, "/dir/a.txt", b"renamed into place");
    assert_eq!(
        r.header("last-modified"),
        Some("Sun, 09 Sep 2001 01:46:40 GMT")
    );

    if is_root() {
        // The worker runs as nobody: a file it may no longer read is a 403,
        // and its directory made untraversable too.
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(req(env.port, "/dir/a.txt", "").status, 403);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        expect_body(&env, "/dir/a.txt", b"renamed into place");
        let dir = env.path("www/dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        assert_eq!(req(env.port, "/dir/a.txt", "").status, 403);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        expect_body(&env, "/dir/a.txt", b"renamed into place");
    }

    // The directory renamed away, then another put in its place.
    std::fs::rename(env.path("www/dir"), env.path("www/old")).expect("rename dir");
    assert_eq!(req(env.port, "/dir/a.txt", "").status, 404);
    expect_body(&env, "/old/a.txt", b"renamed into place");
    env.write_file("www/new/a.txt", b"from the new directory");
    std::fs::rename(env.path("www/new"), env.path("www/dir")).expect("rename dir");
    expect_body(&env, "/dir/a.txt", b"from the new directory");

    // Removed.
    std::fs::remove_file(env.path("www/dir/a.txt")).expect("rm");
    assert_eq!(req(env.port, "/dir/a.txt", "").status, 404);

    // An index file that comes first in `index` added to a directory
    // whose other index file was cached.
    expect_body(&env, "/", b"<h1>hello from baton</h1>\n");
    expect_body(&env, "/", b"<h1>hello from baton</h1>\n");
    env.write_file("www/first.html", b"the first index");
    expect_body(&env, "/", b"the first index");
}

/// Writes to other files in a cached file's directory (a log kept beside
/// the site, an upload) leave the cache alone, while the names that could
/// change a cached answer still empty it.
#[test]
fn unrelated_files_beside_a_cached_one_do_not_empty_the_cache() {
    let env = Env::new();
    env.write_file("www/a.txt", b"cached");
    let _s = start(&env, "www", "", "precompressed = true");
    expect_body(&env, "/a.txt", b"cached");
    let watched = worker_watches(&env);
    assert!(watched > 0, "the file was not cached");
    for i in 0..20 {
        // (Not `env.write_file`, which chmods the directories: a
        // directory's own attributes do matter.)
        write(
            &env.path("www/unrelated.log"),
            format!("line {i}\n").as_bytes(),
        );
        // A request after the write: the worker has read the inotify
        // queue (first thing in the turn) by the time this is answered.
        assert_eq!(req(env.port, "/missing", "").status, 404);
    }
    assert_eq!(
        worker_watches(&env),
        watched,
        "an unrelated file emptied the cache"
    );
    // A variant of the cached file is not unrelated.
    write(&env.path("www/a.txt.br"), b"brotli");
    assert_eq!(req(env.port, "/missing", "").status, 404);
    assert_eq!(
        worker_watches(&env),
        0,
        "a new variant did not empty the cache"
    );
    let r = req(env.port, "/a.txt", "Accept-Encoding: br\r\n");
    assert_eq!(r.body, b"brotli");
}

/// `root` is a symlink that a deploy re-points (`current -> releases/N`),
/// and the release directory itself can be swapped.
#[test]
fn a_re_pointed_root_symlink_is_seen_at_once() {
    let env = Env::new();
    env.write_file("releases/1/page.html", b"release one");
    env.write_file("releases/2/page.html", b"release two");
    symlink(env.path("releases/1"), env.path("current")).expect("symlink");
    let _s = start(&env, "current", "", "");
    expect_body(&env, "/page.html", b"release one");
    expect_body(&env, "/page.html", b"release one");
    assert!(worker_watches(&env) > 0, "the file was not cached");

    // Atomically: a new link renamed over the old one.
    symlink(env.path("releases/2"), env.path("current.new")).expect("symlink");
    std::fs::rename(env.path("current.new"), env.path("current")).expect("rename");
    expect_body(&env, "/page.html", b"release two");
    expect_body(&env, "/page.html", b"release two");

    // The release directory the link names replaced by another.
    std::fs::rename(env.path("releases/2"), env.path("releases/2.old")).expect("rename");
    env.write_file("releases/2/page.html", b"release two, rebuilt");
    expect_body(&env, "/page.html", b"release two, rebuilt");
}

#[test]
fn a_precompressed_variant_that_appears_is_served() {
    let env = Env::new();
    env.write_file("www/app.js", b"console.log('plain');");
    let _s = start(&env, "www", "", "precompressed = true");
    let gzip = "Accept-Encoding: gzip\r\n";
    for _ in 0..2 {
        let r = req(env.port, "/app.js", gzip);
        assert_eq!(r.body, b"console.log('plain');");
        assert_eq!(r.header("content-encoding"), None);
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    }
    assert!(worker_watches(&env) > 0, "the file was not cached");
    env.write_file("www/app.js.gz", b"pretend gzip");
    let r = req(env.port, "/app.js", gzip);
    assert_eq!(r.body, b"pretend gzip");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    // A client that does not take gzip still gets the plain file, and the
    // two answers do not mix in the cache.
    for _ in 0..2 {
        assert_eq!(req(env.port, "/app.js", "").body, b"console.log('plain');");
        assert_eq!(req(env.port, "/app.js", gzip).body, b"pretend gzip");
    }
}

/// A symlink below the root points outside any watched directory: such a
/// path is never cached, and a change to its target is served at once.
#[test]
fn a_path_through_a_symlink_below_the_root_is_always_fresh() {
    let env = Env::new();
    let target = env.write_file("elsewhere/t.txt", b"target one");
    symlink(&target, env.path("www/link.txt")).expect("symlink");
    let _s = start(&env, "www", "", "");
    expect_body(&env, "/link.txt", b"target one");
    expect_body(&env, "/link.txt", b"target one");
    write(&target, b"target two");
    expect_body(&env, "/link.txt", b"target two");
}

#[test]
fn large_files_bypass_the_cache_and_size_zero_turns_it_off() {
    let env = Env::new();
    let big: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    env.write_file("www/big.bin", &big);
    env.write_file("www/small.txt", b"small");
    let s = start(&env, "www", "file_cache_max_file_size = \"1k\"", "");
    expect_body(&env, "/big.bin", &big);
    expect_body(&env, "/big.bin", &big);
    assert_eq!(worker_watches(&env), 0, "a 4 KiB file was cached");
    expect_body(&env, "/small.txt", b"small");
    assert!(worker_watches(&env) > 0, "the small file was not cached");
    drop(s);

    // Another env: the first server may still hold its port.
    let env = Env::new();
    env.write_file("www/big.bin", &big);
    env.write_file("www/small.txt", b"small");
    let _s = start(&env, "www", "file_cache_size = 0", "");
    for _ in 0..2 {
        expect_body(&env, "/small.txt", b"small");
        expect_body(&env, "/big.bin", &big);
    }
    assert_eq!(worker_watches(&env), 0, "the cache is off");
}

/// Many clients reading a file while it is rewritten again and again: every
/// response is one whole version, with the Content-Length of that version,
/// never a torn or stale-length mix.
#[test]
fn rewrites_under_load_never_tear_a_response() {
    let env = Env::new();
    let versions: Vec<Vec<u8>> = (0..4).map(|v| vec![b'a' + v as u8; 100 + 37 * v]).collect();
    let f = env.write_file("www/v.txt", &versions[0]);
    let _s = start(&env, "www", "", "");
    let port = env.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (stop, versions) = (stop.clone(), versions.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 5000 {
                    let r = req(port, "/v.txt", "");
                    assert_eq!(r.status, 200);
                    assert!(
                        versions.contains(&r.body),
                        "a response that is no version: {:?}",
                        String::from_utf8_lossy(&r.body)
                    );
                    n += 1;
                }
                n
            })
        })
        .collect();
    // Atomic replacement, as deploys do it: readers see one version or the
    // next, whole.
    for i in 0..300 {
        let tmp = env.path("www/.v.tmp");
        write(&tmp, &versions[i % versions.len()]);
        std::fs::rename(&tmp, &f).expect("rename");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let served: usize = readers.into_iter().map(|t| t.join().expect("reader")).sum();
    assert!(served > 0);
    // And the last version is what is served now.
    let last = &versions[299 % versions.len()];
    expect_body(&env, "/v.txt", last);
}

/// The admin API's metrics count hits and misses and show the bytes held;
/// `GET /status` has them per worker.
#[test]
fn hits_misses_and_size_are_in_the_metrics() {
    let env = Env::new();
    env.write_file("www/m.txt", &[b'm'; 1000]);
    env.write_config(&with_admin(&env, &config(&env, "www", "", "")));
    let admin = env.path("admin.sock");
    let _s = env.start();
    for _ in 0..3 {
        expect_body(&env, "/m.txt", &[b'm'; 1000]);
    }
    assert_eq!(req(env.port, "/nope", "").status, 404);
    let fetch = |path: &str| admin_get(&admin, path);
    // Workers report about once a second: wait for the report that has
    // all four requests.
    let mut m = String::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            m = fetch("/metrics");
            m.contains("baton_file_cache_misses_total 2")
        }),
        "{m}"
    );
    assert!(m.contains("baton_file_cache_hits_total 2"), "{m}");
    // What counts against file_cache_size: the 1000 bytes, the key
    // ("/m.txt") and 256 per entry.
    assert!(m.contains("baton_file_cache_bytes 1262"), "{m}");
    let status = fetch("/status");
    assert!(
        status.contains("\"file_cache\":{\"bytes\":1262,\"hits\":2,\"misses\":2}"),
        "{status}"
    );
}

/// Every spelling of a path (`/./m.txt`, `//m.txt`, `/x/../m.txt`, long
/// ones) is its own key: however many a client sends, the cache holds no
/// more than `file_cache_size`, and every answer is right.
#[test]
fn many_spellings_of_a_path_stay_within_the_size() {
    let env = Env::new();
    env.write_file("www/m.txt", &[b'm'; 1000]);
    env.write_config(&with_admin(
        &env,
        &config(&env, "www", "file_cache_size = \"4k\"", ""),
    ));
    let admin = env.path("admin.sock");
    let _s = env.start();
    for i in 0..40 {
        let path = format!("/{}m.txt", "./".repeat(i * 50));
        expect_body(&env, &path, &[b'm'; 1000]);
    }
    // Each spelling is looked up once: 40 misses, once reported.
    let mut m = String::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            m = admin_get(&admin, "/metrics");
            m.contains("baton_file_cache_misses_total 40\n")
        }),
        "{m}"
    );
    let held: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("baton_file_cache_bytes "))
        .and_then(|n| n.parse().ok())
        .expect("baton_file_cache_bytes");
    assert!(held > 0 && held <= 4096, "{held} bytes held: {m}");
}

/// A root below a directory the workers' user may enter but not read
/// (0711): inotify cannot watch it, so the site is served from disk, as
/// fresh as ever, and the metrics show every lookup as a miss.
#[test]
fn a_root_whose_ancestor_cannot_be_watched_is_served_uncached() {
    if !is_root() {
        eprintln!("skipped: needs root, so that workers run as another user");
        return;
    }
    let env = Env::new();
    let f = env.write_file("private/www/p.txt", b"one");
    std::fs::set_permissions(env.path("private"), std::fs::Permissions::from_mode(0o711))
        .expect("chmod");
    env.write_config(&with_admin(&env, &config(&env, "private/www", "", "")));
    let admin = env.path("admin.sock");
    let _s = env.start();
    expect_body(&env, "/p.txt", b"one");
    expect_body(&env, "/p.txt", b"one");
    write(&f, b"two");
    expect_body(&env, "/p.txt", b"two");
    let mut m = String::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            m = admin_get(&admin, "/metrics");
            m.contains("baton_file_cache_misses_total 3")
        }),
        "{m}"
    );
    assert!(m.contains("baton_file_cache_hits_total 0"), "{m}");
}
