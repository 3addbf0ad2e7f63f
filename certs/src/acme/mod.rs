//! ACME (RFC 8555): accounts, orders, HTTP-01 and TLS-ALPN-01 challenges,
//! renewal. Built on the `instant-acme` crate.
