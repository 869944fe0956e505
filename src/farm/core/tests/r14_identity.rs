//! Issue 14, item 4: identity at every connect. A port that answers as
//! another machine holds its printer in `error` (stored, so a restart keeps
//! it) and starts no job on it until `printgate printer accept`.

use super::*;
use crate::protocol::Firmware;
use crate::store::{IdentityRole, IdentityRow, PrinterRow};

const PORT: &str = "/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0";
const UUID_A: &str = "6d1e2b4c-0a9f-4d2e-8b7a-1f3c5e7a9b01";
const UUID_B: &str = "f00dbabe-1111-4222-8333-444455556666";

fn row(id: &str, state: PrinterState) -> PrinterRow {
    PrinterRow::for_tests(id, PORT, state)
}

/// A farm whose printers have store rows (their ports are known).
fn farm(tune: impl FnOnce(&mut CoreSettings)) -> H {
    let mut s = CoreSettings::for_tests("gw");
    tune(&mut s);
    let snapshot = Snapshot {
        printers: ["p1", "p2"]
            .iter()
            .map(|id| (id.to_string(), None, Some(row(id, PrinterState::Offline))))
            .collect(),
        jobs: Vec::new(),
        identities: Vec::new(),
    };
    H::start(s, snapshot)
}

fn marlin(version: &str, uuid: &str, thermal: bool) -> Firmware {
    let mut fw = Firmware::default();
    fw.absorb_report(&format!(
        "FIRMWARE_NAME:Marlin {version} (Github) SOURCE_CODE_URL:github.com/MarlinFirmware/Marlin \
         PROTOCOL_VERSION:1.0 MACHINE_TYPE:Ender-3 V2 EXTRUDER_COUNT:1 UUID:{uuid}"
    ));
    fw.set_capability("EMERGENCY_PARSER", true);
    fw.set_capability("THERMAL_PROTECTION", thermal);
    fw
}

fn connect_as(h: &mut H, printer: &str, fw: Firmware) {
    h.report(printer, ReportKind::Connected(fw));
}

fn reconnect_as(h: &mut H, printer: &str, fw: Firmware) {
    h.report(
        printer,
        ReportKind::Offline {
            reason: "port closed".into(),
        },
    );
    connect_as(h, printer, fw);
}

fn identity_writes(h: &H) -> Vec<(IdentityRole, Option<String>)> {
    h.applied
        .iter()
        .flat_map(|b| b.writes.iter())
        .filter_map(|w| match w {
            Write::Identity { role, identity, .. } => {
                Some((*role, identity.as_ref().and_then(|i| i.uuid.clone())))
            }
            _ => None,
        })
        .collect()
}

fn accept(h: &mut H, printer: &str, reply: ReplyId) -> crate::control::Response {
    h.feed(Input::Control {
        req: ControlRequest::AcceptIdentity {
            printer: printer.into(),
        },
        reply,
    });
    h.take()
        .into_iter()
        .find_map(|e| match e {
            Effect::Reply { id, response } if id == reply => Some(response),
            _ => None,
        })
        .expect("an answer")
}

fn any_start(h: &H) -> bool {
    h.out.iter().any(|e| {
        matches!(
            e,
            Effect::Download { .. }
                | Effect::Scan { .. }
                | Effect::Printer {
                    cmd: PrinterCommand::StartJob { .. },
                    ..
                }
        )
    })
}

/// The printer is held after another board answered on its port, with a
/// job assigned and the plate confirmed clear before the swap.
fn swapped() -> H {
    let mut h = farm(|_| {});
    connect_as(&mut h, "p1", marlin("2.1.2", UUID_A, true));
    h.command("p1", Command::ClearPlate, None);
    assert_eq!(h.state("p1"), PrinterState::Idle);
    reconnect_as(&mut h, "p1", marlin("2.1.2", UUID_B, true));
    h
}

#[test]
fn r14_the_first_identity_is_recorded_and_the_same_one_writes_nothing() {
    let mut h = farm(|_| {});
    connect_as(&mut h, "p1", marlin("2.1.2", UUID_A, true));
    assert_eq!(
        identity_writes(&h),
        [(IdentityRole::Known, Some(UUID_A.into()))]
    );
    let recorded = h.events("identity_recorded");
    assert_eq!(recorded.len(), 1, "{:?}", h.messages());
    let text = recorded[0]["message"].as_str().unwrap();
    assert!(
        text.contains("Marlin 2.1.2") && text.contains(UUID_A),
        "{text}"
    );
    // The same board again (a reconnect): nothing written, nothing said.
    let batches = h.applied.len();
    reconnect_as(&mut h, "p1", marlin("2.1.2", UUID_A, true));
    assert_eq!(identity_writes(&h).len(), 1);
    assert_eq!(h.events("identity_recorded").len(), 1);
    assert!(h.events("identity_mismatch").is_empty());
    assert!(h.applied.len() > batches, "the reconnect itself is written");
    // A firmware update of the same machine: recorded, said, not held.
    reconnect_as(&mut h, "p1", marlin("2.1.3", UUID_A, true));
    assert_eq!(identity_writes(&h).len(), 2);
    assert_eq!(h.events("firmware_updated").len(), 1);
    assert_ne!(h.state("p1"), PrinterState::Error);
    // A firmware that answers no M115 tells nothing: nothing recorded.
    let mut h = farm(|_| {});
    h.connect("p1");
    assert!(identity_writes(&h).is_empty());
}

#[test]
fn r14_another_uuid_holds_the_printer_in_error_and_starts_no_job() {
    let mut h = swapped();
    assert_eq!(h.state("p1"), PrinterState::Error);
    let held = h.events("identity_mismatch");
    assert_eq!(held.len(), 1, "{:?}", h.messages());
    let text = held[0]["message"].as_str().unwrap();
    assert!(
        text.contains(&format!("port {PORT} now answers as Marlin 2.1.2")),
        "{text}"
    );
    assert!(text.contains(UUID_B), "{text}");
    assert!(
        text.contains("confirm with `printgate printer accept p1`"),
        "{text}"
    );
    assert_eq!(
        identity_writes(&h).last(),
        Some(&(IdentityRole::Held, Some(UUID_B.into())))
    );
    // Published as unavailable: the farm's handler assigns nothing.
    assert_eq!(
        wire(&h.last_progress("p1")),
        ("printing".into(), 0, Value::Null, "error".into())
    );
    // A job assigned anyway waits; the plate flag from before the swap
    // does not let it start, and neither does a clear-plate command.
    h.take();
    h.assign("p1", "j1", 1);
    h.command("p1", Command::ClearPlate, None);
    h.tick(5);
    assert!(!any_start(&h), "{:?}", h.out);
    assert_eq!(h.held("p1"), None);
    assert_eq!(h.state("p1"), PrinterState::Error);
    // The scheduler's own check refuses a held printer whatever its state.
    let p = h.core.printers.get_mut("p1").unwrap();
    p.state = PrinterState::Idle;
    p.plate_clear = true;
    let p = h.core.printers.get("p1").unwrap();
    assert!(p.connected);
    assert!(!h.core.is_free(p));
}

#[test]
fn r14_another_firmware_family_holds_but_a_shared_uuid_does_not_count() {
    let mut h = farm(|_| {});
    connect_as(&mut h, "p1", marlin("2.1.2", UUID_A, true));
    let mut klipper = Firmware::default();
    klipper.absorb_report("FIRMWARE_NAME:Klipper FIRMWARE_VERSION:v0.12.0");
    reconnect_as(&mut h, "p1", klipper);
    assert_eq!(h.state("p1"), PrinterState::Error);
    let text = h.events("identity_mismatch")[0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        text.contains("now answers as Klipper v0.12.0 (no UUID)"),
        "{text}"
    );
    // Marlin's default UUID (every stock build) identifies no machine.
    let mut h = farm(|_| {});
    connect_as(&mut h, "p1", marlin("2.1.2", UUID_A, true));
    reconnect_as(
        &mut h,
        "p1",
        marlin("2.1.2", "cede2a2f-41a2-4748-9b12-c55c62f367ff", true),
    );
    assert!(h.events("identity_mismatch").is_empty());
    assert_ne!(h.state("p1"), PrinterState::Error);
}

#[test]
fn r14_accept_waits_for_a_clear_plate_then_jobs_start() {
    let mut h = swapped();
    // Nothing to accept on a printer that is not held.
    assert!(!accept(&mut h, "p2", 5).ok);
    let answer = accept(&mut h, "p1", 6);
    assert!(answer.ok, "{answer:?}");
    assert!(answer.message.contains("now awaiting_clear"), "{answer:?}");
    assert_eq!(h.state("p1"), PrinterState::AwaitingClear);
    assert_eq!(h.events("identity_accepted").len(), 1);
    assert_eq!(
        identity_writes(&h)[identity_writes(&h).len() - 2..],
        [
            (IdentityRole::Known, Some(UUID_B.into())),
            (IdentityRole::Held, None)
        ]
    );
    h.assign("p1", "j1", 1);
    assert!(!any_start(&h), "no job before the plate is confirmed clear");
    h.command("p1", Command::ClearPlate, None);
    assert_eq!(h.state("p1"), PrinterState::Idle);
    let (job, dest) = h.last_download().expect("the job starts now");
    h.downloaded(&job, dest);
    h.scanned(&job);
    assert!(h.started("p1", "j1"));
    // The accepted board is now the known one: reconnecting it is quiet.
    assert!(!accept(&mut h, "p1", 7).ok);
}

/// What the store holds after `h`'s writes, as a restart reads it.
fn restart(h: &H) -> H {
    let mut state = PrinterState::Offline;
    let mut ids: Vec<IdentityRow> = Vec::new();
    for w in h.applied.iter().flat_map(|b| b.writes.iter()) {
        match w {
            Write::Printer { id, state: s, .. } if id == "p1" => state = *s,
            Write::Identity {
                printer,
                role,
                identity,
            } => {
                ids.retain(|r| !(r.printer_id == *printer && r.role == *role));
                if let Some(identity) = identity {
                    ids.push(IdentityRow {
                        printer_id: printer.clone(),
                        role: *role,
                        identity: identity.clone(),
                    });
                }
            }
            _ => {}
        }
    }
    let snapshot = Snapshot {
        printers: vec![
            ("p1".into(), None, Some(row("p1", state))),
            ("p2".into(), None, Some(row("p2", PrinterState::Offline))),
        ],
        jobs: Vec::new(),
        identities: ids,
    };
    H::start(CoreSettings::for_tests("gw"), snapshot)
}

#[test]
fn r14_a_restart_keeps_the_hold() {
    let h = swapped();
    let mut h = restart(&h);
    assert_eq!(h.state("p1"), PrinterState::Error);
    // Whatever answers next, only an accept releases the hold — even the
    // original board (the links may swap again).
    for fw in [marlin("2.1.2", UUID_B, true), marlin("2.1.2", UUID_A, true)] {
        reconnect_as(&mut h, "p1", fw);
        assert_eq!(h.state("p1"), PrinterState::Error);
    }
    h.assign("p1", "j1", 1);
    h.command("p1", Command::ClearPlate, None);
    h.tick(5);
    assert!(!any_start(&h), "{:?}", h.out);
    // The accept after the restart records what answers now.
    assert!(accept(&mut h, "p1", 9).ok);
    assert_eq!(h.state("p1"), PrinterState::AwaitingClear);
    let h2 = restart(&h);
    assert_ne!(h2.state("p1"), PrinterState::Error);
}

#[test]
fn r14_no_thermal_protection_is_warned_and_refused_where_required() {
    let mut h = farm(|s| {
        s.require_thermal_protection.insert("p1".into());
    });
    connect_as(&mut h, "p1", marlin("2.1.2", UUID_A, false));
    connect_as(&mut h, "p2", marlin("2.1.2", UUID_B, false));
    // p1 requires it: held in error with the reason.
    assert_eq!(h.state("p1"), PrinterState::Error);
    let refused = h.events("jobs_refused");
    assert_eq!(refused.len(), 1, "{:?}", h.messages());
    assert_eq!(refused[0]["printerId"], "p1", "{refused:?}");
    let text = refused[0]["message"].as_str().unwrap();
    assert!(
        text.contains("THERMAL_PROTECTION:0") && text.contains("require_thermal_protection"),
        "{text}"
    );
    h.command("p1", Command::ClearPlate, None);
    h.assign("p1", "j1", 1);
    assert!(!any_start(&h), "{:?}", h.out);
    // p2 does not: a warning, and it works.
    let warned = h.events("thermal_protection_off");
    assert_eq!(warned.len(), 1, "{warned:?}");
    h.command("p2", Command::ClearPlate, None);
    assert_eq!(h.state("p2"), PrinterState::Idle);
    h.print("p2", "j2");
    // Both are in the retained gateway status, with their capabilities.
    let status = h.gateway_status().expect("a gateway status");
    let fw = &status["firmware"];
    assert_eq!(fw["p2"]["uuid"], UUID_B, "{status}");
    assert_eq!(fw["p2"]["machineType"], "Ender-3 V2", "{status}");
    assert_eq!(fw["p2"]["thermalProtection"], false, "{status}");
    assert_eq!(fw["p2"]["caps"]["EMERGENCY_PARSER"], true, "{status}");
    assert!(fw["p1"]["jobsRefused"].is_string(), "{status}");
    // A firmware with protection on the next connect lifts the refusal.
    reconnect_as(&mut h, "p1", marlin("2.1.3", UUID_A, true));
    assert_eq!(h.state("p1"), PrinterState::AwaitingClear);
}
