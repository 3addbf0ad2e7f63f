//! systemd's notify protocol (sd_notify), a no-op without NOTIFY_SOCKET.
//!
//! READY=1 once the first generation serves and again after each reload;
//! RELOADING=1 with MONOTONIC_USEC when a reload starts (systemd 253 and
//! `Type=notify-reload` require the timestamp); STOPPING=1 on stop; a
//! STATUS= line naming the serving generation.

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::debug!("sd_notify failed: {e}");
    }
}

fn monotonic_usec() -> i128 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC);
    match now {
        Ok(ts) => i128::from(ts.tv_sec()) * 1_000_000 + i128::from(ts.tv_nsec()) / 1000,
        Err(_) => 0,
    }
}

pub fn ready(generation: u64) {
    let status = format!("generation {generation} serving");
    send(&[
        NotifyState::Ready,
        NotifyState::MainPid(std::process::id()),
        NotifyState::Status(&status),
    ]);
}

pub fn reloading() {
    send(&[
        NotifyState::Reloading,
        NotifyState::MonotonicUsec(monotonic_usec()),
        NotifyState::Status("reloading"),
    ]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}
