//! Job and printer lifecycle: what each printer report means, scheduling,
//! starting a job behind the plate-clear gate, downloads and pulls.

use super::{view_of, Farm, FarmInput};
use crate::lifecycle::{JobState, PlateGate, PrinterState};
use crate::mqtt::payload::Assignment;
use crate::printer::{job_file, JobOutcome, PrinterCommand, PrinterReport, ReportKind};
use crate::store::{AddOutcome, Job, JobSource, NewJob, StoreError};
use log::{error, info, warn};
use std::time::{Duration, Instant};

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
                self.set_printer(&id, to, None, None, "online", Some(&msg))
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
            ReportKind::Paused { job_id } => {
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
            ReportKind::Stopped => {}
        }
    }

    async fn on_job_finished(
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
            slot.job = None;
            slot.job_deadline = None;
            slot.percent = if to == JobState::Completed {
                100.0
            } else {
                percent
            };
        }
        // Whatever ended the print, something may be on the plate.
        self.set_printer(
            printer,
            PrinterState::AwaitingClear,
            Some(false),
            Some(None),
            "awaiting_clear",
            None,
        )
        .await;
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
    /// and a progress message, then mirrors it in memory.
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
        let event = self.msgs.event(printer, kind, slot.job.as_deref(), message);
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
                let item = self.msgs.progress(&view_of(slot));
                self.enqueue(item).await;
            }
            Err(e) => error!("printer {printer}: {e}"),
        }
    }

    pub(crate) async fn transition(
        &self,
        job_id: &str,
        to: JobState,
        reason: Option<&str>,
    ) -> bool {
        // A job between printers (downloading, ready, starting) is on no
        // slot: its stored printer names the topic (never `printer//event`).
        let printer = match self.printer_of(job_id) {
            Some(p) => p,
            None => match self.store.get_job(job_id).await {
                Ok(Some(job)) => job.printer_id.unwrap_or_else(|| "gateway".into()),
                _ => "gateway".into(),
            },
        };
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

    fn printer_of(&self, job_id: &str) -> Option<String> {
        self.slots
            .values()
            .find(|s| s.job.as_deref() == Some(job_id) || s.reserved.as_deref() == Some(job_id))
            .map(|s| s.id.clone())
    }

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

    async fn start_job(&mut self, printer: &str, job: Job) {
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

    async fn begin_download(&mut self, printer: &str, job: Job) {
        let Some(client) = self.queue.clone() else {
            let reason = "no [queue_manager] configured to download the model";
            self.transition(&job.id, JobState::Failed, Some(reason))
                .await;
            return;
        };
        let Some(model_url) = job.model_url.clone() else {
            self.transition(
                &job.id,
                JobState::Failed,
                Some("job has neither a file nor a modelUrl"),
            )
            .await;
            return;
        };
        if !self.transition(&job.id, JobState::Downloading, None).await {
            return;
        }
        if let Some(slot) = self.slots.get_mut(printer) {
            slot.reserved = Some(job.id.clone());
        }
        let (tx, printer, job_id) = (self.inputs_tx.clone(), printer.to_owned(), job.id.clone());
        let retries = self.settings.max_download_retries;
        tokio::task::spawn_blocking(move || {
            let mut backoff = crate::backoff::Backoff::new(
                Duration::from_secs(1),
                Duration::from_secs(60),
                0.2,
                11,
            );
            let result = crate::source::retry_download(
                &client,
                &model_url,
                &job_id,
                retries,
                &mut backoff,
                std::thread::sleep,
            )
            .map_err(|e| e.to_string());
            let _ = tx.blocking_send(FarmInput::Downloaded {
                printer,
                job_id,
                result,
            });
        });
    }

    pub(crate) async fn on_downloaded(
        &mut self,
        printer: &str,
        job_id: &str,
        result: Result<crate::source::Downloaded, String>,
    ) {
        if let Some(slot) = self.slots.get_mut(printer) {
            slot.reserved = None;
        }
        match result {
            Ok(d) => {
                let path = d.path.to_string_lossy().into_owned();
                if let Err(e) = self
                    .store
                    .set_job_file(job_id, &path, d.bytes, d.lines)
                    .await
                {
                    error!("job {job_id}: {e}");
                    return;
                }
                self.transition(job_id, JobState::Ready, None).await;
            }
            Err(reason) => {
                warn!("job {job_id}: download failed for good: {reason}");
                self.transition(
                    job_id,
                    JobState::Failed,
                    Some(&format!("download failed: {reason}")),
                )
                .await;
            }
        }
        self.schedule().await;
    }

    fn maybe_pull(&mut self, printer: &str) {
        let Some(client) = self.queue.clone() else {
            return;
        };
        let interval = self.settings.poll_interval;
        let Some(slot) = self.slots.get_mut(printer) else {
            return;
        };
        let now = Instant::now();
        if slot.pull_in_flight || slot.next_pull.is_some_and(|t| now < t) {
            return;
        }
        slot.pull_in_flight = true;
        slot.next_pull = Some(now + interval);
        let (tx, printer) = (self.inputs_tx.clone(), printer.to_owned());
        tokio::task::spawn_blocking(move || {
            let result = client.fetch_job(&printer).map_err(|e| e.to_string());
            let _ = tx.blocking_send(FarmInput::Pulled { printer, result });
        });
    }

    pub(crate) async fn on_pulled(
        &mut self,
        printer: &str,
        result: Result<Option<crate::source::QueueJob>, String>,
    ) {
        let interval = self.settings.poll_interval;
        let Some(slot) = self.slots.get_mut(printer) else {
            return;
        };
        slot.pull_in_flight = false;
        let job = match result {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(reason) => {
                // Back off: the queue manager is down or misbehaving.
                slot.next_pull = Some(Instant::now() + interval * 4);
                warn!("queue manager: {reason}");
                return;
            }
        };
        let filament = slot.filament.clone();
        let assignment = Assignment {
            job_id: job.id.clone(),
            model_url: job.model_url(),
            filament_type: job
                .filament_type
                .clone()
                .or(filament.clone())
                .unwrap_or_default(),
            estimated_time: job.estimated_time.and_then(|t| u64::try_from(t).ok()),
            priority: Some(job.priority),
            assigned_at: Some(crate::mqtt::payload::rfc3339(std::time::SystemTime::now())),
            parameters: job.parameters.clone(),
        };
        // The queue manager never hands this job out again: store it first.
        let outcome = self
            .accept_job(printer, &assignment, JobSource::Queue)
            .await;
        if let Ok(AddOutcome::Inserted { .. }) = outcome {
            let item = self.msgs.assignment(printer, &assignment);
            self.enqueue(item).await;
            info!(
                "printer {printer}: pulled job {} from the queue manager",
                job.id
            );
        }
        if let (Some(want), Some(have)) = (job.filament_type.as_deref(), filament.as_deref()) {
            if want != have {
                let reason = format!("filament {want} does not match the printer's {have}");
                self.transition(&job.id, JobState::Failed, Some(&reason))
                    .await;
            }
        }
        self.schedule().await;
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
