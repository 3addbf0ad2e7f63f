//! The channel to the master: its messages in, `send_to_master` out, and
//! what losing it means (drain, and exit within the grace period).

use std::os::fd::AsRawFd;

use baton_shared::channel::{ToMaster, ToWorker};
use log::{info, warn};
use mio::event::Event;
use mio::unix::SourceFd;

use super::Worker;
use crate::drain::Cause;

impl Worker {
    pub(super) fn on_channel(&mut self, event: &Event) {
        let Some(channel) = self.channel.as_mut() else {
            return;
        };
        if event.is_writable()
            && channel.has_pending_output()
            && let Err(e) = channel.flush()
        {
            self.master_lost(&e.to_string());
            return;
        }
        let messages = match channel.receive::<ToWorker>() {
            Ok(m) => m,
            Err(e) => {
                self.master_lost(&e.to_string());
                return;
            }
        };
        let eof = channel.eof();
        for message in messages {
            match message {
                ToWorker::Drain => self.begin_drain(Cause::Ordered),
                ToWorker::Stop => {
                    info!("told to stop");
                    self.stop = true;
                }
                ToWorker::ReopenLogs { error_log, files } => self.reopen_logs(error_log, files),
                ToWorker::Certificates(bundles) => match self.tls.replace(&self.config, &bundles) {
                    Ok(n) => info!("certificates replaced ({n} in use)"),
                    Err(e) => warn!("new certificates refused, the old ones stay: {e}"),
                },
                ToWorker::TicketKeys(keys) => self.tls.set_ticket_keys(&keys),
                ToWorker::HoldListeners(list) => self.held = list,
                ToWorker::UpstreamHealth(marks) => self.proxy.apply_health(&marks),
                ToWorker::AcmeChallenges(c) => {
                    crate::acme::set(&c);
                    self.send_to_master(&ToMaster::AcmeApplied(c.version));
                }
                ToWorker::CloseListeners(list) => {
                    for i in list {
                        self.close_listener(i as usize);
                    }
                }
            }
        }
        if eof {
            self.master_lost("channel closed");
        }
    }

    /// Takes the log files the master reopened (log rotation): the error log
    /// goes onto fd 2, where every log line is written; then confirms, or
    /// tells the master why not (its `-s reopen` then reports it). Either
    /// way the channel goes on: a reopen that failed is that reopen's
    /// error, not a lost master.
    pub(super) fn reopen_logs(&mut self, error_log: bool, files: u32) {
        let reply = match self.take_reopened_logs(error_log, files) {
            Ok(()) => ToMaster::ReopenDone,
            Err(why) => {
                warn!("cannot reopen logs, keeping the old files: {why}");
                ToMaster::ReopenFailed(why)
            }
        };
        self.send_to_master(&reply);
    }

    pub(super) fn take_reopened_logs(&mut self, error_log: bool, files: u32) -> Result<(), String> {
        let channel = self.channel.as_mut().ok_or("no channel")?;
        let fds = channel
            .take_fds(files as usize)
            .map_err(|e| e.to_string())?;
        let mut fds = fds.into_iter();
        if error_log && let Some(fd) = fds.next() {
            // SAFETY: dup2 between two open fds; replaces fd 2 atomically, so
            // no log line is lost or split.
            if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&fd), 2) } < 0 {
                let e = std::io::Error::last_os_error();
                return Err(format!("cannot reopen the error log: {e}"));
            }
        }
        self.access_log.replace(fds.collect())
    }

    pub(crate) fn send_to_master(&mut self, message: &ToMaster) {
        if let Some(channel) = self.channel.as_mut()
            && let Err(e) = channel.send(message)
        {
            self.master_lost(&e.to_string());
        }
    }

    /// The channel ended or broke: the master is gone (or has given up on
    /// us). Drain, and exit within the grace period whatever is left.
    pub(super) fn master_lost(&mut self, why: &str) {
        if let Some(channel) = self.channel.take() {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&channel.stream().as_raw_fd()));
            if !self.stop {
                warn!("lost the master ({why}): draining");
            }
        }
        self.begin_drain(Cause::Orphaned);
    }
}
