//! Retry policy for the job source, blocking and clock-free.
//!
//! [`retry_download`] retries a model download on retryable errors only, and
//! waits through a caller-supplied function (tests pass a recorder). It logs
//! one line per error streak, not one per attempt. Polling the queue manager
//! (and its back-off) is the farm's job: see `farm::PullErrors`.

use std::time::Duration;

use log::{info, warn};

use super::{Downloaded, QueueClient, SourceError};
use crate::backoff::{Backoff, ErrorStreak};

/// Downloads `model_url` to spool name `dest_name` (see
/// [`QueueClient::download_model`], which also says what `expected_sha256`
/// does), retrying up to `max_retries` times
/// (so at most `max_retries + 1` requests) while the error
/// [`is_retryable`](SourceError::is_retryable). Before each retry it calls
/// `wait(error, delay)` with `backoff`'s delay: the caller announces the
/// retry if it wants and sleeps (tests record). A `404`, an unsafe URL or
/// bad content, a checksum mismatch or an existing file fail at once.
pub fn retry_download(
    client: &QueueClient,
    model_url: &str,
    dest_name: &str,
    expected_sha256: Option<&str>,
    max_retries: u32,
    backoff: &mut Backoff,
    mut wait: impl FnMut(&SourceError, Duration),
) -> Result<Downloaded, SourceError> {
    let mut streak = ErrorStreak::default();
    let mut retries = 0;
    loop {
        match client.download_model(model_url, dest_name, expected_sha256) {
            Ok(done) => {
                backoff.reset();
                let failures = streak.succeeded();
                if failures > 0 {
                    info!("model {dest_name}: downloaded after {failures} failed attempts");
                }
                return Ok(done);
            }
            Err(err) if err.is_retryable() && retries < max_retries => {
                retries += 1;
                let delay = backoff.next_delay();
                if streak.failed(&err.to_string()) {
                    warn!("model {dest_name}: {err}; retrying (up to {max_retries} times)");
                }
                wait(&err, delay);
            }
            Err(err) => {
                warn!("model {dest_name}: giving up: {err}");
                return Err(err);
            }
        }
    }
}
