//! The certificate helper: a process of its own, forked by the master like
//! a worker and unprivileged like one, that obtains and renews certificates
//! (ACME, RFC 8555) and keeps OCSP staples fresh (RFC 6960).
//!
//! Why a process and not the master: ordering a certificate waits on a CA
//! for seconds to minutes and needs an HTTP client, threads and an async
//! runtime (instant-acme). The master forks and must stay single-threaded
//! and never block; the workers must never wait on the network outside
//! their own sockets. The helper owns no listen socket and no private key
//! it did not create; what it produces (certificate, key, staple files)
//! reaches the workers through the master's existing hot-swap path.

pub mod acme;
pub mod ocsp;
mod process;
mod staples;

pub use process::{Setup, run};
