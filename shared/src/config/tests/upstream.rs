//! `[[upstream]]`, `[[site.route]]` and `trusted_proxies` through the whole
//! loader.

use std::time::Duration;

use super::{errors, errors_in, load_in, ok};
use crate::config::bounds::{DURATIONS, format_duration};
use crate::config::parse::TOP_KEYS;
use crate::config::parse::upstream::HEALTH_KEYS;
use crate::config::upstream::{Balance, Expect, ExpectStatus, UpstreamAddr};

const SITE: &str = "[[site]]\nlisten = [\"127.0.0.1:8080\"]\n";

#[test]
fn a_full_upstream_and_its_routes() {
    let text = format!(
        r#"trusted_proxies = ["10.0.0.0/8", "::1"]
[[upstream]]
name = "app"
servers = ["127.0.0.1:9000", {{ address = "localhost:9001", weight = 3 }}, {{ address = "127.0.0.1:9002", backup = true }}]
balance = "header:X-Session"
keepalive = 8
keepalive_requests = 50
keepalive_timeout = "30s"
connect_timeout = "2s"
read_timeout = "10s"
send_timeout = "11s"
max_fails = 3
fail_timeout = "20s"
{SITE}
[[site.route]]
path = "/api/"
proxy = "app"
strip_prefix = true
headers = {{ "X-Frame-Options" = "DENY" }}
websocket = false
[[site.route]]
path = "/other/"
proxy = "http://127.0.0.1:7000"
"#
    );
    let (_, c) = ok(&text);
    let p = &c.proxy;
    assert_eq!(p.trusted_proxies.len(), 2);
    assert_eq!(p.upstreams.len(), 2);
    let app = &p.upstreams[0];
    assert_eq!(app.name, "app");
    assert_eq!(app.balance, Balance::Header("x-session".into()));
    assert_eq!(
        app.servers[0].addr,
        UpstreamAddr::Tcp("127.0.0.1:9000".parse().unwrap())
    );
    // localhost resolved at load: one server per address, weight kept.
    assert!(app.servers[1..].iter().any(|s| s.weight == 3));
    assert!(app.servers.last().unwrap().backup);
    assert_eq!(app.keepalive, 8);
    assert_eq!(app.keepalive_requests, 50);
    assert_eq!(app.connect_timeout, Duration::from_secs(2));
    assert_eq!(app.read_timeout, Duration::from_secs(10));
    assert_eq!(app.send_timeout, Duration::from_secs(11));
    assert_eq!(app.max_fails, 3);
    assert_eq!(app.fail_timeout, Duration::from_secs(20));
    let site = &c.sites[0];
    assert_eq!(site.root, None);
    assert_eq!(site.routes.len(), 2);
    assert_eq!(site.routes[0].upstream, 0);
    assert!(site.routes[0].strip_prefix && !site.routes[0].websocket);
    assert_eq!(site.routes[0].headers[0].0, "X-Frame-Options");
    assert_eq!(site.routes[1].upstream, 1);
    assert_eq!(p.upstreams[1].name, "http://127.0.0.1:7000");
}

#[test]
fn upstream_errors_are_located_with_suggestions() {
    let text = format!(
        r#"[[upstream]]
name = "app"
server = ["127.0.0.1:9000"]
balanse = "ip_hash"
[[upstream]]
servers = ["127.0.0.1", {{ adress = "x" }}, "nohost.invalid:80", "127.0.0.1:0", 5]
balance = "random"
keepalive = -1
health = {{ path = "healthz", intervall = "5s" }}
tls = {{ sever_name = "x" }}
{SITE}[[site.route]]
path = "api"
proxy = "ap"
strip_prefx = true
"#
    );
    let errs = errors(&text);
    let expected = [
        "3:1: unknown key \"server\", did you mean \"servers\"?",
        "4:1: unknown key \"balanse\", did you mean \"balance\"?",
        "5:1: this [[upstream]] has no \"name\" (for example name = \"app\")",
    ];
    for e in expected {
        assert!(errs.iter().any(|x| x == e), "{e}\nin {errs:#?}");
    }
    let has = |line: &str, text: &str| {
        assert!(
            errs.iter().any(|e| e.starts_with(line) && e.contains(text)),
            "{line} {text} in {errs:#?}"
        )
    };
    has("6:12:", "needs a port");
    has("6:27:", "unknown key \"adress\", did you mean \"address\"?");
    has("6:43:", "cannot resolve \"nohost.invalid\"");
    has("6:64:", "port \"0\"");
    has("6:79:", "\"servers\" must be an address");
    has(
        "7:11:",
        "\"round_robin\", \"least_conn\", \"ip_hash\" or \"header:NAME\"",
    );
    has("8:13:", "a whole number from 0 to 4096");
    has("9:19:", "a URL path like \"/healthz\"");
    has(
        "9:30:",
        "unknown key \"intervall\", did you mean \"interval\"?",
    );
    has(
        "10:9:",
        "unknown key \"sever_name\", did you mean \"server_name\"?",
    );
    has("14:8:", "a URL path prefix");
    has("15:9:", "did you mean \"app\"?");
    has("16:1:", "did you mean \"strip_prefix\"?");
}

#[test]
fn route_targets() {
    for (proxy, error) in [
        ("ftp://x", "only http:// and https:// URLs are supported"),
        ("https://127.0.0.1:9000/x", "has a path"),
        ("http://127.0.0.1:9000/x", "has a path"),
        ("nothing", "names no [[upstream]] (there is none"),
    ] {
        let text = format!("{SITE}[[site.route]]\npath = \"/\"\nproxy = \"{proxy}\"\n");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("5:9:") && errs[0].contains(error),
            "{errs:?}"
        );
    }
    // A URL without a port is port 80; the same URL twice is one upstream.
    let text = format!(
        "{SITE}[[site.route]]\npath = \"/a/\"\nproxy = \"http://127.0.0.1\"\n\
         [[site.route]]\npath = \"/b/\"\nproxy = \"http://127.0.0.1\"\n"
    );
    let (_, c) = ok(&text);
    assert_eq!(c.proxy.upstreams.len(), 1);
    assert_eq!(
        c.proxy.upstreams[0].servers[0].addr,
        UpstreamAddr::Tcp("127.0.0.1:80".parse().unwrap())
    );
    // The same path twice in a site.
    let text = format!(
        "{SITE}[[site.route]]\npath = \"/a/\"\nproxy = \"http://127.0.0.1\"\n\
         [[site.route]]\npath = \"/a/\"\nproxy = \"http://127.0.0.1\"\n"
    );
    assert_eq!(
        errors(&text),
        ["6:1: route path \"/a/\" is already routed on line 3 of this site"]
    );
}

#[test]
fn duplicate_names_backups_and_trusted_proxies() {
    let text = format!(
        "trusted_proxies = [\"10.0.0.0/33\"]\n\
         [[upstream]]\nname = \"a\"\nservers = [{{ address = \"127.0.0.1:1\", backup = true }}]\n\
         [[upstream]]\nname = \"a\"\nservers = [\"127.0.0.1:2\"]\n{SITE}root = \"www\"\n"
    );
    let errs = errors(&text);
    assert!(
        errs[0].starts_with("1:20:") && errs[0].contains("CIDR"),
        "{errs:?}"
    );
    assert_eq!(
        errs[1],
        "2:1: every server of upstream \"a\" is a backup: at least one must not be"
    );
    assert_eq!(errs[2], "6:8: upstream \"a\" is already defined on line 2");
}

#[test]
fn unix_servers_must_be_existing_sockets() {
    let d = super::dir();
    let sock = d.path().join("app.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let file = d.path().join("www/file");
    std::fs::write(&file, "x").unwrap();
    let text = format!(
        "[[upstream]]\nname = \"a\"\nservers = [\"unix:{}\", \"unix:{}\", \"unix:{}/none\", \"unix:rel\"]\n{SITE}root = \"www\"\n",
        sock.display(),
        file.display(),
        d.path().display()
    );
    let errs = errors_in(&d, 0, &text);
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(errs[0].contains("is not a socket"), "{errs:?}");
    assert!(errs[1].contains("No such file"), "{errs:?}");
    assert!(errs[2].contains("must be absolute"), "{errs:?}");
    let text = format!(
        "[[upstream]]\nname = \"a\"\nservers = [\"unix:{}\"]\n{SITE}root = \"www\"\n",
        sock.display()
    );
    let c = load_in(&d, 0, &text).unwrap();
    assert_eq!(
        c.proxy.upstreams[0].servers[0].addr,
        UpstreamAddr::Unix(sock)
    );
}

#[test]
fn a_site_needs_a_root_or_a_route() {
    assert_eq!(
        errors(SITE),
        ["1:1: this [[site]] has no \"root\" (the directory to serve) and no [[site.route]]"]
    );
}

/// The [[upstream]] rows of `bounds::DURATIONS`, at and past their ends.
#[test]
fn upstream_durations_are_bounded() {
    for b in DURATIONS.iter().filter(|b| !TOP_KEYS.contains(&b.key)) {
        let key = b.key;
        // `health = { interval, timeout }` are read inside their table.
        let (open, close, col) = if HEALTH_KEYS.contains(&key) {
            ("health = { ", " }", key.len() + 15)
        } else {
            ("", "", key.len() + 4)
        };
        let up = |v: &str| {
            format!(
                "[[upstream]]\nname = \"a\"\nservers = [\"127.0.0.1:1\"]\n{open}{key} = {v}{close}\n{SITE}root = \"www\"\n"
            )
        };
        let max = format_duration(b.max);
        ok(&up(&format!("\"{max}\"")));
        let over = format_duration(b.max + Duration::from_millis(1));
        assert_eq!(
            errors(&up(&format!("\"{over}\""))),
            [format!(
                "4:{col}: {key} = \"{over}\" is too long (at most {max})"
            )]
        );
        ok(&up(&format!("\"{}\"", format_duration(b.min))));
    }
    // Those shared with the top level are bounded the same way.
    let text = format!(
        "[[upstream]]\nname = \"a\"\nservers = [\"127.0.0.1:1\"]\nsend_timeout = \"2h\"\n{SITE}root = \"www\"\n"
    );
    assert_eq!(
        errors(&text),
        ["4:16: send_timeout = \"2h\" is too long (at most 1h)"]
    );
}

#[test]
fn route_compress_and_via() {
    let text = format!(
        r#"{SITE}compress = true
[[site.route]]
path = "/a/"
proxy = "http://127.0.0.1:7000"
compress = {{ encodings = ["gzip"], min_length = 10 }}
via = true
[[site.route]]
path = "/b/"
proxy = "http://127.0.0.1:7000"
compress = false
[[site.route]]
path = "/c/"
proxy = "http://127.0.0.1:7000"
"#
    );
    let (_, c) = ok(&text);
    let r = &c.sites[0].routes;
    let a = r[0].compress.as_ref().and_then(Option::as_ref).unwrap();
    assert_eq!(a.min_length, 10);
    assert!(r[0].via);
    assert_eq!(r[1].compress, Some(None));
    assert!(!r[1].via);
    assert_eq!(r[2].compress, None);
    let text = format!(
        r#"{SITE}[[site.route]]
path = "/a/"
proxy = "http://127.0.0.1:7000"
compress = {{ encodings = ["gzp"] }}
via = "yes"
comprss = true
"#
    );
    let e = errors(&text);
    assert!(
        e.iter()
            .any(|m| m.starts_with("6:27:") && m.contains("did you mean \"gzip\"")),
        "{e:?}"
    );
    assert!(e.iter().any(|m| m.starts_with("7:7:")), "{e:?}");
    assert!(
        e.iter()
            .any(|m| m.starts_with("8:1:") && m.contains("did you mean \"compress\"")),
        "{e:?}"
    );
}

#[test]
fn health_checks_are_read_with_defaults_and_bounded() {
    let text = format!(
        r#"[[upstream]]
name = "app"
servers = ["127.0.0.1:9000"]
health = {{ path = "/healthz?full=1", interval = "500ms", timeout = "250ms", expect = 204, rise = 2, fall = 3 }}
[[upstream]]
name = "plain"
servers = ["127.0.0.1:9001"]
[[upstream]]
name = "defaults"
servers = ["127.0.0.1:9002"]
health = {{}}
{SITE}root = "/tmp"
"#
    );
    let (_d, c) = ok(&text);
    let h = c.proxy.upstreams[0].health.as_ref().expect("health");
    assert_eq!(h.path, "/healthz?full=1");
    assert_eq!(h.interval, Duration::from_millis(500));
    assert_eq!(h.timeout, Duration::from_millis(250));
    assert_eq!(
        (h.expect.clone(), h.rise, h.fall),
        (Expect(vec![ExpectStatus::Code(204)]), 2, 3)
    );
    assert_eq!(c.proxy.upstreams[1].health, None);
    let d = c.proxy.upstreams[2].health.as_ref().expect("defaults");
    assert_eq!(
        (
            d.path.as_str(),
            d.interval,
            d.timeout,
            d.expect.clone(),
            d.rise,
            d.fall
        ),
        (
            "/",
            Duration::from_secs(5),
            Duration::from_secs(2),
            Expect(vec![ExpectStatus::Code(200)]),
            1,
            1
        )
    );
    let bad = |health: &str, col: usize, what: &str| {
        let text = format!(
            "[[upstream]]\nname = \"app\"\nservers = [\"127.0.0.1:9000\"]\nhealth = {health}\n{SITE}root = \"www\"\n"
        );
        let errs = errors(&text);
        let at = format!("4:{col}:");
        assert!(
            errs.iter().any(|e| e.starts_with(&at) && e.contains(what)),
            "{health}: {at} {what} in {errs:#?}"
        );
    };
    bad("5", 10, "a table like");
    bad("{ interval = \"10ms\" }", 23, "too short");
    bad("{ interval = \"2h\" }", 23, "too long");
    bad("{ timeout = \"0s\" }", 22, "must be more than 0");
    bad("{ expect = 700 }", 21, "from 100 to 599");
    bad("{ expect = \"2xy\" }", 21, "a class like \"2xx\"");
    bad("{ expect = [200, \"0xx\"] }", 27, "a class like \"2xx\"");
    bad("{ rise = 0 }", 19, "from 1 to 100");
    bad("{ fall = 101 }", 19, "from 1 to 100");
    bad("{ path = \"/a b\" }", 19, "a URL path");
    bad("{ pth = \"/\" }", 12, "did you mean \"path\"?");
}
