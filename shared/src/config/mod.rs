//! Config: TOML text → validated `Config`, with every error located.
//!
//! `-t`, start and reload all go through `load_file` (or `load_embedded`),
//! so they accept and refuse exactly the same configs with the same text.

mod model;

pub use model::*;

use std::path::{Path, PathBuf};

/// The default config used when no `-c` is given: a sample site on
/// 127.0.0.1:8080 that needs no root.
pub const EMBEDDED: &str = include_str!("default.toml");

/// Reads, parses and validates a config file. `path` may be relative; the
/// `Config` records it absolute.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let _ = path;
    unimplemented!("being written")
}

/// Parses and validates the embedded default config.
pub fn load_embedded() -> Result<Config, ConfigErrors> {
    unimplemented!("being written")
}

/// Just the pid_file a config names (or the default one), reading only as much
/// as needed, for `baton -s` to find the running master.
pub fn pid_file_of(path: Option<&Path>) -> Result<PathBuf, ConfigErrors> {
    let _ = path;
    unimplemented!("being written")
}
