//! One transaction of the farm's writes: the state changes a decision made
//! and the outbox rows announcing them, applied together or not at all.
//!
//! The farm core decides and describes ([`Batch`]); this file only applies
//! each [`Write`] with the checked row functions of `jobs` and `printers`
//! (which refuse illegal lifecycle moves). It decides nothing.

use super::identity::{self, Identity, IdentityRole};
use super::types::{AddOutcome, NewJob, OutboxItem, PurgedJob};
use super::{jobs, outbox, printers, StoreError};
use crate::lifecycle::{JobState, PrinterState};
use rusqlite::{params, Connection};
use std::time::Duration;

/// One change inside a [`Batch`].
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// A new job. If its id is known already, the whole batch is skipped and
    /// the answer is [`Applied::Duplicate`].
    AddJob(NewJob),
    Job {
        id: String,
        to: JobState,
        reason: Option<String>,
    },
    JobFile {
        id: String,
        path: String,
        bytes: u64,
        lines: u64,
    },
    JobProgress {
        id: String,
        lines_done: u64,
        percent: f64,
    },
    Printer {
        id: String,
        state: PrinterState,
        /// `None` keeps it (see `Store::set_printer_state` for the rules).
        plate_clear: Option<bool>,
        /// `None` keeps it; `Some(None)` clears it.
        current_job: Option<Option<String>>,
    },
    /// The job whose plate waits (and its outcome); `None`s once cleared.
    PrinterFinished {
        id: String,
        job: Option<String>,
        outcome: Option<String>,
    },
    /// Terminal jobs finished at least this long ago (answer: [`Applied::Purged`]).
    Purge { older_than: Duration },
    /// One of a printer's firmware identities; `None` removes it.
    Identity {
        printer: String,
        role: IdentityRole,
        identity: Option<Identity>,
    },
}

/// Writes applied in one IMMEDIATE transaction, with `outbox` rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub writes: Vec<Write>,
    pub outbox: Vec<OutboxItem>,
    /// `false`: committed with `synchronous=NORMAL` (no fsync; a power cut
    /// may lose it, never corrupt). For last values such as progress.
    pub durable: bool,
}

/// What a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// Its `AddJob` named a known job: nothing was written.
    Duplicate,
    /// Terminal jobs removed by a `Purge` (their spool files are the caller's).
    Purged(Vec<PurgedJob>),
}

/// Applies `batch` inside `tx`; an error means the caller rolls back.
pub(crate) fn apply(tx: &Connection, batch: &Batch) -> Result<Applied, StoreError> {
    let mut answer = Applied::Done;
    for write in &batch.writes {
        match write {
            Write::AddJob(job) => {
                if jobs::add(tx, job, None)? == AddOutcome::Duplicate {
                    return Ok(Applied::Duplicate);
                }
            }
            Write::Job { id, to, reason } => {
                jobs::transition(tx, id, *to, reason.as_deref(), None)?;
            }
            Write::JobFile {
                id,
                path,
                bytes,
                lines,
            } => jobs::set_file(tx, id, path, *bytes, *lines)?,
            Write::JobProgress {
                id,
                lines_done,
                percent,
            } => {
                jobs::progress(tx, id, *lines_done, 0, *percent, None)?;
            }
            Write::Printer {
                id,
                state,
                plate_clear,
                current_job,
            } => {
                let change = printers::Change {
                    id: id.clone(),
                    state: *state,
                    plate_clear: *plate_clear,
                    current_job: current_job.clone(),
                };
                printers::set_state(tx, &change, None)?;
            }
            Write::PrinterFinished { id, job, outcome } => {
                tx.execute(
                    "UPDATE printers SET last_job = ?2, last_outcome = ?3 WHERE id = ?1",
                    params![id, job, outcome],
                )?;
            }
            // One batch of at most `PURGE_BATCH` jobs: the hourly purge
            // catches up over the hours after a burst.
            Write::Purge { older_than } => {
                let cutoff = jobs::purge_cutoff(*older_than);
                answer = Applied::Purged(jobs::purge(tx, cutoff)?);
            }
            Write::Identity {
                printer,
                role,
                identity,
            } => identity::put(tx, printer, *role, identity.as_ref())?,
        }
    }
    for item in &batch.outbox {
        outbox::enqueue(tx, item)?;
    }
    Ok(answer)
}
