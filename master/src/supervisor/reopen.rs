//! `baton -s reopen` (after a log rotation): the master reopens the log
//! files with its own privileges and hands the new fds to every worker,
//! which needs no access to the log directory; it answers once every worker
//! has answered. No new generation is started.
//!
//! The answer is honest: `-s reopen` succeeds only if every file was
//! reopened and every worker took its files. A file the master cannot open,
//! a worker it cannot send to, a worker that could not take its files
//! (`ToMaster::ReopenFailed`) or one that does not answer in time makes it
//! fail with every reason, while what could be reopened is.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_shared::channel::ToWorker;
use baton_shared::deadline;
use nix::unistd::Pid;

use super::Master;
use crate::control::{self, status};

/// A reopen under way: the workers that have not answered yet, and what
/// went wrong so far.
pub(super) struct Reopen {
    waiting: Vec<Pid>,
    failures: Vec<String>,
    waiters: Vec<control::Conn>,
    pub(super) deadline: Instant,
}

/// How long workers get to answer a log reopen.
const REOPEN_TIMEOUT: Duration = Duration::from_secs(5);

impl Master {
    pub(super) fn reopen_logs(&mut self, mut conn: control::Conn) {
        if let Some(op) = self.reopen.as_mut() {
            op.waiters.push(conn);
            return;
        }
        let Some(current) = self.procs.generations.get(&self.procs.current) else {
            return conn.reply(status::APPLY_FAILED, "no generation is serving");
        };
        let config = Arc::clone(&current.config);
        let mut failures = Vec::new();
        let mut error_fd = None;
        if let Some(path) = &config.error_log {
            match crate::logfiles::redirect_stderr(path, &config) {
                Ok(()) => {
                    log::info!("reopened error log {}", path.display());
                    error_fd = dup_stderr();
                }
                Err(e) => failures.push(format!("cannot reopen error log {}: {e}", path.display())),
            }
        }
        // Each generation gets its own config's access logs, reopened.
        let mut waiting = Vec::new();
        let numbers: Vec<u64> = self.procs.generations.keys().copied().collect();
        for number in numbers {
            let Some(g) = self.procs.generations.get_mut(&number) else {
                continue;
            };
            match crate::logfiles::open_access_logs(&g.config) {
                Ok(fds) => g.access_logs = fds,
                // Its workers are sent the files they have: a no-op for
                // them, and the error log still moves.
                Err(e) => failures.push(e),
            }
            let mut fds: Vec<_> = error_fd.iter().map(|f| f.as_fd()).collect();
            fds.extend(g.access_logs.iter().map(|f| f.as_fd()));
            let message = ToWorker::ReopenLogs {
                error_log: error_fd.is_some(),
                files: fds.len() as u32,
            };
            for child in self.procs.children.values_mut() {
                if child.generation != number {
                    continue;
                }
                let Some(channel) = child.channel.as_mut() else {
                    continue;
                };
                match channel.send_with_fds(&message, &fds) {
                    Ok(()) => waiting.push(child.pid),
                    Err(e) => failures.push(format!(
                        "cannot send the reopened logs to worker {}: {e}",
                        child.pid
                    )),
                }
            }
        }
        // Our copy of the error log fd is dropped here; the channels hold
        // their own until sent.
        for f in &failures {
            log::error!("reopen: {f}");
        }
        self.reopen = Some(Reopen {
            waiting,
            failures,
            waiters: vec![conn],
            deadline: deadline::from_now(REOPEN_TIMEOUT),
        });
        self.reopen_finish_if_done();
    }

    /// Worker `pid` took its files (`Ok`), could not (`Err`), or ended.
    pub(super) fn reopen_answered(&mut self, pid: Pid, result: Result<(), String>) {
        let Some(op) = self.reopen.as_mut() else {
            return;
        };
        if !op.waiting.contains(&pid) {
            return;
        }
        op.waiting.retain(|p| *p != pid);
        if let Err(why) = result {
            let line = format!("worker {pid} kept its old log files: {why}");
            log::error!("reopen: {line}");
            op.failures.push(line);
        }
        self.reopen_finish_if_done();
    }

    pub(super) fn reopen_timed_out(&mut self) {
        let Some(op) = self.reopen.as_mut() else {
            return;
        };
        let pids: Vec<String> = op.waiting.iter().map(|p| p.to_string()).collect();
        let line = format!(
            "workers {} did not answer within {} s",
            pids.join(", "),
            REOPEN_TIMEOUT.as_secs()
        );
        log::error!("reopen: {line}");
        op.failures.push(line);
        op.waiting.clear();
        self.reopen_finish_if_done();
    }

    /// Answers everyone waiting once no worker is left to answer.
    fn reopen_finish_if_done(&mut self) {
        if self
            .reopen
            .as_ref()
            .is_some_and(|op| !op.waiting.is_empty())
        {
            return;
        }
        let Some(op) = self.reopen.take() else {
            return;
        };
        let (code, text) = if op.failures.is_empty() {
            (status::OK, "logs reopened".to_owned())
        } else {
            (status::APPLY_FAILED, op.failures.join("\n"))
        };
        for mut w in op.waiters {
            w.reply(code, &text);
        }
    }
}

/// A close-on-exec duplicate of fd 2 (the error log just reopened there),
/// to hand to the workers.
fn dup_stderr() -> Option<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on fd 2, which is open.
    let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
    // SAFETY: `fd` was just created and belongs to no one else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}
