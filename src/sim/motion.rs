//! Motion model: position (G90/G91, M82/M83, G92, sticky F) and Marlin's
//! planner buffer of queued moves, each taking distance / feedrate ×
//! `motion_time_scale` (0 = instant). A G1 is "processed" (and gets its `ok`)
//! as soon as it is in the planner; it waits only when the planner is full.
//! No I/O, no clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::gcode::Command;
use super::thermal::secs;

/// Free planner slots with an empty planner: BLOCK_BUFFER_SIZE 16 minus the
/// one Marlin keeps free (`ok … P15 B3` on an idle stock printer).
pub(crate) const PLANNER_MOVES: usize = 15;

/// Marlin's default feedrate, mm/min.
const DEFAULT_FEEDRATE: f64 = 1500.0;

const AXES: [u8; 4] = [b'X', b'Y', b'Z', b'E'];

#[derive(Debug, Clone)]
pub(crate) struct Motion {
    pos: [f64; 4],
    relative: bool,
    e_relative: bool,
    feedrate: f64,
    scale: f64,
    /// End times of the moves in the planner, in order.
    ends: VecDeque<Instant>,
}

impl Motion {
    pub(crate) fn new(scale: f64) -> Self {
        Motion {
            pos: [0.0; 4],
            relative: false,
            e_relative: false,
            feedrate: DEFAULT_FEEDRATE,
            scale,
            ends: VecDeque::new(),
        }
    }

    /// Power-on state: planner empty, absolute mode, default feedrate.
    pub(crate) fn reset(&mut self) {
        *self = Motion::new(self.scale);
    }

    pub(crate) fn set_relative(&mut self, relative: bool) {
        self.relative = relative;
        self.e_relative = relative;
    }

    pub(crate) fn set_e_relative(&mut self, relative: bool) {
        self.e_relative = relative;
    }

    /// G0/G1/G2/G3: moves the target position, returns the move's duration.
    pub(crate) fn plan_linear(&mut self, cmd: &Command<'_>) -> Duration {
        if let Some(f) = cmd.value(b'F').filter(|f| *f > 0.0 && f.is_finite()) {
            self.feedrate = f;
        }
        let mut delta = [0.0f64; 4];
        for (i, axis) in AXES.iter().enumerate() {
            let Some(v) = cmd.value(*axis).filter(|v| v.is_finite()) else {
                continue;
            };
            let relative = if i == 3 {
                self.e_relative
            } else {
                self.relative
            };
            let old = self.pos.get(i).copied().unwrap_or(0.0);
            let new = if relative { old + v } else { v };
            if let (Some(p), Some(d)) = (self.pos.get_mut(i), delta.get_mut(i)) {
                *p = new;
                *d = new - old;
            }
        }
        let [dx, dy, dz, de] = delta;
        let mut distance = (dx * dx + dy * dy + dz * dz).sqrt();
        if distance == 0.0 {
            distance = de.abs();
        }
        if self.scale <= 0.0 || distance == 0.0 {
            return Duration::ZERO;
        }
        secs(distance / (self.feedrate / 60.0) * self.scale)
    }

    /// G92: sets the current position of the axes given (all if none).
    pub(crate) fn set_position(&mut self, cmd: &Command<'_>) {
        let any = AXES.iter().any(|a| cmd.has(*a));
        for (i, axis) in AXES.iter().enumerate() {
            if let Some(p) = self.pos.get_mut(i) {
                match cmd.value(*axis) {
                    Some(v) if v.is_finite() => *p = v,
                    _ if !any => *p = 0.0,
                    _ => {}
                }
            }
        }
    }

    /// G28: the axes given (all if none) are at 0 afterwards.
    pub(crate) fn home(&mut self, cmd: &Command<'_>) {
        let any = AXES.iter().take(3).any(|a| cmd.has(*a));
        for (i, axis) in AXES.iter().take(3).enumerate() {
            if !any || cmd.has(*axis) {
                if let Some(p) = self.pos.get_mut(i) {
                    *p = 0.0;
                }
            }
        }
    }

    /// Free planner slots at `now`.
    pub(crate) fn free(&mut self, now: Instant) -> usize {
        while self.ends.front().is_some_and(|end| *end <= now) {
            self.ends.pop_front();
        }
        PLANNER_MOVES.saturating_sub(self.ends.len())
    }

    /// Queues a move of `duration` (the caller checked [`Motion::free`]).
    pub(crate) fn push(&mut self, now: Instant, duration: Duration) {
        if duration.is_zero() {
            return;
        }
        let start = self.ends.back().map_or(now, |end| (*end).max(now));
        self.ends.push_back(start + duration);
    }

    /// When the oldest planned move ends (a planner slot frees up).
    pub(crate) fn next_slot_at(&self) -> Option<Instant> {
        self.ends.front().copied()
    }

    /// When all planned motion has finished (`planner.synchronize()`).
    pub(crate) fn idle_at(&self) -> Option<Instant> {
        self.ends.back().copied()
    }

    /// M114's report of the current (target) position.
    pub(crate) fn report(&self) -> String {
        let [x, y, z, e] = self.pos;
        format!(
            "X:{x:.2} Y:{y:.2} Z:{z:.2} E:{e:.2} Count X:{} Y:{} Z:{}",
            (x * 80.0).round() as i64,
            (y * 80.0).round() as i64,
            (z * 400.0).round() as i64
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(text: &str) -> Command<'_> {
        Command::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn moves_take_distance_over_feedrate_scaled() {
        let mut m = Motion::new(0.5);
        // 30 mm at 3000 mm/min = 0.6 s, halved.
        assert_eq!(m.plan_linear(&cmd("G1 X30 F3000")), secs(0.3));
        // Sticky F, relative mode.
        m.set_relative(true);
        assert_eq!(m.plan_linear(&cmd("G1 Y-30")), secs(0.3));
        assert_eq!(
            m.report(),
            "X:30.00 Y:-30.00 Z:0.00 E:0.00 Count X:2400 Y:-2400 Z:0"
        );
        // Extrude-only move.
        assert_eq!(m.plan_linear(&cmd("G1 E5 F600")), secs(0.25));
        assert_eq!(
            Motion::new(0.0).plan_linear(&cmd("G1 X100")),
            Duration::ZERO
        );
    }

    #[test]
    fn planner_fills_and_drains() {
        let t0 = Instant::now();
        let mut m = Motion::new(1.0);
        for _ in 0..PLANNER_MOVES {
            m.push(t0, Duration::from_millis(100));
        }
        assert_eq!(m.free(t0), 0);
        assert_eq!(m.next_slot_at(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(m.idle_at(), Some(t0 + Duration::from_millis(1500)));
        assert_eq!(m.free(t0 + Duration::from_millis(250)), 2);
    }
}
