//! What Baton's master and workers both need: the config model and its
//! validation (one code path for `-t`, start and reload), the channel's
//! messages, deadline arithmetic, and logging.

pub mod channel;
pub mod config;
pub mod deadline;
pub mod logging;
pub mod ocsp;
pub mod tls;
pub mod tls_acme;
pub mod upstream_tls;
