//! The printer task loop: open the port (with back-off when it is gone),
//! run the protocol, stream the active job, answer commands.

use super::job_file::{JobFile, Summary};
use super::link::{Link, LinkError, Wake};
use super::{
    port, JobOutcome, JobProgress, PrinterCommand, PrinterReport, PrinterSettings, ReportKind,
};
use crate::backoff::{Backoff, ErrorStreak};
use crate::protocol::{Event, LineKind, PrinterError, Stats};
use log::{debug, info, warn};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long an orderly stop waits for heaters-off lines to be acknowledged.
const SAFE_STOP_WAIT: Duration = Duration::from_secs(3);

pub fn spawn(
    settings: PrinterSettings,
    commands: mpsc::Receiver<PrinterCommand>,
    reports: mpsc::Sender<PrinterReport>,
) -> JoinHandle<()> {
    let task = Task {
        s: settings,
        commands,
        reports,
        job: None,
        pending: None,
        stopping: false,
        restart_core: false,
        stats: Default::default(),
    };
    tokio::spawn(task.run())
}

struct ActiveJob {
    id: String,
    file: JobFile,
    total: Summary,
    acked: u64,
    all_queued: bool,
    last_report: Instant,
    stats_at_start: Stats,
}

impl ActiveJob {
    fn progress(&self) -> JobProgress {
        let total = self.total.commands.max(1);
        JobProgress { lines_sent: 0,
            lines_done: self.acked,
            lines_total: self.total.commands,
            percent: (self.acked as f64 * 100.0 / total as f64).min(100.0),
        }
    }
}

struct Task {
    s: PrinterSettings,
    commands: mpsc::Receiver<PrinterCommand>,
    reports: mpsc::Sender<PrinterReport>,
    job: Option<ActiveJob>,
    pending: Option<(String, PathBuf, Summary)>,
    stopping: bool,
    /// Set after a protocol failure: flush the safety lines, then start a
    /// fresh protocol on the same port.
    restart_core: bool,
    /// The connection's protocol counters, as of the last wake-up.
    stats: Stats,
}

impl Task {
    async fn run(mut self) {
        let seed = self
            .s
            .id
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        let max = self.s.reopen_max.unwrap_or(Duration::from_secs(1));
        let mut backoff = Backoff::new(Duration::from_millis(250), max, 0.2, seed);
        let mut streak = ErrorStreak::default();
        loop {
            match port::open(&self.s.port, self.s.baud) {
                Ok(stream) => {
                    backoff.reset();
                    if streak.succeeded() > 0 {
                        info!(
                            "printer {}: port {} is back",
                            self.s.id,
                            self.s.port.display()
                        );
                    }
                    let reason = self.run_connection(stream).await;
                    self.finish_job(JobOutcome::Failed(reason.clone()));
                    if !self.stopping {
                        warn!("printer {}: offline: {reason}", self.s.id);
                        self.report(ReportKind::Offline { reason });
                    }
                }
                Err(e) => {
                    let reason = e.to_string();
                    if streak.failed(&reason) {
                        warn!("printer {}: {reason}", self.s.id);
                        self.report(ReportKind::Offline { reason });
                    }
                    if let Some((job_id, ..)) = self.pending.take() {
                        self.report(ReportKind::JobFinished {
                            job_id,
                            outcome: JobOutcome::Failed(e.to_string()),
                            progress: JobProgress { lines_sent: 0,
                                lines_done: 0,
                                lines_total: 0,
                                percent: 0.0,
                            },
                            stats: Default::default(),
                        });
                    }
                }
            }
            if self.stopping || self.s.reopen_max.is_none() {
                self.report(ReportKind::Stopped);
                return;
            }
            let until = tokio::time::Instant::now() + backoff.next_delay();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    cmd = self.commands.recv() => match cmd {
                        None | Some(PrinterCommand::Shutdown) => {
                            self.report(ReportKind::Stopped);
                            return;
                        }
                        Some(_) => self.reject("printer is offline"),
                    },
                }
            }
        }
    }

    async fn run_connection<S: AsyncRead + AsyncWrite + Unpin>(&mut self, stream: S) -> String {
        let mut link = Link::new(stream, self.s.protocol.clone());
        loop {
            self.feed(&mut link);
            self.check_done(&mut link);
            let wake = link.wait(self.commands.recv()).await;
            match wake {
                Err(LinkError::Disconnected) => return "serial port disconnected".into(),
                Err(LinkError::Io(e)) => return format!("serial i/o error: {e}"),
                Ok(Wake::Command(cmd)) => self.on_command(&mut link, cmd),
                Ok(Wake::Closed) => self.stopping = true,
                Ok(Wake::Input | Wake::Timer) => {}
            }
            while let Some(ev) = link.core.poll_event() {
                self.on_event(&mut link, ev);
            }
            self.stats = link.core.stats();
            if std::mem::take(&mut self.restart_core) {
                let _ = link.flush().await;
                link.restart_core();
                self.stats = Stats::default();
            }
            self.maybe_report_progress();
            if self.stopping {
                self.safe_stop(&mut link).await;
                return "gateway stopping".into();
            }
        }
    }

    /// Hands job lines to the core while it has room (bounded read-ahead).
    fn feed<S: AsyncRead + AsyncWrite + Unpin>(&mut self, link: &mut Link<S>) {
        let Some(job) = self.job.as_mut() else { return };
        let mut error = None;
        while !job.all_queued && link.core.wants_line() {
            match job.file.next_command() {
                Ok(Some((cmd, index))) => {
                    if let Err(e) = link.core.queue_line(cmd, LineKind::Job(index)) {
                        error = Some(format!("line {}: {e}", index + 1));
                        break;
                    }
                }
                Ok(None) => job.all_queued = true,
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
        }
        if let Some(reason) = error {
            link.core.cancel();
            self.finish_job(JobOutcome::Failed(reason));
        }
    }

    fn check_done<S: AsyncRead + AsyncWrite + Unpin>(&mut self, link: &mut Link<S>) {
        let done = self
            .job
            .as_ref()
            .is_some_and(|j| j.all_queued && link.core.is_drained());
        if done {
            link.core.set_job_active(false);
            self.finish_job(JobOutcome::Completed);
        }
    }

    fn on_command<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        link: &mut Link<S>,
        cmd: PrinterCommand,
    ) {
        match cmd {
            PrinterCommand::StartJob {
                job_id,
                path,
                summary,
            } => {
                if self.job.is_some() || self.pending.is_some() {
                    self.reject("printer is busy with another job");
                } else if link.core.is_ready() {
                    self.start_job(link, job_id, path, summary);
                } else {
                    self.pending = Some((job_id, path, summary));
                }
            }
            PrinterCommand::Pause => {
                if let Some(job) = &self.job {
                    link.core.pause();
                    let job_id = job.id.clone();
                    self.report(ReportKind::Paused { job_id });
                }
            }
            PrinterCommand::Resume => {
                if let Some(job) = &self.job {
                    link.core.resume();
                    let job_id = job.id.clone();
                    self.report(ReportKind::Resumed { job_id });
                }
            }
            PrinterCommand::Cancel => {
                link.core.cancel();
                self.finish_job(JobOutcome::Cancelled);
            }
            PrinterCommand::EmergencyStop => link.core.emergency_stop(),
            PrinterCommand::RunMacro { gcode } => self.run_macro(link, &gcode),
            PrinterCommand::Shutdown => self.stopping = true,
        }
    }

    fn start_job<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        link: &mut Link<S>,
        job_id: String,
        path: PathBuf,
        summary: Summary,
    ) {
        match JobFile::open(&path, Some(summary)) {
            Ok(file) => {
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
                    file,
                    total: summary,
                    acked: 0,
                    all_queued: false,
                    last_report: Instant::now(),
                    stats_at_start: link.core.stats(),
                });
            }
            Err(e) => self.report(ReportKind::JobFinished {
                job_id,
                outcome: JobOutcome::Failed(e.to_string()),
                progress: JobProgress { lines_sent: 0,
                    lines_done: 0,
                    lines_total: summary.commands,
                    percent: 0.0,
                },
                stats: Default::default(),
            }),
        }
    }

    fn run_macro<S: AsyncRead + AsyncWrite + Unpin>(&mut self, link: &mut Link<S>, gcode: &str) {
        if self.job.is_some() || !link.core.is_ready() {
            self.reject("macros run only on an idle, connected printer");
            return;
        }
        let mut cmds = Vec::new();
        for (i, raw) in gcode.lines().enumerate() {
            match crate::protocol::line::prepare(raw) {
                Ok(Some(cmd)) => cmds.push(cmd),
                Ok(None) => {}
                Err(e) => {
                    self.reject(&format!("macro line {}: {e}", i + 1));
                    return;
                }
            }
        }
        for cmd in cmds {
            let _ = link.core.queue_line(cmd, LineKind::Host);
        }
    }

    fn on_event<S: AsyncRead + AsyncWrite + Unpin>(&mut self, link: &mut Link<S>, ev: Event) {
        match ev {
            Event::Ready(fw) => {
                info!(
                    "printer {}: connected to {}",
                    self.s.id,
                    if fw.name.is_empty() {
                        "unknown firmware"
                    } else {
                        &fw.name
                    }
                );
                self.report(ReportKind::Connected(fw));
                if let Some((job_id, path, summary)) = self.pending.take() {
                    self.start_job(link, job_id, path, summary);
                }
            }
            Event::Acked {
                kind: LineKind::Job(index),
                ..
            } => {
                if let Some(job) = self.job.as_mut() {
                    job.acked = job.acked.max(index + 1);
                }
            }
            Event::Acked { .. } => {}
            Event::Temps(t) => self.report(ReportKind::Temps(t)),
            Event::Action(action) => match action.as_str() {
                "pause" | "paused" => self.on_command(link, PrinterCommand::Pause),
                "resume" | "resumed" => self.on_command(link, PrinterCommand::Resume),
                "cancel" => self.on_command(link, PrinterCommand::Cancel),
                _ => self.report(ReportKind::Action(action)),
            },
            Event::Resend { line } => debug!("printer {}: resend from line {line}", self.s.id),
            Event::Timeout { line } => warn!(
                "printer {}: no ok in time, probing with line {line}",
                self.s.id
            ),
            Event::PrinterError(text) => warn!("printer {}: printer error: {text}", self.s.id),
            Event::Message(text) => debug!("printer {}: {text}", self.s.id),
            Event::Busy => {}
            Event::Reset => info!(
                "printer {}: printer reset while idle; reconnecting",
                self.s.id
            ),
            Event::Failed(err) => self.on_failure(link, err),
            _ => {}
        }
    }

    fn on_failure<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        link: &mut Link<S>,
        err: PrinterError,
    ) {
        warn!("printer {}: {err}", self.s.id);
        if !matches!(
            err,
            PrinterError::ResetMidPrint | PrinterError::EmergencyStop
        ) {
            // Heaters off, unnumbered: the line protocol may be what failed.
            link.core.cancel();
        }
        self.stats = link.core.stats();
        self.finish_job(JobOutcome::Failed(err.to_string()));
        self.report(ReportKind::Fault {
            reason: err.to_string(),
        });
        self.restart_core = true;
    }

    async fn safe_stop<S: AsyncRead + AsyncWrite + Unpin>(&mut self, link: &mut Link<S>) {
        if self.job.is_some() {
            link.core.cancel();
            self.finish_job(JobOutcome::Failed(
                "gateway stopped during the print".into(),
            ));
        }
        let deadline = tokio::time::Instant::now() + SAFE_STOP_WAIT;
        while !link.core.is_drained() && tokio::time::Instant::now() < deadline {
            let never = std::future::pending::<Option<()>>();
            match tokio::time::timeout_at(deadline, link.wait(never)).await {
                Ok(Ok(_)) => while link.core.poll_event().is_some() {},
                _ => break,
            }
        }
        let _ = link.flush().await;
    }

    fn maybe_report_progress(&mut self) {
        let interval = self.s.progress_interval;
        let Some(job) = self.job.as_mut() else { return };
        if job.last_report.elapsed() < interval {
            return;
        }
        job.last_report = Instant::now();
        let (job_id, progress) = (job.id.clone(), job.progress());
        self.report(ReportKind::Progress { job_id, progress });
    }

    fn finish_job(&mut self, outcome: JobOutcome) {
        let Some(job) = self.job.take() else { return };
        let progress = job.progress();
        let stats = self.stats.since(&job.stats_at_start);
        info!(
            "printer {}: job {} {:?} at {:.1} %",
            self.s.id, job.id, outcome, progress.percent
        );
        self.report(ReportKind::JobFinished {
            job_id: job.id,
            outcome,
            progress,
            stats,
        });
    }

    fn reject(&self, reason: &str) {
        self.report(ReportKind::Rejected {
            reason: reason.to_owned(),
        });
    }

    fn report(&self, kind: ReportKind) {
        let report = PrinterReport {
            printer: self.s.id.clone(),
            kind,
        };
        if self.reports.try_send(report).is_err() {
            debug!("printer {}: report channel full or closed", self.s.id);
        }
    }
}
