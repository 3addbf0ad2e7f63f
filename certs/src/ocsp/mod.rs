//! OCSP stapling without cron (RFC 6960, RFC 5019): for each certificate,
//! ask its responder, check the answer, store it atomically where the
//! master reads the site's staple, and do it again at half its validity.
//!
//! The shape, for the helper process to run:
//!
//! - [`StapleJob`]: a chain file (PEM, leaf then issuer), the staple path
//!   (the site's `ocsp = "PATH"`, or beside an ACME certificate), and an
//!   optional responder URL overriding the certificate's own (AIA).
//! - [`jobs`]: the jobs a config asks for (each certificate entry with an
//!   `ocsp` path), to send the refresher at start and on every reload.
//! - [`Refresher`] (or [`spawn`] with the caller's channels) runs the
//!   [`refresher`] thread: it takes the whole job list on a crossbeam
//!   channel (again on every reload) and reports each job's turn as an
//!   [`Event`] on another: `Stored` (with the validity window and the next
//!   refresh), `Kept` (at start, a stored staple still before its
//!   half-life), `Revoked` (logged as an error; for an ACME certificate,
//!   the helper's cue to re-issue), `Failed` (with the reason and the
//!   retry delay). Plain threads: no async runtime.
//! - The checks themselves (request, response parsing, signature, issuer,
//!   status, validity, refresh time) are in `baton_shared::ocsp`, pure and
//!   shared with the master, which verifies every staple again before it
//!   serves it and stops serving it at its `nextUpdate`.
//! - [`fetch`]: one blocking HTTP exchange with a timeout and a size bound.
//! - [`store`]: temporary file, fsync, rename, fsync of the directory.

pub mod fetch;
mod job;
pub mod refresher;
mod store;

pub use job::{Chain, StapleJob, jobs};
pub use refresher::{Event, Refresher, Settings, spawn};
pub use store::store;
