//! The printer's motion planner as far as the host can tell, for the
//! lost-`ok` deadline: an `ok` for a move means the move is planned, not
//! done, and a planner holds a bounded number of moves. So the host keeps
//! the estimated durations of the moves acknowledged last, at most
//! [`PLANNER_DEPTH`], as if they ran back to back from when each could
//! start. It answers two questions: when does a planner slot free up (the
//! next move's `ok` may wait for that), and when has every planned move
//! ended (an `M400`'s `ok` waits for that).
//!
//! Estimates are short (no acceleration), so each duration gets a margin.
//! An estimate that runs out early only makes a probe come early, which is
//! safe: a probe never runs a line twice. No clock, no allocation after
//! construction.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Moves a planner holds: Marlin's `BLOCK_BUFFER_SIZE` is 16 by default
/// (`Configuration_adv.h`; Prusa-Firmware's is 16 too) and its ring keeps
/// one slot empty, so 15 (`ok P15` on an idle Marlin with ADVANCED_OK). A
/// smaller planner makes the host probe early, which the exponential
/// back-off of the probes absorbs; a deeper one only delays a probe.
pub(crate) const PLANNER_DEPTH: usize = 15;

/// Where the `ok` comes on receipt (Repetier-Firmware), a move also waits in
/// the command buffer before it is planned: `GCODE_BUFFER_SIZE`, 2 by
/// default (`Configuration.h`).
pub(crate) const RECEIPT_BUFFER: usize = 2;

/// Margin over the estimate (acceleration is ignored).
const SLACK: f64 = 1.5;

#[derive(Debug, Clone)]
pub(crate) struct PlannedMoves {
    /// Moves acknowledged but possibly not ended, at most.
    depth: usize,
    /// Estimated durations with margin, in µs, oldest first.
    moves: VecDeque<u64>,
    /// When the oldest one started, at the latest.
    head_start: Option<Instant>,
}

impl Default for PlannedMoves {
    fn default() -> Self {
        PlannedMoves::new(PLANNER_DEPTH)
    }
}

impl PlannedMoves {
    /// A planner mirror for a printer that holds `depth` acknowledged moves.
    pub(crate) fn new(depth: usize) -> Self {
        PlannedMoves {
            depth: depth.max(1),
            moves: VecDeque::with_capacity(depth.max(1) + 1),
            head_start: None,
        }
    }

    /// A firmware that acknowledges on receipt holds more (see
    /// [`RECEIPT_BUFFER`]); the mirror is emptied.
    pub(crate) fn set_depth(&mut self, depth: usize) {
        *self = PlannedMoves::new(depth);
    }

    /// The printer halted, reset or proved its planner empty (`M400`).
    pub(crate) fn clear(&mut self) {
        self.moves.clear();
        self.head_start = None;
    }

    /// A move estimated at `us` was acknowledged at `now`.
    pub(crate) fn planned(&mut self, now: Instant, us: u32) {
        if us == 0 {
            return;
        }
        self.settle(now);
        if self.moves.len() >= self.depth {
            // It was planned, so a slot was free: the oldest has ended.
            self.moves.pop_front();
            self.head_start = Some(now);
        }
        if self.moves.is_empty() {
            self.head_start = Some(now);
        }
        self.moves.push_back((f64::from(us) * SLACK) as u64);
    }

    /// Drops the moves the estimate says have ended by `now`.
    fn settle(&mut self, now: Instant) {
        while let (Some(&front), Some(start)) = (self.moves.front(), self.head_start) {
            let end = start + Duration::from_micros(front);
            if end > now {
                break;
            }
            self.moves.pop_front();
            self.head_start = Some(end);
        }
    }

    /// When a planner slot frees up; `None` while one is free.
    pub(crate) fn slot_free_at(&self) -> Option<Instant> {
        if self.moves.len() < self.depth {
            return None;
        }
        Some(self.head_start? + Duration::from_micros(*self.moves.front()?))
    }

    /// When every planned move has ended; `None` when none is planned.
    pub(crate) fn drained_at(&self) -> Option<Instant> {
        let total: u64 = self.moves.iter().sum();
        Some(self.head_start? + Duration::from_micros(total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_full_planner_frees_a_slot_when_its_oldest_move_ends() {
        let t0 = crate::protocol::tests::start();
        let mut p = PlannedMoves::default();
        for _ in 0..PLANNER_DEPTH - 1 {
            p.planned(t0, 100_000); // 100 ms each, 150 ms with margin
        }
        assert_eq!(p.slot_free_at(), None, "a slot is still free");
        p.planned(t0, 100_000);
        assert_eq!(p.slot_free_at(), Some(t0 + ms(150)));
        assert_eq!(p.drained_at(), Some(t0 + ms(150 * PLANNER_DEPTH as u64)));
        // A 17th ok at 10 ms: a slot was free, so the oldest ended by then.
        p.planned(t0 + ms(10), 100_000);
        assert_eq!(p.slot_free_at(), Some(t0 + ms(160)));
    }

    #[test]
    fn moves_that_ended_by_the_estimate_leave_the_planner() {
        let t0 = crate::protocol::tests::start();
        let mut p = PlannedMoves::default();
        for _ in 0..PLANNER_DEPTH {
            p.planned(t0, 10_000); // 15 ms each
        }
        // 100 ms later six have ended by the estimate: room again.
        p.planned(t0 + ms(100), 10_000);
        assert_eq!(p.slot_free_at(), None);
        assert_eq!(
            p.drained_at(),
            Some(t0 + ms(90) + ms(15 * (PLANNER_DEPTH as u64 - 6 + 1)))
        );
        p.clear();
        assert_eq!(p.drained_at(), None);
    }

    #[test]
    fn an_instant_printer_never_runs_the_estimate_away() {
        // Oks faster than the moves could run (an unpaced simulator): the
        // floor stays one move ahead of the last ok, never hours.
        let t0 = crate::protocol::tests::start();
        let mut p = PlannedMoves::default();
        for i in 0..10_000u64 {
            p.planned(t0 + Duration::from_micros(i * 100), 2_000_000);
        }
        let last = t0 + Duration::from_micros(9_999 * 100);
        assert_eq!(p.slot_free_at(), Some(last + Duration::from_secs(3)));
    }
}
