//! `compress = true | false | { encodings, types, min_length, level }`:
//! on-the-fly compression, for a `[[site]]` and (through
//! `Reader::compress`) for anything else that takes the same setting,
//! such as a proxy route.

use toml::de::DeValue;

use super::{Reader, Value, integer};
use crate::config::compress::{BR_LEVELS, Coding, Compress, GZIP_LEVELS, ZSTD_LEVELS};
use crate::config::suggest;

pub(crate) const COMPRESS_KEYS: &[&str] = &["encodings", "types", "min_length", "level"];
const LEVEL_KEYS: &[&str] = &["gzip", "br", "zstd"];
const CODING_NAMES: &[&str] = &["zstd", "br", "gzip"];

impl Reader<'_, '_, '_> {
    /// A `compress` value: `Some(Some(c))` on, `Some(None)` off
    /// (`false`), `None` in error (already reported, at the place).
    pub(crate) fn compress(&mut self, value: &Value<'_>) -> Option<Option<Compress>> {
        let expected = "true, false or a table like { encodings = [\"zstd\", \"br\", \"gzip\"] }";
        let table = match value.get_ref() {
            DeValue::Boolean(true) => return Some(Some(Compress::default())),
            DeValue::Boolean(false) => return Some(None),
            DeValue::Table(t) => t,
            _ => {
                self.wrong("compress", value, expected);
                return None;
            }
        };
        let mut c = Compress::default();
        let mut ok = true;
        for (key, v) in table.iter() {
            let name: &str = key.get_ref();
            match name {
                "encodings" => match self.codings(v) {
                    Some(list) => c.encodings = list,
                    None => ok = false,
                },
                "types" => match self.compress_types(v) {
                    Some(list) => c.types = list,
                    None => ok = false,
                },
                "min_length" => match self.size("compress.min_length", v) {
                    Some(n) => c.min_length = n,
                    None => ok = false,
                },
                "level" => ok &= self.levels(v, &mut c),
                _ => {
                    let message = suggest::unknown_key(name, COMPRESS_KEYS);
                    self.errs
                        .at_span(&key.span(), format!("{message} (in \"compress\")"));
                    ok = false;
                }
            }
        }
        ok.then_some(Some(c))
    }

    fn codings(&mut self, value: &Value<'_>) -> Option<Vec<Coding>> {
        let expected = "an array of encodings like [\"zstd\", \"br\", \"gzip\"]";
        let array = self.array("encodings", value, expected)?;
        if array.is_empty() {
            self.errs.at_span(
                &value.span(),
                "\"encodings\" must list at least one of \"zstd\", \"br\", \"gzip\" \
                 (compress = false turns compression off)",
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for item in array.iter() {
            let Some(s) = self.string("encodings", item, expected) else {
                ok = false;
                continue;
            };
            let Some(coding) = Coding::from_name(&s.to_ascii_lowercase()) else {
                let message = match suggest::closest(s, CODING_NAMES) {
                    Some(k) => format!("unknown encoding {s:?}, did you mean {k:?}?"),
                    None => format!(
                        "unknown encoding {s:?} (Baton compresses with \"zstd\", \"br\" and \"gzip\")"
                    ),
                };
                self.errs.at_span(&item.span(), message);
                ok = false;
                continue;
            };
            if out.contains(&coding) {
                let message = format!("encoding {s:?} is listed twice");
                self.errs.at_span(&item.span(), message);
                ok = false;
                continue;
            }
            out.push(coding);
        }
        ok.then_some(out)
    }

    fn compress_types(&mut self, value: &Value<'_>) -> Option<Vec<String>> {
        let expected = "an array of media types like [\"text/*\", \"application/json\", \"+xml\"]";
        let array = self.array("types", value, expected)?;
        let mut out = Vec::new();
        let mut ok = true;
        for item in array.iter() {
            let Some(s) = self.string("types", item, expected) else {
                ok = false;
                continue;
            };
            let lower = s.trim().to_ascii_lowercase();
            let valid = match lower.strip_prefix('+') {
                Some(suffix) => super::options::is_token(suffix),
                None => {
                    lower.split_once('/').is_some_and(|(a, b)| {
                        super::options::is_token(a) && (b == "*" || super::options::is_token(b))
                    }) && !lower.starts_with("*/")
                }
            };
            if !valid {
                let message = format!(
                    "compress type {s:?} must be a media type (\"application/json\"), \
                     a major type (\"text/*\") or a suffix (\"+json\")"
                );
                self.errs.at_span(&item.span(), message);
                ok = false;
                continue;
            }
            out.push(lower);
        }
        ok.then_some(out)
    }

    /// `level = { gzip = 6, br = 5, zstd = 3 }`: whether it was all valid.
    fn levels(&mut self, value: &Value<'_>, c: &mut Compress) -> bool {
        let expected = "a table like { gzip = 6, br = 5, zstd = 3 }";
        let DeValue::Table(table) = value.get_ref() else {
            self.wrong("level", value, expected);
            return false;
        };
        let mut ok = true;
        for (key, v) in table.iter() {
            let name: &str = key.get_ref();
            let range = match name {
                "gzip" => (i64::from(GZIP_LEVELS.0), i64::from(GZIP_LEVELS.1)),
                "br" => (i64::from(BR_LEVELS.0), i64::from(BR_LEVELS.1)),
                "zstd" => (i64::from(ZSTD_LEVELS.0), i64::from(ZSTD_LEVELS.1)),
                _ => {
                    let message = suggest::unknown_key(name, LEVEL_KEYS);
                    self.errs
                        .at_span(&key.span(), format!("{message} (in \"level\")"));
                    ok = false;
                    continue;
                }
            };
            let n = match v.get_ref() {
                DeValue::Integer(i) => integer(i).filter(|n| (range.0..=range.1).contains(n)),
                _ => None,
            };
            let Some(n) = n else {
                let expected = format!("a level from {} to {}", range.0, range.1);
                self.wrong(name, v, &expected);
                ok = false;
                continue;
            };
            // In range, so these conversions cannot fail.
            match name {
                "gzip" => c.levels.gzip = u32::try_from(n).unwrap_or(GZIP_LEVELS.0),
                "br" => c.levels.br = u32::try_from(n).unwrap_or(BR_LEVELS.0),
                _ => c.levels.zstd = i32::try_from(n).unwrap_or(ZSTD_LEVELS.0),
            }
        }
        ok
    }
}
