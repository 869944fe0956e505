//! Printer rows: syncing with the config and checked state changes.
//!
//! The transition rules themselves live in [`crate::lifecycle`]; this file
//! only applies them to rows, plus the two plate rules that need the row.

use super::outbox::enqueue_opt;
use super::types::{now_s, OutboxItem, PrinterSeed};
use super::StoreError;
use crate::lifecycle::{printer_transition_allowed, PrinterState};
use rusqlite::{params, Connection, OptionalExtension};

/// A requested printer update (see `Store::set_printer_state`).
pub(crate) struct Change {
    pub id: String,
    pub state: PrinterState,
    pub plate_clear: Option<bool>,
    pub current_job: Option<Option<String>>,
}

pub(crate) fn sync(tx: &Connection, seeds: &[PrinterSeed]) -> Result<(), StoreError> {
    let now = now_s();
    for seed in seeds {
        tx.execute(
            "INSERT INTO printers (id, port, filament, state, plate_clear, updated_at, claimed_at)
             VALUES (?1, ?2, ?3, 'offline', 0, ?4, ?4)
             ON CONFLICT (id) DO UPDATE SET port = excluded.port,
                 filament = excluded.filament, updated_at = excluded.updated_at,
                 claimed_at = COALESCE(printers.claimed_at, excluded.claimed_at)",
            params![seed.id, seed.port, seed.filament, now],
        )?;
    }
    // Printers dropped from the config: kept for their history, shown offline.
    let configured: Vec<&str> = seeds.iter().map(|s| s.id.as_str()).collect();
    let list = serde_json::to_string(&configured).map_err(|e| StoreError::BadRow {
        table: "printers",
        key: "config".into(),
        detail: e.to_string(),
    })?;
    tx.execute(
        "UPDATE printers SET state = 'offline', updated_at = ?2
         WHERE state <> 'offline' AND id NOT IN (SELECT value FROM json_each(?1))",
        params![list, now],
    )?;
    Ok(())
}

pub(crate) fn set_state(
    tx: &Connection,
    change: &Change,
    event: Option<&OutboxItem>,
) -> Result<Option<u64>, StoreError> {
    let current: Option<(PrinterState, bool)> = tx
        .query_row(
            "SELECT state, plate_clear FROM printers WHERE id = ?1",
            [&change.id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((from, was_clear)) = current else {
        return Err(StoreError::UnknownPrinter(change.id.clone()));
    };
    let to = change.state;
    if !printer_transition_allowed(from, to) {
        return Err(StoreError::IllegalPrinterTransition {
            printer: change.id.clone(),
            from,
            to,
        });
    }
    // Back to idle only with the plate stated clear: by a robot or operator
    // (from awaiting_clear), or by the farm for a print that never sent a
    // line (from printing or paused).
    if from != PrinterState::Idle
        && from != PrinterState::Offline
        && to == PrinterState::Idle
        && change.plate_clear != Some(true)
    {
        return Err(StoreError::PlateNotClear {
            printer: change.id.clone(),
        });
    }
    if let Some(Some(job)) = &change.current_job {
        let known = tx
            .query_row("SELECT 1 FROM jobs WHERE id = ?1", [job], |_| Ok(()))
            .optional()?
            .is_some();
        if !known {
            return Err(StoreError::UnknownJob(job.clone()));
        }
    }
    // A print that ended in any way may have left a part on the plate, and
    // one that starts is about to: the flag is down from the first line, so
    // a crash, reset or reconnect mid-print can never find a "clear" plate.
    let plate_clear = if matches!(to, PrinterState::AwaitingClear | PrinterState::Printing) {
        false
    } else {
        change.plate_clear.unwrap_or(was_clear)
    };
    let now = now_s();
    match &change.current_job {
        None => tx.execute(
            "UPDATE printers SET state = ?2, plate_clear = ?3, updated_at = ?4 WHERE id = ?1",
            params![change.id, to, plate_clear, now],
        )?,
        Some(job) => tx.execute(
            "UPDATE printers SET state = ?2, plate_clear = ?3, current_job = ?4, updated_at = ?5
             WHERE id = ?1",
            params![change.id, to, plate_clear, job, now],
        )?,
    };
    enqueue_opt(tx, event)
}
