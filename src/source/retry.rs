//! Retry policy for the job source, blocking and clock-free.
//!
//! [`retry_download`] retries a model download on retryable errors only, and
//! waits through a caller-supplied function (tests pass a recorder).
//! [`Poller`] does one queue poll per call and says how long to wait before
//! the next: the plain interval after an answer, exponential back-off with
//! jitter after an error. Both log one line per error streak (plus one when
//! a streak ends), not one per attempt.

use std::time::Duration;

use log::{info, warn};

use super::{Downloaded, QueueClient, QueueJob, SourceError};
use crate::backoff::{Backoff, ErrorStreak};

/// Downloads `model_url` for `job_id`, retrying up to `max_retries` times
/// (so at most `max_retries + 1` requests) while the error
/// [`is_retryable`](SourceError::is_retryable). Before each retry it calls
/// `wait(error, delay)` with `backoff`'s delay: the caller announces the
/// retry if it wants and sleeps (tests record). A `404`, an unsafe URL or
/// bad content fail at once.
pub fn retry_download(
    client: &QueueClient,
    model_url: &str,
    job_id: &str,
    max_retries: u32,
    backoff: &mut Backoff,
    mut wait: impl FnMut(&SourceError, Duration),
) -> Result<Downloaded, SourceError> {
    let mut streak = ErrorStreak::default();
    let mut retries = 0;
    loop {
        match client.download_model(model_url, job_id) {
            Ok(done) => {
                backoff.reset();
                let failures = streak.succeeded();
                if failures > 0 {
                    info!("job {job_id}: model downloaded after {failures} failed attempts");
                }
                return Ok(done);
            }
            Err(err) if err.is_retryable() && retries < max_retries => {
                retries += 1;
                let delay = backoff.next_delay();
                if streak.failed(&err.to_string()) {
                    warn!("job {job_id}: {err}; retrying (up to {max_retries} times)");
                }
                wait(&err, delay);
            }
            Err(err) => {
                warn!("job {job_id}: giving up on the model: {err}");
                return Err(err);
            }
        }
    }
}

/// What a poll found, and when to poll next.
#[derive(Debug)]
pub enum PollOutcome {
    /// A job: persist it at once, then poll again when the printer is free.
    Job(QueueJob),
    NoJob {
        next_in: Duration,
    },
    Error {
        err: SourceError,
        next_in: Duration,
    },
}

/// Queue polling state for one printer (or one gateway): back-off and the
/// error streak survive between calls to [`poll_once`](Self::poll_once).
#[derive(Debug)]
pub struct Poller {
    backoff: Backoff,
    streak: ErrorStreak,
    interval: Duration,
}

impl Poller {
    /// `interval` between polls while the queue answers; `backoff` after errors.
    pub fn new(interval: Duration, backoff: Backoff) -> Self {
        Poller {
            backoff,
            streak: ErrorStreak::default(),
            interval,
        }
    }

    /// Asks the queue once for `printer_id`. Blocking: run it off the runtime.
    pub fn poll_once(&mut self, client: &QueueClient, printer_id: &str) -> PollOutcome {
        match client.fetch_job(printer_id) {
            Ok(found) => {
                self.backoff.reset();
                let failures = self.streak.succeeded();
                if failures > 0 {
                    info!("queue manager answering again for {printer_id} after {failures} failed polls");
                }
                match found {
                    Some(job) => PollOutcome::Job(job),
                    None => PollOutcome::NoJob {
                        next_in: self.interval,
                    },
                }
            }
            Err(err) => {
                let next_in = self.backoff.next_delay();
                if self.streak.failed(&err.to_string()) {
                    warn!("queue poll for {printer_id} failed: {err}; backing off");
                }
                PollOutcome::Error { err, next_in }
            }
        }
    }
}
