//! Read queries, shared by the writer thread and [`StoreReader`], the
//! read-only handle the CLI uses while the daemon runs.
//!
//! Reads here are short single statements: a long-open reader stalls WAL
//! checkpoints and lets the `-wal` file grow on the SD card.

use super::schema;

use super::types::{
    job_from_row, printer_from_row, Job, JobEvent, PrinterRow, JOB_COLUMNS, PRINTER_COLUMNS,
};
use super::StoreError;
use rusqlite::{Connection, OptionalExtension};
use std::path::Path;

pub(crate) fn list_printers(conn: &Connection) -> Result<Vec<PrinterRow>, StoreError> {
    let sql = format!("SELECT {PRINTER_COLUMNS} FROM printers ORDER BY id");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt
        .query_map([], printer_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(crate) fn list_jobs(conn: &Connection, limit: usize) -> Result<Vec<Job>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql =
        format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY created_at DESC, rowid DESC LIMIT ?1");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt
        .query_map([limit], job_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Every job that has not ended, oldest first (the farm's start-up snapshot).
pub(crate) fn open_jobs(conn: &Connection) -> Result<Vec<Job>, StoreError> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs
         WHERE state NOT IN ('completed', 'failed', 'cancelled', 'interrupted')
         ORDER BY created_at, rowid"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([], job_from_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub(crate) fn get_job(conn: &Connection, id: &str) -> Result<Option<Job>, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
    Ok(conn.query_row(&sql, [id], job_from_row).optional()?)
}

pub(crate) fn job_history(conn: &Connection, id: &str) -> Result<Vec<JobEvent>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT job_id, from_state, to_state, reason, at FROM job_events
         WHERE job_id = ?1 ORDER BY id",
    )?;
    let rows = stmt
        .query_map([id], |r| {
            Ok(JobEvent {
                job_id: r.get(0)?,
                from_state: r.get(1)?,
                to_state: r.get(2)?,
                reason: r.get(3)?,
                at: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// A read-only view of the database for `printgate status`/`jobs` while the
/// daemon holds the writer. Needs read access to the `-wal`/`-shm` files
/// (run as the daemon's user or group).
pub struct StoreReader {
    conn: Connection,
}

impl StoreReader {
    /// Opens `<data_dir>/printgate.db` read-only. No database yet →
    /// [`StoreError::NoDatabase`]; never creates or migrates anything.
    pub fn open(data_dir: &Path) -> Result<StoreReader, StoreError> {
        Ok(StoreReader {
            conn: schema::open_reader(data_dir)?,
        })
    }

    pub fn list_printers(&self) -> Result<Vec<PrinterRow>, StoreError> {
        list_printers(&self.conn)
    }

    /// Newest first.
    pub fn list_jobs(&self, limit: usize) -> Result<Vec<Job>, StoreError> {
        list_jobs(&self.conn, limit)
    }

    pub fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        get_job(&self.conn, id)
    }

    /// Oldest first.
    pub fn job_history(&self, id: &str) -> Result<Vec<JobEvent>, StoreError> {
        job_history(&self.conn, id)
    }

    /// Messages still waiting for the broker (a growing number means the
    /// MQTT link is down).
    pub fn outbox_len(&self) -> Result<u64, StoreError> {
        super::outbox::len(&self.conn)
    }
}
