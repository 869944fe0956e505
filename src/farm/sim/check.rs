//! The invariants, checked after every step and at the end of a run:
//!
//! 1. no job's file is executed twice (on any printer, across crashes);
//! 2. every job whose acceptance was promised (acknowledged, answered ok)
//!    is in the store and never vanishes;
//! 3. no print starts on a plate not confirmed clear since the last print,
//!    nor on a board that answers on a swapped port until an operator
//!    accepted it (checked in `printer.rs`, where the start happens);
//! 4. at the end, after the faults stop: every job has ended and every
//!    printer is idle with a clear plate and no prompt left on show
//!    (nothing stuck, nobody blocked);
//! 5. a job whose cancel or e-stop was acknowledged never starts later, and
//!    no retained or stale e-stop ever reaches a printer;
//! 6. no panic (caught by the runner) and no write the real store would refuse.

use super::World;
use crate::lifecycle::PrinterState;

pub fn after_step(w: &World) -> Result<(), String> {
    if let Some(v) = w.violations.first() {
        return Err(v.clone());
    }
    for (id, p) in &w.printers {
        if let Some(v) = p.violations.first() {
            return Err(v.clone());
        }
        // Every legitimate e-stop in the simulation goes out of band; one
        // from the core is a retained or stale one it should have dropped.
        if p.estops_from_core > 0 {
            return Err(format!(
                "{id}: the farm sent an e-stop (a retained or stale one got through)"
            ));
        }
    }
    // 2: promised jobs are durable and stay so.
    if let Some(job) = w.promised.iter().find(|j| !w.store.jobs.contains_key(*j)) {
        return Err(format!(
            "job {job} was acknowledged but is not in the store"
        ));
    }
    Ok(())
}

/// After the quiet phase: nothing left half done.
pub fn at_end(w: &World) -> Result<(), String> {
    if let Some(j) = w.store.jobs.values().find(|j| !j.state.is_terminal()) {
        return Err(format!(
            "job {} is still {} after the faults stopped (printer {:?})",
            j.id, j.state, j.printer_id
        ));
    }
    if let Some(j) = w.core.jobs().next() {
        return Err(format!(
            "the core still holds open job {} ({})",
            j.id, j.state
        ));
    }
    for p in w.core.printers() {
        let ok = p.state == PrinterState::Idle && p.plate_clear && p.connected && p.held.is_none();
        if !ok {
            return Err(format!(
                "printer {} is stuck: {} plate_clear={} connected={} held={:?}",
                p.id, p.state, p.plate_clear, p.connected, p.held
            ));
        }
        if let Some((text, _)) = &p.prompt {
            return Err(format!(
                "printer {} still shows prompt {text:?} with no job",
                p.id
            ));
        }
    }
    Ok(())
}
