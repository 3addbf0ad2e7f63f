//! Static files over real sockets: validators and conditional requests,
//! ranges, HEAD, path safety, dotfiles, symlinks, index and listings,
//! types, precompressed variants, configured headers, error pages and the
//! fallback.

mod common;

use std::io::{BufReader, Write};

use common::*;

fn req(port: u16, path: &str, extra: &str) -> Response {
    request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n"),
    )
    .expect("request")
}

/// `0123456789` repeated: a file whose every range is easy to check.
fn digits(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'0' + (i % 10) as u8).collect()
}

#[test]
fn validators_and_conditional_requests() {
    let env = Env::new();
    env.write_file("www/f.txt", &digits(100));
    let _s = env.start_config("", "");
    let r = req(env.port, "/f.txt", "");
    assert_eq!(r.status, 200);
    let etag = r.header("etag").expect("etag").to_string();
    let lm = r
        .header("last-modified")
        .expect("last-modified")
        .to_string();
    assert!(etag.starts_with('"') && etag.ends_with("-64\""), "{etag}");
    assert_eq!(r.header("accept-ranges"), Some("bytes"));

    let r = req(env.port, "/f.txt", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("content-length"), None);
    let r = req(env.port, "/f.txt", "If-None-Match: \"nope\", W/\"x\"\r\n");
    assert_eq!(r.status, 200);
    let r = req(env.port, "/f.txt", &format!("If-Modified-Since: {lm}\r\n"));
    assert_eq!(r.status, 304);
    let old = "Sat, 01 Jan 2000 00:00:00 GMT";
    let r = req(env.port, "/f.txt", &format!("If-Modified-Since: {old}\r\n"));
    assert_eq!(r.status, 200);
    let r = req(env.port, "/f.txt", "If-Match: \"nope\"\r\n");
    assert_eq!(r.status, 412);
    let r = req(env.port, "/f.txt", &format!("If-Match: {etag}\r\n"));
    assert_eq!(r.status, 200);
    let r = req(
        env.port,
        "/f.txt",
        &format!("If-Unmodified-Since: {old}\r\n"),
    );
    assert_eq!(r.status, 412);
    let r = req(
        env.port,
        "/f.txt",
        &format!("If-Unmodified-Since: {lm}\r\n"),
    );
    assert_eq!(r.status, 200);

    // Same size and mtime on another path (another host): the same ETag.
    let copy = env.write_file("www/copy.txt", &digits(100));
    let mtime = std::fs::metadata(env.path("www/f.txt"))
        .unwrap()
        .modified()
        .unwrap();
    std::fs::File::options()
        .write(true)
        .open(copy)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(
        req(env.port, "/copy.txt", "").header("etag"),
        Some(etag.as_str())
    );
}

#[test]
fn ranges() {
    let env = Env::new();
    let body = digits(1000);
    env.write_file("www/f.bin", &body);
    let _s = env.start_config("", "");
    let r = req(env.port, "/f.bin", "Range: bytes=10-19\r\n");
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/1000"));
    assert_eq!(r.body, &body[10..20]);
    let r = req(env.port, "/f.bin", "Range: bytes=-5\r\n");
    assert_eq!((r.status, r.body.as_slice()), (206, &body[995..]));
    let r = req(env.port, "/f.bin", "Range: bytes=990-\r\n");
    assert_eq!(r.header("content-range"), Some("bytes 990-999/1000"));
    assert_eq!(r.body, &body[990..]);
    let r = req(env.port, "/f.bin", "Range: bytes=1000-\r\n");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */1000"));
    // Several ranges: the documented choice is the whole file.
    let r = req(env.port, "/f.bin", "Range: bytes=0-1,5-6\r\n");
    assert_eq!((r.status, r.body.len()), (200, 1000));
    let r = req(env.port, "/f.bin", "Range: lines=1-2\r\n");
    assert_eq!(r.status, 200);
    // If-Range: a stale validator gets the whole file, a current one the range.
    let r = req(
        env.port,
        "/f.bin",
        "Range: bytes=0-0\r\nIf-Range: \"old\"\r\n",
    );
    assert_eq!(r.status, 200);
    let etag = r.header("etag").unwrap().to_string();
    let r = req(
        env.port,
        "/f.bin",
        &format!("Range: bytes=0-0\r\nIf-Range: {etag}\r\n"),
    );
    assert_eq!((r.status, r.body.as_slice()), (206, &b"0"[..]));
}

#[test]
fn head_has_gets_headers_and_no_body() {
    let env = Env::new();
    env.write_file("www/f.css", b"body{}");
    let _s = env.start_config("", "");
    let mut s = connect(env.port);
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut heads = Vec::new();
    for (method, path) in [
        ("HEAD", "/f.css"),
        ("GET", "/f.css"),
        ("HEAD", "/nope"),
        ("GET", "/nope"),
    ] {
        write!(s, "{method} {path} HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let r = read_response(&mut reader, method == "HEAD").unwrap();
        heads.push(r);
    }
    for pair in heads.chunks(2) {
        let (head, get) = (&pair[0], &pair[1]);
        assert!(head.body.is_empty());
        assert_eq!(head.status, get.status);
        for name in [
            "content-length",
            "content-type",
            "etag",
            "last-modified",
            "accept-ranges",
        ] {
            assert_eq!(head.header(name), get.header(name), "{name}");
        }
    }
    assert_eq!(heads[0].header("content-length"), Some("6"));
    // The connection is still usable after HEADs: no body was sent.
    write!(s, "GET /f.css HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut reader, false).unwrap().body, b"body{}");
}

#[test]
fn no_request_escapes_the_root() {
    let env = Env::new();
    env.write_file("secret.txt", b"SECRET");
    env.write_file("www/a/b.txt", b"b");
    let _s = env.start_config("", "");
    for target in [
        "/../secret.txt",
        "/a/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/a/%2e%2e/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/a%2f..%2f..%2fsecret.txt",
        "/%252e%252e/secret.txt",
        "/a/..%5c..%5csecret.txt",
        "http://localhost/../secret.txt",
        "http://localhost/%2e%2e/secret.txt",
        "/secret.txt%00.html",
        "/a/b.txt%00",
    ] {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let r = request(env.port, &raw).expect("response");
        assert!(
            matches!(r.status, 400 | 403 | 404),
            "{target} → {}",
            r.status
        );
        assert!(
            !String::from_utf8_lossy(&r.body).contains("SECRET"),
            "{target}"
        );
    }
    // Normalisation that stays inside is served.
    assert_eq!(req(env.port, "/a/./x/../b.txt", "").body, b"b");
    assert_eq!(req(env.port, "/%61/b.txt", "").body, b"b");
    // Absolute-form targets are routed by their authority and served.
    let r = request(
        env.port,
        "GET http://localhost/a/b.txt HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.body, b"b");
}

#[test]
fn dotfiles_are_denied_unless_allowed() {
    let env = Env::new();
    env.write_file("www/.env", b"KEY=1");
    env.write_file("www/.git/config", b"[core]");
    {
        let _s = env.start_config("", "");
        assert_eq!(req(env.port, "/.env", "").status, 404);
        assert_eq!(req(env.port, "/.git/config", "").status, 404);
        assert_eq!(req(env.port, "/%2egit/config", "").status, 404);
    }
    let env2 = Env::new();
    env2.write_file("www/.well-known/x", b"ok");
    let _s = env2.start_config("", "dotfiles = \"allow\"");
    assert_eq!(req(env2.port, "/.well-known/x", "").body, b"ok");
}

#[test]
fn symlink_policies() {
    use std::os::unix::fs::symlink;
    for (policy, inside, outside) in [
        ("follow", 200, 200),
        ("never", 403, 403),
        ("owner", 200, 200),
    ] {
        let env = Env::new();
        env.write_file("outside/secret.txt", b"SECRET");
        env.write_file("www/real/f.txt", b"f");
        symlink(env.path("www/real"), env.path("www/link")).unwrap();
        symlink(env.path("outside/secret.txt"), env.path("www/out.txt")).unwrap();
        let _s = env.start_config("", &format!("symlinks = \"{policy}\""));
        assert_eq!(req(env.port, "/real/f.txt", "").status, 200, "{policy}");
        assert_eq!(req(env.port, "/link/f.txt", "").status, inside, "{policy}");
        assert_eq!(req(env.port, "/out.txt", "").status, outside, "{policy}");
    }
    // `owner` with a different owner needs root to set one up.
    if is_root() {
        let env = Env::new();
        env.write_file("www/mine.txt", b"x");
        symlink(env.path("www/mine.txt"), env.path("www/theirs.txt")).unwrap();
        // The link belongs to nobody, the target to root.
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            &env.path("www/theirs.txt"),
            Some(nobody.uid),
            None,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
        let _s = env.start_config("", "symlinks = \"owner\"");
        assert_eq!(req(env.port, "/theirs.txt", "").status, 403);
        assert_eq!(req(env.port, "/mine.txt", "").status, 200);
    }
}

#[test]
fn index_redirect_and_listing() {
    let env = Env::new();
    env.write_file("www/docs/home.htm", b"home");
    std::fs::create_dir_all(env.path("www/empty")).unwrap();
    {
        let _s = env.start_config("", "index = [\"index.html\", \"home.htm\"]");
        assert_eq!(req(env.port, "/docs/", "").body, b"home");
        let r = req(env.port, "/docs?x=1", "");
        assert_eq!((r.status, r.header("location")), (301, Some("/docs/?x=1")));
        // No listing by default.
        assert_eq!(req(env.port, "/empty/", "").status, 403);
    }
    let env = Env::new();
    env.write_file("www/empty/<b>&\"x\".txt", b"x");
    let _s = env.start_config("", "directory_listing = true");
    let r = req(env.port, "/empty/", "");
    assert_eq!(r.status, 200);
    let html = String::from_utf8_lossy(&r.body);
    assert!(html.contains("&lt;b&gt;&amp;&quot;x&quot;.txt"), "{html}");
    assert!(html.contains("href=\"%3Cb%3E%26%22x%22.txt\""), "{html}");
    assert!(!html.contains("<b>"));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
}

#[test]
fn types_default_type_and_charset() {
    let files = || {
        let env = Env::new();
        for name in ["a.html", "a.js", "a.png", "a.md", "a.wasm", "README"] {
            env.write_file(&format!("www/{name}"), b"x");
        }
        env
    };
    let env = files();
    {
        let _s = env.start_config("", "");
        let ct = |p: &str| {
            req(env.port, p, "")
                .header("content-type")
                .map(str::to_string)
        };
        assert_eq!(ct("/a.html").as_deref(), Some("text/html; charset=utf-8"));
        assert_eq!(
            ct("/a.js").as_deref(),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(ct("/a.png").as_deref(), Some("image/png"));
        assert_eq!(ct("/a.wasm").as_deref(), Some("application/wasm"));
        assert_eq!(ct("/README").as_deref(), Some("application/octet-stream"));
    }
    let env = files();
    let _s = env.start_config(
        "",
        "types = { md = \"text/markdown\" }\ndefault_type = \"text/plain\"\ncharset = \"iso-8859-1\"",
    );
    let ct = |p: &str| {
        req(env.port, p, "")
            .header("content-type")
            .map(str::to_string)
    };
    assert_eq!(
        ct("/a.md").as_deref(),
        Some("text/markdown; charset=iso-8859-1")
    );
    assert_eq!(
        ct("/README").as_deref(),
        Some("text/plain; charset=iso-8859-1")
    );
    assert_eq!(ct("/a.png").as_deref(), Some("image/png"));
}

#[test]
fn precompressed_variants_follow_accept_encoding() {
    let env = Env::new();
    env.write_file("www/app.js", b"plain");
    env.write_file("www/app.js.gz", b"gzipped");
    env.write_file("www/app.js.br", b"brotli");
    env.write_file("www/only.css", b"plain");
    env.write_file("www/only.css.gz", b"gz");
    let _s = env.start_config("", "precompressed = true");
    let get = |ae: &str| {
        let extra = if ae.is_empty() {
            String::new()
        } else {
            format!("Accept-Encoding: {ae}\r\n")
        };
        req(env.port, "/app.js", &extra)
    };
    let r = get("");
    assert_eq!(
        (r.body.as_slice(), r.header("content-encoding")),
        (&b"plain"[..], None)
    );
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    let r = get("gzip, deflate, br");
    assert_eq!(
        (r.body.as_slice(), r.header("content-encoding")),
        (&b"brotli"[..], Some("br"))
    );
    assert_eq!(
        r.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    let r = get("gzip;q=1, br;q=0.5");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.body, b"gzipped");
    let r = get("br;q=0, gzip;q=0");
    assert_eq!(r.body, b"plain");
    let r = get("*");
    assert_eq!(r.header("content-encoding"), Some("br"));
    let r = req(env.port, "/only.css", "Accept-Encoding: br, gzip\r\n");
    assert_eq!(
        (r.body.as_slice(), r.header("content-encoding")),
        (&b"gz"[..], Some("gzip"))
    );
}

#[test]
fn headers_error_pages_and_fallback() {
    let env = Env::new();
    env.write_file("www/assets/a.css", b"a");
    env.write_file("www/404.html", b"<h1>custom 404</h1>");
    env.write_file("www/app/index.html", b"spa");
    {
        let _s = env.start_config(
            "",
            "headers = { \"Cache-Control\" = \"no-cache\", \"X-Frame-Options\" = \"DENY\" }\n\
             path_headers = { \"/assets/\" = { \"Cache-Control\" = \"max-age=31536000\" } }\n\
             error_pages = { 404 = \"/404.html\" }",
        );
        let r = req(env.port, "/", "");
        assert_eq!(r.header("cache-control"), Some("no-cache"));
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        let r = req(env.port, "/assets/a.css", "");
        assert_eq!(r.header("cache-control"), Some("max-age=31536000"));
        // A path that only looks like it is under the prefix.
        let r = req(env.port, "/assets/../index.html", "");
        assert_eq!(r.header("cache-control"), Some("no-cache"));
        let r = req(env.port, "/missing", "");
        assert_eq!(r.status, 404);
        assert_eq!(r.body, b"<h1>custom 404</h1>");
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        // Not on errors (a cached 404 would outlive the fix).
        assert_eq!(r.header("cache-control"), None);
    }
    let env = Env::new();
    env.write_file("www/assets/a.css", b"a");
    env.write_file("www/app/index.html", b"spa");
    let _s = env.start_config("", "fallback = \"/app/index.html\"");
    let r = req(env.port, "/app/some/client/route", "");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"spa"[..]));
    assert_eq!(req(env.port, "/assets/a.css", "").body, b"a");
    // Only a missing file falls back, not a refused path.
    assert_eq!(req(env.port, "/../x", "").status, 403);
}

#[test]
fn large_files_stream_with_sendfile_and_ranges() {
    let env = Env::new();
    let body = digits(8 << 20);
    env.write_file("www/big.bin", &body);
    let _s = env.start_config("", "");
    let r = req(env.port, "/big.bin", "");
    assert_eq!(r.body.len(), body.len());
    assert!(r.body == body);
    let r = req(env.port, "/big.bin", "Range: bytes=5000000-5000009\r\n");
    assert_eq!(r.body, &body[5_000_000..5_000_010]);
}

// ---- Issue 11: HTTP semantics and static files ----

/// The `href` values of a listing, as written (still HTML-escaped).
fn hrefs(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split_once('"').map(|(h, _)| h.to_string()))
        .collect()
}

/// HTML character references undone, for the few `escape` writes.
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[test]
fn listing_hrefs_are_never_schemes_and_lead_to_their_files() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    std::fs::create_dir_all(env.path("www/d")).unwrap();
    let names: &[&[u8]] = &[
        b"javascript:alert(document.domain)",
        b"JavaScript:alert(1)",
        b"data:text,x",
        b"vbscript:x",
        b"a:b:c",
        b"\"quoted\" & 'single'",
        b"<img src=x onerror=alert(1)>",
        b"new\nline",
        b"tab\tand\rcr",
        b"\xff\xfe not utf-8",
        b"caf\xc3\xa9",
        b"%41 percent",
        b"q?x=1#frag",
        b"back\\slash",
        b" leading space",
        b"-dash",
        b"~tilde",
        b"semi;colon=eq,comma",
        b"@at",
    ];
    for name in names {
        let p = env.path("www/d").join(OsStr::from_bytes(name));
        std::fs::write(&p, name).unwrap();
    }
    // A directory with a scheme-like name too: its link ends in `/`.
    let sub = env.path("www/d").join("javascript:sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("inner.txt"), b"inner").unwrap();
    let _s = env.start_config("", "directory_listing = true");
    let r = req(env.port, "/d/", "");
    assert_eq!(r.status, 200);
    let html = String::from_utf8_lossy(&r.body).into_owned();
    assert!(!html.contains("<img"), "{html}");
    assert!(!html.contains("<script"), "{html}");
    let links = hrefs(&html);
    // `../`, the directory, and every file.
    assert_eq!(links.len(), names.len() + 2, "{links:?}\n{html}");
    let mut bodies = Vec::new();
    for href in &links {
        // No scheme: a `:` before any `/`, `?` or `#` would make one (RFC
        // 3986 4.2); none is left unencoded anywhere.
        assert!(!href.contains(':'), "{href} in\n{html}");
        assert!(
            href.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%/".contains(&b)),
            "{href}"
        );
        if href == "../" {
            continue;
        }
        // Followed as a browser would, relative to the listing's URL.
        let target = format!("/d/{}", unescape(href));
        if href.ends_with('/') {
            let r = req(env.port, &format!("{target}inner.txt"), "");
            assert_eq!(
                (r.status, r.body.as_slice()),
                (200, &b"inner"[..]),
                "{href}"
            );
            continue;
        }
        let r = req(env.port, &target, "");
        assert_eq!(r.status, 200, "{href}");
        bodies.push(r.body);
    }
    bodies.sort();
    let mut want: Vec<Vec<u8>> = names.iter().map(|n| n.to_vec()).collect();
    want.sort();
    assert_eq!(bodies, want);
    // The names are shown, escaped.
    assert!(
        html.contains("javascript:alert(document.domain)</a>"),
        "{html}"
    );
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;</a>"),
        "{html}"
    );
    assert!(
        html.contains("&quot;quoted&quot; &amp; &#39;single&#39;</a>"),
        "{html}"
    );
}

#[test]
fn search_only_directories_are_crossed_under_every_symlink_policy() {
    use std::os::unix::fs::PermissionsExt;
    if !is_root() {
        // The harness only runs workers as another user (nobody) when the
        // tests run as root; as the owner, 0711 still lets us read.
        eprintln!("skipped: needs root, so that the workers run as nobody");
        return;
    }
    for policy in ["never", "owner", "follow"] {
        let env = Env::new();
        env.write_file("www/private/f.txt", b"through a search-only dir");
        env.write_file("www/private/deeper/g.txt", b"g");
        env.write_file("www/private/index.html", b"index");
        for d in ["www/private", "www/private/deeper"] {
            std::fs::set_permissions(env.path(d), std::fs::Permissions::from_mode(0o711)).unwrap();
        }
        let _s = env.start_config(
            "",
            &format!("symlinks = \"{policy}\"\ndirectory_listing = true"),
        );
        let r = req(env.port, "/private/f.txt", "");
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"through a search-only dir"[..]),
            "{policy}"
        );
        let r = req(env.port, "/private/deeper/g.txt", "");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"g"[..]), "{policy}");
        // The directory itself cannot be read, but its index can be opened.
        let r = req(env.port, "/private/", "");
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"index"[..]),
            "{policy}"
        );
        // With no index, it cannot be listed: 403, as before.
        assert_eq!(
            req(env.port, "/private/deeper/", "").status,
            403,
            "{policy}"
        );
        assert_eq!(
            req(env.port, "/private/missing", "").status,
            404,
            "{policy}"
        );
    }
}

#[test]
fn range_units_are_case_insensitive() {
    let env = Env::new();
    env.write_file("www/f.txt", &digits(100));
    let _s = env.start_config("", "");
    for unit in ["bytes", "Bytes", "BYTES", "bYtEs"] {
        let r = req(env.port, "/f.txt", &format!("Range: {unit}=2-4\r\n"));
        assert_eq!((r.status, r.body.as_slice()), (206, &b"234"[..]), "{unit}");
        assert_eq!(r.header("content-range"), Some("bytes 2-4/100"), "{unit}");
    }
}

#[test]
fn a_range_of_the_whole_file_is_a_200() {
    let env = Env::new();
    let body = digits(28);
    env.write_file("www/f.txt", &body);
    env.write_file("www/big.bin", &digits(100_000)); // past the file cache
    let _s = env.start_config("", "");
    for (path, len) in [("/f.txt", 28), ("/big.bin", 100_000)] {
        for range in [
            format!("bytes=0-{}", len - 1),
            format!("bytes=0-{}", len + 50),
            "bytes=0-".to_string(),
            format!("bytes=-{len}"),
            format!("bytes=-{}", len * 2),
        ] {
            let r = req(env.port, path, &format!("Range: {range}\r\n"));
            assert_eq!(r.status, 200, "{path} {range}");
            assert_eq!(r.header("content-range"), None, "{path} {range}");
            assert_eq!(r.body.len(), len, "{path} {range}");
            assert_eq!(r.header("accept-ranges"), Some("bytes"));
        }
    }
    // One byte short of the whole is still a part.
    let r = req(env.port, "/f.txt", "Range: bytes=1-\r\n");
    assert_eq!((r.status, r.body.as_slice()), (206, &body[1..]));
    let r = req(env.port, "/f.txt", "Range: bytes=0-26\r\n");
    assert_eq!((r.status, r.body.as_slice()), (206, &body[..27]));
}

#[test]
fn a_304_carries_no_representation_metadata() {
    let env = Env::new();
    env.write_file("www/app.js", b"plain");
    env.write_file("www/app.js.gz", b"gzipped");
    env.write_file("www/big.js", &digits(100_000)); // past the file cache
    env.write_file("www/big.js.gz", &digits(90_000));
    let _s = env.start_config(
        "",
        "precompressed = true\nheaders = { \"Cache-Control\" = \"max-age=60\" }",
    );
    for path in ["/app.js", "/big.js"] {
        // Twice: a cache fill, then a hit (for the small file).
        for _ in 0..2 {
            let full = req(env.port, path, "Accept-Encoding: gzip\r\n");
            assert_eq!(full.status, 200);
            assert_eq!(full.header("content-encoding"), Some("gzip"));
            let etag = full.header("etag").unwrap().to_string();
            let lm = full.header("last-modified").unwrap().to_string();
            for cond in [
                format!("If-None-Match: {etag}"),
                format!("If-Modified-Since: {lm}"),
            ] {
                let extra = format!("Accept-Encoding: gzip\r\n{cond}\r\n");
                let r = req(env.port, path, &extra);
                assert_eq!(r.status, 304, "{path} {cond}");
                for gone in [
                    "content-type",
                    "content-encoding",
                    "content-length",
                    "content-range",
                ] {
                    assert_eq!(r.header(gone), None, "{path} {cond}: {gone}");
                }
                assert_eq!(r.header("etag"), Some(etag.as_str()), "{path}");
                assert_eq!(r.header("vary"), Some("Accept-Encoding"), "{path}");
                assert_eq!(r.header("cache-control"), Some("max-age=60"), "{path}");
                assert!(r.body.is_empty());
            }
        }
    }
}

#[test]
fn a_future_mtime_is_clamped_to_the_date() {
    use std::time::{Duration, SystemTime};
    let env = Env::new();
    let future = SystemTime::now() + Duration::from_secs(10 * 86_400);
    for (name, len) in [("www/small.txt", 28), ("www/big.bin", 100_000)] {
        let p = env.write_file(name, &digits(len));
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(future)
            .unwrap();
    }
    let _s = env.start_config("", "");
    for path in ["/small.txt", "/big.bin"] {
        // Twice: from the disk (or a cache fill), then a cache hit.
        for _ in 0..2 {
            let r = req(env.port, path, "");
            assert_eq!(r.status, 200);
            let date = httpdate::parse_http_date(r.header("date").unwrap()).unwrap();
            let lm = r
                .header("last-modified")
                .expect("last-modified")
                .to_string();
            let lm_time = httpdate::parse_http_date(&lm).unwrap();
            assert!(
                lm_time <= date,
                "{path}: Last-Modified {lm} after Date {date:?}"
            );
            // The ETag still names this version, stably.
            let etag = r.header("etag").unwrap().to_string();
            let again = req(env.port, path, &format!("If-None-Match: {etag}\r\n"));
            assert_eq!(again.status, 304, "{path}");
            // The clamped date is no strong validator (it is the Date
            // itself): If-Range with it gets the whole file, never a part
            // that might not fit what the client has.
            let r = req(
                env.port,
                path,
                &format!("Range: bytes=0-0\r\nIf-Range: {lm}\r\n"),
            );
            assert_eq!(r.status, 200, "{path}");
        }
    }
}
