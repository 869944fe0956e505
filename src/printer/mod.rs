//! One tokio task per printer: owns its serial port and protocol core,
//! streams job files, and talks to the rest only through channels
//! ([`PrinterCommand`] in, [`PrinterReport`] out).
//!
//! Never touches the store or MQTT: the farm decides what reports mean.

pub mod job_file;
pub mod link;
pub mod port;
pub mod send;
mod task;
pub use task::spawn as task_spawn;

#[cfg(test)]
mod task_tests;

/// TEMPORARY adapter (old API) for running regression tests before the fix.
#[derive(Clone)]
pub struct PrinterHandle(tokio::sync::mpsc::Sender<PrinterCommand>);
impl PrinterHandle {
    pub async fn send(&self, c: PrinterCommand) -> Result<(), String> {
        self.0.send(c).await.map_err(|e| e.to_string())
    }
}
pub fn spawn(
    s: PrinterSettings,
    reports: tokio::sync::mpsc::Sender<PrinterReport>,
) -> (PrinterHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = tokio::sync::mpsc::channel(32);
    (PrinterHandle(tx), task::spawn(s, rx, reports))
}

use crate::protocol::{self, Firmware, Stats, Temps};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct PrinterSettings {
    pub id: String,
    pub port: PathBuf,
    pub baud: u32,
    pub protocol: protocol::Config,
    /// Reopen a lost port with back-off up to this delay (the daemon);
    /// `None` gives up at the first loss (`printgate send`).
    pub reopen_max: Option<Duration>,
    /// How often a streaming job reports progress.
    pub progress_interval: Duration,
    pub end_sync: Option<String>,
}

#[derive(Debug)]
pub enum PrinterCommand {
    /// Print a checked file (see [`job_file::scan`]). Refused unless the
    /// printer is connected and idle; waits for the handshake if it is under way.
    StartJob {
        job_id: String,
        path: PathBuf,
        summary: job_file::Summary,
    },
    Pause,
    Resume,
    /// Stop streaming, heaters off.
    Cancel,
    /// `M112` at once; the printer halts and needs a reset.
    EmergencyStop,
    /// A short G-code macro, only while idle.
    RunMacro {
        gcode: String,
    },
    /// Leave the printer safe (heaters off if a job was running) and stop.
    Shutdown,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobProgress {
    pub lines_sent: u64,
    pub lines_done: u64,
    pub lines_total: u64,
    pub percent: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Completed,
    Cancelled,
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct PrinterReport {
    pub printer: String,
    pub kind: ReportKind,
}

#[derive(Debug, Clone)]
pub enum ReportKind {
    Connected(Firmware),
    Offline {
        reason: String,
    },
    /// The firmware halted or the protocol gave up; the task reconnects.
    Fault {
        reason: String,
    },
    Temps(Temps),
    JobStarted {
        job_id: String,
    },
    Progress {
        job_id: String,
        progress: JobProgress,
    },
    Paused {
        job_id: String,
    },
    Resumed {
        job_id: String,
    },
    JobFinished {
        job_id: String,
        outcome: JobOutcome,
        progress: JobProgress,
        stats: Stats,
    },
    /// `//action:` lines the task did not act on itself.
    Action(String),
    Rejected {
        reason: String,
    },
    Stopped,
}
