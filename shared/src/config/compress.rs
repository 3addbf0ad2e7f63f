//! `compress`: on-the-fly compression of responses, per site (and per
//! route, for the proxy). The parsed form lives here so that master,
//! worker and the config tests share one type; `parse/compress.rs` reads
//! it, `baton_worker::compress` applies it.

/// A content coding Baton can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    Zstd,
    Br,
    Gzip,
}

impl Coding {
    pub const ALL: [Coding; 3] = [Coding::Zstd, Coding::Br, Coding::Gzip];

    /// The `Content-Encoding` / `Accept-Encoding` token, and the name the
    /// config uses.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }

    /// What is added to the identity ETag, inside its quotes, so every
    /// encoding of a version has a tag of its own (`"65-1a"` becomes
    /// `"65-1a-gz"`).
    pub fn etag_suffix(self) -> &'static str {
        match self {
            Coding::Zstd => "-zst",
            Coding::Br => "-br",
            Coding::Gzip => "-gz",
        }
    }

    pub fn from_name(name: &str) -> Option<Coding> {
        Coding::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// Compression levels, one per coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    /// 1 to 9.
    pub gzip: u32,
    /// 0 to 11.
    pub br: u32,
    /// 1 to 19 (zstd's "ultra" levels above 19 need windows far larger
    /// than a per-connection encoder should hold).
    pub zstd: i32,
}

impl Default for Levels {
    /// gzip 6 (zlib's own default: most of level 9's ratio at a fraction
    /// of its cost); brotli 5 (smaller than gzip 9 at about gzip 6's
    /// speed; 10 and 11 are for precompressing, tens of times slower);
    /// zstd 3 (zstd's default, faster than gzip 6 and smaller).
    fn default() -> Levels {
        Levels {
            gzip: 6,
            br: 5,
            zstd: 3,
        }
    }
}

/// The ranges `level` accepts, for the parser and the docs.
pub const GZIP_LEVELS: (u32, u32) = (1, 9);
pub const BR_LEVELS: (u32, u32) = (0, 11);
pub const ZSTD_LEVELS: (i32, i32) = (1, 19);

/// The media types compressed when `types` is not given. Text compresses
/// well; images, audio, video and archives are compressed already.
pub const DEFAULT_TYPES: &[&str] = &[
    "text/*",
    "application/json",
    "application/javascript",
    "text/javascript",
    "image/svg+xml",
    "application/xml",
    "application/wasm",
    "+json",
    "+xml",
];

/// The default `min_length`: below a few hundred bytes a response fits a
/// packet either way, and the coding's own framing eats the gain.
pub const DEFAULT_MIN_LENGTH: u64 = 256;

/// A site's (or route's) `compress` setting, when on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compress {
    /// The codings offered, in the server's order of preference (used
    /// among those the client weighs the same).
    pub encodings: Vec<Coding>,
    /// Media type patterns, lowercase: `type/subtype`, `type/*`, or
    /// `+suffix` (any `type/x+suffix`).
    pub types: Vec<String>,
    /// Bodies shorter than this are sent as they are.
    pub min_length: u64,
    pub levels: Levels,
}

impl Default for Compress {
    /// What `compress = true` means.
    fn default() -> Compress {
        Compress {
            encodings: vec![Coding::Zstd, Coding::Br, Coding::Gzip],
            types: DEFAULT_TYPES.iter().map(|t| (*t).to_owned()).collect(),
            min_length: DEFAULT_MIN_LENGTH,
            levels: Levels::default(),
        }
    }
}

impl Compress {
    /// Whether a response of this Content-Type (parameters allowed) is
    /// worth compressing.
    pub fn compresses_type(&self, content_type: &str) -> bool {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let Some((major, minor)) = essence.split_once('/') else {
            return false;
        };
        self.types.iter().any(|pattern| {
            if let Some(suffix) = pattern.strip_prefix('+') {
                minor.rsplit_once('+').is_some_and(|(_, s)| s == suffix)
            } else if let Some(p_major) = pattern.strip_suffix("/*") {
                p_major == major
            } else {
                *pattern == essence
            }
        })
    }

    /// The level this setting uses for `coding` (brotli and gzip levels
    /// as the crates take them; zstd's is signed).
    pub fn level(&self, coding: Coding) -> i32 {
        match coding {
            // Both within small ranges (checked when parsed).
            Coding::Gzip => self.levels.gzip as i32,
            Coding::Br => self.levels.br as i32,
            Coding::Zstd => self.levels.zstd,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_types() {
        let c = Compress::default();
        for yes in [
            "text/html; charset=utf-8",
            "TEXT/CSS",
            "application/json",
            "application/ld+json",
            "application/atom+xml",
            "image/svg+xml",
            "application/wasm",
            "text/javascript; charset=utf-8",
        ] {
            assert!(c.compresses_type(yes), "{yes}");
        }
        for no in [
            "image/png",
            "application/octet-stream",
            "application/zip",
            "video/mp4",
            "json",
            "",
            "application/jsonx",
        ] {
            assert!(!c.compresses_type(no), "{no}");
        }
    }
}
