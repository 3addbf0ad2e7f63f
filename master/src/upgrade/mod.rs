//! Binary upgrade in place: the master re-executes the binary on disk
//! (same pid), handing over its sockets, its workers and what it knows, and
//! the new image starts a generation from the new code; if the new image
//! fails before that generation is ready, it re-executes the old binary
//! from an fd kept on it, which adopts everything again.
//!
//! - `state`: the serialised hand-off (versioned, length- and
//!   checksum-checked, in a sealed memfd);
//! - `exec`: the preflight child, the old executable's fd, close-on-exec,
//!   `execve`/`execveat`.
//!
//! The master's side (when to upgrade, what to serialise, how to adopt)
//! is in `supervisor::upgrade` and `supervisor::adopt`;
//! docs/architecture.md ("Binary upgrade") tells the whole story.

pub mod exec;
pub mod guard;
pub mod state;

/// Test-only hooks, read by debug builds only (release builds ignore the
/// variable): `BATON_TEST_UPGRADE_HOOKS` names a file of `key=value` lines
/// read once by every image as it starts, so a test can tell two images
/// of the same build apart and make a new image fail on purpose.
/// - `server_token=NAME`: this image's workers answer `Server: NAME`;
/// - `fail=adopt`: a new image (not a rolled-back one) gives up right
///   after adopting, before it starts its generation;
/// - `fail=state`: a new image finds the state unreadable;
/// - `fail=crash`: a new image dies of SIGSEGV once its generation is
///   forked, before it is ready;
/// - `preflight_timeout_ms=N`: the preflight's bound instead of 30 s.
#[derive(Debug, Default, Clone)]
pub struct Hooks {
    pub server_token: Option<String>,
    pub fail: Option<String>,
    pub preflight_timeout: Option<std::time::Duration>,
}

pub fn hooks() -> &'static Hooks {
    static HOOKS: std::sync::OnceLock<Hooks> = std::sync::OnceLock::new();
    HOOKS.get_or_init(|| {
        let mut hooks = Hooks::default();
        if !cfg!(debug_assertions) {
            return hooks;
        }
        let Some(path) = std::env::var_os("BATON_TEST_UPGRADE_HOOKS") else {
            return hooks;
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines() {
            match line.split_once('=') {
                Some(("server_token", v)) => hooks.server_token = Some(v.trim().to_string()),
                Some(("fail", v)) => hooks.fail = Some(v.trim().to_string()),
                Some(("preflight_timeout_ms", v)) => {
                    hooks.preflight_timeout =
                        v.trim().parse().ok().map(std::time::Duration::from_millis)
                }
                _ => {}
            }
        }
        hooks
    })
}
