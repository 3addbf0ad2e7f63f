//! HTTP/2 for the end-to-end tests: `tests/h2/h2tool.py` (Python's `h2`
//! package for legitimate clients, raw frames for the attacks) run as a
//! process, its JSON answer parsed; a TLS site to serve; the tools the
//! HTTP/2 tests need, missing ones said loudly.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use super::Env;
use super::tls::ecdsa_cert;

pub fn tool_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/h2/h2tool.py")
}

/// Python with the `h2` package: required (CI installs it, .ci/run).
pub fn require_python_h2() {
    let ok = Command::new("python3")
        .args(["-c", "import h2, hpack"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the HTTP/2 tests need python3 with the h2 package: pip install h2 (.ci/run installs it)"
    );
}

/// Runs `h2tool.py ARGS` to the end; its JSON answer.
pub fn h2tool(args: &[&str]) -> serde_json::Value {
    require_python_h2();
    let out = Command::new("python3")
        .arg(tool_path())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run h2tool.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "h2tool {args:?}: {e}\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `h2tool.py` in a mode that says READY and then waits for a line on
/// stdin (`hold`, `stall`).
pub struct Held {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Held {
    pub fn start(args: &[&str]) -> Held {
        require_python_h2();
        let mut child = Command::new("python3")
            .arg(tool_path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run h2tool.py");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut held = Held {
            child,
            stdin,
            stdout,
        };
        let mut line = String::new();
        held.stdout.read_line(&mut line).expect("read READY");
        assert_eq!(line.trim(), "READY", "h2tool {args:?} did not get ready");
        held
    }

    /// Lets it go on; its JSON answer.
    pub fn finish(mut self) -> serde_json::Value {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"go\n");
        }
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.stdout, &mut rest);
        let _ = self.child.wait();
        let line = rest.lines().last().unwrap_or_default();
        serde_json::from_str(line).unwrap_or_else(|e| panic!("h2tool: {e}: {rest}"))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TLS site on `env.port` serving `www/` (certificate for localhost),
/// with `globals` and `site` (TOML lines) added.
pub fn tls_config(env: &Env, globals: &str, site: &str) -> String {
    let (cert, key) = ecdsa_cert(&["localhost"]);
    env.write_file("tls/cert.pem", cert.as_bytes());
    env.write_file("tls/key.pem", key.as_bytes());
    format!(
        "{}{globals}\n\n[[site]]\nlisten = [\"127.0.0.1:{}\"]\nroot = \"{}\"\n\
         tls = {{ cert = \"{}\", key = \"{}\" }}\n{site}\n",
        env.globals(),
        env.port,
        env.path("www").display(),
        env.path("tls/cert.pem").display(),
        env.path("tls/key.pem").display(),
    )
}

/// The resident set of `pid`, in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The SHA-256 of `data`, in hex (as h2tool.py reports bodies).
pub fn sha256_hex(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("write");
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}
