//! The config between its file and the master: loading it (one path for
//! `-t`, start and every reload, with the command line's overrides) and
//! writing a config that `POST /config` sent once it runs.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use baton_shared::config::{self, Config, ConfigErrors, Source};

/// Settings given on the command line; they win over the config file, on
/// start and on every reload.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub pid_file: Option<PathBuf>,
    pub grace: Option<Duration>,
}

impl Overrides {
    pub fn apply(&self, config: &mut Config) {
        if let Some(p) = &self.pid_file {
            config.pid_file = p.clone();
        }
        if let Some(g) = self.grace {
            config.grace = g;
        }
    }
}

/// Reads the config from its source and applies the overrides: the one
/// loading path for start, `-t` and every reload.
pub fn load_config(source: &Source, overrides: &Overrides) -> Result<Config, ConfigErrors> {
    load_config_text(source, overrides, None).map(|(c, _)| c)
}

/// `load_config`, also returning the config's text; with `text`, that text
/// is validated as if it were the config file (`POST /config`).
pub fn load_config_text(
    source: &Source,
    overrides: &Overrides,
    text: Option<&str>,
) -> Result<(Config, String), ConfigErrors> {
    let (mut config, text) = match (source, text) {
        (Source::File(path), None) => config::load_file_keeping_text(path)?,
        (Source::File(path), Some(t)) => (config::load_text_as_file(path, t)?, t.to_string()),
        (Source::Embedded, _) => (config::load_embedded()?, config::EMBEDDED.to_string()),
    };
    overrides.apply(&mut config);
    // Debug builds only: lets a test tell two images of one build apart.
    if let Some(token) = &crate::upgrade::hooks().server_token {
        config.http.server_token = Some(token.clone());
    }
    // Certificates and keys: read here, by the master, so `-t`, start and
    // reload refuse the same files with the same located errors.
    let material = baton_shared::tls::load(&config)?;
    config.tls_loaded = config::LoadedTls(Arc::new(material));
    Ok((config, text))
}

/// Writes a config that `POST /config` sent, and that now runs, to the
/// config file: the old file is kept as `FILE.bak`, the new one written to
/// a temp file and renamed over it, so the file is never half written.
/// Returns a warning if that failed.
pub fn persist(source: &Source, text: &str) -> Option<String> {
    let Source::File(path) = source else {
        return Some("the server runs the embedded config: nothing was written".into());
    };
    let result = (|| -> io::Result<()> {
        let mut bak = path.as_os_str().to_owned();
        bak.push(".bak");
        if path.exists() {
            std::fs::copy(path, PathBuf::from(bak))?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, text)?;
        if let Ok(meta) = std::fs::metadata(path) {
            let _ = std::fs::set_permissions(&tmp, meta.permissions());
        }
        std::fs::rename(&tmp, path)
    })();
    match result {
        Ok(()) => {
            log::info!(
                "wrote the new config to {} (the previous one is kept as .bak)",
                path.display()
            );
            None
        }
        Err(e) => {
            let w = format!(
                "cannot write {}: {e}; the running config differs from the file",
                path.display()
            );
            log::error!("{w}");
            Some(w)
        }
    }
}
