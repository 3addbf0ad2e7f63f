//! The worker's request path, from raw bytes: the head parser under the
//! default limits and under tight ones, then the body reader over what
//! follows the head, fed in pieces whose sizes come from the input. Any
//! panic, overflow or out-of-bounds slice is a finding; so is a reader that
//! claims more bytes than it was given.

#![no_main]

use baton_shared::config::HttpLimits;
use baton_worker::http::body::{BodyReader, Step};
use baton_worker::http::request::{self, BodyFraming, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tight = HttpLimits {
        max_header_size: 1024,
        max_headers: 4,
        max_uri_length: 64,
        max_body_size: 256,
        ..HttpLimits::default()
    };
    for limits in [HttpLimits::default(), tight] {
        let Parsed::Request(req) = request::parse(data, &limits) else {
            continue;
        };
        assert!(req.head_len <= data.len());
        let mut reader = match req.body {
            BodyFraming::None => continue,
            BodyFraming::Length(n) => BodyReader::length(n),
            BodyFraming::Chunked => BodyReader::chunked(),
        };
        let mut rest = &data[req.head_len..];
        // Piece sizes from the first byte of the rest, so both one-byte
        // and whole-buffer feeding get explored.
        let piece = usize::from(rest.first().copied().unwrap_or(1)).max(1);
        while !rest.is_empty() {
            let n = piece.min(rest.len());
            let (used, step) = reader.consume(&rest[..n], limits.max_body_size, limits.max_header_size);
            assert!(used <= n);
            rest = &rest[used..];
            if step != Step::More {
                break;
            }
            if used == 0 {
                break;
            }
        }
    }
});
