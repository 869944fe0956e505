//! The driver's slow work, on blocking threads whose answers come back as
//! core inputs: queue-manager polls, model downloads (with retries that a
//! stop can abort), file checks and moves.

use super::{Driver, Input};
use log::{debug, error, info, warn};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

impl Driver {
    /// Runs `work` on a blocking thread and feeds its answer back. A panic
    /// there is a bug; it still answers (as an error) so nothing waits forever.
    pub(super) fn blocking(&self, work: impl FnOnce() -> Input + Send + 'static) {
        let tx = self.results_tx.clone();
        tokio::spawn(async move {
            match tokio::task::spawn_blocking(work).await {
                Ok(input) => {
                    if tx.send(input).is_err() {
                        debug!("farm stopped before a blocking answer");
                    }
                }
                Err(e) => error!("blocking farm work failed: {e}"),
            }
        });
    }

    pub(super) fn pull(&self, printer: String) {
        let Some(client) = self.p.queue.clone() else {
            let input = Input::Pulled {
                printer,
                result: Err("no [queue_manager] configured".into()),
            };
            if self.results_tx.send(input).is_err() {
                debug!("farm stopped before a pull answer");
            }
            return;
        };
        self.blocking(move || Input::Pulled {
            result: client.fetch_job(&printer).map_err(|e| e.to_string()),
            printer,
        });
    }

    pub(super) fn download(
        &mut self,
        job: String,
        url: String,
        name: String,
        sha256: Option<String>,
    ) {
        let abort = Arc::new(AtomicBool::new(false));
        self.aborts.insert(job.clone(), abort.clone());
        let refused = match &self.p.models {
            None => Some(
                "no model source: set [queue_manager] url, or [models] allowed_hosts for \
                 absolute modelUrls"
                    .to_owned(),
            ),
            Some(m) if !m.relative && !url.contains("://") => Some(format!(
                "modelUrl {url:?} is relative: set [queue_manager] url (pull = false for \
                 push-only) to resolve it"
            )),
            Some(_) => None,
        };
        let (Some(client), None) = (
            self.p.models.as_ref().map(|m| m.client.clone()),
            refused.clone(),
        ) else {
            let input = Input::Downloaded {
                job,
                result: Err(refused.unwrap_or_default()),
            };
            if self.results_tx.send(input).is_err() {
                debug!("farm stopped before a download answer");
            }
            return;
        };
        let stale = self.p.spool_dir.join(format!("{name}.gcode"));
        let (tx, retries) = (self.results_tx.clone(), self.p.max_download_retries);
        let seed = self.p.jitter_seed
            ^ job
                .bytes()
                .fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b));
        self.blocking(move || {
            let mut backoff = crate::backoff::Backoff::new(
                Duration::from_secs(1),
                Duration::from_secs(60),
                0.2,
                seed,
            );
            let wait = |err: &crate::source::SourceError, delay: Duration| {
                let retry = Input::DownloadRetry {
                    job: job.clone(),
                    reason: err.to_string(),
                };
                if tx.send(retry).is_err() {
                    abort.store(true, Ordering::Relaxed);
                }
                sleep_unless(&abort, delay);
            };
            // The job's own name: a file left by an earlier attempt of this
            // job (a crash between download and commit) is its own.
            match std::fs::remove_file(&stale) {
                Ok(()) => info!("job {job}: replacing its earlier download"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => warn!("job {job}: cannot remove {}: {e}", stale.display()),
            }
            let result = if abort.load(Ordering::Relaxed) {
                Err("download aborted".to_owned())
            } else {
                let sha = sha256.as_deref();
                crate::source::retry_download(
                    &client,
                    &url,
                    &name,
                    sha,
                    retries,
                    &mut backoff,
                    wait,
                )
                .map_err(|e| e.to_string())
            };
            Input::Downloaded { job, result }
        });
    }
}

/// Moves a local upload to its spool name without ever replacing a file:
/// a hard link fails if the name exists, then the upload name goes.
pub(super) fn spool(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::hard_link(from, to).map_err(|e| format!("{}: {e}", to.display()))?;
    if let Err(e) = std::fs::remove_file(from) {
        warn!("cannot remove the upload {}: {e}", from.display());
    }
    if let Some(dir) = to.parent() {
        if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
            warn!("cannot sync {}: {e}", dir.display());
        }
    }
    Ok(())
}

/// Sleeps `delay` in short steps, ending early once `abort` is set (so a
/// shutdown never waits for a download's back-off).
pub(super) fn sleep_unless(abort: &AtomicBool, delay: Duration) {
    let step = Duration::from_millis(100);
    let mut left = delay;
    while !left.is_zero() && !abort.load(Ordering::Relaxed) {
        let d = left.min(step);
        std::thread::sleep(d);
        left = left.saturating_sub(d);
    }
}
