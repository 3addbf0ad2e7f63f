//! The binary upgrade tests' harness: a server run from its own copy of
//! the binary, which a test replaces the way a package manager does (a new
//! file renamed over it), and the debug-only hooks file
//! (`BATON_TEST_UPGRADE_HOOKS`, read by each image as it starts) that tells
//! two images of one build apart (`server_token=NAME`: the `Server` header
//! its generations answer with) or makes a new image fail on purpose
//! (`fail=adopt|state|crash`).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::*;

pub struct Upgradable {
    pub env: Env,
    pub bin: PathBuf,
    pub hooks: PathBuf,
}

impl Upgradable {
    pub fn new(token: &str) -> Upgradable {
        let env = Env::new();
        let bin = env.path("sbin/baton");
        std::fs::create_dir_all(env.path("sbin")).unwrap();
        std::fs::set_permissions(env.path("sbin"), std::fs::Permissions::from_mode(0o755)).unwrap();
        write_executable(&bin, &std::fs::read(BIN).expect("read the binary"));
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let hooks = env.write_file("hooks", format!("server_token={token}\n").as_bytes());
        Upgradable { env, bin, hooks }
    }

    pub fn config(&self, extra: &str) {
        self.env.write_config(&self.env.simple_config_with(extra));
    }

    pub fn start(&self) -> Server {
        let mut command = Command::new(&self.bin);
        command
            .arg("-c")
            .arg(self.env.config_path())
            .env("BATON_TEST_UPGRADE_HOOKS", &self.hooks);
        self.env.spawn_command(command).wait_ready()
    }

    /// What the next image will read as it starts.
    pub fn hooks(&self, text: &str) {
        self.env.write_file("hooks", text.as_bytes());
    }

    /// A new binary at the path, as dpkg installs one: written beside it,
    /// renamed over it (the running image's file is unlinked).
    pub fn install(&self, contents: &[u8], mode: u32) {
        let tmp = self.env.path("sbin/baton.dpkg-new");
        write_executable(&tmp, contents);
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::rename(&tmp, &self.bin).unwrap();
    }

    pub fn install_build(&self) {
        self.install(&std::fs::read(BIN).unwrap(), 0o755);
    }

    pub fn upgrade(&self) -> Output {
        Command::new(BIN)
            .arg("-c")
            .arg(self.env.config_path())
            .args(["-s", "upgrade"])
            .stdin(Stdio::null())
            .output()
            .expect("run baton -s upgrade")
    }

    pub fn server_header(&self) -> String {
        let r = get(self.env.port, "/").expect("GET /");
        assert_eq!(r.status, 200);
        r.header("server").unwrap_or("").to_string()
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

pub fn exe_of(pid: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Waits until the master has exactly `n` children (the old generation
/// drained away), then returns them.
pub fn settle(pid: i32, n: usize) -> Vec<i32> {
    assert!(
        wait_until(Duration::from_secs(15), || children_of(pid).len() == n),
        "master {pid} has children {:?}, expected {n}",
        children_of(pid)
    );
    let mut c = children_of(pid);
    c.sort_unstable();
    c
}

pub fn assert_untouched(u: &Upgradable, server: &Server, workers: &[i32], token: &str) {
    assert_eq!(u.server_header(), token);
    assert_eq!(settle(server.pid(), workers.len()), workers);
    assert_eq!(
        std::fs::read_to_string(u.env.pid_file()).unwrap().trim(),
        server.pid().to_string()
    );
    assert!(zombies_of(server.pid()).is_empty());
}

/// Writes a file that will be executed, without ever holding a write fd on
/// it in this process. A write fd here would be inherited by any child a
/// parallel test forks at that moment (it closes only at that child's
/// exec), and while any process holds one, executing the file fails with
/// ETXTBSY ("Text file busy"): it did, now and then, in the upgrade tests.
/// So the bytes go to a staging file that is never executed, and `cp`, a
/// process of its own, writes the file that is.
fn write_executable(path: &std::path::Path, contents: &[u8]) {
    let mut staged = path.as_os_str().to_owned();
    staged.push(".staged");
    let staged = PathBuf::from(staged);
    std::fs::write(&staged, contents).expect("stage the binary");
    let status = Command::new("cp")
        .arg(&staged)
        .arg(path)
        .status()
        .expect("run cp");
    assert!(
        status.success(),
        "cp {} {}",
        staged.display(),
        path.display()
    );
    std::fs::remove_file(&staged).ok();
}
