//! The outbox: messages waiting for the broker, in seq order.
//!
//! Seqs come from the `meta.last_seq` counter, not from `MAX(seq)`, so they
//! never repeat even after delivered rows are deleted or the gateway restarts
//! (consumers use them to spot gaps and duplicates). Never publishes anything:
//! the MQTT link reads rows, publishes them and reports delivery.

use super::types::{now_s, row_u64, sql_u64, OutboxItem, OutboxRow};
use super::StoreError;
use rusqlite::{params, Connection};

/// Adds `item` inside the caller's transaction and returns its seq.
pub(crate) fn enqueue(tx: &Connection, item: &OutboxItem) -> Result<u64, StoreError> {
    let now = now_s();
    let last = tx.query_row("SELECT value FROM meta WHERE key = 'last_seq'", [], |r| {
        row_u64(r, 0)
    })?;
    let seq = last + 1;
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'last_seq'",
        [sql_u64(seq)],
    )?;
    tx.execute(
        "INSERT INTO outbox (seq, topic, payload, retain, kind, printer_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            sql_u64(seq),
            item.topic,
            item.payload,
            item.retain,
            item.kind,
            item.printer_id,
            now
        ],
    )?;
    Ok(seq)
}

/// Writes `event` if there is one; the common tail of every state change.
pub(crate) fn enqueue_opt(
    tx: &Connection,
    event: Option<&OutboxItem>,
) -> Result<Option<u64>, StoreError> {
    event.map(|e| enqueue(tx, e)).transpose()
}

pub(crate) fn after(
    conn: &Connection,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<OutboxRow>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare(
        "SELECT seq, topic, payload, retain, kind, printer_id FROM outbox
         WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![sql_u64(after_seq), limit], |r| {
            Ok(OutboxRow {
                seq: row_u64(r, 0)?,
                topic: r.get(1)?,
                payload: r.get(2)?,
                retain: r.get(3)?,
                kind: r.get(4)?,
                printer_id: r.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(crate) fn delivered(tx: &Connection, seq: u64) -> Result<bool, StoreError> {
    Ok(tx.execute("DELETE FROM outbox WHERE seq = ?1", [sql_u64(seq)])? > 0)
}

pub(crate) fn len(conn: &Connection) -> Result<u64, StoreError> {
    Ok(conn.query_row("SELECT COUNT(*) FROM outbox", [], |r| row_u64(r, 0))?)
}
