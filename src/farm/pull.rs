//! Pull mode and downloads: asking the queue manager for work for idle
//! printers (with back-off), storing what it hands out before anything else,
//! and fetching models on blocking threads.
use super::{Farm, FarmInput};
use crate::lifecycle::JobState;
use crate::mqtt::payload::Assignment;
use crate::store::{AddOutcome, Job, JobSource};
use log::{error, info, warn};
use std::time::{Duration, Instant};

impl Farm {
    pub(crate) async fn begin_download(&mut self, printer: &str, job: Job) {
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
            // Each retry is announced (an event), then waited for.
            let wait = |err: &crate::source::SourceError, delay| {
                let _ = tx.blocking_send(FarmInput::DownloadRetry {
                    printer: printer.clone(),
                    job_id: job_id.clone(),
                    reason: err.to_string(),
                });
                std::thread::sleep(delay);
            };
            let result = crate::source::retry_download(
                &client,
                &model_url,
                &crate::source::spool_name(&job_id),
                None,
                retries,
                &mut backoff,
                wait,
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

    pub(crate) fn maybe_pull(&mut self, printer: &str) {
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
            Err(reason) => {
                // Back off: the queue manager is down or misbehaving. One
                // log line and one event per streak, not one per poll.
                let seed = printer
                    .bytes()
                    .fold(7u64, |h, b| h.wrapping_mul(31) ^ u64::from(b));
                let (delay, report) = slot.pull_errors.failed(interval, &reason, seed);
                slot.next_pull = Some(Instant::now() + delay);
                if report {
                    warn!("printer {printer}: queue manager: {reason}; polling with back-off");
                    let item = self.msgs.event(printer, "queue_error", None, Some(&reason));
                    self.enqueue(item).await;
                }
                return;
            }
            Ok(found) => {
                let failed = slot.pull_errors.succeeded();
                if failed > 0 {
                    info!("printer {printer}: queue manager answering again after {failed} failed polls");
                }
                match found {
                    Some(job) => job,
                    None => return,
                }
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
}
