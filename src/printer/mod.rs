//! One tokio task per printer: owns its serial port and protocol core,
//! streams job files, and talks to the rest only through its
//! [`PrinterHandle`] (commands in, plus the out-of-band emergency stop) and
//! [`PrinterReport`]s out.
//!
//! Never touches the store or MQTT: the farm decides what reports mean.
//!
//! Wiring: [`spawn`] returns the handle and the task. Reports are never
//! dropped (`outbox.rs`): the farm should drain the report channel promptly;
//! while it does not, the task holds reports back in order and stops reading
//! its port once too many wait. Call [`PrinterHandle::emergency_stop`]
//! directly on arrival of an e-stop (it is synchronous and never blocks);
//! `PrinterCommand::EmergencyStop` through the queue works too, behind
//! whatever is queued.

mod handle;
mod job;
pub mod job_file;
mod job_reader;
pub mod link;
mod outbox;
pub mod port;
pub mod send;
mod task;
#[cfg(test)]
mod task_tests;

#[cfg(test)]
pub(crate) use handle::Urgent;
pub use handle::{PrinterGone, PrinterHandle};
pub use task::spawn;

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
    /// The command that ends every job and whose `ok` marks completion
    /// (`M400`: the `ok` of the last move comes when it is planned, not
    /// done). `None` declares completion at the last `ok`, for firmwares
    /// without it (`[serial] end_sync = ""`).
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
        /// How many `Offline`/`Fault` reports the sender had seen from this
        /// task. A start decided before a loss the task has since reported is
        /// refused (`Rejected` with the job), never run on the next
        /// connection behind the farm's back.
        session: u64,
    },
    /// Stop sending job lines (lines already in the printer finish).
    Pause,
    /// Send job lines again; also ends a pause the printer started itself
    /// (Klipper gets `RESUME`).
    Resume,
    /// Stop streaming, heaters off. A job still waiting for the connection
    /// is dropped too (reported cancelled).
    Cancel,
    /// `M112` at once; the printer halts and needs a reset. Prefer
    /// [`PrinterHandle::emergency_stop`], which skips the queue.
    EmergencyStop,
    /// Answer the printer's open prompt with the choice at this index
    /// (0-based, as listed in `ReportKind::Prompt`): `M876 S<choice>`, out
    /// of band when the firmware has an emergency parser.
    PromptAnswer { choice: u32 },
    /// A short G-code macro, only while idle.
    RunMacro { gcode: String },
    /// Leave the printer safe (heaters off if a job was running) and stop.
    Shutdown,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobProgress {
    /// Job lines acknowledged by the printer.
    pub lines_done: u64,
    pub lines_total: u64,
    /// Job lines written to the wire at least once: 0 means the printer
    /// never saw the job (the plate is still clear); more means something
    /// may be on the plate.
    pub lines_sent: u64,
    pub percent: f64,
}

impl JobProgress {
    /// A job that never reached the printer.
    pub fn none(lines_total: u64) -> Self {
        JobProgress {
            lines_done: 0,
            lines_total,
            lines_sent: 0,
            percent: 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Completed,
    Cancelled,
    Failed(String),
}

/// Who paused a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PausedBy {
    /// The printer (filament runout, `M600`, a button, a prompt).
    Printer,
    /// The farm (`PrinterCommand::Pause`).
    Farm,
}

#[derive(Debug, Clone)]
pub struct PrinterReport {
    pub printer: String,
    pub kind: ReportKind,
}

#[derive(Debug, Clone)]
pub enum ReportKind {
    /// Handshake done, at every connect: name, kind, `MACHINE_TYPE`, `UUID`
    /// and every `Cap:` line (incl. `THERMAL_PROTECTION`). A port that now
    /// answers with another UUID or firmware is the farm's to judge.
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
    /// The job is paused; `reason` as the printer gave it ("filament
    /// runout 0", "paused for user").
    Paused {
        job_id: String,
        by: PausedBy,
        reason: Option<String>,
    },
    Resumed {
        job_id: String,
    },
    /// The printer asks a person something; answer with
    /// `PrinterCommand::PromptAnswer { choice }` (index into `choices`).
    Prompt {
        text: String,
        choices: Vec<String>,
    },
    /// The prompt went away (answered, or closed by the printer).
    PromptClosed,
    JobFinished {
        job_id: String,
        outcome: JobOutcome,
        progress: JobProgress,
        stats: Stats,
    },
    /// An emergency stop was requested: `sent` once `M112` was written to
    /// the port; `false` while the port is offline (it is sent first thing
    /// when the port comes back).
    EmergencyStop {
        sent: bool,
    },
    /// `//action:` lines the task did not act on itself.
    Action(String),
    /// A command was refused; `job_id` names the job of a refused start.
    Rejected {
        reason: String,
        job_id: Option<String>,
    },
    Stopped,
}
