//! An HTTP/2 request head → the worker's `Request`, the same one an
//! HTTP/1.1 head parses into, so that routing, static files and the access
//! log are one code path for both protocols. The engine has already
//! checked the pseudo-headers and refused connection-specific fields
//! (RFC 9113 8.2.2, 8.3); what is checked here are the worker's limits.

use baton_shared::config::HttpLimits;

use super::engine::Head;
use crate::http::request::{
    BodyFraming, Conditions, LogHeaders, Method, Request, Version, condition_slot,
};
use crate::http::request_line::request_host;
use crate::http::response::Status;

/// The request `head` names, or the status to refuse it with.
pub fn to_request(head: &Head, limits: &HttpLimits, capture: bool) -> Result<Request, Status> {
    let method = Method::from_token(head.method.as_str());
    let target = head
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    if target.len() > limits.max_uri_length {
        return Err(Status::UriTooLong);
    }
    if head.headers.len() > limits.max_headers {
        return Err(Status::HeaderFieldsTooLarge);
    }
    let authority = head.uri.authority().map(|a| a.as_str());
    let host_header = head.headers.get(http::header::HOST).map(|v| v.as_bytes());
    // :authority wins over Host (RFC 9113 8.3.1); either names the site.
    let host = request_host(authority, host_header).map_err(|()| Status::BadRequest)?;
    let mut conditions = Conditions::default();
    let mut log = LogHeaders::default();
    if capture {
        log.method = head.method.as_str().to_owned();
    }
    for (name, value) in &head.headers {
        let name = name.as_str();
        let text = || String::from_utf8_lossy(value.as_bytes()).trim().to_owned();
        if name == "referer" {
            if capture {
                log.referer = Some(text());
            }
        } else if name == "user-agent" {
            if capture {
                log.user_agent = Some(text());
            }
        } else if let Some(slot) = condition_slot(&mut conditions, name) {
            // Repeated: one list, as for HTTP/1.1.
            let v = text();
            match slot.as_mut() {
                Some(prev) => {
                    prev.push_str(", ");
                    prev.push_str(&v);
                }
                None => *slot = Some(v),
            }
        }
    }
    Ok(Request {
        method,
        version: Version::Http2,
        target,
        host,
        keep_alive: true,
        // The body, if any, comes in DATA frames (`engine::Inbound`).
        body: BodyFraming::None,
        expects_continue: false,
        conditions,
        log,
        head_len: 0,
    })
}
