//! Identity at every connect: what a printer's firmware says it is (`M115`)
//! is compared with what the printer is known by, so a port whose
//! `/dev/serial/by-id` link now leads to another board (two CH340 boards
//! without serial numbers swap links) never gets the other printer's job.
//!
//! The rules, decided here:
//! - the first identity a printer reports is recorded (one write); the same
//!   identity again writes nothing;
//! - **another machine** — another firmware family (Marlin → Klipper), or
//!   another UUID or `MACHINE_TYPE` when both sides report one — holds the
//!   printer in `error` with an event naming the port and what answers, until
//!   an operator runs `printgate printer accept <id>`. The hold is stored
//!   and survives a restart; nothing but an accept releases it;
//! - **an update** — same family, another version, new `Cap:` lines, a UUID
//!   or machine type reported where none was — is recorded with an info event;
//! - an accept records what answered as the printer's identity and moves it
//!   to `awaiting_clear` (nobody knows what is on that plate), never `idle`;
//! - `Cap:THERMAL_PROTECTION:0` is warned about (once per run and printer),
//!   and with `require_thermal_protection = true` the printer takes no job
//!   on that firmware (held in `error` until a firmware that reports
//!   protection connects). A firmware that does not report the capability
//!   is not refused: most non-Marlin firmwares never send `Cap:` lines.
//!
//! Shared default UUIDs (Marlin's `cede2a2f-…`, Prusa's zeros) identify no
//! machine and are ignored ([`Firmware::unique_uuid`]). Never talks to the
//! printer; the hold takes effect through `move_printer` and `is_free`.

use super::persist::Tx;
use super::writes::After;
use super::FarmCore;
use crate::lifecycle::PrinterState;
use crate::protocol::{Firmware, FirmwareKind};
use crate::store::{Identity, IdentityRole, IdentityRow, Write};
use log::{info, warn};

/// One printer's identity as the core knows it.
#[derive(Debug, Default, Clone)]
pub struct IdentityState {
    /// What the printer is known by (stored).
    pub known: Option<Identity>,
    /// What its port answered instead (stored): the printer is held.
    pub held: Option<Identity>,
    /// Why the current connection's firmware takes no job (not stored:
    /// decided again at every connect).
    pub refused: Option<String>,
    /// The no-thermal-protection warning was given in this run.
    pub thermal_warned: bool,
}

impl IdentityState {
    /// The printer must take no job and stay in `error`.
    pub fn blocks(&self) -> bool {
        self.held.is_some() || self.refused.is_some()
    }
}

/// How a reported identity relates to the known one.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    Same,
    /// The same machine with other firmware details (what changed).
    Updated(String),
    /// Another machine (why).
    Other(String),
}

/// What `fw` says about the machine; `None` when it said nothing (no
/// `M115` answer: nothing to compare or record).
pub fn identity_of(fw: &Firmware) -> Option<Identity> {
    let name = fw.name.trim();
    let uuid = fw.unique_uuid().map(str::to_ascii_lowercase);
    if name.is_empty() && uuid.is_none() && fw.machine_type.is_none() {
        return None;
    }
    let family = match fw.kind {
        FirmwareKind::Marlin => "marlin".to_owned(),
        FirmwareKind::Prusa => "prusa-firmware".to_owned(),
        FirmwareKind::PrusaBuddy => "prusa-firmware-buddy".to_owned(),
        FirmwareKind::Repetier => "repetier".to_owned(),
        FirmwareKind::RepRap => "reprapfirmware".to_owned(),
        FirmwareKind::Klipper => "klipper".to_owned(),
        // An unknown firmware's family is the first word of its name (the
        // rest is usually the version).
        FirmwareKind::Unknown => name
            .split_whitespace()
            .next()
            .unwrap_or("unknown")
            .to_ascii_lowercase(),
    };
    Some(Identity {
        firmware: name.to_owned(),
        family,
        version: fw.version.clone(),
        machine_type: fw.machine_type.clone(),
        uuid,
        caps: fw
            .caps
            .iter()
            .map(|c| (c.name.clone(), c.enabled))
            .collect(),
    })
}

fn compare(known: &Identity, seen: &Identity) -> Change {
    let mut why = Vec::new();
    if known.family != seen.family {
        why.push(format!(
            "firmware was {}, is {}",
            known.firmware, seen.firmware
        ));
    }
    if let (Some(a), Some(b)) = (&known.uuid, &seen.uuid) {
        if !a.eq_ignore_ascii_case(b) {
            why.push(format!("UUID was {a}"));
        }
    }
    if let (Some(a), Some(b)) = (&known.machine_type, &seen.machine_type) {
        if a != b {
            why.push(format!("machine type was {a}"));
        }
    }
    if !why.is_empty() {
        return Change::Other(why.join("; "));
    }
    if known == seen {
        return Change::Same;
    }
    Change::Updated(format!("was {}, is {}", describe(known), describe(seen)))
}

/// `Marlin 2.1.2 (Ender-3) UUID 6d1e…`, for operators.
pub fn describe(id: &Identity) -> String {
    let mut text = if id.firmware.is_empty() {
        "an unnamed firmware".to_owned()
    } else {
        id.firmware.clone()
    };
    if let Some(v) = id.version.as_deref().filter(|v| !id.firmware.contains(v)) {
        text.push_str(&format!(" {v}"));
    }
    if let Some(m) = &id.machine_type {
        text.push_str(&format!(" ({m})"));
    }
    match &id.uuid {
        Some(u) => text.push_str(&format!(" UUID {u}")),
        None => text.push_str(" (no UUID)"),
    }
    text
}

impl FarmCore {
    /// Takes the stored identities at start-up; a held printer stays in
    /// `error` (written into `tx` if the row said otherwise).
    pub(super) fn restore_identities(&mut self, rows: Vec<IdentityRow>, tx: &mut Tx) {
        for row in rows {
            let Some(p) = self.printers.get_mut(&row.printer_id) else {
                continue;
            };
            match row.role {
                IdentityRole::Known => p.identity.known = Some(row.identity),
                IdentityRole::Held => p.identity.held = Some(row.identity),
            }
        }
        for p in self.printers.values_mut() {
            if p.identity.held.is_some() && p.state != PrinterState::Error {
                tx.write(Write::Printer {
                    id: p.id.clone(),
                    state: PrinterState::Error,
                    plate_clear: None,
                    current_job: None,
                });
                p.state = PrinterState::Error;
            }
        }
    }

    /// A printer task connected to `fw`: record, update or hold (see the
    /// module doc). Runs before the connect's state move, which the hold
    /// then keeps in `error` (see [`FarmCore::identity_guard`]).
    pub(super) fn check_identity(&mut self, id: &str, fw: &Firmware) {
        let require = self.s.require_thermal_protection.contains(id);
        let Some(p) = self.printers.get_mut(id) else {
            return;
        };
        let port = p.port.clone().unwrap_or_else(|| format!("of printer {id}"));
        let mut tx = Tx::default();
        let mut events: Vec<(&str, String)> = Vec::new();
        let seen = identity_of(fw);
        let put = |tx: &mut Tx, role, identity: Option<&Identity>| {
            tx.write(Write::Identity {
                printer: id.to_owned(),
                role,
                identity: identity.cloned(),
            });
        };
        if let Some(seen) = seen {
            let held_text = |why: &str| {
                format!(
                    "port {port} now answers as {}; confirm with `printgate printer accept {id}` \
                     ({why}); no job starts on it until then",
                    describe(&seen)
                )
            };
            match (&p.identity.held, &p.identity.known) {
                (Some(held), _) => {
                    if *held != seen {
                        put(&mut tx, IdentityRole::Held, Some(&seen));
                    }
                    events.push(("identity_mismatch", held_text("still held")));
                    p.identity.held = Some(seen);
                }
                (None, None) => {
                    put(&mut tx, IdentityRole::Known, Some(&seen));
                    events.push(("identity_recorded", describe(&seen)));
                    p.identity.known = Some(seen);
                }
                (None, Some(known)) => match compare(known, &seen) {
                    Change::Same => {}
                    Change::Updated(what) => {
                        put(&mut tx, IdentityRole::Known, Some(&seen));
                        events.push(("firmware_updated", what));
                        p.identity.known = Some(seen);
                    }
                    Change::Other(why) => {
                        put(&mut tx, IdentityRole::Held, Some(&seen));
                        events.push(("identity_mismatch", held_text(&why)));
                        p.identity.held = Some(seen);
                    }
                },
            }
        }
        let unprotected = fw.thermal_protection == Some(false);
        p.identity.refused = (unprotected && require).then(|| {
            "the firmware reports no thermal protection (Cap:THERMAL_PROTECTION:0) and \
             require_thermal_protection = true: no job starts on it"
                .to_owned()
        });
        if let Some(why) = &p.identity.refused {
            events.push(("jobs_refused", why.clone()));
        } else if unprotected && !p.identity.thermal_warned {
            events.push((
                "thermal_protection_off",
                "the firmware reports no thermal protection (Cap:THERMAL_PROTECTION:0): \
                 a heater fault may not stop the printer"
                    .to_owned(),
            ));
        }
        p.identity.thermal_warned |= unprotected;
        for (kind, text) in events {
            match kind {
                "identity_recorded" | "firmware_updated" => info!("printer {id}: {kind}: {text}"),
                _ => warn!("printer {id}: {kind}: {text}"),
            }
            tx.out(self.msgs.event(id, kind, None, Some(&text)));
        }
        if !tx.writes.is_empty() || !tx.outbox.is_empty() {
            self.commit(tx, After::Nothing);
        }
        self.publish_gateway_status(false);
    }

    /// `printgate printer accept <id>`: what the port answered becomes the
    /// printer's identity; the printer waits for a clear plate.
    pub(super) fn accept_identity(&mut self, id: &str) -> Result<String, String> {
        let Some(p) = self.printers.get_mut(id) else {
            return Err(format!("unknown printer {id}"));
        };
        let Some(held) = p.identity.held.take() else {
            return Err(format!(
                "printer {id} is not held for its identity: nothing to accept"
            ));
        };
        let text = format!("identity accepted: {}", describe(&held));
        info!("printer {id}: {text}");
        p.identity.known = Some(held.clone());
        let to = match (p.state, p.connected) {
            (PrinterState::Error, true) => PrinterState::AwaitingClear,
            (PrinterState::Error, false) => PrinterState::Offline,
            (state, _) => state,
        };
        let mut tx = Tx::default();
        tx.write(Write::Identity {
            printer: id.to_owned(),
            role: IdentityRole::Known,
            identity: Some(held),
        })
        .write(Write::Identity {
            printer: id.to_owned(),
            role: IdentityRole::Held,
            identity: None,
        });
        // Nobody knows what is on that plate: it must be confirmed clear.
        self.move_printer(
            &mut tx,
            id,
            to,
            Some(false),
            "identity_accepted",
            Some(&text),
        );
        self.commit(tx, After::Nothing);
        self.publish_gateway_status(false);
        let now = self.printers.get(id).map_or(to, |p| p.state);
        Ok(format!("printer {id}: {text}; now {}", now.as_str()))
    }

    /// The state a move to `to` really makes: a held printer (or one whose
    /// firmware is refused) stays in `error` unless it goes offline.
    pub(super) fn identity_guard(&self, id: &str, to: PrinterState) -> PrinterState {
        let blocks = self.printers.get(id).is_some_and(|p| p.identity.blocks());
        if blocks && !matches!(to, PrinterState::Offline | PrinterState::Error) {
            PrinterState::Error
        } else {
            to
        }
    }

    /// The firmware part of the retained gateway status: per printer, what
    /// it is known as, its capabilities, and what answers while it is held.
    pub(super) fn firmware_status(&self) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> = self
            .printers
            .values()
            .filter(|p| p.identity.known.is_some() || p.identity.held.is_some())
            .map(|p| {
                let known = p.identity.known.as_ref();
                let v = serde_json::json!({
                    "firmware": known.map(|k| &k.firmware),
                    "version": known.and_then(|k| k.version.as_ref()),
                    "machineType": known.and_then(|k| k.machine_type.as_ref()),
                    "uuid": known.and_then(|k| k.uuid.as_ref()),
                    "caps": known.map(|k| &k.caps),
                    "thermalProtection": known.and_then(|k| k.caps.get("THERMAL_PROTECTION")),
                    "heldAs": p.identity.held,
                    "jobsRefused": p.identity.refused,
                });
                (p.id.clone(), v)
            })
            .collect();
        serde_json::Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fw(name: &str, machine: &str, uuid: &str) -> Firmware {
        let mut f = Firmware::default();
        f.absorb_report(&format!(
            "FIRMWARE_NAME:{name} MACHINE_TYPE:{machine} UUID:{uuid}"
        ));
        f
    }

    #[test]
    fn versions_update_and_other_machines_do_not() {
        let u1 = "6d1e2b4c-0a9f-4d2e-8b7a-1f3c5e7a9b01";
        let u2 = "f00dbabe-1111-4222-8333-444455556666";
        let id = |f: &Firmware| identity_of(f).unwrap();
        let a = id(&fw("Marlin 2.1.1", "Ender-3", u1));
        assert_eq!(compare(&a, &a.clone()), Change::Same);
        let update = compare(&a, &id(&fw("Marlin 2.1.2", "Ender-3", u1)));
        assert!(matches!(update, Change::Updated(_)), "{update:?}");
        for other in [
            fw("Marlin 2.1.1", "Ender-3", u2),
            fw("Marlin 2.1.1", "Prusa-MK4", u1),
            fw("Klipper", "Ender-3", u1),
        ] {
            let c = compare(&a, &id(&other));
            assert!(matches!(c, Change::Other(_)), "{other:?}: {c:?}");
        }
        // Marlin's shared default UUID names no machine.
        let shared = id(&fw(
            "Marlin 2.1.1",
            "Ender-3",
            "cede2a2f-41a2-4748-9b12-c55c62f367ff",
        ));
        assert_eq!(shared.uuid, None);
        assert!(matches!(compare(&a, &shared), Change::Updated(_)));
        assert_eq!(identity_of(&Firmware::default()), None);
    }
}
