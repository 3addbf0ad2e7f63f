//! Every duration and size setting, at and past both ends of its range
//! (`config::bounds`), through the whole loader: what `-t`, start and
//! reload all see.

use std::time::Duration;

use super::{MINIMAL, errors, ok};
use crate::config::bounds::{COUNTS, DURATIONS, SIZES, format_duration, format_size};
use crate::config::parse::TOP_KEYS;
use crate::config::parse::upstream::{HEALTH_KEYS, UPSTREAM_KEYS};

/// The value each setting's test sets it to, for reading it back.
fn duration_of(c: &crate::config::Config, key: &str) -> Duration {
    match key {
        "grace" => c.grace,
        "worker_ready_timeout" => c.worker_ready_timeout,
        "drain_linger" => c.drain_linger,
        "inetd_idle_exit" => c.inetd_idle_exit,
        "keepalive_timeout" => c.keepalive_timeout,
        "header_timeout" => c.header_timeout,
        "defer_accept" => c.defer_accept,
        "body_timeout" => c.http.body_timeout,
        "send_timeout" => c.http.send_timeout,
        "tls_watch_interval" => c.tls.watch_interval,
        "tls_ticket_rotation" => c.tls.ticket_rotation,
        "acme_renew_check" => c.acme.renew_check,
        "acme_lock_stale" => c.acme.lock_stale,
        other => panic!("no reader for {other} in this test: add it"),
    }
}

fn size_of(c: &crate::config::Config, key: &str) -> u64 {
    match key {
        "max_header_size" => c.http.max_header_size as u64,
        "max_uri_length" => c.http.max_uri_length as u64,
        "max_body_size" => c.http.max_body_size,
        "file_cache_size" => c.http.file_cache_size,
        "file_cache_max_file_size" => c.http.file_cache_max_file_size,
        "http2_window_size" => u64::from(c.http.http2.window_size),
        "http2_connection_window_size" => u64::from(c.http.http2.connection_window_size),
        "http2_max_send_buffer" => c.http.http2.max_send_buffer as u64,
        other => panic!("no reader for {other} in this test: add it"),
    }
}

#[test]
fn every_row_is_a_key() {
    for key in DURATIONS
        .iter()
        .map(|b| b.key)
        .chain(SIZES.iter().map(|b| b.key))
        .chain(COUNTS.iter().map(|b| b.key))
    {
        assert!(
            TOP_KEYS.contains(&key) || UPSTREAM_KEYS.contains(&key) || HEALTH_KEYS.contains(&key),
            "{key}"
        );
    }
}

/// A key that takes a duration but has no row would be bounded only by a
/// fallback; `Reader::duration` asserts in debug builds, so this finds it.
#[test]
fn every_duration_key_has_a_row() {
    for key in TOP_KEYS {
        let text = format!("{key} = \"99999h\"\n{MINIMAL}");
        let d = super::dir();
        let _ = super::load_in(&d, 0, &text);
    }
}

#[test]
fn each_duration_at_and_past_its_bounds() {
    // The [[upstream]] ones: tests/upstream.rs.
    for b in DURATIONS.iter().filter(|b| TOP_KEYS.contains(&b.key)) {
        let key = b.key;
        let col = key.len() + 4;
        // The largest value is accepted, as the docs write it.
        let max = format_duration(b.max);
        let (_, c) = ok(&format!("{key} = \"{max}\"\n{MINIMAL}"));
        assert_eq!(duration_of(&c, key), b.max, "{key}");
        // One millisecond more is refused where it is written.
        let over = format_duration(b.max + Duration::from_millis(1));
        assert_eq!(
            errors(&format!("{key} = \"{over}\"\n{MINIMAL}")),
            [format!(
                "1:{col}: {key} = \"{over}\" is too long (at most {max})"
            )],
            "{key}"
        );
        // The value of the report, as a string of seconds and as a TOML
        // integer of seconds.
        assert_eq!(
            errors(&format!("{key} = \"18446744073709551615\"\n{MINIMAL}")),
            [format!(
                "1:{col}: {key} = \"18446744073709551615\" is too long (at most {max})"
            )],
            "{key}"
        );
        assert_eq!(
            errors(&format!("{key} = 9223372036854775807\n{MINIMAL}")),
            [format!(
                "1:{col}: {key} = 9223372036854775807 is too long (at most {max})"
            )],
            "{key}"
        );
        // The smallest is accepted; below it is refused.
        let min = format_duration(b.min);
        let (_, c) = ok(&format!("{key} = \"{min}\"\n{MINIMAL}"));
        assert_eq!(duration_of(&c, key), b.min, "{key}");
        if !b.min.is_zero() {
            let under = format_duration(b.min - Duration::from_millis(1));
            let expected = if b.min == Duration::from_millis(1) {
                format!("1:{col}: \"{key}\" must be more than 0")
            } else {
                format!("1:{col}: {key} = \"{under}\" is too short (at least {min})")
            };
            assert_eq!(
                errors(&format!("{key} = \"{under}\"\n{MINIMAL}")),
                [expected],
                "{key}"
            );
        }
    }
}

#[test]
fn each_size_at_and_past_its_bounds() {
    for b in SIZES {
        let key = b.key;
        let col = key.len() + 4;
        let max = format_size(b.max);
        let (_, c) = ok(&format!("{key} = \"{max}\"\n{MINIMAL}"));
        assert_eq!(size_of(&c, key), b.max, "{key}");
        let (_, c) = ok(&format!("{key} = {}\n{MINIMAL}", b.max));
        assert_eq!(size_of(&c, key), b.max, "{key}");
        assert_eq!(
            errors(&format!("{key} = {}\n{MINIMAL}", b.max + 1)),
            [format!(
                "1:{col}: {key} = {} is too large (at most {max})",
                b.max + 1
            )],
            "{key}"
        );
        assert_eq!(
            errors(&format!("{key} = \"1048576t\"\n{MINIMAL}")),
            [format!(
                "1:{col}: {key} = \"1048576t\" is too large (at most {max})"
            )],
            "{key}"
        );
        let (_, c) = ok(&format!("{key} = {}\n{MINIMAL}", b.min));
        assert_eq!(size_of(&c, key), b.min, "{key}");
        if b.min > 0 {
            assert_eq!(
                errors(&format!("{key} = {}\n{MINIMAL}", b.min - 1)),
                [format!(
                    "1:{col}: {key} = {} is too small (at least {})",
                    b.min - 1,
                    format_size(b.min)
                )],
                "{key}"
            );
        }
    }
}

#[test]
fn the_command_line_grace_has_the_config_bounds() {
    use crate::config::parse_setting_duration;
    assert_eq!(
        parse_setting_duration("grace", "24h"),
        Ok(Duration::from_secs(24 * 3600))
    );
    assert_eq!(
        parse_setting_duration("grace", "18446744073709551615"),
        Err("grace \"18446744073709551615\" is too long (at most 24h)".to_owned())
    );
    assert!(parse_setting_duration("grace", "soon").is_err());
}

/// The reference (docs/configuration.md's table, baton.toml(5)) says
/// what this table says.
#[test]
fn the_docs_give_every_range() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let docs = std::fs::read_to_string(format!("{root}/docs/configuration.md")).unwrap();
    let man = std::fs::read_to_string(format!("{root}/packaging/man/baton.toml.5")).unwrap();
    // Each end: its text, and whether the config writes it as a string.
    type End = (String, bool);
    let size = |n: u64| -> End {
        let t = format_size(n);
        let unit = !t.bytes().all(|b| b.is_ascii_digit());
        (t, unit)
    };
    let mut ranges: Vec<(&str, Option<End>, End)> = Vec::new();
    for b in DURATIONS {
        let min = (b.min != Duration::from_millis(1)).then(|| (format_duration(b.min), true));
        ranges.push((b.key, min, (format_duration(b.max), true)));
    }
    for b in SIZES {
        ranges.push((b.key, Some(size(b.min)), size(b.max)));
    }
    let md = |(t, q): &End| if *q { format!("`\"{t}\"`") } else { t.clone() };
    let roff = |(t, q): &End| {
        if *q {
            format!("\\(dq{t}\\(dq")
        } else {
            t.clone()
        }
    };
    for (key, min, max) in &ranges {
        let in_docs = match min {
            Some(m) => format!("{} to {}", md(m), md(max)),
            None => format!("more than 0, to {}", md(max)),
        };
        let row = docs
            .lines()
            .find(|l| l.starts_with(&format!("| `{key}` |")))
            .unwrap_or_else(|| panic!("no row for {key} in configuration.md"));
        assert!(
            row.contains(&format!("| {in_docs} |")),
            "{key}: configuration.md should say {in_docs}: {row}"
        );
        let in_man = match min {
            Some(m) => format!("Range: {} to {}.", roff(m), roff(max)),
            None => format!("Range: more than 0, to {}.", roff(max)),
        };
        let entry = man
            .split(".TP\n")
            .find(|e| e.starts_with(&format!(".BR {key} ")))
            .unwrap_or_else(|| panic!("no entry for {key} in baton.toml.5"));
        assert!(
            entry.contains(&in_man),
            "{key}: baton.toml.5 should say {in_man}: {entry}"
        );
    }
}

/// `worker_rlimit_nofile`: "auto" by default, a number within its row, and
/// refused just outside it, at the value.
#[test]
fn worker_rlimit_nofile_bounds() {
    let (_d, c) = ok(MINIMAL);
    assert_eq!(c.worker_rlimit_nofile, None);
    let (_d, c) = ok(&format!("worker_rlimit_nofile = \"auto\"\n{MINIMAL}"));
    assert_eq!(c.worker_rlimit_nofile, None);
    let b = COUNTS[0];
    for n in [b.min, b.max] {
        let (_d, c) = ok(&format!("worker_rlimit_nofile = {n}\n{MINIMAL}"));
        assert_eq!(c.worker_rlimit_nofile, Some(n));
    }
    let expected = format!(
        "1:24: \"worker_rlimit_nofile\" must be \"auto\" or a whole number from {} to {}",
        b.min, b.max
    );
    for bad in [
        (b.min - 1).to_string(),
        (b.max + 1).to_string(),
        "-1".into(),
        "\"lots\"".into(),
    ] {
        let e = errors(&format!("worker_rlimit_nofile = {bad}\n{MINIMAL}"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with(&expected), "{bad}: {e:?}");
    }
}
