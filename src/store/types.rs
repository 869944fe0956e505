//! The store's rows and arguments, and how they map to and from SQLite
//! values. Timestamps are Unix seconds (UTC); the MQTT layer formats them.
//!
//! No SQL statements here beyond the column lists the row mappers rely on.

use crate::lifecycle::{JobState, PrinterState};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::Row;
use serde::Serialize;

/// Where a job came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobSource {
    /// An assignment pushed on `device/printer/<id>/assignement`.
    Mqtt,
    /// Pulled from the queue manager (`GET /prioritary_job`).
    Queue,
    /// Dropped into the spool folder or added from the CLI.
    Local,
}

/// Kinds of outbox rows: events are never dropped; progress may be coalesced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxKind {
    Event,
    Progress,
}

/// A job as the farm handed it over, before the store has seen it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// The farm's job id; the primary key, so a repeated assignment is a no-op.
    pub id: String,
    pub printer_id: Option<String>,
    pub source: JobSource,
    pub model_url: Option<String>,
    pub gcode_path: Option<String>,
    pub filament: Option<String>,
    /// Higher number = more urgent.
    pub priority: i64,
    pub estimated_s: Option<i64>,
    /// The assignment's `parameters` object, kept verbatim.
    pub params: Option<serde_json::Value>,
    /// Expected hex SHA-256 of the model, if the sender gave one.
    pub sha256: Option<String>,
}

/// One job row, all columns. Serialized in camelCase for `printgate jobs --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: String,
    pub printer_id: Option<String>,
    pub source: JobSource,
    pub model_url: Option<String>,
    pub gcode_path: Option<String>,
    pub filament: Option<String>,
    pub priority: i64,
    pub estimated_s: Option<i64>,
    pub state: JobState,
    pub reason: Option<String>,
    pub lines_done: u64,
    pub lines_total: Option<u64>,
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
    /// 0–100.
    pub progress: f64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub updated_at: i64,
    pub params: Option<serde_json::Value>,
    pub sha256: Option<String>,
}

/// A configured printer, as `sync_printers` receives it from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterSeed {
    pub id: String,
    pub port: String,
    pub filament: Option<String>,
}

/// One printer row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrinterRow {
    pub id: String,
    pub port: String,
    pub filament: Option<String>,
    pub state: PrinterState,
    pub plate_clear: bool,
    pub current_job: Option<String>,
    pub updated_at: i64,
    /// The job whose plate waits for the robot, and how it ended.
    pub last_job: Option<String>,
    pub last_outcome: Option<String>,
    /// When this gateway began to serve the id (Unix seconds).
    pub claimed_at: Option<i64>,
}

#[cfg(test)]
impl PrinterRow {
    /// A row as the store keeps it for a printer in `state` that has held
    /// no job yet and was claimed at time 0 (the core's tests and the farm
    /// simulation start from these).
    pub fn for_tests(id: &str, port: &str, state: PrinterState) -> PrinterRow {
        PrinterRow {
            id: id.to_owned(),
            port: port.to_owned(),
            filament: None,
            state,
            plate_clear: false,
            current_job: None,
            updated_at: 0,
            last_job: None,
            last_outcome: None,
            claimed_at: Some(0),
        }
    }
}

/// One line of a job's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobEvent {
    pub job_id: String,
    /// `None` for the row written when the job was accepted.
    pub from_state: Option<JobState>,
    pub to_state: JobState,
    pub reason: Option<String>,
    pub at: i64,
}

/// A message to publish, written in the same transaction as the change it
/// announces. The payload is built by the MQTT layer; the store never looks in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub kind: OutboxKind,
    /// The printer it is about (coalescing key); `None` for gateway messages.
    pub printer_id: Option<String>,
}

/// A message waiting for the broker's PUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Per-gateway sequence number: strictly increasing, never reused.
    pub seq: u64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub kind: OutboxKind,
    pub printer_id: Option<String>,
}

/// What `add_job` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// New job stored; `seq` is its announcement's outbox seq, if one was given.
    Inserted { seq: Option<u64> },
    /// A job with that id is already known (repeated assignment); nothing changed.
    Duplicate,
}

/// A job removed by retention; its spool file (if any) is the caller's to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgedJob {
    pub id: String,
    pub gcode_path: Option<String>,
}

/// Columns read by [`job_from_row`], in order.
pub(crate) const JOB_COLUMNS: &str = "id, printer_id, source, model_url, gcode_path, filament, \
     priority, estimated_s, state, reason, lines_done, lines_total, bytes_done, bytes_total, \
     progress, created_at, started_at, finished_at, updated_at, params, sha256";

pub(crate) fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    let params: Option<String> = row.get(19)?;
    let params = match params {
        None => None,
        Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(19, rusqlite::types::Type::Text, e.into())
        })?),
    };
    Ok(Job {
        id: row.get(0)?,
        printer_id: row.get(1)?,
        source: row.get(2)?,
        model_url: row.get(3)?,
        gcode_path: row.get(4)?,
        filament: row.get(5)?,
        priority: row.get(6)?,
        estimated_s: row.get(7)?,
        state: row.get(8)?,
        reason: row.get(9)?,
        lines_done: row_u64(row, 10)?,
        lines_total: row_u64_opt(row, 11)?,
        bytes_done: row_u64(row, 12)?,
        bytes_total: row_u64_opt(row, 13)?,
        progress: row.get(14)?,
        created_at: row.get(15)?,
        started_at: row.get(16)?,
        finished_at: row.get(17)?,
        updated_at: row.get(18)?,
        params,
        sha256: row.get(20)?,
    })
}

pub(crate) const PRINTER_COLUMNS: &str =
    "id, port, filament, state, plate_clear, current_job, updated_at, last_job, last_outcome, \
     claimed_at";

pub(crate) fn printer_from_row(row: &Row<'_>) -> rusqlite::Result<PrinterRow> {
    Ok(PrinterRow {
        id: row.get(0)?,
        port: row.get(1)?,
        filament: row.get(2)?,
        state: row.get(3)?,
        plate_clear: row.get(4)?,
        current_job: row.get(5)?,
        updated_at: row.get(6)?,
        last_job: row.get(7)?,
        last_outcome: row.get(8)?,
        claimed_at: row.get(9)?,
    })
}

/// Stored names of the small enums; a value we did not write is a conversion
/// error (reported with its column), never a panic.
macro_rules! text_enum_sql {
    ($ty:ty, $to:expr, $from:expr) => {
        impl ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from($to(*self)))
            }
        }
        impl FromSql for $ty {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                $from(text)
                    .ok_or_else(|| FromSqlError::Other(format!("unexpected value `{text}`").into()))
            }
        }
    };
}

text_enum_sql!(JobState, JobState::as_str, |s: &str| s.parse().ok());
text_enum_sql!(PrinterState, PrinterState::as_str, |s: &str| s.parse().ok());
text_enum_sql!(
    JobSource,
    |s: JobSource| match s {
        JobSource::Mqtt => "mqtt",
        JobSource::Queue => "queue",
        JobSource::Local => "local",
    },
    |s: &str| match s {
        "mqtt" => Some(JobSource::Mqtt),
        "queue" => Some(JobSource::Queue),
        "local" => Some(JobSource::Local),
        _ => None,
    }
);
text_enum_sql!(
    OutboxKind,
    |k: OutboxKind| match k {
        OutboxKind::Event => "event",
        OutboxKind::Progress => "progress",
    },
    |s: &str| match s {
        "event" => Some(OutboxKind::Event),
        "progress" => Some(OutboxKind::Progress),
        _ => None,
    }
);

/// Now, in Unix seconds. A clock before 1970 (a Pi without RTC before NTP)
/// reads as 0 rather than failing a write.
pub(crate) fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// SQLite integers are `i64`; counts and seqs never reach `i64::MAX`, and if
/// one did, saturating beats failing a write.
pub(crate) fn sql_u64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Reads a non-negative integer column; a negative value is reported as a
/// conversion error for that column.
pub(crate) fn row_u64(row: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let v: i64 = row.get(idx)?;
    u64::try_from(v).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Integer, e.into())
    })
}

pub(crate) fn row_u64_opt(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<u64>> {
    match row.get::<_, Option<i64>>(idx)? {
        None => Ok(None),
        Some(_) => row_u64(row, idx).map(Some),
    }
}
