//! HTTP/1.1 framing: request heads and bodies in, response heads out.
//!
//! Public so the fuzz target can drive the parser; nothing else outside
//! the worker uses it.

pub mod body;
pub mod request;
pub(crate) mod request_line;
pub mod response;
