//! What a printer's progress message says: the one mapping from the core's
//! state to the seed's vocabulary that the farm's job handler trusts.
//!
//! The handler (seed 000) reads only `status` and `progress`: `idle` means
//! "give me a job now"; `idle` with `progress: 100` means "a print ended,
//! the plate waits for the robot"; anything else is busy. So:
//!
//! | core state | status | progress | jobId | state |
//! |---|---|---|---|---|
//! | connected, idle, plate clear, holds nothing | `idle` | 0 | null | `idle` |
//! | holds a job (downloading, starting, printing, paused) | `printing` | job % | the job | `downloading` / `starting` / `printing` / `paused` |
//! | a job is accepted or queued for it, plate clear | `printing` | 0 | that job | `queued` |
//! | print ended (any outcome after the first line), plate waits | `idle` | 100 | the finished job | `awaiting_clear` (+ `outcome`) |
//! | plate not confirmed clear, no job known (first start, after a crash) | `idle` | 100 | null / last job | `awaiting_clear` |
//! | offline | `printing` | 0 or job % | held job or null | `offline` |
//! | firmware fault / needs an operator | `printing` | 0 or job % | held job or null | `error` |
//!
//! An offline or faulted printer never says `idle`: the seed has no word
//! for "unavailable", and `printing` is the one word that keeps a handler
//! from assigning to it. Pure function, no I/O.

use super::model::Printer;
use crate::lifecycle::PrinterState;
use crate::mqtt::payload::PrinterStatus;

/// A printer's status as published.
#[derive(Debug, Clone, PartialEq)]
pub struct WireStatus<'a> {
    pub status: PrinterStatus,
    pub progress: u8,
    pub job: Option<&'a str>,
    pub state: &'static str,
    pub outcome: Option<&'static str>,
}

/// `queued`: the job (if any) waiting for this printer that is not held yet.
pub fn wire_status<'a>(p: &'a Printer, queued: Option<&'a str>) -> WireStatus<'a> {
    let percent = if p.percent.is_finite() {
        p.percent.clamp(0.0, 100.0) as u8
    } else {
        0
    };
    let busy = |state: &'static str| WireStatus {
        status: PrinterStatus::Printing,
        progress: if p.held.is_some() { percent } else { 0 },
        job: p.held_job().or(queued),
        state,
        outcome: None,
    };
    match p.state {
        PrinterState::Offline => return busy("offline"),
        PrinterState::Error => return busy("error"),
        _ if !p.connected => return busy("offline"),
        _ => {}
    }
    if let Some(held) = &p.held {
        return busy(held.phase.state_word());
    }
    if p.state == PrinterState::AwaitingClear || !p.plate_clear {
        // The completion signal wins over a queued job: without it the
        // handler never sends the robot, and the queue never moves.
        let finished = p.finished.as_ref();
        return WireStatus {
            status: PrinterStatus::Idle,
            progress: 100,
            job: finished.and_then(|f| f.job.as_deref()),
            state: "awaiting_clear",
            outcome: finished.and_then(|f| f.outcome),
        };
    }
    if queued.is_some() {
        return busy("queued");
    }
    WireStatus {
        status: PrinterStatus::Idle,
        progress: 0,
        job: None,
        state: "idle",
        outcome: None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::{Finished, Held, Phase};
    use super::*;
    use PrinterStatus::{Idle, Printing};

    fn printer(state: PrinterState, plate: bool, connected: bool) -> Printer {
        let mut p = Printer::new("p1", None, state, plate);
        p.connected = connected;
        p
    }

    fn show(w: &WireStatus<'_>) -> (PrinterStatus, u8, Option<String>, &'static str) {
        (w.status, w.progress, w.job.map(str::to_owned), w.state)
    }

    /// Every internal state, and what the seed's handler sees for it.
    #[test]
    fn r11_every_state_maps_to_the_seed_vocabulary() {
        let j = |s: &str| Some(s.to_owned());
        // Ready for a job.
        let p = printer(PrinterState::Idle, true, true);
        assert_eq!(show(&wire_status(&p, None)), (Idle, 0, None, "idle"));
        // A job waits for it (accepted or queued): busy.
        assert_eq!(
            show(&wire_status(&p, Some("j1"))),
            (Printing, 0, j("j1"), "queued")
        );
        // Holding a job in each phase: busy, with that job.
        for (phase, word) in [
            (Phase::Downloading, "downloading"),
            (Phase::Scanning, "starting"),
            (Phase::Starting, "starting"),
            (Phase::Printing, "printing"),
            (Phase::Paused, "paused"),
        ] {
            let mut p = printer(PrinterState::Idle, true, true);
            p.held = Some(Held::new("j1", phase));
            p.percent = 42.4;
            assert_eq!(
                show(&wire_status(&p, None)),
                (Printing, 42, j("j1"), word),
                "{phase:?}"
            );
        }
        // A print ended: idle + 100 with the finished job, until cleared.
        let mut p = printer(PrinterState::AwaitingClear, false, true);
        p.finished = Some(Finished {
            job: j("j1"),
            outcome: Some("failed"),
        });
        let w = wire_status(&p, Some("j2"));
        assert_eq!(show(&w), (Idle, 100, j("j1"), "awaiting_clear"));
        assert_eq!(w.outcome, Some("failed"));
        // Plate unknown (first start, after a crash): the robot must come.
        let p = printer(PrinterState::AwaitingClear, false, true);
        assert_eq!(
            show(&wire_status(&p, None)),
            (Idle, 100, None, "awaiting_clear")
        );
        // Offline or faulted: never idle, whatever the plate.
        for state in [PrinterState::Offline, PrinterState::Error] {
            for plate in [true, false] {
                let p = printer(state, plate, state == PrinterState::Error);
                let w = wire_status(&p, None);
                assert_eq!(w.status, Printing, "{state:?}");
                assert_eq!(w.state, state.as_str());
            }
        }
        // Idle in the store but the task is not connected (yet): not idle.
        let p = printer(PrinterState::Idle, true, false);
        assert_eq!(wire_status(&p, None).status, Printing);
        // Printing with a held job while offline: busy, names the job.
        let mut p = printer(PrinterState::Offline, false, false);
        p.held = Some(Held::new("j7", Phase::Printing));
        assert_eq!(
            show(&wire_status(&p, None)),
            (Printing, 0, j("j7"), "offline")
        );
    }

    #[test]
    fn absurd_percentages_are_clamped() {
        let mut p = printer(PrinterState::Printing, false, true);
        p.held = Some(Held::new("j", Phase::Printing));
        for (percent, want) in [(f64::NAN, 0), (-3.0, 0), (250.0, 100), (99.9, 99)] {
            p.percent = percent;
            assert_eq!(wire_status(&p, None).progress, want, "{percent}");
        }
    }
}
