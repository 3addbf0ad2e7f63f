//! `[admin]`: where the admin API listens and how callers prove they may
//! use it. The security model is in docs/admin-api.md; this file holds
//! what a config must say for it to hold:
//!
//! - never a network address: the API speaks plain HTTP;
//! - over TCP, a `token_file`: any local user can connect to a loopback
//!   port, so over TCP the token is the only thing that tells callers apart;
//! - a token file nobody else can read, holding a token long enough not
//!   to be guessed.

use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::locate::Errors;
use super::model::{Admin, AdminToken, ListenAddr};
use super::parse::{At, RawAdmin};
use super::validate::{check_socket_path, lookup_user};

pub(crate) fn check_admin(raw: &RawAdmin, errs: &mut Errors<'_>) -> Option<Admin> {
    let listen = raw.listen.as_ref()?;
    match &listen.value {
        ListenAddr::Tcp(a) if !a.ip().is_loopback() => {
            errs.at(
                listen.pos,
                format!(
                    "the admin API speaks plain HTTP and can change the server: \
                     listen on a unix socket or a loopback address, not {a}"
                ),
            );
            return None;
        }
        ListenAddr::Tcp(_) if raw.token_file.is_none() => {
            errs.at(
                listen.pos,
                "the admin API on a TCP address needs token_file: every local user can \
                 connect to a loopback port, so without a secret any of them could reload, \
                 stop or reconfigure the server; add token_file = \"/etc/baton/admin.token\" \
                 (a file holding a random token, e.g. from `openssl rand -hex 32`, mode 0600) \
                 or listen on a unix socket",
            );
            return None;
        }
        ListenAddr::Tcp(_) => {}
        ListenAddr::Unix(path) => check_socket_path(path, listen.pos, errs),
        ListenAddr::Stdin => {
            errs.at(listen.pos, "the admin API cannot listen on stdin");
            return None;
        }
    }
    let token = match &raw.token_file {
        None => None,
        Some(file) => Some(read_token(file, errs)?),
    };
    let owner = match &raw.owner {
        None => None,
        Some(o) => {
            let user = lookup_user(&o.value, o.pos, errs)?;
            Some((user.uid.as_raw(), user.gid.as_raw()))
        }
    };
    Some(Admin {
        listen: listen.value.clone(),
        mode: raw.mode,
        owner,
        token_file: raw.token_file.as_ref().map(|f| f.value.clone()),
        token,
        pos: raw.pos,
    })
}

/// Reads the token, as the master (root) when it loads the config. The
/// file must be a regular file that users other than its owner and group
/// cannot touch: a token anyone can read is no secret, and one anyone can
/// write is one anyone can choose.
fn read_token(file: &At<PathBuf>, errs: &mut Errors<'_>) -> Option<AdminToken> {
    let path = &file.value;
    let fix = format!(
        "write a random token into it as root: `openssl rand -hex 32 > {p} && chmod 0600 {p}`",
        p = path.display()
    );
    match read_limited(path) {
        Ok(TokenFile::Text(bytes)) => match AdminToken::parse(&bytes) {
            Ok(token) => Some(token),
            Err(why) => {
                errs.at(file.pos, format!("token_file {path:?} {why}; {fix}"));
                None
            }
        },
        Ok(TokenFile::NotAFile) => {
            errs.at(
                file.pos,
                format!("token_file {path:?} is not a regular file"),
            );
            None
        }
        Ok(TokenFile::OpenToOthers(mode)) => {
            errs.at(
                file.pos,
                format!(
                    "token_file {path:?} is open to all users (mode {mode:04o}): anyone on this \
                     machine could read or replace the token; chmod o-rwx {} (0600, or 0640 \
                     to share it with a group)",
                    path.display()
                ),
            );
            None
        }
        Ok(TokenFile::TooLong) => {
            errs.at(
                file.pos,
                format!(
                    "token_file {path:?} is too long for a token (at most {} bytes); {fix}",
                    AdminToken::MAX_LEN
                ),
            );
            None
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            errs.at(
                file.pos,
                format!("token_file {path:?} does not exist; {fix}"),
            );
            None
        }
        Err(e) => {
            errs.at(file.pos, format!("cannot read token_file {path:?}: {e}"));
            None
        }
    }
}

enum TokenFile {
    Text(Vec<u8>),
    NotAFile,
    OpenToOthers(u32),
    TooLong,
}

/// The file's bytes, checked on the open file (not the path, which could
/// change between a stat and an open). Opened non-blocking: a FIFO named
/// here must not hang the master's loop (a `POST /config` is validated
/// before it is refused); it is then refused as not a regular file.
fn read_limited(path: &Path) -> io::Result<TokenFile> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(TokenFile::NotAFile);
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o007 != 0 {
        return Ok(TokenFile::OpenToOthers(mode));
    }
    // Room for the longest token, its surrounding whitespace and one more
    // byte to tell "too long" from "just fits".
    let limit = AdminToken::MAX_LEN + 64;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > limit {
        return Ok(TokenFile::TooLong);
    }
    Ok(TokenFile::Text(bytes))
}

#[cfg(test)]
mod tests {
    use crate::config::validate::System;
    use crate::config::{Config, ConfigErrors, Source, load_text};
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    const SITE: &str = "[[site]]\nlisten = [\"127.0.0.1:8080\"]\nroot = \".\"\n";
    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn load(d: &tempfile::TempDir, admin: &str) -> Result<Config, ConfigErrors> {
        let text = format!("{SITE}[admin]\n{admin}\n");
        let file = d.path().join("baton.toml");
        load_text(&text, Source::File(file), d.path(), &System { euid: 0 })
    }

    /// `LINE:COL: message`, the temp dir written `DIR`.
    fn errors(d: &tempfile::TempDir, admin: &str) -> Vec<String> {
        let dir = d.path().display().to_string();
        match load(d, admin) {
            Ok(_) => panic!("accepted: {admin}"),
            Err(ConfigErrors(list)) => list
                .iter()
                .map(|e| {
                    let m = e.message.replace(&dir, "DIR");
                    format!("{}:{}: {m}", e.pos.line, e.pos.col)
                })
                .collect(),
        }
    }

    fn token_file(d: &tempfile::TempDir, text: &str, mode: u32) {
        let p = d.path().join("admin.token");
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn tcp_needs_a_token_file() {
        let d = tempfile::tempdir().unwrap();
        let e = errors(&d, "listen = \"127.0.0.1:2019\"");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(
                "5:10: the admin API on a TCP address needs token_file: every local user"
            ),
            "{e:?}"
        );
        // With one, it loads and holds the token (trimmed), never shown.
        token_file(&d, &format!("{TOKEN}\n"), 0o600);
        let c = load(
            &d,
            "listen = \"127.0.0.1:2019\"\ntoken_file = \"admin.token\"",
        )
        .unwrap();
        let admin = c.admin.unwrap();
        assert_eq!(admin.token.as_ref().unwrap().as_bytes(), TOKEN.as_bytes());
        assert_eq!(admin.token_file, Some(d.path().join("admin.token")));
        assert!(!format!("{admin:?}").contains(TOKEN));
        // A unix socket may have one too, and needs none.
        assert!(load(&d, "listen = \"unix:a.sock\"\ntoken_file = \"admin.token\"").is_ok());
        assert!(
            load(&d, "listen = \"unix:a.sock\"")
                .unwrap()
                .admin
                .unwrap()
                .token
                .is_none()
        );
    }

    #[test]
    fn bad_token_files_are_refused_with_the_reason() {
        let d = tempfile::tempdir().unwrap();
        let admin = "listen = \"127.0.0.1:2019\"\ntoken_file = \"admin.token\"";
        let cases: &[(&str, u32, &str)] = &[
            (
                "",
                0o600,
                "token_file \"DIR/admin.token\" is empty; write a random token",
            ),
            ("short\n", 0o600, "is too short (5 characters, at least 32)"),
            (
                "0123456789abcdef 0123456789abcdef\n",
                0o600,
                "must be one line of visible ASCII",
            ),
            (TOKEN, 0o644, "is open to all users (mode 0644)"),
            (TOKEN, 0o602, "is open to all users (mode 0602)"),
        ];
        for (text, mode, want) in cases {
            token_file(&d, text, *mode);
            let e = errors(&d, admin);
            assert_eq!(e.len(), 1, "{e:?}");
            assert!(e[0].starts_with("6:14: "), "{e:?}");
            assert!(e[0].contains(want), "{want:?} not in {e:?}");
        }
        // Group-readable is how a group of admins shares it.
        token_file(&d, TOKEN, 0o640);
        assert!(load(&d, admin).is_ok());
        let e = errors(&d, "listen = \"127.0.0.1:2019\"\ntoken_file = \"missing\"");
        assert!(
            e[0].contains("token_file \"DIR/missing\" does not exist"),
            "{e:?}"
        );
        token_file(&d, &"x".repeat(8000), 0o600);
        assert!(errors(&d, admin)[0].contains("too long"));
    }

    #[test]
    fn never_on_a_network_address() {
        let d = tempfile::tempdir().unwrap();
        token_file(&d, TOKEN, 0o600);
        let e = errors(
            &d,
            "listen = \"0.0.0.0:2019\"\ntoken_file = \"admin.token\"",
        );
        assert!(e[0].contains("speaks plain HTTP"), "{e:?}");
    }
}
