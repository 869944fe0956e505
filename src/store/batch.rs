//! Several writes in one transaction: what one decision of the farm changes
//! (a job ends: the job row, the printer row, their events, the list of
//! plates waiting), committed together with one fsync instead of one each.
//!
//! Each [`StoreWrite`] runs the same code as its single-write method on
//! [`super::Store`]; this file only sequences them. Never decides anything.

use super::types::OutboxItem;
use super::{jobs, outbox, printers, StoreError};
use crate::lifecycle::{JobState, PrinterState};
use rusqlite::Transaction;

/// One write of a batch (see [`super::Store::apply`]).
#[derive(Debug, Clone, PartialEq)]
pub enum StoreWrite {
    /// As [`super::Store::transition_job`].
    Transition {
        job: String,
        to: JobState,
        reason: Option<String>,
        event: Option<OutboxItem>,
    },
    /// As [`super::Store::set_printer_state`].
    Printer {
        printer: String,
        state: PrinterState,
        plate_clear: Option<bool>,
        current_job: Option<Option<String>>,
        event: Option<OutboxItem>,
    },
    /// As [`super::Store::enqueue`].
    Enqueue(OutboxItem),
    /// As [`super::Store::record_progress`]: the only write that alone
    /// would not be durable.
    Progress {
        job: String,
        lines_done: u64,
        percent: f64,
    },
}

impl StoreWrite {
    /// Whether a consumer must not lose it to a power cut.
    pub(crate) fn durable(&self) -> bool {
        !matches!(self, StoreWrite::Progress { .. })
    }

    /// Runs inside the batch's transaction; returns the outbox seq it wrote.
    pub(crate) fn run(
        &self,
        tx: &Transaction<'_>,
        handed_out: u64,
    ) -> Result<Option<u64>, StoreError> {
        match self {
            StoreWrite::Transition {
                job,
                to,
                reason,
                event,
            } => jobs::transition(tx, handed_out, job, *to, reason.as_deref(), event.as_ref()),
            StoreWrite::Printer {
                printer,
                state,
                plate_clear,
                current_job,
                event,
            } => {
                let change = printers::Change {
                    id: printer.clone(),
                    state: *state,
                    plate_clear: *plate_clear,
                    current_job: current_job.clone(),
                };
                printers::set_state(tx, handed_out, &change, event.as_ref())
            }
            StoreWrite::Enqueue(item) => outbox::enqueue(tx, handed_out, item).map(Some),
            StoreWrite::Progress {
                job,
                lines_done,
                percent,
            } => jobs::progress(tx, handed_out, job, *lines_done, 0, *percent, None),
        }
    }
}
