//! Printer identities: what each printer's firmware said it is (`M115`),
//! as last accepted (`known`) and, while its port answers as another
//! machine, what it answered (`held`). One row per printer and role.
//!
//! Only stores and reads rows: comparing identities and deciding holds is
//! the farm core's (`farm::core::identity`).

use super::types::now_s;
use super::StoreError;
use rusqlite::{params, Connection};
use serde::Serialize;
use std::collections::BTreeMap;

/// Which of a printer's identities a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityRole {
    /// The identity the printer is known by (first seen, or accepted).
    Known,
    /// What its port answered instead; the printer is held until accepted.
    Held,
}

impl IdentityRole {
    fn as_str(self) -> &'static str {
        match self {
            IdentityRole::Known => "known",
            IdentityRole::Held => "held",
        }
    }
}

/// What a firmware says it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    /// `FIRMWARE_NAME` as reported.
    pub firmware: String,
    /// The firmware family (`marlin`, `klipper`, …): a new version within
    /// one family is an update, another family another machine.
    pub family: String,
    pub version: Option<String>,
    pub machine_type: Option<String>,
    /// Only a UUID that tells machines apart (not a shared default).
    pub uuid: Option<String>,
    /// Every `Cap:` line.
    pub caps: BTreeMap<String, bool>,
}

/// One stored identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRow {
    pub printer_id: String,
    pub role: IdentityRole,
    pub identity: Identity,
}

/// Stores (`Some`) or removes (`None`) one identity of `printer`.
pub(crate) fn put(
    tx: &Connection,
    printer: &str,
    role: IdentityRole,
    identity: Option<&Identity>,
) -> Result<(), StoreError> {
    let Some(id) = identity else {
        tx.execute(
            "DELETE FROM printer_identity WHERE printer_id = ?1 AND role = ?2",
            params![printer, role.as_str()],
        )?;
        return Ok(());
    };
    let caps = serde_json::to_string(&id.caps).map_err(|e| StoreError::BadRow {
        table: "printer_identity",
        key: printer.to_owned(),
        detail: e.to_string(),
    })?;
    tx.execute(
        "INSERT INTO printer_identity
             (printer_id, role, firmware, family, version, machine_type, uuid, caps, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (printer_id, role) DO UPDATE SET firmware = excluded.firmware,
             family = excluded.family, version = excluded.version,
             machine_type = excluded.machine_type, uuid = excluded.uuid,
             caps = excluded.caps, updated_at = excluded.updated_at",
        params![
            printer,
            role.as_str(),
            id.firmware,
            id.family,
            id.version,
            id.machine_type,
            id.uuid,
            caps,
            now_s()
        ],
    )?;
    Ok(())
}

/// Every stored identity, by printer.
pub(crate) fn list(conn: &Connection) -> Result<Vec<IdentityRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT printer_id, role, firmware, family, version, machine_type, uuid, caps
         FROM printer_identity ORDER BY printer_id, role",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, String>(7)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let bad = |key: &str, detail: String| StoreError::BadRow {
        table: "printer_identity",
        key: key.to_owned(),
        detail,
    };
    rows.into_iter()
        .map(
            |(printer, role, firmware, family, version, machine, uuid, caps)| {
                let role = match role.as_str() {
                    "known" => IdentityRole::Known,
                    "held" => IdentityRole::Held,
                    other => return Err(bad(&printer, format!("unexpected role `{other}`"))),
                };
                let caps: BTreeMap<String, bool> = serde_json::from_str(&caps)
                    .map_err(|e| bad(&printer, format!("caps is not a JSON object: {e}")))?;
                Ok(IdentityRow {
                    printer_id: printer,
                    role,
                    identity: Identity {
                        firmware,
                        family,
                        version,
                        machine_type: machine,
                        uuid,
                        caps,
                    },
                })
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testdir::TestDir;
    use crate::store::{Batch, PrinterSeed, Store, Write};

    fn put_batch(store: &Store, role: IdentityRole, identity: Option<Identity>) {
        let batch = Batch {
            writes: vec![Write::Identity {
                printer: "p1".into(),
                role,
                identity,
            }],
            outbox: Vec::new(),
            durable: true,
        };
        store.apply(batch).blocking().unwrap();
    }

    /// Both roles survive a reopen of the file; removing one leaves the other.
    #[test]
    fn identities_round_trip_through_a_reopened_file() {
        let dir = TestDir::new("identity");
        let id = |uuid: &str| Identity {
            firmware: "Marlin 2.1.2".into(),
            family: "marlin".into(),
            version: None,
            machine_type: Some("Ender-3".into()),
            uuid: Some(uuid.into()),
            caps: [("THERMAL_PROTECTION".to_owned(), false)].into(),
        };
        let store = Store::open(dir.path()).unwrap();
        let seed = PrinterSeed {
            id: "p1".into(),
            port: "/dev/ttyUSB0".into(),
            filament: None,
        };
        store.sync_printers(&[seed]).blocking().unwrap();
        put_batch(&store, IdentityRole::Known, Some(id("a")));
        put_batch(&store, IdentityRole::Held, Some(id("b")));
        put_batch(&store, IdentityRole::Known, Some(id("c")));
        store.close().blocking().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rows = store.identities().blocking().unwrap();
        let got: Vec<(IdentityRole, Option<String>)> = rows
            .iter()
            .map(|r| (r.role, r.identity.uuid.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (IdentityRole::Held, Some("b".into())),
                (IdentityRole::Known, Some("c".into()))
            ]
        );
        assert_eq!(rows[1].identity, id("c"));
        put_batch(&store, IdentityRole::Held, None);
        let rows = store.identities().blocking().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].role, IdentityRole::Known);
    }
}
