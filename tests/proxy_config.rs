//! The proxy's config through the real binary: `-t` refuses what a start or
//! a reload would, with the place and a suggestion.

mod common;

use common::Env;

fn check(env: &Env, text: &str) -> (bool, String) {
    env.write_config(text);
    let out = env.baton(&["-t"]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn t_checks_that_proxy_names_an_upstream() {
    let env = Env::new();
    let text = format!(
        "{}[[upstream]]\nname = \"app\"\nservers = [\"127.0.0.1:9\"]\n\
         [[site]]\nlisten = [\"127.0.0.1:{}\"]\n[[site.route]]\npath = \"/\"\nproxy = \"apq\"\n",
        env.globals(),
        env.port
    );
    let (ok, err) = check(&env, &text);
    assert!(!ok);
    let file = env.config_path().display().to_string();
    let line = env.globals().lines().count() + 8;
    assert!(
        err.contains(&format!(
            "{file}:{line}:9: proxy \"apq\" names no [[upstream]], did you mean \"app\"?"
        )),
        "{err}"
    );
    // Fixed: accepted, and a site with routes needs no root.
    let (ok, err) = check(&env, &text.replace("\"apq\"", "\"app\""));
    assert!(ok, "{err}");
}

#[test]
fn t_checks_that_unix_sockets_exist() {
    let env = Env::new();
    let sock = env.path("app.sock");
    let text = format!(
        "{}[[upstream]]\nname = \"app\"\nservers = [\"unix:{}\"]\n\
         [[site]]\nlisten = [\"127.0.0.1:{}\"]\n[[site.route]]\npath = \"/\"\nproxy = \"app\"\n",
        env.globals(),
        sock.display(),
        env.port
    );
    let (ok, err) = check(&env, &text);
    assert!(!ok);
    let line = env.globals().lines().count() + 3;
    assert!(
        err.contains(&format!(":{line}:12: server \"unix:")),
        "{err}"
    );
    assert!(err.contains("No such file or directory"), "{err}");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let (ok, err) = check(&env, &text);
    assert!(ok, "{err}");
}

#[test]
fn t_checks_the_system_trust_store_of_an_https_upstream() {
    let env = Env::new();
    let text = format!(
        "{}[[upstream]]\nname = \"app\"\nservers = [\"127.0.0.1:9\"]\ntls = {{ server_name = \"x\" }}\n\
         [[site]]\nlisten = [\"127.0.0.1:{}\"]\nroot = \"www\"\n\
         [[site.route]]\npath = \"/api/\"\nproxy = \"app\"\n",
        env.globals(),
        env.port
    );
    env.write_config(&text);
    // `-t` with the system's store where SSL_CERT_FILE says.
    let t = |store: &std::path::Path| {
        let out = std::process::Command::new(common::BIN)
            .arg("-c")
            .arg(env.config_path())
            .arg("-t")
            .env("SSL_CERT_FILE", store)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Without ca, a store that cannot be read is a located error that
    // says what to do.
    let missing = env.path("no-store.pem");
    let (ok, err) = t(&missing);
    assert!(!ok);
    let line = env.globals().lines().count() + 4;
    assert!(
        err.contains(&format!(
            ":{line}:7: the system's trust store {} cannot be read",
            missing.display()
        )) && err.contains("give the upstream's CA with ca = "),
        "{err}"
    );
    // A store with a certificate: accepted.
    let (cert, _) = common::tls::ecdsa_cert(&["x"]);
    let store = env.write_file("store.pem", cert.as_bytes());
    let (ok, err) = t(&store);
    assert!(ok, "{err}");
    // Other schemes are refused.
    let (ok, err) = check(
        &env,
        &text.replace("proxy = \"app\"", "proxy = \"ftp://x\""),
    );
    assert!(!ok);
    assert!(
        err.contains("only http:// and https:// URLs are supported"),
        "{err}"
    );
}
