//! The printer task loop: open the port (with back-off when it is gone),
//! run the protocol, answer commands, act on the protocol's events. Job
//! streaming is in `job.rs`.

use super::handle::{PrinterHandle, Urgent};
use super::job::{ActiveJob, PendingJob};
use super::link::{Inputs, Link, LinkError, Wake};
use super::outbox::Outbox;
use super::{
    port, JobOutcome, JobProgress, PausedBy, PrinterCommand, PrinterReport, PrinterSettings,
    ReportKind,
};
use crate::backoff::{Backoff, ErrorStreak};
use crate::protocol::{Event, LineKind, PrinterError, Stats};
use log::{debug, info, warn};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long an orderly stop waits for heaters-off lines to be acknowledged.
const SAFE_STOP_WAIT: Duration = Duration::from_secs(3);
/// Commands waiting for the task.
const COMMAND_QUEUE: usize = 32;

/// Starts a printer task; returns its handle and the task. Reports go to
/// `reports` (see the module doc of `printer` for how to drain them).
pub fn spawn(
    settings: PrinterSettings,
    reports: mpsc::Sender<PrinterReport>,
) -> (PrinterHandle, JoinHandle<()>) {
    let (tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let urgent = Arc::new(Urgent::default());
    let handle = PrinterHandle::new(tx, Arc::clone(&urgent));
    let task = Task {
        outbox: Outbox::new(settings.id.clone(), reports),
        s: settings,
        commands,
        urgent,
        job: None,
        pending: None,
        losses: 0,
        stopping: false,
        restart_core: false,
        silent_handshakes: 0,
        estop_pending: false,
        stats: Stats::default(),
    };
    (handle, tokio::spawn(task.run()))
}

pub(super) struct Task {
    pub(super) s: PrinterSettings,
    commands: mpsc::Receiver<PrinterCommand>,
    urgent: Arc<Urgent>,
    pub(super) outbox: Outbox,
    pub(super) job: Option<ActiveJob>,
    pub(super) pending: Option<PendingJob>,
    /// `Offline` and `Fault` reports sent (see `PrinterCommand::StartJob`).
    losses: u64,
    stopping: bool,
    /// Set after a protocol failure: flush the safety lines, then start a
    /// fresh protocol on the same port.
    restart_core: bool,
    /// Connections given up for silence since the printer last answered
    /// (0: it answered). Only the first is reported: a printer switched off
    /// behind a USB-powered serial chip, or halted by `M112`, fails every
    /// handshake, and each report costs the farm a synced write and an event.
    silent_handshakes: u32,
    /// An emergency stop requested while the port was offline.
    estop_pending: bool,
    /// The connection's protocol counters, as of the last wake-up.
    pub(super) stats: Stats,
}

impl Task {
    async fn run(mut self) {
        // The one seed rule (names and the clock): printers on many gateways
        // that lose power together do not reopen their ports in step.
        let port = self.s.port.to_string_lossy();
        let seed = crate::backoff::jitter_seed(&[&self.s.id, &port]);
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
                        self.report(ReportKind::Offline {
                            reason: reason.clone(),
                        });
                    }
                    self.drop_pending(JobOutcome::Failed(reason));
                }
            }
            if self.stopping || self.s.reopen_max.is_none() {
                break;
            }
            if self.wait_offline(backoff.next_delay()).await {
                break;
            }
        }
        self.report(ReportKind::Stopped);
        self.outbox.drain().await;
    }

    /// Waits before reopening the port; true when the task should stop.
    async fn wait_offline(&mut self, delay: Duration) -> bool {
        let until = tokio::time::Instant::now() + delay;
        loop {
            let has_reports = !self.outbox.is_empty();
            tokio::select! {
                biased;
                _ = self.urgent.requested() => {
                    if self.urgent.take_estop() {
                        warn!("printer {}: emergency stop while offline: M112 goes out on reconnect", self.s.id);
                        self.estop_pending = true;
                        self.drop_pending(JobOutcome::Cancelled);
                        self.report(ReportKind::EmergencyStop { sent: false });
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    None | Some(PrinterCommand::Shutdown) => return true,
                    Some(PrinterCommand::Cancel) => self.drop_pending(JobOutcome::Cancelled),
                    Some(PrinterCommand::EmergencyStop) => {
                        self.estop_pending = true;
                        self.drop_pending(JobOutcome::Cancelled);
                        self.report(ReportKind::EmergencyStop { sent: false });
                    }
                    Some(cmd) => self.reject_command(&cmd, "printer is offline"),
                },
                _ = self.outbox.send_one(), if has_reports => {}
                _ = tokio::time::sleep_until(until) => return false,
            }
        }
    }

    async fn run_connection<S: AsyncRead + AsyncWrite + Unpin>(&mut self, stream: S) -> String {
        let mut link = Link::new(stream, self.s.protocol.clone());
        if std::mem::take(&mut self.estop_pending) {
            self.emergency_stop(&mut link).await;
        }
        loop {
            if self.urgent.take_estop() {
                self.emergency_stop(&mut link).await;
            }
            if let Err(reason) = self.feed(&mut link) {
                link.core.cancel();
                self.finish_job(JobOutcome::Failed(reason));
            }
            let congested = self.outbox.congested();
            let wants_batch = self.job.as_ref().is_some_and(ActiveJob::wants_batch);
            let inputs = Inputs {
                urgent: &self.urgent,
                commands: (!congested).then_some(&mut self.commands),
                outbox: &mut self.outbox,
                job: match self.job.as_mut() {
                    Some(job) if wants_batch => Some(job.reader.channel()),
                    _ => None,
                },
                read: !congested,
            };
            match link.wait(inputs).await {
                Err(LinkError::Disconnected) => return "serial port disconnected".into(),
                Err(LinkError::Io(e)) => return format!("serial i/o error: {e}"),
                Ok(Wake::Command(cmd)) => self.on_command(&mut link, cmd).await,
                Ok(Wake::Closed) => self.stopping = true,
                Ok(Wake::Job(msg)) => self.on_reader(&mut link, msg),
                Ok(Wake::Urgent | Wake::Input | Wake::Timer | Wake::Reported) => {}
            }
            // Counters first: an event may end the job (the wait's flush
            // may have sent its last line).
            self.stats = link.core.stats();
            if let Some(job) = self.job.as_mut() {
                job.lines_sent = link.core.job_lines_sent();
            }
            while let Some(ev) = link.core.poll_event() {
                self.on_event(&mut link, ev);
            }
            self.stats = link.core.stats();
            if std::mem::take(&mut self.restart_core) {
                if let Err(e) = link.flush().await {
                    debug!("printer {}: safety lines not written: {e:?}", self.s.id);
                }
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

    /// `M112` now; the job (and any job waiting for the handshake) ends.
    async fn emergency_stop<S: AsyncRead + AsyncWrite + Unpin>(&mut self, link: &mut Link<S>) {
        link.core.emergency_stop();
        let sent = match link.flush().await {
            Ok(()) => true,
            Err(e) => {
                warn!("printer {}: M112 not written: {e:?}", self.s.id);
                self.estop_pending = true;
                false
            }
        };
        self.drop_pending(JobOutcome::Cancelled);
        self.report(ReportKind::EmergencyStop { sent });
    }

    async fn on_command<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        link: &mut Link<S>,
        cmd: PrinterCommand,
    ) {
        match cmd {
            PrinterCommand::StartJob {
                job_id,
                path,
                summary,
                session,
            } => {
                if session != self.losses {
                    self.report(ReportKind::Rejected {
                        reason: "the connection changed since this start was decided".into(),
                        job_id: Some(job_id),
                    });
                } else if self.job.is_some() || self.pending.is_some() {
                    self.report(ReportKind::Rejected {
                        reason: "printer is busy with another job".into(),
                        job_id: Some(job_id),
                    });
                } else if link.core.is_ready() {
                    self.start_job(link, job_id, path, summary);
                } else {
                    self.pending = Some(PendingJob {
                        job_id,
                        path,
                        summary,
                    });
                }
            }
            PrinterCommand::Pause => {
                if let Some(job) = &self.job {
                    link.core.pause();
                    let job_id = job.id.clone();
                    self.report(ReportKind::Paused {
                        job_id,
                        by: PausedBy::Farm,
                        reason: None,
                    });
                }
            }
            PrinterCommand::Resume => {
                // A pause the printer started ends with the core's
                // `PrinterResumed` event (reported there).
                let by_printer = link.core.is_printer_paused();
                link.core.resume();
                if let (Some(job), false) = (&self.job, by_printer) {
                    let job_id = job.id.clone();
                    self.report(ReportKind::Resumed { job_id });
                }
            }
            PrinterCommand::Cancel => self.cancel(link),
            PrinterCommand::EmergencyStop => self.emergency_stop(link).await,
            PrinterCommand::PromptAnswer { choice } => {
                if let Err(e) = link.core.answer_prompt(choice) {
                    self.reject(&format!("prompt answer {choice}: {e}"));
                }
            }
            PrinterCommand::RunMacro { gcode } => self.run_macro(link, &gcode),
            PrinterCommand::Shutdown => self.stopping = true,
        }
    }

    fn cancel<S: AsyncRead + AsyncWrite + Unpin>(&mut self, link: &mut Link<S>) {
        link.core.cancel();
        self.finish_job(JobOutcome::Cancelled);
        self.drop_pending(JobOutcome::Cancelled);
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
            // `prepare` checked every line, so queueing cannot fail.
            if let Err(e) = link.core.queue_line(cmd, LineKind::Host) {
                self.reject(&format!("macro: {e}"));
                return;
            }
        }
    }

    fn on_event<S: AsyncRead + AsyncWrite + Unpin>(&mut self, link: &mut Link<S>, ev: Event) {
        match ev {
            Event::Ready(fw) => {
                let silent = std::mem::take(&mut self.silent_handshakes);
                if silent > 1 {
                    info!(
                        "printer {}: answers again after {silent} silent handshakes",
                        self.s.id
                    );
                }
                info!(
                    "printer {}: connected to {fw}; {}",
                    self.s.id,
                    decisions(&fw, link.core.uses_markers())
                );
                self.report(ReportKind::Connected(fw));
                if let Some(p) = self.pending.take() {
                    self.start_job(link, p.job_id, p.path, p.summary);
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
            Event::PrinterPaused { reason } => {
                info!("printer {}: printer paused ({reason:?})", self.s.id);
                match &self.job {
                    Some(job) => {
                        let job_id = job.id.clone();
                        self.report(ReportKind::Paused {
                            job_id,
                            by: PausedBy::Printer,
                            reason,
                        });
                    }
                    None => self.report(ReportKind::Action(format!(
                        "paused{}",
                        reason.map(|r| format!(" {r}")).unwrap_or_default()
                    ))),
                }
            }
            Event::PrinterResumed => {
                if let Some(job) = &self.job {
                    let job_id = job.id.clone();
                    self.report(ReportKind::Resumed { job_id });
                }
            }
            Event::Prompt { text, choices } => {
                info!("printer {}: prompt {text:?} {choices:?}", self.s.id);
                self.report(ReportKind::Prompt { text, choices });
            }
            Event::PromptClosed => self.report(ReportKind::PromptClosed),
            Event::CancelRequested => self.cancel(link),
            Event::Action(action) => self.report(ReportKind::Action(action)),
            Event::JobComplete => self.finish_job(JobOutcome::Completed),
            Event::Resend { line } => debug!("printer {}: resend from line {line}", self.s.id),
            Event::Timeout { line } => {
                info!(
                    "printer {}: no ok in time, probing at line {line}",
                    self.s.id
                )
            }
            Event::Recovered { lines, by } => {
                debug!("printer {}: {lines} lost ok(s) found by {by:?}", self.s.id)
            }
            Event::PrinterError(text) => warn!("printer {}: printer error: {text}", self.s.id),
            Event::Message(text) => debug!("printer {}: {text}", self.s.id),
            Event::Busy => {}
            Event::Reset => info!("printer {}: printer reset; new handshake", self.s.id),
            Event::Failed(err) => self.on_failure(link, err),
        }
    }

    fn on_failure<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        link: &mut Link<S>,
        err: PrinterError,
    ) {
        let silent = matches!(err, PrinterError::NoResponse { .. });
        let repeated = silent && self.silent_handshakes > 0;
        if silent {
            self.silent_handshakes = self.silent_handshakes.saturating_add(1);
        }
        if repeated {
            debug!(
                "printer {}: {err} (still silent, {} handshakes)",
                self.s.id, self.silent_handshakes
            );
        } else {
            warn!("printer {}: {err}", self.s.id);
        }
        if !matches!(
            err,
            PrinterError::ResetMidPrint | PrinterError::EmergencyStop
        ) {
            // Heaters off, unnumbered: the line protocol may be what failed.
            link.core.cancel();
        }
        self.stats = link.core.stats();
        self.finish_job(JobOutcome::Failed(err.to_string()));
        self.drop_pending(JobOutcome::Failed(err.to_string()));
        if !repeated {
            self.report(ReportKind::Fault {
                reason: err.to_string(),
            });
        }
        self.restart_core = true;
    }

    async fn safe_stop<S: AsyncRead + AsyncWrite + Unpin>(&mut self, link: &mut Link<S>) {
        if self.job.is_some() {
            link.core.cancel();
            self.finish_job(JobOutcome::Failed(
                "gateway stopped during the print".into(),
            ));
        }
        self.drop_pending(JobOutcome::Failed("gateway stopped".into()));
        let deadline = tokio::time::Instant::now() + SAFE_STOP_WAIT;
        while !link.core.is_drained() && tokio::time::Instant::now() < deadline {
            let inputs = Inputs {
                urgent: &self.urgent,
                commands: None,
                outbox: &mut self.outbox,
                job: None,
                read: true,
            };
            match tokio::time::timeout_at(deadline, link.wait(inputs)).await {
                Ok(Ok(_)) => while link.core.poll_event().is_some() {},
                _ => break,
            }
        }
        if let Err(e) = link.flush().await {
            debug!(
                "printer {}: heaters-off lines not written: {e:?}",
                self.s.id
            );
        }
    }

    /// Drops a job still waiting for the connection, telling the farm.
    pub(super) fn drop_pending(&mut self, outcome: JobOutcome) {
        if let Some(p) = self.pending.take() {
            info!(
                "printer {}: job {} {:?} before it started",
                self.s.id, p.job_id, outcome
            );
            self.report(ReportKind::JobFinished {
                job_id: p.job_id,
                outcome,
                progress: JobProgress::none(p.summary.commands),
                stats: Stats::default(),
            });
        }
    }

    /// Refuses `cmd`, naming its job when it was a start (the farm then
    /// knows that job never reached the printer).
    fn reject_command(&mut self, cmd: &PrinterCommand, reason: &str) {
        let job_id = match cmd {
            PrinterCommand::StartJob { job_id, .. } => Some(job_id.clone()),
            _ => None,
        };
        self.report(ReportKind::Rejected {
            reason: reason.to_owned(),
            job_id,
        });
    }

    pub(super) fn reject(&mut self, reason: &str) {
        self.report(ReportKind::Rejected {
            reason: reason.to_owned(),
            job_id: None,
        });
    }

    pub(super) fn report(&mut self, kind: ReportKind) {
        if matches!(kind, ReportKind::Offline { .. } | ReportKind::Fault { .. }) {
            self.losses += 1;
        }
        self.outbox.push(kind);
    }
}

/// What the host decided from the printer's identity, for the log.
fn decisions(fw: &crate::protocol::Firmware, markers: bool) -> String {
    let mut out = Vec::new();
    if !fw.checks_line_numbers() {
        out.push("no line-number check: lines are never sent twice");
    }
    if fw.advanced_ok {
        out.push("lost oks found by ADVANCED_OK line numbers");
    } else if fw.acks_on_receipt() {
        out.push("oks on receipt with line numbers; completion on its idle `wait`");
    } else if markers {
        out.push("lost oks found by M105 markers");
    }
    if fw.emergency_parser {
        out.push("prompt answers out of band");
    }
    if fw.thermal_protection == Some(false) {
        out.push("WARNING: firmware reports no thermal protection");
    }
    if out.is_empty() {
        "no special handling".into()
    } else {
        out.join(", ")
    }
}
