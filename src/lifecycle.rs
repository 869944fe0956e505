//! Job and printer lifecycles: the states, the legal moves between them, and
//! the plate gate.
//!
//! Pure data and functions: no I/O, no clock, no storage. The store asks this
//! module before it writes a transition, and the farm asks it before it tries
//! one, so both agree on one table.
//!
//! ```text
//! job:      queued ─► downloading ─► ready ─► printing ⇄ paused
//!              ▲           │                     │         │
//!              └───────────┘ (restart)           ▼         ▼
//!                       completed | failed | cancelled | interrupted  (terminal)
//!
//! printer:  offline ─► idle ─► printing ⇄ paused ─► awaiting_clear ─► idle
//!                                (any print end)      (plate clear only)
//! ```

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a job is in its life. Stored and published as the lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted and durable, waiting for a printer or for its model file.
    Queued,
    /// Its G-code is being fetched into the spool folder.
    Downloading,
    /// Its G-code is on disk; it can start as soon as the plate gate allows.
    Ready,
    /// Lines are being streamed to a printer.
    Printing,
    /// Streaming is held (operator or firmware request).
    Paused,
    /// Every line was acknowledged.
    Completed,
    /// Stopped by an error (printer, file, time-out).
    Failed,
    /// Stopped on request.
    Cancelled,
    /// The gateway stopped (crash, power cut) while it printed. Never resumed
    /// automatically: the part on the plate is in an unknown state.
    Interrupted,
}

/// What a printer can do right now. Stored and published as the lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrinterState {
    /// Port closed or not answering.
    Offline,
    /// Connected and not printing. A job may start only if the plate is clear.
    Idle,
    /// Streaming a job.
    Printing,
    /// A job is held.
    Paused,
    /// A print ended (in any way); something may be on the plate.
    AwaitingClear,
    /// Needs an operator (thermal fault, firmware halt, ...).
    Error,
}

impl JobState {
    /// Every job state, in lifecycle order (for tables, tests and CLIs).
    pub const ALL: [JobState; 9] = [
        JobState::Queued,
        JobState::Downloading,
        JobState::Ready,
        JobState::Printing,
        JobState::Paused,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Interrupted,
    ];

    /// The stored and published name (`queued`, `downloading`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Downloading => "downloading",
            JobState::Ready => "ready",
            JobState::Printing => "printing",
            JobState::Paused => "paused",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Interrupted => "interrupted",
        }
    }

    /// A terminal job never changes again; it only ages out of retention.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled | JobState::Interrupted
        )
    }

    /// A job that occupies its printer (the printer has material on the plate).
    pub fn is_active(self) -> bool {
        matches!(self, JobState::Printing | JobState::Paused)
    }
}

impl PrinterState {
    /// Every printer state.
    pub const ALL: [PrinterState; 6] = [
        PrinterState::Offline,
        PrinterState::Idle,
        PrinterState::Printing,
        PrinterState::Paused,
        PrinterState::AwaitingClear,
        PrinterState::Error,
    ];

    /// The stored and published name (`idle`, `awaiting_clear`, ...); these are
    /// also the farm protocol's `status` values.
    pub fn as_str(self) -> &'static str {
        match self {
            PrinterState::Offline => "offline",
            PrinterState::Idle => "idle",
            PrinterState::Printing => "printing",
            PrinterState::Paused => "paused",
            PrinterState::AwaitingClear => "awaiting_clear",
            PrinterState::Error => "error",
        }
    }
}

/// The only job transition table. Staying in the same state is not a
/// transition and is refused (a caller repeating a move is a bug worth a log).
pub fn job_transition_allowed(from: JobState, to: JobState) -> bool {
    use JobState::*;
    match from {
        Queued => matches!(to, Downloading | Ready | Cancelled | Failed),
        // Back to queued: a download interrupted by a restart starts over.
        Downloading => matches!(to, Ready | Failed | Cancelled | Queued),
        Ready => matches!(to, Printing | Cancelled | Failed),
        // Back to ready: the printer refused the start before any line went
        // out (it dropped between the decision and the command).
        Printing => matches!(
            to,
            Ready | Paused | Completed | Failed | Cancelled | Interrupted
        ),
        Paused => matches!(to, Printing | Cancelled | Failed | Interrupted),
        Completed | Failed | Cancelled | Interrupted => false,
    }
}

/// The only printer transition table.
///
/// - a print ending in any way (completed, cancelled, failed) → `awaiting_clear`,
///   except a job that ended before its first line went out: the plate is
///   as clear as before, so `printing`/`paused` → `idle` (the farm decides
///   this from the printer task's count of lines sent);
/// - `awaiting_clear` → `idle` only via a plate-clear confirmation (the store
///   refuses it unless the same write sets `plate_clear = true`);
/// - any state → `offline` (port lost) or `error` (fault);
/// - `offline` → `idle` or `awaiting_clear` on reconnect, depending on the
///   remembered plate;
/// - `error` → `awaiting_clear` once the fault is handled (a part may be on
///   the plate), never straight to `idle`.
///
/// Staying in the same state is allowed: it is how plate or job fields are
/// updated without a move.
pub fn printer_transition_allowed(from: PrinterState, to: PrinterState) -> bool {
    use PrinterState::*;
    if from == to || matches!(to, Offline | Error) {
        return true;
    }
    match from {
        Offline => matches!(to, Idle | AwaitingClear),
        Idle => matches!(to, Printing),
        Printing => matches!(to, Paused | AwaitingClear | Idle),
        Paused => matches!(to, Printing | AwaitingClear | Idle),
        AwaitingClear => matches!(to, Idle),
        Error => matches!(to, AwaitingClear),
    }
}

/// Why a job may not start on a printer now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("printer is {0}, not idle")]
    PrinterNotIdle(PrinterState),
    #[error("build plate not confirmed clear")]
    PlateNotClear,
}

/// The plate gate: the one rule that keeps a print from landing on a part.
pub struct PlateGate;

impl PlateGate {
    /// No job starts unless the printer is idle AND its plate was confirmed
    /// clear (robot `pick completed` or operator `clear_plate`).
    pub fn can_start(printer: PrinterState, plate_clear: bool) -> Result<(), NotReady> {
        if printer != PrinterState::Idle {
            return Err(NotReady::PrinterNotIdle(printer));
        }
        if !plate_clear {
            return Err(NotReady::PlateNotClear);
        }
        Ok(())
    }
}

/// A state name that is not one of ours (from a database row or a payload).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} state `{value}`")]
pub struct ParseStateError {
    kind: &'static str,
    value: String,
}

impl FromStr for JobState {
    type Err = ParseStateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| ParseStateError {
                kind: "job",
                value: s.to_owned(),
            })
    }
}

impl FromStr for PrinterState {
    type Err = ParseStateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PrinterState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| ParseStateError {
                kind: "printer",
                value: s.to_owned(),
            })
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for PrinterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobState as J;
    use PrinterState as P;

    /// The expected job table written out in full, row by row, so a change to
    /// `job_transition_allowed` has to be mirrored here on purpose.
    #[test]
    fn job_table_is_exactly_as_specified() {
        let allowed: &[(J, &[J])] = &[
            (
                J::Queued,
                &[J::Downloading, J::Ready, J::Cancelled, J::Failed],
            ),
            (
                J::Downloading,
                &[J::Ready, J::Failed, J::Cancelled, J::Queued],
            ),
            (J::Ready, &[J::Printing, J::Cancelled, J::Failed]),
            (
                J::Printing,
                &[
                    J::Ready,
                    J::Paused,
                    J::Completed,
                    J::Failed,
                    J::Cancelled,
                    J::Interrupted,
                ],
            ),
            (
                J::Paused,
                &[J::Printing, J::Cancelled, J::Failed, J::Interrupted],
            ),
            (J::Completed, &[]),
            (J::Failed, &[]),
            (J::Cancelled, &[]),
            (J::Interrupted, &[]),
        ];
        assert_eq!(allowed.len(), J::ALL.len());
        for (from, tos) in allowed {
            for to in J::ALL {
                assert_eq!(
                    job_transition_allowed(*from, to),
                    tos.contains(&to),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn terminal_states_go_nowhere_and_are_the_only_dead_ends() {
        for from in J::ALL {
            let any = J::ALL
                .into_iter()
                .any(|to| job_transition_allowed(from, to));
            assert_eq!(from.is_terminal(), !any, "{from}");
        }
    }

    #[test]
    fn printer_table_is_exactly_as_specified() {
        let allowed: &[(P, &[P])] = &[
            (
                P::Offline,
                &[P::Offline, P::Idle, P::AwaitingClear, P::Error],
            ),
            (P::Idle, &[P::Idle, P::Printing, P::Offline, P::Error]),
            (
                P::Printing,
                &[
                    P::Printing,
                    P::Paused,
                    P::AwaitingClear,
                    P::Idle,
                    P::Offline,
                    P::Error,
                ],
            ),
            (
                P::Paused,
                &[
                    P::Paused,
                    P::Printing,
                    P::AwaitingClear,
                    P::Idle,
                    P::Offline,
                    P::Error,
                ],
            ),
            (
                P::AwaitingClear,
                &[P::AwaitingClear, P::Idle, P::Offline, P::Error],
            ),
            (P::Error, &[P::Error, P::AwaitingClear, P::Offline]),
        ];
        assert_eq!(allowed.len(), P::ALL.len());
        for (from, tos) in allowed {
            for to in P::ALL {
                assert_eq!(
                    printer_transition_allowed(*from, to),
                    tos.contains(&to),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn an_error_never_leads_straight_back_to_idle() {
        assert!(!printer_transition_allowed(P::Error, P::Idle));
    }

    #[test]
    fn plate_gate_needs_idle_and_clear() {
        for state in P::ALL {
            for clear in [false, true] {
                let got = PlateGate::can_start(state, clear);
                match (state, clear) {
                    (P::Idle, true) => assert_eq!(got, Ok(())),
                    (P::Idle, false) => assert_eq!(got, Err(NotReady::PlateNotClear)),
                    _ => assert_eq!(got, Err(NotReady::PrinterNotIdle(state))),
                }
            }
        }
    }

    #[test]
    fn names_round_trip_through_str_and_serde() {
        for st in J::ALL {
            assert_eq!(st.as_str().parse::<J>().unwrap(), st);
            assert_eq!(serde_json::to_string(&st).unwrap(), format!("\"{st}\""));
        }
        for st in P::ALL {
            assert_eq!(st.as_str().parse::<P>().unwrap(), st);
            let back: P = serde_json::from_str(&format!("\"{st}\"")).unwrap();
            assert_eq!(back, st);
        }
        assert_eq!(P::AwaitingClear.as_str(), "awaiting_clear");
        let err = "AwaitingClear".parse::<P>().unwrap_err();
        assert_eq!(err.to_string(), "unknown printer state `AwaitingClear`");
    }
}
