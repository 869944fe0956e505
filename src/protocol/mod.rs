//! The Marlin host protocol, sans-IO: no tokio, no port, no clock.
//!
//! [`HostProtocol`] takes bytes read from the printer and the current time,
//! and gives back bytes to write, [`Event`]s and the next deadline. Everything
//! hard about talking to a printer lives here (line numbers, checksums, the
//! send window, resends, lost `ok`s, resets, capabilities) so that it can be
//! tested byte for byte and fuzzed without a serial port.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod firmware;
mod host;
pub mod line;
mod motion;
mod planned;
#[cfg(test)]
mod prop_tests;
mod queue;
pub mod reply;
#[cfg(test)]
mod tests;

pub use firmware::{Capability, Firmware, FirmwareKind};
pub use host::{HostProtocol, PromptError};
pub use line::LineError;
pub use reply::Temps;

use std::fmt;
use std::time::Duration;

/// Protocol settings. Every time-out is configurable so that tests can use
/// short ones and a farm long ones.
#[derive(Debug, Clone)]
pub struct Config {
    /// The printer's serial RX buffer in bytes (stock Marlin: 128). Unacked
    /// bytes in flight stay below it: a UART without flow control drops excess.
    pub rx_buffer: usize,
    /// Lines in flight at most (Marlin's `BUFSIZE`, 4); raised when the
    /// printer's `ADVANCED_OK` reports more free slots.
    pub max_lines_in_flight: usize,
    /// One line in flight at a time, for firmwares that mishandle windows.
    pub ping_pong: bool,
    /// How long to wait for `start` after opening before talking anyway
    /// (boards without auto-reset never send it).
    pub boot_timeout: Duration,
    /// Upper bound of the lost-`ok` deadline. The deadline itself adapts:
    /// the learned `ok` latency (smoothed mean + 4 × mean deviation, as TCP
    /// does for its round trip), floored by the estimated duration of the
    /// moves the printer has been given.
    pub ack_timeout: Duration,
    /// Lower bound of the adaptive deadline (scheduling jitter on a busy Pi).
    pub min_ack_timeout: Duration,
    /// Allowance for homing, heating, `M400`, … before probing.
    pub long_command_timeout: Duration,
    /// After `busy:`, the next sign of life is expected within this.
    pub busy_timeout: Duration,
    /// Probes without any answer before the printer is declared gone.
    pub max_timeouts: u32,
    /// Requests to resend the same line before giving up.
    pub max_resends_per_line: u32,
    /// `M155 S<n>` autoreport interval when the firmware supports it.
    pub autoreport_interval_s: u8,
    /// `M105` poll interval when it does not (only while idle).
    pub temp_poll_interval: Duration,
    /// Line speed, to know how long stale bytes stay on the wire after a
    /// resend (0 = unknown or a pseudo-terminal).
    pub baud: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rx_buffer: 128,
            max_lines_in_flight: 4,
            ping_pong: false,
            boot_timeout: Duration::from_secs(3),
            ack_timeout: Duration::from_secs(10),
            min_ack_timeout: Duration::from_millis(250),
            long_command_timeout: Duration::from_secs(20 * 60),
            busy_timeout: Duration::from_secs(10),
            max_timeouts: 5,
            max_resends_per_line: 20,
            autoreport_interval_s: 2,
            temp_poll_interval: Duration::from_secs(5),
            baud: 250_000,
        }
    }
}

/// Who asked for a line: a job (with the caller's tag, e.g. its index in the
/// file) or the host itself (handshake, temperature polls, safety commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    Job(u64),
    Host,
}

/// How lines whose `ok` never came were found to be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// A later `ok N<n>` (ADVANCED_OK) or `ok <n>` (Repetier) named its line.
    LineNumber,
    /// The `ok T:…` of a later `M105` came back.
    Marker,
    /// The probe after a silence: the printer said which line it wants next.
    Probe,
}

/// Why the printer can no longer be used without a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrinterError {
    /// `start` while a job was streaming: the board rebooted, the print is lost.
    ResetMidPrint,
    /// The firmware halted (`kill()`, thermal protection, `!!`).
    Halted(String),
    /// The same line was refused too many times.
    ResendLoop { line: u64 },
    /// The printer asked for a line older than the kept history.
    ResendOutOfHistory { line: u64, oldest: u64 },
    /// The printer asked for a line that was never sent.
    ResendAhead { line: u64, next: u64 },
    /// Repeated probes got no answer at all.
    NoResponse { secs: u64 },
    /// The host sent `M112`.
    EmergencyStop,
    /// The end of a job could not be confirmed by an `ok` that comes after
    /// the last move (see `HostProtocol::end_job`).
    CompletionUnconfirmed,
}

impl fmt::Display for PrinterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrinterError::ResetMidPrint => {
                write!(
                    f,
                    "printer reset (sent 'start') in the middle of a job; the print is lost"
                )
            }
            PrinterError::Halted(text) => write!(f, "printer halted: {text}"),
            PrinterError::ResendLoop { line } => {
                write!(
                    f,
                    "printer refused line {line} too many times (line noise?)"
                )
            }
            PrinterError::ResendOutOfHistory { line, oldest } => write!(
                f,
                "printer asked for line {line}, older than the oldest kept ({oldest})"
            ),
            PrinterError::ResendAhead { line, next } => write!(
                f,
                "printer asked for line {line}, but only lines before {next} were sent"
            ),
            PrinterError::NoResponse { secs } => {
                write!(f, "no response from the printer for {secs} s")
            }
            PrinterError::EmergencyStop => write!(f, "emergency stop (M112) sent"),
            PrinterError::CompletionUnconfirmed => {
                write!(f, "the printer never confirmed that the last move finished")
            }
        }
    }
}

impl std::error::Error for PrinterError {}

/// What happened, in the order it happened. Events say what, not what to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Handshake done: line counter reset, capabilities known.
    Ready(Firmware),
    /// A line was executed (its `ok` arrived, or the printer proved it had it).
    Acked {
        line: u64,
        kind: LineKind,
    },
    Temps(Temps),
    /// The printer is alive but working on a long command.
    Busy,
    /// The printer paused by itself or asked the host to pause (filament
    /// runout, `M600`, a button): no job line is sent until it resumes, and
    /// there is no time-out while it waits for a person.
    PrinterPaused {
        reason: Option<String>,
    },
    /// The printer said it resumed (or the host resumed it).
    PrinterResumed,
    /// The printer asks a person a question (`//action:prompt_begin`,
    /// `prompt_button`/`prompt_choice`, `prompt_show`). Answer with
    /// `HostProtocol::answer_prompt` (`M876 S<index>`).
    Prompt {
        text: String,
        choices: Vec<String>,
    },
    /// The open prompt went away (answered, or `//action:prompt_end`).
    PromptClosed,
    /// `//action:cancel`: the printer asks the host to cancel the job.
    CancelRequested,
    /// Other `//action:...` lines, as sent.
    Action(String),
    /// The printer asked for line `line` again.
    Resend {
        line: u64,
    },
    /// No `ok` in time: probing (the oldest unacknowledged line again, or
    /// an `M105` where the firmware checks no line numbers).
    Timeout {
        line: u64,
    },
    /// Lines whose `ok` was lost were found done, `lines` of them.
    Recovered {
        lines: u64,
        by: Recovery,
    },
    /// Every job line ran and the printer confirmed it after the last move
    /// (see `HostProtocol::end_job`).
    JobComplete,
    /// A non-fatal printer error line.
    PrinterError(String),
    /// Informational output (`echo:` and unknown lines).
    Message(String),
    /// The printer rebooted while idle; the handshake starts again.
    Reset,
    /// Fatal and sticky: the protocol ignores further input.
    Failed(PrinterError),
}

/// Counters for summaries and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub lines_sent: u64,
    pub bytes_sent: u64,
    pub resends: u64,
    pub timeouts: u64,
    pub line_errors: u64,
    pub swallowed_oks: u64,
    pub unexpected_oks: u64,
    /// Lines whose `ok` was lost and that a recovery found done.
    pub recovered_oks: u64,
}

impl Stats {
    /// Counters accumulated since `earlier` (a snapshot of the same core).
    pub fn since(&self, earlier: &Stats) -> Stats {
        Stats {
            lines_sent: self.lines_sent.saturating_sub(earlier.lines_sent),
            bytes_sent: self.bytes_sent.saturating_sub(earlier.bytes_sent),
            resends: self.resends.saturating_sub(earlier.resends),
            timeouts: self.timeouts.saturating_sub(earlier.timeouts),
            line_errors: self.line_errors.saturating_sub(earlier.line_errors),
            swallowed_oks: self.swallowed_oks.saturating_sub(earlier.swallowed_oks),
            unexpected_oks: self.unexpected_oks.saturating_sub(earlier.unexpected_oks),
            recovered_oks: self.recovered_oks.saturating_sub(earlier.recovered_oks),
        }
    }
}
