//! The certificate helper's challenge answers, on their way to the
//! workers: every live worker gets the whole set (`AcmeChallenges`, with a
//! version), confirms the version it applied (`AcmeApplied`), and once
//! all have, the helper hears `Published`, one per answer it sent: only
//! then does it tell the CA to validate, so the CA can never reach a
//! worker that does not know the answer yet. Workers forked later get the
//! set with their first messages.

use baton_shared::channel::ToWorker;
use baton_shared::channel::certs::{Challenges, ToHelper};
use nix::unistd::Pid;

use super::Master;

impl Master {
    /// Sends every worker the challenge answers to serve; the helper hears
    /// `Published` once each has confirmed them.
    pub(super) fn set_challenges(&mut self, mut c: Challenges) {
        if (&c.http, &c.alpn) != (&self.helper.challenges.http, &self.helper.challenges.alpn) {
            c.version = self.helper.challenges.version.wrapping_add(1);
            self.helper.challenges = c;
            let msg = ToWorker::AcmeChallenges(self.helper.challenges.clone());
            let pids: Vec<Pid> = self.procs.children.keys().copied().collect();
            self.helper.unconfirmed = pids
                .into_iter()
                .filter(|pid| self.procs.send_to_pid(*pid, &msg))
                .collect();
        }
        self.confirm_published();
    }

    /// A worker confirmed the challenge answers of `version`.
    pub(super) fn helper_applied(&mut self, pid: Pid, version: u64) {
        if version == self.helper.challenges.version {
            self.helper.unconfirmed.remove(&pid);
            self.confirm_published();
        }
    }

    /// A worker is gone: nothing more to wait for from it.
    pub(super) fn helper_worker_gone(&mut self, pid: Pid) {
        if self.helper.unconfirmed.remove(&pid) {
            self.confirm_published();
        }
    }

    fn confirm_published(&mut self) {
        if !self.helper.unconfirmed.is_empty() {
            return;
        }
        for _ in 0..std::mem::take(&mut self.helper.owed) {
            self.send_helper(&ToHelper::Published);
        }
    }

    /// A worker was just forked: it gets the answers being served.
    pub(super) fn helper_worker_forked(&mut self, pid: Pid) {
        if self.helper.challenges.http.is_empty() && self.helper.challenges.alpn.is_empty() {
            return;
        }
        let msg = ToWorker::AcmeChallenges(self.helper.challenges.clone());
        self.procs.send_to_pid(pid, &msg);
    }
}
