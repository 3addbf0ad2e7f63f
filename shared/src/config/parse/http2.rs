//! The top-level `http2_*` keys (`config::http2::Http2Limits`).

use super::{Reader, Value};
use crate::config::http2::Http2Limits;

/// The HTTP/2 keys, as written at the top level.
pub(crate) const HTTP2_KEYS: &[&str] = &[
    "http2_max_concurrent_streams",
    "http2_max_pending_resets",
    "http2_max_error_resets",
    "http2_max_control_frames",
    "http2_window_size",
    "http2_connection_window_size",
    "http2_max_send_buffer",
];

/// The largest flow-control window HTTP/2 allows (RFC 9113 6.9.1); the
/// bounds (`bounds::SIZES`) keep below it anyway.
const MAX_WINDOW: u64 = (1 << 31) - 1;

impl Reader<'_, '_, '_> {
    /// One of the `http2_*` keys.
    pub(super) fn http2_limit(&mut self, key: &str, value: &Value<'_>, h2: &mut Http2Limits) {
        match key {
            "http2_max_concurrent_streams" => {
                if let Some(n) = self.count(key, value, 1, 65_535) {
                    h2.max_concurrent_streams = n as u32;
                }
            }
            "http2_max_pending_resets" => {
                if let Some(n) = self.count(key, value, 1, 100_000) {
                    h2.max_pending_resets = n as usize;
                }
            }
            "http2_max_error_resets" => {
                if let Some(n) = self.count(key, value, 1, 1_000_000) {
                    h2.max_error_resets = n as usize;
                }
            }
            "http2_max_control_frames" => {
                if let Some(n) = self.count(key, value, 10, 1_000_000) {
                    h2.max_control_frames = n as u32;
                }
            }
            "http2_window_size" => {
                if let Some(n) = self.size(key, value) {
                    h2.window_size = n.min(MAX_WINDOW) as u32;
                }
            }
            "http2_connection_window_size" => {
                if let Some(n) = self.size(key, value) {
                    h2.connection_window_size = n.min(MAX_WINDOW) as u32;
                }
            }
            "http2_max_send_buffer" => {
                if let Some(n) = self.size(key, value) {
                    h2.max_send_buffer = n as usize;
                }
            }
            _ => {}
        }
    }
}
