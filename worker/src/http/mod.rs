//! HTTP/1.1 framing: request heads in, response heads out.

pub mod request;
pub mod response;
