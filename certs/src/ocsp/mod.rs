//! OCSP (RFC 6960): build the request for a certificate, fetch it from
//! the responder, verify the answer and store it atomically where the
//! site's `ocsp` staple path says, refreshing at half its validity.
