//! What each printer report means: printer states, job endings, the plate
//! gate's other half (clearing), and the store writes that announce them.
use super::messages::ProgressView;
use super::{view_of, Farm};
use crate::lifecycle::{JobState, PrinterState};
use crate::printer::{JobOutcome, PrinterReport, ReportKind};
use log::{error, info, warn};
use std::time::Instant;

impl Farm {
    pub(crate) async fn on_report(&mut self, report: PrinterReport) {
        let id = report.printer;
        match report.kind {
            ReportKind::Connected(fw) => {
                let Some(slot) = self.slots.get_mut(&id) else {
                    return;
                };
                slot.connected = true;
                // After an error nobody knows what is on the plate: ask.
                let unsure = matches!(
                    slot.state,
                    PrinterState::AwaitingClear | PrinterState::Error
                );
                let to = if unsure || !slot.plate_clear {
                    PrinterState::AwaitingClear
                } else {
                    PrinterState::Idle
                };
                let msg = format!(
                    "connected: {}",
                    if fw.name.is_empty() {
                        "unknown firmware"
                    } else {
                        &fw.name
                    }
                );
                // Stating the plate forces the `online` event even when the
                // state did not change (awaiting_clear across a restart).
                let plate = (to == PrinterState::AwaitingClear).then_some(false);
                self.set_printer(&id, to, plate, None, "online", Some(&msg))
                    .await;
            }
            ReportKind::Offline { reason } => {
                if let Some(slot) = self.slots.get_mut(&id) {
                    slot.connected = false;
                }
                self.set_printer(
                    &id,
                    PrinterState::Offline,
                    None,
                    None,
                    "offline",
                    Some(&reason),
                )
                .await;
            }
            ReportKind::Fault { reason } => {
                self.set_printer(&id, PrinterState::Error, None, None, "error", Some(&reason))
                    .await;
            }
            ReportKind::Temps(t) => {
                if let Some(slot) = self.slots.get_mut(&id) {
                    slot.temps = t;
                }
            }
            ReportKind::JobStarted { .. } => {}
            ReportKind::Progress { job_id, progress } => {
                let Some(slot) = self.slots.get_mut(&id) else {
                    return;
                };
                slot.percent = progress.percent;
                slot.lines = Some((progress.lines_done, progress.lines_total));
                let item = self.msgs.progress(&view_of(slot));
                if let Err(e) = self
                    .store
                    .record_progress(&job_id, progress.lines_done, 0, progress.percent, item)
                    .await
                {
                    warn!("printer {id}: progress of job {job_id} not saved: {e}");
                }
                self.wake_pump();
            }
            ReportKind::Paused { job_id, .. } => {
                self.transition(&job_id, JobState::Paused, None).await;
                self.set_printer(&id, PrinterState::Paused, None, None, "paused", None)
                    .await;
            }
            ReportKind::Resumed { job_id } => {
                self.transition(&job_id, JobState::Printing, None).await;
                self.set_printer(&id, PrinterState::Printing, None, None, "resumed", None)
                    .await;
            }
            ReportKind::JobFinished {
                job_id,
                outcome,
                progress,
                ..
            } => {
                self.on_job_finished(&id, &job_id, outcome, progress.percent)
                    .await;
            }
            ReportKind::Action(action) => {
                let item = self.msgs.event(&id, "printer_action", None, Some(&action));
                self.enqueue(item).await;
            }
            ReportKind::Rejected { reason } => warn!("printer {id}: {reason}"),
            // New printer reports (issue 14); the farm core wires them up.
            ReportKind::Prompt { .. }
            | ReportKind::PromptClosed
            | ReportKind::EmergencyStop { .. } => {}
            ReportKind::Stopped => {}
        }
    }

    pub(crate) async fn on_job_finished(
        &mut self,
        printer: &str,
        job_id: &str,
        outcome: JobOutcome,
        percent: f64,
    ) {
        let (to, kind, reason) = match &outcome {
            JobOutcome::Completed => (JobState::Completed, "job_completed", None),
            JobOutcome::Cancelled => (JobState::Cancelled, "job_cancelled", None),
            // An orderly stop mid-print: like a crash, never resumed.
            JobOutcome::Failed(r) if self.stopping => {
                (JobState::Interrupted, "job_interrupted", Some(r.clone()))
            }
            JobOutcome::Failed(r) => (JobState::Failed, "job_failed", Some(r.clone())),
        };
        match &outcome {
            JobOutcome::Failed(r) => warn!("printer {printer}: job {job_id} {}: {r}", to.as_str()),
            _ => info!("printer {printer}: job {job_id} {}", to.as_str()),
        }
        let event = self
            .msgs
            .event(printer, kind, Some(job_id), reason.as_deref());
        if let Err(e) = self
            .store
            .transition_job(job_id, to, reason.as_deref(), event)
            .await
        {
            error!("job {job_id}: {e}");
        }
        if let Some(slot) = self.slots.get_mut(printer) {
            slot.job_deadline = None;
            slot.percent = if to == JobState::Completed {
                if let Some((_, total)) = slot.lines {
                    slot.lines = Some((total, total));
                }
                100.0
            } else {
                percent
            };
        }
        // Whatever ended the print, something may be on the plate. Its event
        // and progress still name the job (`set_printer` shows the job being
        // left), so the farm sees that job reach 100 %.
        self.set_printer(
            printer,
            PrinterState::AwaitingClear,
            Some(false),
            Some(None),
            "awaiting_clear",
            None,
        )
        .await;
        if let Some(slot) = self.slots.get_mut(printer) {
            slot.job = None;
        }
        if to == JobState::Completed {
            let item = self.msgs.job_complete(printer, job_id, to.as_str());
            self.enqueue(item).await;
        }
        self.publish_awaiting().await;
    }

    /// The plate was confirmed clear (robot `pick completed` or operator).
    pub(crate) async fn plate_cleared(&mut self, printer: &str, by: &str) -> Result<(), String> {
        let Some(slot) = self.slots.get(printer) else {
            return Err(format!("unknown printer {printer}"));
        };
        if slot.state != PrinterState::AwaitingClear {
            return Err(format!(
                "printer {printer} is {}, not awaiting_clear",
                slot.state.as_str()
            ));
        }
        // Reset first: the farm reads `idle` with progress 100 as "a print
        // just finished" and would send the robot again.
        if let Some(slot) = self.slots.get_mut(printer) {
            slot.percent = 0.0;
            slot.lines = None;
        }
        self.set_printer(
            printer,
            PrinterState::Idle,
            Some(true),
            None,
            "plate_cleared",
            Some(by),
        )
        .await;
        self.publish_awaiting().await;
        self.schedule().await;
        Ok(())
    }

    /// `device/printers`, when the list of plates waiting for a robot changes.
    pub(crate) async fn publish_awaiting(&mut self) {
        let list: Vec<String> = self
            .slots
            .values()
            .filter(|s| s.state == PrinterState::AwaitingClear)
            .map(|s| s.id.clone())
            .collect();
        if list != self.awaiting_published {
            self.awaiting_published = list.clone();
            let item = self.msgs.awaiting_list(&list);
            self.enqueue(item).await;
        }
    }

    /// Changes a printer's state in the store (checked there) with its event
    /// and a progress message, then mirrors it in memory. Both messages name
    /// the job the change is about: the new one when `job` sets one, else the
    /// one the printer had (also when `job` clears it).
    pub(crate) async fn set_printer(
        &mut self,
        printer: &str,
        to: PrinterState,
        plate_clear: Option<bool>,
        job: Option<Option<&str>>,
        kind: &str,
        message: Option<&str>,
    ) {
        let Some(slot) = self.slots.get(printer) else {
            return;
        };
        if slot.state == to && plate_clear.is_none() && job.is_none() {
            return;
        }
        let shown = match job {
            Some(Some(new)) => Some(new.to_owned()),
            _ => slot.job.clone(),
        };
        let event = self.msgs.event(printer, kind, shown.as_deref(), message);
        match self
            .store
            .set_printer_state(printer, to, plate_clear, job, event)
            .await
        {
            Ok(_) => {
                let Some(slot) = self.slots.get_mut(printer) else {
                    return;
                };
                slot.state = to;
                if let Some(clear) = plate_clear {
                    slot.plate_clear = clear;
                }
                if to == PrinterState::AwaitingClear {
                    slot.plate_clear = false;
                }
                if let Some(job) = job {
                    slot.job = job.map(str::to_owned);
                }
                slot.last_announce = Some(Instant::now());
                let view = ProgressView {
                    job: shown.as_deref(),
                    ..view_of(slot)
                };
                let item = self.msgs.progress(&view);
                self.enqueue(item).await;
            }
            Err(e) => error!("printer {printer}: {e}"),
        }
        // Any move into or out of awaiting_clear (a print ending, a plate
        // cleared, a waiting printer going offline or coming back) changes
        // the list robots act on.
        self.publish_awaiting().await;
    }

    pub(crate) async fn transition(
        &self,
        job_id: &str,
        to: JobState,
        reason: Option<&str>,
    ) -> bool {
        let printer = self.printer_of_job(job_id).await;
        let event = self.msgs.event(
            &printer,
            &format!("job_{}", to.as_str()),
            Some(job_id),
            reason,
        );
        match self.store.transition_job(job_id, to, reason, event).await {
            Ok(_) => {
                self.wake_pump();
                true
            }
            Err(e) => {
                error!("job {job_id}: {e}");
                false
            }
        }
    }

    /// The printer whose events announce `job_id`: the slot printing or
    /// downloading it, else the one in the job's row (a job about to start
    /// or whose download just ended is in neither slot field), else
    /// `gateway`. Never empty: an empty id would make `printer//event`.
    pub(crate) async fn printer_of_job(&self, job_id: &str) -> String {
        let slot = self
            .slots
            .values()
            .find(|s| s.job.as_deref() == Some(job_id) || s.reserved.as_deref() == Some(job_id));
        if let Some(slot) = slot {
            return slot.id.clone();
        }
        match self.store.get_job(job_id).await {
            Ok(Some(job)) => job.printer_id.unwrap_or_else(|| "gateway".into()),
            _ => "gateway".into(),
        }
    }
}
