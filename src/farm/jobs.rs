//! Scheduling: the next job for each free printer, started behind the
//! plate-clear gate, with its time limit; accepting jobs into the store.
use super::Farm;
use crate::lifecycle::{JobState, PlateGate, PrinterState};
use crate::mqtt::payload::Assignment;
use crate::printer::{job_file, PrinterCommand};
use crate::store::{AddOutcome, Job, JobSource, NewJob, StoreError};
use log::{error, info, warn};
use std::time::{Duration, Instant};

impl Farm {
    /// Gives every free printer its next job; asks the queue manager for
    /// printers with nothing to do (and only for those).
    pub(crate) async fn schedule(&mut self) {
        if self.stopping {
            return;
        }
        let free: Vec<(String, Option<String>)> = self
            .slots
            .values()
            .filter(|s| s.connected && s.job.is_none() && s.reserved.is_none())
            .filter(|s| PlateGate::can_start(s.state, s.plate_clear).is_ok())
            .map(|s| (s.id.clone(), s.filament.clone()))
            .collect();
        for (printer, filament) in free {
            match self.store.next_job_for(&printer, filament.as_deref()).await {
                Ok(Some(job)) if job.state == JobState::Ready => {
                    self.start_job(&printer, job).await
                }
                Ok(Some(job)) if job.state == JobState::Queued => {
                    self.begin_download(&printer, job).await
                }
                Ok(_) => self.maybe_pull(&printer),
                Err(e) => error!("printer {printer}: cannot read its queue: {e}"),
            }
        }
    }

    pub(crate) async fn start_job(&mut self, printer: &str, job: Job) {
        let Some(path) = job.gcode_path.clone() else {
            self.transition(&job.id, JobState::Failed, Some("no G-code file"))
                .await;
            return;
        };
        let scan_path = std::path::PathBuf::from(&path);
        let scanned = tokio::task::spawn_blocking(move || job_file::scan(&scan_path)).await;
        let summary = match scanned {
            Ok(Ok(summary)) => summary,
            Ok(Err(e)) => {
                self.transition(&job.id, JobState::Failed, Some(&e.to_string()))
                    .await;
                return;
            }
            Err(e) => {
                error!("job {}: file check did not finish: {e}", job.id);
                return;
            }
        };
        // The gate, once more, right before the point of no return.
        let Some(slot) = self.slots.get(printer) else {
            return;
        };
        if PlateGate::can_start(slot.state, slot.plate_clear).is_err() || slot.job.is_some() {
            return;
        }
        if !self.transition(&job.id, JobState::Printing, None).await {
            return;
        }
        self.set_printer(
            printer,
            PrinterState::Printing,
            None,
            Some(Some(&job.id)),
            "printing",
            None,
        )
        .await;
        let deadline = self.job_deadline(&job);
        if let Some(slot) = self.slots.get_mut(printer) {
            slot.job = Some(job.id.clone());
            slot.job_deadline = Some(deadline);
            slot.percent = 0.0;
            slot.lines = Some((0, summary.commands));
            let cmd = PrinterCommand::StartJob {
                job_id: job.id.clone(),
                path: path.into(),
                summary,
            };
            if slot.commands.send(cmd).await.is_err() {
                error!("printer {printer}: its task is gone");
            }
        }
        info!(
            "printer {printer}: starting job {} ({} lines)",
            job.id, summary.commands
        );
    }

    fn job_deadline(&self, job: &Job) -> Instant {
        let max = self.settings.max_job;
        let by_estimate = job
            .estimated_s
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs_f64(s as f64 * self.settings.timeout_factor.max(1.0)));
        Instant::now() + by_estimate.map_or(max, |d| d.min(max))
    }

    pub(crate) async fn check_job_timeouts(&mut self, now: Instant) {
        let expired: Vec<(String, String)> = self
            .slots
            .values()
            .filter(|s| s.job_deadline.is_some_and(|d| now >= d))
            .filter_map(|s| s.job.clone().map(|j| (s.id.clone(), j)))
            .collect();
        for (printer, job) in expired {
            warn!("printer {printer}: job {job} exceeded its time limit; cancelling");
            let item = self.msgs.event(
                &printer,
                "job_timeout",
                Some(&job),
                Some("time limit exceeded"),
            );
            self.enqueue(item).await;
            if let Some(slot) = self.slots.get_mut(&printer) {
                slot.job_deadline = None;
                let _ = slot.commands.send(PrinterCommand::Cancel).await;
            }
        }
    }

    /// Stores a job (durably) before anything else happens to it.
    pub(crate) async fn accept_job(
        &mut self,
        printer: &str,
        a: &Assignment,
        source: JobSource,
    ) -> Result<AddOutcome, StoreError> {
        let new = NewJob {
            id: a.job_id.clone(),
            printer_id: Some(printer.to_owned()),
            source,
            model_url: Some(a.model_url.clone()),
            gcode_path: None,
            filament: (!a.filament_type.is_empty()).then(|| a.filament_type.clone()),
            priority: a.priority.unwrap_or(0),
            estimated_s: a.estimated_time.and_then(|t| i64::try_from(t).ok()),
            params: a.parameters.clone(),
        };
        let event = self
            .msgs
            .event(printer, "job_accepted", Some(&a.job_id), None);
        let outcome = self.store.add_job(new, event).await;
        match &outcome {
            Ok(AddOutcome::Inserted { .. }) => self.wake_pump(),
            Ok(AddOutcome::Duplicate) => {
                info!("printer {printer}: job {} already known; ignored", a.job_id)
            }
            Err(e) => error!("printer {printer}: job {} not stored: {e}", a.job_id),
        }
        outcome
    }
}
