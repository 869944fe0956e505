//! Job rows: accepting, moving through the lifecycle, progress, choosing the
//! next job and retention. (What a restart does to them is the farm's
//! decision: `farm::core`'s recovery, written as an ordinary batch.)
//!
//! Every function runs inside the caller's transaction and writes the
//! history row and outbox row of a change together with the change itself.
//! Legality comes from [`crate::lifecycle`]; nothing here decides policy.

use super::outbox::enqueue_opt;
use super::types::{
    job_from_row, now_s, row_u64, sql_u64, AddOutcome, Job, NewJob, OutboxItem, PurgedJob,
    JOB_COLUMNS,
};
use super::StoreError;
use crate::lifecycle::{job_transition_allowed, JobState};
use rusqlite::{params, Connection, OptionalExtension};
use std::time::Duration;

pub(crate) fn add(
    tx: &Connection,
    job: &NewJob,
    event: Option<&OutboxItem>,
) -> Result<AddOutcome, StoreError> {
    let exists = tx
        .query_row("SELECT 1 FROM jobs WHERE id = ?1", [&job.id], |_| Ok(()))
        .optional()?
        .is_some();
    if exists {
        return Ok(AddOutcome::Duplicate);
    }
    if let Some(printer) = &job.printer_id {
        let known = tx
            .query_row(
                "SELECT 1 FROM printers WHERE id = ?1",
                [printer],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !known {
            return Err(StoreError::UnknownPrinter(printer.clone()));
        }
    }
    let params_json = job.params.as_ref().map(|p| p.to_string());
    let state = if job.gcode_path.is_some() {
        JobState::Ready
    } else {
        JobState::Queued
    };
    let now = now_s();
    tx.execute(
        "INSERT INTO jobs (id, printer_id, source, model_url, gcode_path, filament, priority,
             estimated_s, state, created_at, updated_at, params, sha256)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12)",
        params![
            job.id,
            job.printer_id,
            job.source,
            job.model_url,
            job.gcode_path,
            job.filament,
            job.priority,
            job.estimated_s,
            state,
            now,
            params_json,
            job.sha256
        ],
    )?;
    history(tx, &job.id, None, state, Some("accepted"), now)?;
    let seq = enqueue_opt(tx, event)?;
    Ok(AddOutcome::Inserted { seq })
}

pub(crate) fn transition(
    tx: &Connection,
    id: &str,
    to: JobState,
    reason: Option<&str>,
    event: Option<&OutboxItem>,
) -> Result<Option<u64>, StoreError> {
    let from: JobState = tx
        .query_row("SELECT state FROM jobs WHERE id = ?1", [id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::UnknownJob(id.to_owned()))?;
    if !job_transition_allowed(from, to) {
        return Err(StoreError::IllegalTransition {
            job: id.to_owned(),
            from,
            to,
        });
    }
    set_state(tx, id, from, to, reason, now_s())?;
    enqueue_opt(tx, event)
}

/// Writes a checked move and its history row.
fn set_state(
    tx: &Connection,
    id: &str,
    from: JobState,
    to: JobState,
    reason: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    let started = to == JobState::Printing;
    let finished = to.is_terminal();
    tx.execute(
        "UPDATE jobs SET state = ?2, reason = ?3, updated_at = ?4,
             started_at = CASE WHEN ?5 THEN COALESCE(started_at, ?4) ELSE started_at END,
             finished_at = CASE WHEN ?6 THEN ?4 ELSE finished_at END
         WHERE id = ?1",
        params![id, to, reason, now, started, finished],
    )?;
    history(tx, id, Some(from), to, reason, now)
}

fn history(
    tx: &Connection,
    id: &str,
    from: Option<JobState>,
    to: JobState,
    reason: Option<&str>,
    at: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO job_events (job_id, from_state, to_state, reason, at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, from, to, reason, at],
    )?;
    Ok(())
}

pub(crate) fn progress(
    tx: &Connection,
    id: &str,
    lines_done: u64,
    bytes_done: u64,
    progress: f64,
    event: Option<&OutboxItem>,
) -> Result<Option<u64>, StoreError> {
    // SQLite stores NaN as NULL, which the NOT NULL column would refuse.
    let progress = if progress.is_nan() {
        0.0
    } else {
        progress.clamp(0.0, 100.0)
    };
    let changed = tx.execute(
        "UPDATE jobs SET lines_done = ?2, bytes_done = ?3, progress = ?4, updated_at = ?5
         WHERE id = ?1",
        params![
            id,
            sql_u64(lines_done),
            sql_u64(bytes_done),
            progress,
            now_s()
        ],
    )?;
    if changed == 0 {
        return Err(StoreError::UnknownJob(id.to_owned()));
    }
    enqueue_opt(tx, event)
}

pub(crate) fn set_file(
    tx: &Connection,
    id: &str,
    gcode_path: &str,
    bytes_total: u64,
    lines_total: u64,
) -> Result<(), StoreError> {
    let changed = tx.execute(
        "UPDATE jobs SET gcode_path = ?2, bytes_total = ?3, lines_total = ?4, updated_at = ?5
         WHERE id = ?1",
        params![
            id,
            gcode_path,
            sql_u64(bytes_total),
            sql_u64(lines_total),
            now_s()
        ],
    )?;
    if changed == 0 {
        return Err(StoreError::UnknownJob(id.to_owned()));
    }
    Ok(())
}

pub(crate) fn next_for(
    conn: &Connection,
    printer_id: &str,
    filament: Option<&str>,
) -> Result<Option<Job>, StoreError> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs
         WHERE state IN ('ready', 'queued')
           AND (printer_id = ?1
                OR (printer_id IS NULL AND (filament IS NULL OR filament = ?2)))
         ORDER BY priority DESC, created_at, rowid
         LIMIT 1"
    );
    Ok(conn
        .query_row(&sql, params![printer_id, filament], job_from_row)
        .optional()?)
}

/// Jobs deleted per retention transaction: a first purge after months
/// off writes a few hundred KiB of WAL per batch, not one huge transaction.
pub const PURGE_BATCH: usize = 500;

/// Terminal jobs that finished at or before `cutoff` (Unix seconds).
const PURGE_WHERE: &str = "finished_at IS NOT NULL AND finished_at <= ?1
    AND state IN ('completed', 'failed', 'cancelled', 'interrupted')";

/// The finish time at or before which a job is purged.
pub(crate) fn purge_cutoff(older_than: Duration) -> i64 {
    let age = i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX);
    now_s().saturating_sub(age)
}

/// How many jobs [`purge`] would delete.
pub(crate) fn purge_due(conn: &Connection, cutoff: i64) -> Result<u64, StoreError> {
    let sql = format!("SELECT COUNT(*) FROM jobs WHERE {PURGE_WHERE}");
    Ok(conn.query_row(&sql, [cutoff], |r| row_u64(r, 0))?)
}

/// Deletes up to [`PURGE_BATCH`] jobs that finished at or before `cutoff`
/// (their history goes with them: `ON DELETE CASCADE`).
pub(crate) fn purge(tx: &Connection, cutoff: i64) -> Result<Vec<PurgedJob>, StoreError> {
    let sql = format!(
        "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE {PURGE_WHERE} LIMIT {PURGE_BATCH})
         RETURNING id, gcode_path"
    );
    let mut stmt = tx.prepare(&sql)?;
    let purged = stmt
        .query_map([cutoff], |r| {
            Ok(PurgedJob {
                id: r.get(0)?,
                gcode_path: r.get(1)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(purged)
}
