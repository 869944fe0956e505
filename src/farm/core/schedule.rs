//! Scheduling: the next job for each free printer, started behind the
//! plate-clear gate (checked again after the file check, right before the
//! point of no return), time limits, and the periodic publications.

use super::model::{Held, Phase, Printer};
use super::persist::Tx;
use super::writes::After;
use super::{Effect, FarmCore};
use crate::lifecycle::{JobState, PlateGate, PrinterState};
use crate::printer::job_file::Summary;
use crate::printer::PrinterCommand;
use crate::store::Write;
use log::{info, warn};
use std::path::PathBuf;
use std::time::Duration;

/// A time-limit cancel that did not end the job is sent again after this.
const CANCEL_RESEND: Duration = Duration::from_secs(30);

impl FarmCore {
    /// A printer that may take a job now. A new claim still listening
    /// prints the jobs it holds (its printer is its own, and a broker that
    /// is down must not stop it); only a claimant that lost the id starts
    /// nothing (see `claims`).
    pub(super) fn is_free(&self, p: &Printer) -> bool {
        !self.stopping
            && !self.lost_claim(&p.id)
            && p.connected
            && p.held.is_none()
            && !p.identity.blocks()
            && PlateGate::can_start(p.state, p.plate_clear).is_ok()
    }

    /// Gives every free printer its next job; asks the queue manager for
    /// printers with nothing to do (and only for those).
    pub(super) fn schedule(&mut self) {
        let free: Vec<(String, Option<String>)> = self
            .printers
            .values()
            .filter(|p| self.is_free(p))
            .map(|p| (p.id.clone(), p.filament.clone()))
            .collect();
        for (printer, filament) in free {
            let next = self
                .jobs
                .values()
                .filter(|j| j.startable() && j.fits(&printer, filament.as_deref()))
                .min_by_key(|j| (std::cmp::Reverse(j.priority), j.order))
                .map(|j| (j.id.clone(), j.state, j.gcode_path.clone()));
            match next {
                Some((job, JobState::Ready, Some(path))) => self.begin_scan(&printer, &job, path),
                Some((job, _, _)) => self.begin_download(&printer, &job),
                // A pulled job is published on the id's assignment topic,
                // where another claimant would take it too: not while the
                // id may be someone else's.
                None if self.yields(&printer) => {}
                None => self.maybe_pull(&printer),
            }
        }
    }

    /// Checks the file on a blocking thread first: a bad line fails the job
    /// before the first byte reaches the printer.
    fn begin_scan(&mut self, printer: &str, job: &str, path: String) {
        if let Some(p) = self.printers.get_mut(printer) {
            p.held = Some(Held::new(job, Phase::Scanning));
        }
        if let Some(j) = self.jobs.get_mut(job) {
            j.printer = Some(printer.to_owned());
        }
        self.push(Effect::Scan {
            job: job.to_owned(),
            path: PathBuf::from(path),
        });
    }

    pub(super) fn on_scanned(&mut self, job: &str, result: Result<Summary, String>) {
        if self.on_local_scanned(job, &result) {
            return;
        }
        let Some(printer) = self.holder(job, Phase::Scanning) else {
            return;
        };
        let summary = match result {
            Ok(s) => s,
            Err(reason) => {
                if let Some(p) = self.printers.get_mut(&printer) {
                    p.held = None;
                }
                self.fail_waiting_job(job, &format!("file check failed: {reason}"));
                return;
            }
        };
        let path = self.jobs.get(job).and_then(|j| j.gcode_path.clone());
        let stopped = self.jobs.get(job).is_none_or(|j| j.stop.is_some());
        let Some(p) = self.printers.get_mut(&printer) else {
            return;
        };
        // The gate, once more: the printer may have dropped, faulted or been
        // given an uncleared plate while the file was checked.
        let gate = p.connected
            && !p.identity.blocks()
            && PlateGate::can_start(p.state, p.plate_clear).is_ok();
        let (Some(path), true, false) = (path, gate, stopped || self.stopping) else {
            p.held = None;
            return;
        };
        let session = p.losses;
        if let Some(h) = p.held.as_mut() {
            h.phase = Phase::Starting;
            h.session = session;
        }
        p.state = PrinterState::Printing;
        p.plate_clear = false;
        p.percent = 0.0;
        p.lines = Some((0, summary.commands));
        p.finished = None;
        if let Some(j) = self.jobs.get_mut(job) {
            j.state = JobState::Printing;
        }
        let mut tx = Tx::default();
        tx.job(job, JobState::Printing, None)
            .write(Write::Printer {
                id: printer.clone(),
                state: PrinterState::Printing,
                plate_clear: Some(false),
                current_job: Some(Some(job.to_owned())),
            })
            .out(self.msgs.event(&printer, "job_printing", Some(job), None))
            .out(self.msgs.event(&printer, "printing", Some(job), None))
            .out(self.progress_item(&printer));
        let after = After::Started {
            printer: printer.clone(),
            job: job.to_owned(),
            path: PathBuf::from(path),
            summary,
        };
        self.commit(tx, after);
    }

    /// The printer holding `job` in `phase`, if any.
    pub(super) fn holder(&self, job: &str, phase: Phase) -> Option<String> {
        self.printers
            .values()
            .find(|p| {
                p.held
                    .as_ref()
                    .is_some_and(|h| h.job == job && h.phase == phase)
            })
            .map(|p| p.id.clone())
    }

    /// Ends a job that never reached a printer (bad file, failed download):
    /// the plate is untouched, the printer stays free.
    pub(super) fn fail_waiting_job(&mut self, job: &str, reason: &str) {
        warn!("job {job}: {reason}");
        let Some(j) = self.jobs.remove(job) else {
            return;
        };
        let printer = j.printer.clone();
        let mut tx = Tx::default();
        tx.job(job, JobState::Failed, Some(reason));
        match printer.as_deref() {
            Some(p) => {
                tx.out(self.msgs.event(p, "job_failed", Some(job), Some(reason)))
                    .out(self.msgs.job_complete(p, job, "failed"))
                    .out(self.progress_item(p));
            }
            None => {
                tx.out(
                    self.msgs
                        .gateway_event("job_failed", Some(job), Some(reason)),
                );
            }
        }
        self.commit(tx, After::Nothing);
    }

    /// Cancels printing jobs over their time limit (and sends the cancel
    /// again while the job has not ended: a lost command must not leave
    /// the limit disarmed).
    pub(super) fn check_time_limits(&mut self) {
        let now = self.now;
        let mut due = Vec::new();
        for p in self.printers.values_mut() {
            let Some(held) = p.held.as_mut() else {
                continue;
            };
            let over = held.deadline.is_some_and(|d| now >= d);
            let resend = held
                .cancel_sent
                .is_none_or(|t| now.saturating_duration_since(t) >= CANCEL_RESEND);
            if over && held.phase.on_printer() && resend {
                let first = held.cancel_sent.is_none();
                held.cancel_sent = Some(now);
                due.push((p.id.clone(), held.job.clone(), first));
            }
        }
        for (printer, job, first) in due {
            if first {
                warn!("printer {printer}: job {job} exceeded its time limit; cancelling");
                let item = self.msgs.event(
                    &printer,
                    "job_timeout",
                    Some(&job),
                    Some("time limit exceeded"),
                );
                self.announce(item);
            }
            self.push(Effect::Printer {
                printer,
                cmd: PrinterCommand::Cancel,
            });
        }
    }

    /// Last values, from memory and not stored: every connected printer's
    /// status at least every `idle_announce` (the job handler discovers
    /// printers from these), a printing one's progress every
    /// `progress_interval`; and a printing job's progress written to the
    /// store (without fsync) at most every `progress_persist`.
    pub(super) fn publish_periodic(&mut self) {
        let now = self.now;
        let mut due = Vec::new();
        let mut persist = Vec::new();
        for p in self.printers.values_mut() {
            let printing = p.phase().is_some_and(Phase::on_printer);
            let every = if printing {
                self.s.progress_interval.min(self.s.idle_announce)
            } else {
                self.s.idle_announce
            };
            // A printer id another gateway holds, or a new claim still
            // listening: silent (see `claims`).
            let yields = p.silent(now);
            if p.connected
                && !yields
                && p.last_publish
                    .is_none_or(|t| now.saturating_duration_since(t) >= every)
            {
                p.last_publish = Some(now);
                due.push(p.id.clone());
            }
            let persist_due = p
                .last_persist
                .is_none_or(|t| now.saturating_duration_since(t) >= self.s.progress_persist);
            if printing && persist_due {
                if let (Some(job), Some((done, _))) = (p.held_job().map(str::to_owned), p.lines) {
                    p.last_persist = Some(now);
                    persist.push((job, done, p.percent));
                }
            }
        }
        for id in due {
            let payload = self
                .printers
                .get(&id)
                .map(|p| self.msgs.progress_payload(&self.view(p)));
            if let (Some(payload), Some(topics)) = (payload, self.msgs.topics()) {
                let topic = topics.progress(&id);
                self.push(Effect::Publish {
                    topic,
                    payload,
                    retain: false,
                });
            }
        }
        for (job, lines_done, percent) in persist {
            let mut tx = Tx::default();
            tx.write(Write::JobProgress {
                id: job,
                lines_done,
                percent,
            });
            self.commit_with(tx, false, After::Nothing);
        }
    }

    /// `device/printers` (when this gateway owns it), on every change.
    pub(super) fn publish_awaiting(&mut self) {
        if !self.s.publish_printers_list {
            return;
        }
        let list: Vec<String> = self
            .printers
            .values()
            .filter(|p| p.state == PrinterState::AwaitingClear)
            .map(|p| p.id.clone())
            .collect();
        if self.awaiting_published.as_ref() != Some(&list) {
            let item = self.msgs.awaiting_list(&list);
            self.awaiting_published = Some(list);
            self.announce(item);
        }
    }

    pub(super) fn purge(&mut self) {
        let mut tx = Tx::default();
        tx.write(Write::Purge {
            older_than: self.s.retention,
        });
        self.commit(tx, After::Purged);
        info!(
            "retention purge of jobs finished over {:?} ago",
            self.s.retention
        );
    }
}
