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
fn t_refuses_what_is_not_supported_yet() {
    let env = Env::new();
    let text = format!(
        "{}[[upstream]]\nname = \"app\"\nservers = [\"127.0.0.1:9\"]\ntls = {{ server_name = \"x\" }}\n\
         [[site]]\nlisten = [\"127.0.0.1:{}\"]\nroot = \"www\"\n",
        env.globals(),
        env.port
    );
    let (ok, err) = check(&env, &text);
    assert!(!ok);
    let line = env.globals().lines().count() + 4;
    assert!(
        err.contains(&format!(
            ":{line}:1: \"tls\" (HTTPS upstreams) is not supported yet"
        )),
        "{err}"
    );
}
