//! What each printer report means: printer states, job endings, the plate
//! gate's other half (clearing), and the batches that announce them.

use super::model::{Finished, Phase, Stop};
use super::persist::{event_kind, Tx};
use super::writes::After;
use super::FarmCore;
use crate::lifecycle::{JobState, PrinterState};
use crate::printer::{JobOutcome, PausedBy, PrinterReport, ReportKind};
use crate::store::Write;
use log::{debug, info, warn};

impl FarmCore {
    pub(super) fn on_report(&mut self, report: PrinterReport) {
        let id = report.printer;
        if !self.printers.contains_key(&id) {
            return;
        }
        match report.kind {
            ReportKind::Connected(fw) => {
                self.check_identity(&id, &fw);
                self.on_connected(&id, &fw.name)
            }
            ReportKind::Offline { reason } => {
                self.count_loss(&id);
                self.on_lost(&id, PrinterState::Offline, &reason)
            }
            ReportKind::Fault { reason } => {
                self.count_loss(&id);
                self.on_lost(&id, PrinterState::Error, &reason)
            }
            ReportKind::Temps(t) => {
                if let Some(p) = self.printers.get_mut(&id) {
                    p.temps = t;
                }
            }
            ReportKind::JobStarted { job_id } => {
                if let Some(h) = self.printers.get_mut(&id).and_then(|p| p.held.as_mut()) {
                    if h.job == job_id {
                        h.started = true;
                    }
                }
            }
            ReportKind::Progress { job_id, progress } => {
                if let Some(p) = self.printers.get_mut(&id) {
                    if p.held_job() == Some(job_id.as_str()) {
                        p.percent = progress.percent;
                        p.lines = Some((progress.lines_done, progress.lines_total));
                    }
                }
            }
            ReportKind::Paused { job_id, by, reason } => {
                if let Some(p) = self.printers.get_mut(&id) {
                    p.paused_by = Some((by, reason));
                }
                self.on_pause(&id, &job_id, true)
            }
            ReportKind::Resumed { job_id } => {
                if let Some(p) = self.printers.get_mut(&id) {
                    p.paused_by = None;
                }
                self.on_pause(&id, &job_id, false)
            }
            ReportKind::JobFinished {
                job_id,
                outcome,
                progress,
                stats,
            } => {
                let held = self.printers.get(&id).and_then(|p| p.held_job());
                if held != Some(job_id.as_str()) {
                    debug!("printer {id}: end of job {job_id} it no longer holds; ignored");
                    return;
                }
                if let Some(p) = self.printers.get_mut(&id) {
                    p.percent = progress.percent;
                    p.lines = Some((progress.lines_done, progress.lines_total));
                    p.link.add(&stats);
                }
                self.finish_job(&id, &job_id, outcome, stats.lines_sent);
            }
            ReportKind::Action(action) => {
                let item = self.msgs.event(&id, "printer_action", None, Some(&action));
                self.announce(item);
            }
            ReportKind::Rejected { reason, job_id } => match job_id {
                Some(job) => self.on_start_refused(&id, &job, &reason),
                // The operator asked for something the printer cannot do
                // now (e.g. a prompt answer a blocked firmware cannot read).
                None => {
                    warn!("printer {id}: {reason}");
                    let item = self
                        .msgs
                        .event(&id, "command_rejected", None, Some(&reason));
                    self.announce(item);
                }
            },
            ReportKind::Prompt { text, choices } => self.on_prompt(&id, Some((text, choices))),
            ReportKind::PromptClosed => self.on_prompt(&id, None),
            ReportKind::EmergencyStop { sent } => {
                let text = if sent {
                    "M112 sent: the printer halted and needs a reset"
                } else {
                    "port offline: M112 goes out first thing when it is back"
                };
                let item = self.msgs.event(&id, "emergency_stop", None, Some(text));
                self.announce(item);
            }
            ReportKind::Stopped => {}
        }
    }

    fn count_loss(&mut self, id: &str) {
        if let Some(p) = self.printers.get_mut(id) {
            p.losses += 1;
        }
    }

    fn on_connected(&mut self, id: &str, firmware: &str) {
        // A new connection never continues a stream: a job the task had
        // already started is lost (its end report normally came first).
        let lost = self
            .printers
            .get(id)
            .and_then(|p| p.held.as_ref())
            .filter(|h| h.phase.on_printer() && h.started)
            .map(|h| h.job.clone());
        if let Some(job) = lost {
            let outcome = JobOutcome::Failed("printer reconnected during the print".into());
            self.finish_job(id, &job, outcome, u64::MAX);
        }
        let Some(p) = self.printers.get_mut(id) else {
            return;
        };
        p.connected = true;
        p.last_publish = None;
        if p.start_in_flight() {
            // The task refuses that start (it was decided before the loss);
            // its answer puts the printer back.
            return;
        }
        // After an error nobody knows what is on the plate: ask.
        let unsure = matches!(p.state, PrinterState::AwaitingClear | PrinterState::Error);
        let printing = p.phase().is_some_and(Phase::on_printer);
        let to = if printing {
            p.state
        } else if unsure || !p.plate_clear {
            PrinterState::AwaitingClear
        } else {
            PrinterState::Idle
        };
        let name = if firmware.is_empty() {
            "unknown firmware"
        } else {
            firmware
        };
        info!("printer {id}: connected to {name}");
        let mut tx = Tx::default();
        self.move_printer(
            &mut tx,
            id,
            to,
            None,
            "online",
            Some(&format!("connected: {name}")),
        );
        self.commit(tx, After::Nothing);
    }

    /// The port is gone (`Offline`) or the firmware faulted (`Error`).
    fn on_lost(&mut self, id: &str, to: PrinterState, reason: &str) {
        self.close_prompt(id);
        // The task ends its job before it reports the loss; if the core
        // still holds one it had started, it ended unseen: end it here. A
        // start still in flight is answered by the task (refused).
        let held = self
            .printers
            .get(id)
            .and_then(|p| p.held.as_ref())
            .filter(|h| h.phase.on_printer() && h.started)
            .map(|h| h.job.clone());
        if let Some(job) = held {
            self.finish_job(id, &job, JobOutcome::Failed(reason.to_owned()), u64::MAX);
        }
        let Some(p) = self.printers.get_mut(id) else {
            return;
        };
        // Both need a new handshake (after a fault the task restarts the
        // protocol on the same port) before the printer is usable again.
        p.connected = false;
        let kind = if to == PrinterState::Offline {
            "offline"
        } else {
            "error"
        };
        let mut tx = Tx::default();
        self.move_printer(&mut tx, id, to, None, kind, Some(reason));
        self.commit(tx, After::Nothing);
    }

    /// The task refused a command. A refused start (the printer dropped
    /// between the decision and the command) sent nothing: the job goes
    /// back to `ready` and the plate is as clear as before.
    pub(super) fn on_start_refused(&mut self, id: &str, job: &str, reason: &str) {
        warn!("printer {id}: start of job {job} refused: {reason}");
        let Some(p) = self.printers.get_mut(id) else {
            return;
        };
        let unstarted = p
            .held
            .as_ref()
            .is_some_and(|h| h.job == job && h.phase == Phase::Printing && !h.started);
        if !unstarted {
            return;
        }
        let job = job.to_owned();
        p.held = None;
        // Nothing of this job reached the plate. After a fault someone
        // should still look (as at any reconnect after an error).
        let (to, plate) = match (p.connected, p.state) {
            (false, PrinterState::Error) => (PrinterState::Error, None),
            (false, _) => (PrinterState::Offline, Some(true)),
            (true, PrinterState::Error | PrinterState::AwaitingClear) => {
                (PrinterState::AwaitingClear, None)
            }
            (true, _) => (PrinterState::Idle, Some(true)),
        };
        let mut tx = Tx::default();
        let stop = self.jobs.get(&job).and_then(|j| j.stop.clone());
        match stop {
            None => {
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.state = JobState::Ready;
                }
                let why = format!("printer refused the start: {reason}");
                tx.job(&job, JobState::Ready, Some(&why))
                    .out(self.msgs.event(id, "job_ready", Some(&job), Some(&why)));
            }
            Some(_) => {
                self.jobs.remove(&job);
                tx.job(
                    &job,
                    JobState::Cancelled,
                    Some("cancelled before it started"),
                )
                .out(self.msgs.event(id, "job_cancelled", Some(&job), None))
                .out(self.msgs.job_complete(id, &job, "cancelled"));
            }
        }
        self.move_printer(&mut tx, id, to, plate, "start_refused", Some(reason));
        self.commit(tx, After::Nothing);
    }

    fn on_pause(&mut self, id: &str, job: &str, paused: bool) {
        let Some(p) = self.printers.get_mut(id) else {
            return;
        };
        let Some(h) = p
            .held
            .as_mut()
            .filter(|h| h.job == job && h.phase.on_printer())
        else {
            return;
        };
        let (phase, job_to, printer_to, kind) = if paused {
            (
                Phase::Paused,
                JobState::Paused,
                PrinterState::Paused,
                "paused",
            )
        } else {
            (
                Phase::Printing,
                JobState::Printing,
                PrinterState::Printing,
                "resumed",
            )
        };
        if h.phase == phase {
            return;
        }
        h.phase = phase;
        if let Some(j) = self.jobs.get_mut(job) {
            j.state = job_to;
        }
        let why = match p.paused_by.as_ref().filter(|_| paused) {
            Some((PausedBy::Printer, Some(reason))) => Some(format!("by the printer: {reason}")),
            Some((PausedBy::Printer, None)) => Some("by the printer".to_owned()),
            _ => None,
        };
        let mut tx = Tx::default();
        tx.job(job, job_to, why.as_deref()).out(self.msgs.event(
            id,
            &event_kind(job_to),
            Some(job),
            why.as_deref(),
        ));
        self.move_printer(&mut tx, id, printer_to, None, kind, None);
        self.commit(tx, After::Nothing);
    }

    /// A job on a printer ended. Whatever ended it after its first line,
    /// something may be on the plate: the printer waits for a clear plate
    /// and repeats the seed's completion signal (idle, 100, this job). A job
    /// that ended before any line went out leaves the plate as it was.
    pub(super) fn finish_job(&mut self, id: &str, job: &str, outcome: JobOutcome, sent: u64) {
        self.close_prompt(id);
        let stop = self.jobs.remove(job).and_then(|j| j.stop);
        let (to, reason) = match (&outcome, stop) {
            (JobOutcome::Completed, _) => (JobState::Completed, None),
            (JobOutcome::Cancelled, _) => (JobState::Cancelled, None),
            (JobOutcome::Failed(r), _) if self.stopping => (JobState::Interrupted, Some(r.clone())),
            (JobOutcome::Failed(r), Some(Stop::Cancel(_))) => {
                (JobState::Cancelled, Some(r.clone()))
            }
            (JobOutcome::Failed(r), _) => (JobState::Failed, Some(r.clone())),
        };
        match &reason {
            Some(r) => warn!("printer {id}: job {job} {}: {r}", to.as_str()),
            None => info!("printer {id}: job {job} {}", to.as_str()),
        }
        let touched = sent > 0;
        let Some(p) = self.printers.get_mut(id) else {
            return;
        };
        p.held = None;
        p.paused_by = None;
        if to == JobState::Completed {
            if let Some((_, total)) = p.lines {
                p.lines = Some((total, total));
            }
            p.percent = 100.0;
        }
        let mut tx = Tx::default();
        tx.job(job, to, reason.as_deref()).out(self.msgs.event(
            id,
            &event_kind(to),
            Some(job),
            reason.as_deref(),
        ));
        if touched {
            let finished = Finished {
                job: Some(job.to_owned()),
                outcome: Some(to.as_str()),
            };
            tx.write(Write::PrinterFinished {
                id: id.to_owned(),
                job: finished.job.clone(),
                outcome: Some(to.as_str().to_owned()),
            });
            if let Some(p) = self.printers.get_mut(id) {
                p.finished = Some(finished);
            }
            self.move_printer(
                &mut tx,
                id,
                PrinterState::AwaitingClear,
                Some(false),
                "awaiting_clear",
                None,
            );
        } else {
            if let Some(p) = self.printers.get_mut(id) {
                p.percent = 0.0;
                p.lines = None;
            }
            let to = if self.printers.get(id).is_some_and(|p| p.connected) {
                PrinterState::Idle
            } else {
                PrinterState::Offline
            };
            self.move_printer(&mut tx, id, to, Some(true), "job_not_started", None);
        }
        tx.out(self.msgs.job_complete(id, job, to.as_str()));
        self.commit(tx, After::Nothing);
    }

    /// The plate was confirmed clear (robot `pick completed` or operator).
    pub(super) fn plate_cleared(&mut self, id: &str, by: &str) -> Result<(), String> {
        let Some(p) = self.printers.get_mut(id) else {
            return Err(format!("unknown printer {id}"));
        };
        if p.state != PrinterState::AwaitingClear {
            return Err(format!(
                "printer {id} is {}, not awaiting_clear",
                p.state.as_str()
            ));
        }
        // Reset first: `idle` with progress 100 means "a print just ended".
        p.percent = 0.0;
        p.lines = None;
        p.finished = None;
        p.awaiting_since = None;
        let to = if p.connected {
            PrinterState::Idle
        } else {
            PrinterState::Offline
        };
        let mut tx = Tx::default();
        tx.write(Write::PrinterFinished {
            id: id.to_owned(),
            job: None,
            outcome: None,
        });
        self.move_printer(&mut tx, id, to, Some(true), "plate_cleared", Some(by));
        self.commit(tx, After::Nothing);
        Ok(())
    }

    /// The task is gone (it panicked or its channel closed): whatever it
    /// held has ended; the printer is unusable until a restart.
    pub(super) fn on_printer_gone(&mut self, id: &str) {
        self.on_lost(id, PrinterState::Error, "printer task stopped");
        if let Some(p) = self.printers.get_mut(id) {
            p.connected = false;
        }
    }

    /// Moves a printer (write, event and its progress message into `tx`)
    /// and mirrors it in memory. `plate`: `None` keeps the flag.
    pub(super) fn move_printer(
        &mut self,
        tx: &mut Tx,
        id: &str,
        to: PrinterState,
        plate: Option<bool>,
        kind: &str,
        message: Option<&str>,
    ) {
        let to = self.identity_guard(id, to);
        let Some(p) = self.printers.get_mut(id) else {
            return;
        };
        let job = p
            .held_job()
            .map(str::to_owned)
            .or_else(|| p.finished.as_ref().and_then(|f| f.job.clone()));
        if to == PrinterState::AwaitingClear && p.state != to {
            p.awaiting_since = Some(self.wall);
        }
        p.state = to;
        if let Some(clear) = plate {
            p.plate_clear = clear;
        }
        if matches!(to, PrinterState::AwaitingClear | PrinterState::Printing) {
            p.plate_clear = false;
        }
        let current = if p.phase().is_some_and(Phase::on_printer) {
            None
        } else {
            Some(None)
        };
        p.last_publish = Some(self.now);
        tx.write(Write::Printer {
            id: id.to_owned(),
            state: to,
            plate_clear: plate,
            current_job: current,
        })
        .out(self.msgs.event(id, kind, job.as_deref(), message))
        .out(self.progress_item(id));
    }
}

impl FarmCore {
    /// The printer opened (`Some`) or closed (`None`) a prompt for a
    /// person: retained on the printer's prompt topic while it is open.
    fn on_prompt(&mut self, id: &str, prompt: Option<(String, Vec<String>)>) {
        let Some(p) = self.printers.get_mut(id) else {
            return;
        };
        if prompt.is_none() && p.prompt.is_none() {
            return;
        }
        p.prompt = prompt;
        let job = p.held_job();
        let text = match &p.prompt {
            Some((text, choices)) if choices.is_empty() => text.clone(),
            Some((text, choices)) => format!("{text} [{}]", choices.join(" | ")),
            None => "closed".to_owned(),
        };
        let view = p.prompt.as_ref().map(|(t, c)| (t.as_str(), c.as_slice()));
        let mut tx = Tx::default();
        tx.out(self.msgs.prompt(id, job, view)).out(self.msgs.event(
            id,
            "prompt",
            job,
            Some(&text),
        ));
        self.commit(tx, After::Nothing);
    }

    /// A prompt cannot outlive the connection or the job it belongs to.
    pub(super) fn close_prompt(&mut self, id: &str) {
        self.on_prompt(id, None);
    }
}
