//! ACME settings in the config: what `-t` refuses (located, with a
//! suggestion), and that `-t` never contacts the CA.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// `-t` on a config with a plain-HTTP site on `http` and an ACME site;
/// returns (success, stderr).
fn check(env: &Env, globals: &str, acme_site: &str, http_site: bool) -> (bool, String) {
    let port = free_port();
    let http = if http_site {
        format!(
            "[[site]]\nlisten = [\"127.0.0.1:{port}\"]\nroot = \"{}\"\n\n",
            env.path("www").display()
        )
    } else {
        String::new()
    };
    let globals = if http_site && !globals.contains("acme_http_port") {
        format!("{globals}\nacme_http_port = {port}")
    } else {
        globals.to_owned()
    };
    let text = format!(
        "{}acme_dir = \"{}\"\n{globals}\n{http}[[site]]\nlisten = [\"127.0.0.1:{}\"]\nroot = \"{}\"\n{acme_site}\n",
        env.globals(),
        env.path("acme").display(),
        env.port,
        env.path("www").display()
    );
    env.write_config(&text);
    let out = env.baton(&["-t"]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn http01_needs_a_plain_http_listener_on_its_port() {
    let env = Env::new();
    let site = "names = [\"a.baton.test\"]\ntls = { acme = true }";
    let (ok, err) = check(&env, "", site, false);
    assert!(!ok);
    assert!(
        err.contains("ACME HTTP-01 needs a plain-HTTP site listening on port 80")
            && err.contains("tls-alpn-01"),
        "{err}"
    );
    // Located at the acme value.
    assert!(err.contains("baton.toml:"), "{err}");
    // With acme_http_port naming the plain site's port it passes; the
    // directory is never contacted (it does not exist).
    let text = std::fs::read_to_string(env.config_path()).expect("config");
    let port: u16 = free_port();
    let fixed = text.replace(
        "\n[[site]]",
        &format!(
            "acme_http_port = {port}\nacme_directory = \"https://127.0.0.1:1/dir\"\n\n\
             [[site]]\nlisten = [\"127.0.0.1:{port}\"]\nroot = \"{}\"\n\n[[site]]",
            env.path("www").display()
        ),
    );
    env.write_config(&fixed);
    let started = Instant::now();
    let out = env.baton(&["-t"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "-t never waits on a CA"
    );
    assert!(!env.path("acme").exists(), "-t creates nothing");
}

#[test]
fn tls_alpn01_needs_the_site_on_the_tls_port() {
    let env = Env::new();
    let site = "names = [\"a.baton.test\"]\ntls = { acme = { challenge = \"tls-alpn-01\" } }";
    let (ok, err) = check(&env, "", site, false);
    assert!(!ok);
    assert!(
        err.contains("ACME TLS-ALPN-01 connects to port 443"),
        "{err}"
    );
    let (ok, err) = check(&env, &format!("acme_tls_port = {}", env.port), site, false);
    assert!(ok, "{err}");
}

#[test]
fn bad_acme_settings_are_refused_where_written() {
    let env = Env::new();
    let ok_site = "names = [\"a.baton.test\"]\ntls = { acme = true }";
    let cases: &[(&str, &str, &str)] = &[
        (
            "",
            "names = [\"*.baton.test\"]\ntls = { acme = true }",
            "name \"*.baton.test\" is not a valid host name",
        ),
        ("", "tls = { acme = true }", "an ACME site needs names"),
        (
            "",
            "names = [\"a.baton.test\"]\ntls = { acme = true, cert = \"x.pem\", key = \"x.key\" }",
            "\"acme\" and \"cert\"/\"dir\" in one tls table",
        ),
        (
            "",
            "names = [\"a.baton.test\"]\ntls = { acme = { challange = \"http-01\" } }",
            "did you mean \"challenge\"",
        ),
        (
            "",
            "names = [\"a.baton.test\"]\ntls = { acme = { challenge = \"dns-01\" } }",
            "\"challenge\" must be \"http-01\" or \"tls-alpn-01\"",
        ),
        (
            "",
            "names = [\"a.baton.test\"]\ntls = { acme = \"yes\" }",
            "\"acme\" must be true or a table",
        ),
        (
            "acme_directory = \"http://insecure.example/dir\"",
            ok_site,
            "\"acme_directory\" must be \"letsencrypt\", \"letsencrypt-staging\" or an https://",
        ),
        (
            "acme_email = \"nobody\"",
            ok_site,
            "\"acme_email\" must be an email address",
        ),
        (
            "acme_ca = \"/nonexistent/ca.pem\"",
            ok_site,
            "cannot read acme_ca /nonexistent/ca.pem",
        ),
        ("acme_renew_check = \"2d\"", ok_site, "acme_renew_check"),
        ("acme_lock_stale = \"1s\"", ok_site, "acme_lock_stale"),
        (
            "acme_http_port = 0",
            ok_site,
            "\"acme_http_port\" must be a whole number from 1 to 65535",
        ),
        (
            "acme_user = \"no-such-user-here\"",
            ok_site,
            "user \"no-such-user-here\" does not exist",
        ),
        (
            "acme_placeholder = 1",
            ok_site,
            "\"acme_placeholder\" must be true or false",
        ),
        (
            "acme_emial = \"a@b.example\"",
            ok_site,
            "did you mean \"acme_email\"",
        ),
    ];
    for (globals, site, expected) in cases {
        let (ok, err) = check(&env, globals, site, true);
        assert!(!ok, "{globals} / {site}: accepted");
        assert!(err.contains(expected), "{globals} / {site}: {err}");
        assert!(err.contains("baton.toml:"), "located: {err}");
    }
    // And a good one passes, with the pending name not an error.
    let (ok, err) = check(&env, "acme_email = \"admin@baton.test\"", ok_site, true);
    assert!(ok, "{err}");
}
