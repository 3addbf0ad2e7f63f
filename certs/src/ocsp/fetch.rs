//! Asking a responder: one blocking HTTP/1.1 exchange (ureq, plain HTTP).
//!
//! ureq because it is small, maintained, blocking (the refresher is a plain
//! thread, no runtime), and has the timeouts and the body-size bound an
//! unprivileged fetcher needs. Built without TLS: OCSP responders are
//! `http://` (RFC 5019 §5: the response is signed, and fetching it over TLS
//! would need to check the responder's own certificate's revocation, a
//! loop), so `https://` responders are refused with a clear error rather
//! than pulling a second TLS stack and root store into the helper.
//!
//! GET for requests whose base64 fits in 255 bytes (RFC 5019 §5: what CDNs
//! and caches in front of responders serve), POST otherwise. No proxy, no
//! redirects: the responder is the one named in the certificate or config.

use std::time::Duration;

use base64::Engine;

/// Limits of one exchange.
#[derive(Debug, Clone)]
pub struct Limits {
    /// For the whole exchange: connect, send, receive.
    pub timeout: Duration,
    /// Responses are a few KiB; a larger body is refused.
    pub max_response: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            timeout: Duration::from_secs(15),
            max_response: 64 * 1024,
        }
    }
}

/// Sends a DER OCSP request to `url`; the DER response body.
pub fn fetch(url: &str, request: &[u8], limits: &Limits) -> Result<Vec<u8>, String> {
    if !url.starts_with("http://") {
        return Err(format!(
            "OCSP responder {url}: only http:// responders are supported \
             (responses are signed; RFC 5019 responders speak plain HTTP)"
        ));
    }
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(limits.timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .user_agent("baton-ocsp")
        .build()
        .new_agent();
    let encoded = base64::engine::general_purpose::STANDARD.encode(request);
    let result = if encoded.len() <= 255 {
        let sep = if url.ends_with('/') { "" } else { "/" };
        agent
            .get(format!("{url}{sep}{}", percent(&encoded)))
            .header("Accept", "application/ocsp-response")
            .call()
    } else {
        agent
            .post(url)
            .header("Content-Type", "application/ocsp-request")
            .header("Accept", "application/ocsp-response")
            .send(request)
    };
    let mut response = result.map_err(|e| format!("OCSP responder {url}: {e}"))?;
    let status = response.status();
    if status != 200 {
        return Err(format!(
            "OCSP responder {url} answered HTTP {}",
            status.as_u16()
        ));
    }
    response
        .body_mut()
        .with_config()
        .limit(limits.max_response)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(n) => {
                format!("OCSP responder {url}: the response is larger than {n} bytes, refused")
            }
            e => format!("OCSP responder {url}: reading the response: {e}"),
        })
}

/// Percent-encodes what base64 has that a path segment cannot carry as is.
fn percent(b64: &str) -> String {
    let mut out = String::with_capacity(b64.len() + 16);
    for c in b64.chars() {
        match c {
            '+' => out.push_str("%2B"),
            '/' => out.push_str("%2F"),
            '=' => out.push_str("%3D"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_path_safe() {
        assert_eq!(percent("ab+/c=="), "ab%2B%2Fc%3D%3D");
    }

    #[test]
    fn https_and_nonsense_are_refused_with_the_url() {
        let e = fetch("https://ocsp.example/", b"x", &Limits::default()).unwrap_err();
        assert!(e.contains("only http://"), "{e}");
        let e = fetch("ftp://x", b"x", &Limits::default()).unwrap_err();
        assert!(e.contains("ftp://x"), "{e}");
    }
}
