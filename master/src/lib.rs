//! Baton's master: binds, forks and supervises worker generations.
