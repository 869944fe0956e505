//! The active job of a printer task: its reader thread, the lines handed to
//! the protocol core, progress, and its end.
//!
//! Completion is never the last `ok` of the file: that `ok` comes when the
//! last move is planned, not done. After the last line the core sends the
//! end-sync command (`M400`) and reports `JobComplete` only once the printer
//! proved it got past it (see `HostProtocol::end_job`).

use super::job_file::Summary;
use super::job_reader::{self, JobReader, ReaderMsg};
use super::link::Link;
use super::task::Task;
use super::{JobOutcome, JobProgress, ReportKind};
use crate::protocol::{LineKind, Stats};
use log::info;
use std::path::PathBuf;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};

/// A job waiting for the connection's handshake.
pub(super) struct PendingJob {
    pub job_id: String,
    pub path: PathBuf,
    pub summary: Summary,
}

pub(super) struct ActiveJob {
    pub id: String,
    pub reader: JobReader,
    total: Summary,
    /// Job lines acknowledged (highest index + 1).
    pub acked: u64,
    /// Job lines written to the wire at least once.
    pub lines_sent: u64,
    /// The reader has sent every line.
    all_read: bool,
    /// The core was told that no more lines come.
    ended: bool,
    last_report: Instant,
    stats_at_start: Stats,
}

impl ActiveJob {
    fn progress(&self) -> JobProgress {
        let total = self.total.commands.max(1);
        JobProgress {
            lines_done: self.acked,
            lines_total: self.total.commands,
            lines_sent: self.lines_sent,
            percent: (self.acked as f64 * 100.0 / total as f64).min(100.0),
        }
    }

    /// Whether the task should wait for the next batch from the reader.
    pub fn wants_batch(&self) -> bool {
        !self.all_read && self.reader.needs_batch()
    }
}

impl Task {
    pub(super) fn start_job<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        link: &mut Link<S>,
        job_id: String,
        path: PathBuf,
        summary: Summary,
    ) {
        match job_reader::start(&job_id, path) {
            Ok(reader) => {
                link.core.set_job_active(true);
                info!(
                    "printer {}: job {job_id} started ({} lines)",
                    self.s.id, summary.commands
                );
                self.report(ReportKind::JobStarted {
                    job_id: job_id.clone(),
                });
                self.job = Some(ActiveJob {
                    id: job_id,
                    reader,
                    total: summary,
                    acked: 0,
                    lines_sent: 0,
                    all_read: false,
                    ended: false,
                    last_report: Instant::now(),
                    stats_at_start: link.core.stats(),
                });
            }
            Err(e) => self.report(ReportKind::JobFinished {
                job_id,
                outcome: JobOutcome::Failed(format!("cannot start the job reader: {e}")),
                progress: JobProgress::none(summary.commands),
                stats: Stats::default(),
            }),
        }
    }

    /// Hands job lines to the core while it has room (bounded read-ahead);
    /// at the end of the file, ends the job with the sync command.
    pub(super) fn feed<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        link: &mut Link<S>,
    ) -> Result<(), String> {
        let Some(job) = self.job.as_mut() else {
            return Ok(());
        };
        if job.ended {
            return Ok(());
        }
        while link.core.wants_line() {
            match job.reader.next_line() {
                Some((cmd, index)) => {
                    link.core
                        .queue_line(cmd, LineKind::Job(index))
                        .map_err(|e| format!("command {}: {e}", index + 1))?;
                }
                None if job.all_read => {
                    job.ended = true;
                    let sync = self.s.end_sync.as_deref().filter(|s| !s.is_empty());
                    link.core
                        .end_job(sync)
                        .map_err(|e| format!("end_sync {sync:?}: {e}"))?;
                    return Ok(());
                }
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// A message from the job's reader thread.
    pub(super) fn on_reader<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        link: &mut Link<S>,
        msg: Option<ReaderMsg>,
    ) {
        let Some(job) = self.job.as_mut() else { return };
        let failure = match msg {
            Some(ReaderMsg::Lines(batch)) => {
                job.reader.set_batch(batch);
                None
            }
            Some(ReaderMsg::End) => {
                job.all_read = true;
                None
            }
            Some(ReaderMsg::Failed(e)) => Some(e),
            None => Some("the job reader stopped unexpectedly".to_owned()),
        };
        if let Some(reason) = failure {
            link.core.cancel();
            self.finish_job(JobOutcome::Failed(reason));
        }
    }

    pub(super) fn maybe_report_progress(&mut self) {
        let interval = self.s.progress_interval;
        let Some(job) = self.job.as_mut() else { return };
        if job.last_report.elapsed() < interval {
            return;
        }
        job.last_report = Instant::now();
        let (job_id, progress) = (job.id.clone(), job.progress());
        self.report(ReportKind::Progress { job_id, progress });
    }

    pub(super) fn finish_job(&mut self, outcome: JobOutcome) {
        let Some(job) = self.job.take() else { return };
        let mut progress = job.progress();
        if outcome == JobOutcome::Completed {
            progress.lines_done = job.total.commands;
            progress.percent = 100.0;
        }
        let stats = self.stats.since(&job.stats_at_start);
        info!(
            "printer {}: job {} {:?} at {:.1} % ({} lines sent)",
            self.s.id, job.id, outcome, progress.percent, progress.lines_sent
        );
        self.report(ReportKind::JobFinished {
            job_id: job.id,
            outcome,
            progress,
            stats,
        });
    }
}
