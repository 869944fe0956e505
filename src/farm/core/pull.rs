//! Pull mode and downloads: asking the queue manager for work for free
//! printers (with back-off and jitter), storing what it hands out before
//! anything else, and fetching models.

use super::model::{Held, Phase};
use super::persist::{event_kind, Tx};
use super::writes::After;
use super::{Effect, FarmCore};
use crate::lifecycle::JobState;
use crate::mqtt::payload::{rfc3339, Assignment};
use crate::source::{Downloaded, QueueJob};
use crate::store::{JobSource, Write};
use log::{info, warn};
use std::time::Duration;

impl FarmCore {
    pub(super) fn maybe_pull(&mut self, printer: &str) {
        if !self.s.pull || !self.s.downloads {
            return;
        }
        let now = self.now;
        let Some(p) = self.printers.get_mut(printer) else {
            return;
        };
        if p.pull.in_flight || p.pull.next.is_some_and(|t| now < t) {
            return;
        }
        p.pull.in_flight = true;
        p.pull.next = Some(now + self.s.poll_interval);
        self.push(Effect::Pull {
            printer: printer.to_owned(),
        });
    }

    pub(super) fn on_pulled(&mut self, printer: &str, result: Result<Option<QueueJob>, String>) {
        let (interval, now) = (self.s.poll_interval, self.now);
        let seed = self.s.jitter_seed ^ hash(printer);
        let Some(p) = self.printers.get_mut(printer) else {
            return;
        };
        p.pull.in_flight = false;
        let job = match result {
            Err(reason) => {
                // Back off: the queue manager is down or misbehaving. One
                // log line and one event per streak, not one per poll.
                let backoff = p.pull.backoff.get_or_insert_with(|| {
                    let max = Duration::from_secs(60).max(interval);
                    crate::backoff::Backoff::new(interval, max, 0.2, seed)
                });
                p.pull.next = Some(now + backoff.next_delay());
                if p.pull.streak.failed(&reason) {
                    warn!("printer {printer}: queue manager: {reason}; polling with back-off");
                    let item = self.msgs.event(printer, "queue_error", None, Some(&reason));
                    self.announce(item);
                }
                return;
            }
            Ok(found) => {
                if let Some(b) = &mut p.pull.backoff {
                    b.reset();
                }
                let failed = p.pull.streak.succeeded();
                if failed > 0 {
                    info!("printer {printer}: queue manager answering again after {failed} failed polls");
                }
                match found {
                    Some(job) => job,
                    None => return,
                }
            }
        };
        // The queue manager hands a job out once: whatever is odd about it
        // is recorded, never dropped silently.
        if let Err(e) = crate::jobspec::check_id(&job.id) {
            let problem = format!("queue manager job id {:?}: {e}", job.id);
            self.reject_input(Some(printer), "queue_job", &problem);
            return;
        }
        let estimate = job
            .estimated_time
            .map(|t| serde_json::Value::from(t as f64));
        let estimate = crate::jobspec::estimated_seconds(estimate.as_ref());
        let filament = job.filament_type.clone().filter(|f| !f.trim().is_empty());
        let assignment = Assignment {
            job_id: job.id.clone(),
            model_url: job.model_url(),
            filament_type: filament.clone(),
            estimated_time: estimate.value,
            priority: Some(
                job.priority
                    .clamp(-crate::jobspec::MAX_PRIORITY, crate::jobspec::MAX_PRIORITY),
            ),
            assigned_at: Some(rfc3339(self.wall)),
            parameters: job.parameters.clone(),
            sha256: None,
        };
        let note = estimate.warning.unwrap_or_default();
        let have = self.printers.get(printer).and_then(|p| p.filament.clone());
        let fail = match (filament, have) {
            (Some(want), Some(have)) if want != have => Some(format!(
                "filament {want} does not match the printer's {have}"
            )),
            _ => None,
        };
        info!(
            "printer {printer}: pulled job {} from the queue manager",
            job.id
        );
        self.accept(printer, assignment, JobSource::Queue, None, note, fail);
    }

    /// Starts fetching the model of `job` for `printer`.
    pub(super) fn begin_download(&mut self, printer: &str, job: &str) {
        let (url, sha) = match self.jobs.get(job) {
            Some(j) => (j.model_url.clone(), j.sha256.clone()),
            None => return,
        };
        let Some(url) = url else {
            self.fail_waiting_job(job, "job has neither a file nor a modelUrl");
            return;
        };
        if !self.s.downloads {
            self.fail_waiting_job(
                job,
                "cannot fetch the model: set [queue_manager] url (relative modelUrl) \
                 or [models] allowed_hosts (absolute modelUrl)",
            );
            return;
        }
        if let Some(p) = self.printers.get_mut(printer) {
            p.held = Some(Held::new(job, Phase::Downloading));
        }
        let mut tx = Tx::default();
        if let Some(j) = self.jobs.get_mut(job) {
            j.printer = Some(printer.to_owned());
            if j.state == JobState::Queued {
                j.state = JobState::Downloading;
                tx.job(job, JobState::Downloading, None);
            }
        }
        tx.out(
            self.msgs
                .event(printer, &event_kind(JobState::Downloading), Some(job), None),
        )
        .out(self.progress_item(printer));
        self.commit(tx, After::Nothing);
        self.push(Effect::Download {
            job: job.to_owned(),
            url,
            name: crate::source::spool_name(job),
            sha256: sha,
        });
    }

    pub(super) fn on_download_retry(&mut self, job: &str, reason: &str) {
        let Some(printer) = self.holder(job, Phase::Downloading) else {
            return;
        };
        let message = format!("{reason}; retrying");
        let item = self
            .msgs
            .event(&printer, "download_retry", Some(job), Some(&message));
        self.announce(item);
    }

    pub(super) fn on_downloaded(&mut self, job: &str, result: Result<Downloaded, String>) {
        let holder = self.holder(job, Phase::Downloading);
        if let Some(p) = holder.as_deref().and_then(|id| self.printers.get_mut(id)) {
            p.held = None;
        }
        let wanted = holder.is_some() && self.jobs.get(job).is_some_and(|j| j.stop.is_none());
        match result {
            Ok(d) if !wanted => {
                // Cancelled meanwhile: the file is nobody's.
                self.push(Effect::RemoveFile { path: d.path });
            }
            Ok(d) => {
                let path = d.path.to_string_lossy().into_owned();
                if let Some(j) = self.jobs.get_mut(job) {
                    j.gcode_path = Some(path.clone());
                    j.state = JobState::Ready;
                }
                let printer = holder.unwrap_or_default();
                let mut tx = Tx::default();
                tx.write(Write::JobFile {
                    id: job.to_owned(),
                    path,
                    bytes: d.bytes,
                    lines: d.lines,
                })
                .job(job, JobState::Ready, None)
                .out(self.msgs.event(
                    &printer,
                    &event_kind(JobState::Ready),
                    Some(job),
                    None,
                ));
                self.commit(tx, After::Nothing);
            }
            Err(_) if !wanted => {}
            Err(reason) => {
                warn!("job {job}: download failed for good: {reason}");
                self.fail_waiting_job(job, &format!("download failed: {reason}"));
            }
        }
    }
}

/// A stable 64-bit hash of an id (FNV-1a), for jitter seeds.
pub(super) fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
