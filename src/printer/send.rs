//! `printgate send`: stream one file to one printer, no database, no broker.
//! It is a thin client of the printer task, so it exercises exactly the code
//! the daemon runs.

use super::job_file::{self, Summary};
use super::{JobOutcome, PrinterCommand, PrinterSettings, ReportKind};
use crate::protocol::{self, Stats};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// Serial port: a device, a /dev/serial/by-id/ link or a pseudo-terminal link.
    #[arg(long)]
    pub port: PathBuf,
    #[arg(long, default_value_t = 250_000)]
    pub baud: u32,
    /// G-code file to print.
    pub file: PathBuf,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// The printer's serial receive buffer in bytes (stock Marlin: 128).
    #[arg(long, default_value_t = 128)]
    pub rx_buffer: usize,
    /// Lines in flight at most (stock Marlin: 4).
    #[arg(long, default_value_t = 4)]
    pub max_lines: usize,
    /// One line in flight at a time.
    #[arg(long)]
    pub ping_pong: bool,
    /// Wait this long for the firmware's `start` after opening.
    #[arg(long, default_value_t = 3000)]
    pub boot_timeout_ms: u64,
    /// Upper bound of the adaptive lost-`ok` deadline.
    #[arg(long, default_value_t = 10_000)]
    pub ack_timeout_ms: u64,
    /// Command that ends the job; its `ok` marks completion ("" = none).
    #[arg(long, default_value = "M400")]
    pub end_sync: String,
}

/// The one-line result of a send.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SendSummary {
    pub ok: bool,
    pub lines: u64,
    pub lines_total: u64,
    pub seconds: f64,
    pub lines_per_second: f64,
    pub bytes_sent: u64,
    pub resends: u64,
    pub timeouts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl std::fmt::Display for SendSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}/{} lines in {:.2} s ({:.0} lines/s), {} resends, {} time-outs",
            if self.ok { "done" } else { "FAILED" },
            self.lines,
            self.lines_total,
            self.seconds,
            self.lines_per_second,
            self.resends,
            self.timeouts
        )?;
        if let Some(e) = &self.error {
            write!(f, ": {e}")?;
        }
        Ok(())
    }
}

impl SendArgs {
    pub fn settings(&self) -> PrinterSettings {
        PrinterSettings {
            id: "send".into(),
            port: self.port.clone(),
            baud: self.baud,
            protocol: protocol::Config {
                rx_buffer: self.rx_buffer,
                max_lines_in_flight: self.max_lines,
                ping_pong: self.ping_pong,
                boot_timeout: Duration::from_millis(self.boot_timeout_ms),
                ack_timeout: Duration::from_millis(self.ack_timeout_ms),
                baud: self.baud,
                ..protocol::Config::default()
            },
            reopen_max: None,
            progress_interval: Duration::from_secs(3600),
            end_sync: (!self.end_sync.is_empty()).then(|| self.end_sync.clone()),
        }
    }
}

pub fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let summary = job_file::scan(&args.file)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(send_file(args.settings(), &args.file, summary));
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else if result.ok {
        println!("{result}");
    } else {
        eprintln!("printgate: {result}");
    }
    Ok(if result.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Streams `path` through a printer task and waits for the last `ok`.
pub async fn send_file(settings: PrinterSettings, path: &Path, summary: Summary) -> SendSummary {
    let (report_tx, mut reports) = mpsc::channel(1024);
    let (handle, task) = super::spawn(settings, report_tx);
    let start = handle.send(PrinterCommand::StartJob {
        job_id: "send".into(),
        path: path.to_path_buf(),
        summary,
        session: 0,
    });
    if start.await.is_err() {
        return summarize(
            Some("printer task ended before the job was sent".into()),
            0,
            summary.commands,
            Instant::now(),
            Stats::default(),
        );
    }
    let mut started = Instant::now();
    let mut last_problem = None;
    let mut result = None;
    while let Some(report) = reports.recv().await {
        match report.kind {
            ReportKind::JobStarted { .. } => started = Instant::now(),
            ReportKind::JobFinished {
                outcome,
                progress,
                stats,
                ..
            } => {
                let error = match outcome {
                    JobOutcome::Completed => None,
                    JobOutcome::Cancelled => Some("cancelled".to_owned()),
                    JobOutcome::Failed(e) => Some(e),
                };
                result = Some(summarize(
                    error,
                    progress.lines_done,
                    summary.commands,
                    started,
                    stats,
                ));
                if handle.send(PrinterCommand::Shutdown).await.is_err() {
                    break; // the task ended by itself: nothing left to stop
                }
            }
            ReportKind::Offline { reason } | ReportKind::Fault { reason } => {
                last_problem = Some(reason)
            }
            ReportKind::Rejected { reason, .. } => last_problem = Some(reason),
            ReportKind::Stopped => break,
            _ => {}
        }
    }
    if let Err(e) = task.await {
        last_problem = Some(format!("printer task failed: {e}"));
    }
    result.unwrap_or_else(|| {
        let error = last_problem.unwrap_or_else(|| "printer task ended early".into());
        summarize(Some(error), 0, summary.commands, started, Stats::default())
    })
}

fn summarize(
    error: Option<String>,
    lines: u64,
    total: u64,
    started: Instant,
    stats: Stats,
) -> SendSummary {
    let seconds = started.elapsed().as_secs_f64();
    SendSummary {
        ok: error.is_none(),
        lines,
        lines_total: total,
        seconds,
        lines_per_second: if seconds > 0.0 {
            lines as f64 / seconds
        } else {
            0.0
        },
        bytes_sent: stats.bytes_sent,
        resends: stats.resends,
        timeouts: stats.timeouts,
        error,
    }
}
