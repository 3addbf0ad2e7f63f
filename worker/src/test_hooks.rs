//! Test hooks, read from the environment by debug builds only (a release
//! build never looks): they let the end-to-end tests of the master's
//! reload transaction hold a worker at the exact step a race needs,
//! instead of hoping a timing lines up.
//!
//! - `BATON_TEST_HOLD_READY=G/S,...`: the worker of generation G, slot S
//!   serves but does not send `Ready` until it gets SIGUSR2.
//! - `BATON_TEST_HOLD_DRAINING=G,...`: generation G's workers stop
//!   accepting when told to drain but never confirm it (`Draining`).

#[derive(Debug, Default, Clone, Copy)]
pub struct Hooks {
    pub hold_ready: bool,
    pub hold_draining: bool,
}

impl Hooks {
    #[cfg(debug_assertions)]
    pub fn from_env(generation: u64, slot: usize) -> Hooks {
        let listed = |var: &str, item: &str| {
            std::env::var(var)
                .map(|v| v.split(',').any(|x| x.trim() == item))
                .unwrap_or(false)
        };
        Hooks {
            hold_ready: listed("BATON_TEST_HOLD_READY", &format!("{generation}/{slot}")),
            hold_draining: listed("BATON_TEST_HOLD_DRAINING", &generation.to_string()),
        }
    }

    #[cfg(not(debug_assertions))]
    pub fn from_env(_generation: u64, _slot: usize) -> Hooks {
        Hooks::default()
    }
}
