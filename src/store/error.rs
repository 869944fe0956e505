//! `StoreError`: everything that can go wrong at the storage boundary.
//!
//! Startup errors (`ReadOnly`, `Corrupt`, `TooNew`, ...) end the process with a
//! message an operator can act on; per-operation errors (`IllegalTransition`,
//! `UnknownJob`) are returned to the caller, which logs them and carries on.

use crate::lifecycle::{JobState, PrinterState};
use std::path::PathBuf;

/// An error from the store. Messages are short, lowercase, and name the thing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {path} is not writable (check owner and permissions, or a read-only file system)")]
    ReadOnly { path: PathBuf },
    #[error("database {path} is corrupt: {detail} (move it aside to start with an empty store)")]
    Corrupt { path: PathBuf, detail: String },
    #[error("database schema version {found} is newer than this printgate supports ({supported}); install a newer printgate")]
    TooNew { found: i64, supported: i64 },
    #[error("migration to schema version {version} failed: {source}")]
    Migration {
        version: i64,
        source: rusqlite::Error,
    },
    #[error("no database at {path} (has the daemon run with this data_dir?)")]
    NoDatabase { path: PathBuf },
    #[error("disk full while writing the database")]
    Full,
    #[error("unknown job {0}")]
    UnknownJob(String),
    #[error("unknown printer {0}")]
    UnknownPrinter(String),
    #[error("job {job}: illegal transition {from} -> {to}")]
    IllegalTransition {
        job: String,
        from: JobState,
        to: JobState,
    },
    #[error("printer {printer}: illegal transition {from} -> {to}")]
    IllegalPrinterTransition {
        printer: String,
        from: PrinterState,
        to: PrinterState,
    },
    #[error("printer {printer}: back to idle needs the plate confirmed clear")]
    PlateNotClear { printer: String },
    #[error("bad row in {table} ({key}): {detail}")]
    BadRow {
        table: &'static str,
        key: String,
        detail: String,
    },
    #[error("cannot start the store writer thread: {0}")]
    Thread(std::io::Error),
    #[error("store writer thread has stopped")]
    Closed,
    #[error("sqlite: {0}")]
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for StoreError {
    /// A full SD card gets its own variant: it is the one write failure an
    /// operator can fix without reading SQLite codes.
    fn from(err: rusqlite::Error) -> Self {
        if err.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            StoreError::Full
        } else {
            StoreError::Sqlite(err)
        }
    }
}
