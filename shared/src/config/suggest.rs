//! "did you mean ...?" for misspelt keys.

/// The known key closest to `unknown`, if one is close enough to be what was
/// meant.
pub(crate) fn closest<'k>(unknown: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = unknown.to_ascii_lowercase();
    known
        .iter()
        .map(|&k| {
            (
                k,
                strsim::jaro_winkler(&lower, k),
                strsim::levenshtein(&lower, k),
            )
        })
        .filter(|&(_, jw, lev)| jw >= 0.8 || lev <= 2)
        // Best similarity first; on a tie, the fewest edits.
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.2.cmp(&a.2)))
        .map(|(k, _, _)| k)
}

/// The message for a key that is not one of `known`.
pub(crate) fn unknown_key(unknown: &str, known: &[&str]) -> String {
    match closest(unknown, known) {
        Some(k) => format!("unknown key {unknown:?}, did you mean {k:?}?"),
        None => format!("unknown key {unknown:?} (expected {})", known.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[&str] = &["listen", "names", "root", "index"];

    #[test]
    fn suggests_close_keys() {
        assert_eq!(closest("rot", KEYS), Some("root"));
        assert_eq!(closest("Root", KEYS), Some("root"));
        assert_eq!(closest("listn", KEYS), Some("listen"));
        assert_eq!(closest("name", KEYS), Some("names"));
        assert_eq!(closest("indexes", KEYS), Some("index"));
        assert_eq!(closest("grace_period", &["grace", "group"]), Some("grace"));
        assert_eq!(
            closest("workers", &["worker_ready_timeout", "workers"]),
            Some("workers")
        );
    }

    #[test]
    fn nothing_when_far() {
        assert_eq!(closest("frobnicate", KEYS), None);
        assert_eq!(closest("x", KEYS), None);
        assert_eq!(
            unknown_key("frobnicate", KEYS),
            r#"unknown key "frobnicate" (expected listen, names, root, index)"#
        );
        assert_eq!(
            unknown_key("rot", KEYS),
            r#"unknown key "rot", did you mean "root"?"#
        );
    }
}
