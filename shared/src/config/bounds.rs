//! The range every duration and size setting may take: one table, read by
//! validation (the config file), by the command line (`--grace`) and by
//! the tests, and copied into docs/configuration.md and baton.toml(5).
//!
//! Why bounds at all: the master and the workers turn these values into
//! deadlines (`Instant + Duration`) and buffer sizes. Deadline arithmetic
//! saturates anyway (`crate::deadline::after`), but a value no one could
//! mean ("grace = 584 billion years") is an operator's typo, and it is
//! refused where it was written, by `-t` and by a reload alike, instead of
//! being carried into a running server.

use std::time::Duration;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);
const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// The range of one duration setting, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationBounds {
    pub key: &'static str,
    pub min: Duration,
    pub max: Duration,
}

const fn d(key: &'static str, min: Duration, max: Duration) -> DurationBounds {
    DurationBounds { key, min, max }
}

/// Every duration setting. A key that takes a duration must be listed here
/// (`Reader::duration` looks it up; a test checks every row is a real key).
pub const DURATIONS: &[DurationBounds] = &[
    // A drain that needs a day is a stuck one; 0 kills at once.
    d("grace", Duration::ZERO, Duration::from_secs(24 * 3600)),
    d("worker_ready_timeout", MS, HOUR),
    d("drain_linger", Duration::ZERO, HOUR),
    // inetd mode: 0 never exits; a day is "practically never" already.
    d(
        "inetd_idle_exit",
        Duration::ZERO,
        Duration::from_secs(24 * 3600),
    ),
    d("keepalive_timeout", Duration::ZERO, HOUR),
    d("header_timeout", MS, HOUR),
    // The kernel counts it in SYN-ACK retransmissions; a retired listener
    // is kept open this long (plus a second) for the connections it holds,
    // so it must stay short (see docs/architecture.md).
    d("defer_accept", Duration::ZERO, MIN),
    d("body_timeout", MS, HOUR),
    d("send_timeout", MS, HOUR),
    // Each turn stats every certificate file in the master's loop.
    d("tls_watch_interval", Duration::from_millis(100), HOUR),
    // Each rotation is a message to every worker.
    d("tls_ticket_rotation", SEC, Duration::from_secs(24 * 3600)),
    // The helper's look at expiry dates: cheap (a few files), but each
    // due name is an order; a day is the longest a renewal may wait.
    d("acme_renew_check", SEC, Duration::from_secs(24 * 3600)),
    // A lock file is refreshed every third of this; shorter than a few
    // seconds and a slow NFS write makes a live holder look dead.
    d("acme_lock_stale", Duration::from_secs(3), HOUR),
    // [[upstream]]: a request waits this long at most for each step;
    // `keepalive_timeout` and `send_timeout` share the rows above.
    d("connect_timeout", MS, Duration::from_secs(10 * 60)),
    d("read_timeout", MS, HOUR),
    // How long a failed server is left alone; 0 is "never marked down".
    d("fail_timeout", Duration::ZERO, HOUR),
    // health = { interval, timeout }: each check is a connection from the
    // master, so not more often than ten times a second per server.
    d("interval", Duration::from_millis(100), HOUR),
    d("timeout", MS, Duration::from_secs(10 * 60)),
];

/// For a duration key missing from the table (a bug the tests catch):
/// still bounded, by the longest range there is.
pub const DURATION_FALLBACK: DurationBounds = d("", Duration::ZERO, Duration::from_secs(24 * 3600));

/// The bounds of the duration setting `key`.
pub fn duration_bounds(key: &str) -> Option<&'static DurationBounds> {
    DURATIONS.iter().find(|b| b.key == key)
}

impl DurationBounds {
    /// `Ok` if `value` is in range, else how it is not, to follow
    /// "KEY = VALUE ": `is too long (at most 24h)`.
    pub fn check(&self, value: Duration) -> Result<(), String> {
        if value > self.max {
            Err(format!(
                "is too long (at most {})",
                format_duration(self.max)
            ))
        } else if value < self.min && self.min == MS {
            Err("must be more than 0".to_owned())
        } else if value < self.min {
            Err(format!(
                "is too short (at least {})",
                format_duration(self.min)
            ))
        } else {
            Ok(())
        }
    }
}

/// The range of one size setting (bytes), both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeBounds {
    pub key: &'static str,
    pub min: u64,
    pub max: u64,
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

const fn s(key: &'static str, min: u64, max: u64) -> SizeBounds {
    SizeBounds { key, min, max }
}

/// Every size setting.
pub const SIZES: &[SizeBounds] = &[
    // Below 1 KiB not even an ordinary browser request fits.
    s("max_header_size", KIB, MIB),
    s("max_uri_length", 64, MIB),
    // Bodies are read and discarded; counters are 64-bit and saturate.
    s("max_body_size", 0, TIB),
    // Held in every worker's memory.
    s("file_cache_size", 0, 64 * GIB),
    // Above 16 MiB a file is better sent with sendfile than held in
    // every worker's memory.
    s("file_cache_max_file_size", 0, 16 * MIB),
    // HTTP/2 windows: from the protocol's default to 1 GiB (the protocol
    // allows 2^31-1; more than a gigabyte in flight per connection is a
    // typo).
    s("http2_window_size", 65_535, GIB),
    s("http2_connection_window_size", 65_535, GIB),
    // Per stream, times http2_max_concurrent_streams per connection.
    s("http2_max_send_buffer", 16 * KIB, 16 * MIB),
];

/// Size settings inside a table, named `table.key`.
pub const NESTED_SIZES: &[SizeBounds] = &[
    // `compress`'s threshold: a response shorter than this is sent as it
    // is. A threshold past a megabyte is a typo, not a setting.
    s("compress.min_length", 0, MIB),
];

/// For a size key missing from the table (a bug the tests catch).
pub const SIZE_FALLBACK: SizeBounds = s("", 0, TIB);

/// The bounds of the size setting `key`.
pub fn size_bounds(key: &str) -> Option<&'static SizeBounds> {
    SIZES.iter().chain(NESTED_SIZES).find(|b| b.key == key)
}

impl SizeBounds {
    /// `Ok` if `value` is in range, else how it is not, to follow
    /// "KEY = VALUE ": `is too large (at most 1m)`.
    pub fn check(&self, value: u64) -> Result<(), String> {
        if value > self.max {
            Err(format!("is too large (at most {})", format_size(self.max)))
        } else if value < self.min {
            Err(format!("is too small (at least {})", format_size(self.min)))
        } else {
            Ok(())
        }
    }
}

/// The range of one count setting, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountBounds {
    pub key: &'static str,
    pub min: u64,
    pub max: u64,
}

/// Count settings whose range is a matter of policy, not of type.
pub const COUNTS: &[CountBounds] = &[
    // Below 64 a worker cannot even hold its listeners, logs and channel
    // beside a few connections; above 2^20 (the kernel's default
    // fs.nr_open) setrlimit fails for every process, root included.
    CountBounds {
        key: "worker_rlimit_nofile",
        min: 64,
        max: 1 << 20,
    },
];

/// For a count key missing from the table (a bug the tests catch).
pub const COUNT_FALLBACK: CountBounds = CountBounds {
    key: "",
    min: 1,
    max: 1 << 20,
};

/// The bounds of the count setting `key`.
pub fn count_bounds(key: &str) -> Option<&'static CountBounds> {
    COUNTS.iter().find(|b| b.key == key)
}

impl CountBounds {
    /// `Ok` if `value` is in range, else how it is not.
    pub fn check(&self, value: u64) -> Result<(), String> {
        if value > self.max {
            Err(format!("is too large (at most {})", self.max))
        } else if value < self.min {
            Err(format!("is too small (at least {})", self.min))
        } else {
            Ok(())
        }
    }
}

/// A duration as the config writes it, largest units first: `24h`,
/// `1m30s`, `100ms`, `0s`.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, len) in [("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)] {
        if ms >= len {
            out.push_str(&format!("{}{unit}", ms / len));
            ms %= len;
        }
    }
    out
}

/// A size as the config writes it: the largest binary unit that divides
/// it (`1m`, `16k`), else bytes.
pub fn format_size(n: u64) -> String {
    for (unit, len) in [("t", TIB), ("g", GIB), ("m", MIB), ("k", KIB)] {
        if n >= len && n.is_multiple_of(len) {
            return format!("{}{unit}", n / len);
        }
    }
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_read_back() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(100), "100ms"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(24 * 3600), "24h"),
            (Duration::from_millis(3_723_004), "1h2m3s4ms"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(super::super::duration::parse(text), Some(d));
        }
        assert_eq!(format_size(1 << 20), "1m");
        assert_eq!(format_size(16 * 1024), "16k");
        assert_eq!(format_size(1 << 40), "1t");
        assert_eq!(format_size(1000), "1000");
        assert_eq!(format_size(0), "0");
    }

    #[test]
    fn every_range_is_a_range() {
        for b in DURATIONS {
            assert!(b.min <= b.max, "{}", b.key);
            assert!(b.check(b.min).is_ok() && b.check(b.max).is_ok());
            assert!(b.check(b.max + MS).is_err());
        }
        for b in SIZES {
            assert!(b.min <= b.max, "{}", b.key);
            assert!(b.check(b.max + 1).is_err());
        }
    }
}
