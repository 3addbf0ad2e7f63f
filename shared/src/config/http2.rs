//! HTTP/2's settings: the limits every HTTP/2 connection of a worker gets
//! (top-level keys, as the HTTP/1.1 limits are: a connection's site is only
//! known per request).

/// The limits of an HTTP/2 connection. Each bounds one of the known
/// attacks on HTTP/2 servers (docs/configuration.md, "HTTP/2").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http2Limits {
    /// `http2_max_concurrent_streams`: streams a client may have open at
    /// once (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// `http2_max_pending_resets`: streams the client reset before the
    /// server took them up; past it, GOAWAY ENHANCE_YOUR_CALM (rapid
    /// reset, CVE-2023-44487).
    pub max_pending_resets: usize,
    /// `http2_max_error_resets`: streams the server had to reset for the
    /// client's errors; past it, GOAWAY ENHANCE_YOUR_CALM.
    pub max_error_resets: usize,
    /// `http2_max_control_frames`: control frames (SETTINGS, PING,
    /// PRIORITY, RST_STREAM, empty DATA, unknown types) a client may send
    /// per second, with a burst of as many; past it, GOAWAY
    /// ENHANCE_YOUR_CALM (the 2019 flood CVEs).
    pub max_control_frames: u32,
    /// `http2_window_size`: each stream's receive window (request bodies).
    pub window_size: u32,
    /// `http2_connection_window_size`: the whole connection's.
    pub connection_window_size: u32,
    /// `http2_max_send_buffer`: response bytes buffered per stream before
    /// the socket takes them.
    pub max_send_buffer: usize,
}

impl Default for Http2Limits {
    fn default() -> Http2Limits {
        Http2Limits {
            max_concurrent_streams: 128,
            max_pending_resets: 20,
            max_error_resets: 1024,
            max_control_frames: 1000,
            window_size: 256 * 1024,
            connection_window_size: 1024 * 1024,
            max_send_buffer: 64 * 1024,
        }
    }
}
