//! Lost `ok`s: when to suspect one, and how to find out without running a
//! line twice.
//!
//! Finding them fast:
//! - `ok N<n>` (ADVANCED_OK) and Repetier's `ok <n>` name their line: a later
//!   one proves the earlier ones were lost (acted on in `inbound.rs`).
//! - Elsewhere, an `M105` every 32 job lines: Marlin, Prusa-Firmware and
//!   Klipper answer it with `ok T:…`, which names it among the oks.
//! - After a silence longer than the adaptive deadline the host probes: it
//!   sends the oldest unacknowledged line again where the firmware checks
//!   line numbers (a line it already has is refused, and the `Resend:` says
//!   where it is), or an `M105` where it does not (never a line twice).
//!
//! The deadline: smoothed `ok` latency plus four mean deviations (TCP's
//! retransmission timer, RFC 6298), between `min_ack_timeout` and
//! `ack_timeout`, floored by the estimated end of the moves the printer has
//! planned. Commands without an estimate (homing, heating, `M600`) get
//! `long_command_timeout`; `busy:` keep-alives push the deadline on; there is
//! none while the printer waits for a person.

use super::inbound::Proof;
use super::{HostProtocol, MARKER};
use crate::protocol::motion::Cost;
use crate::protocol::{Event, PrinterError, Recovery};
use std::time::{Duration, Instant};

/// What the last ack time-out sent to find out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Probe {
    /// The oldest unacknowledged line, alone.
    Resend,
    /// An `M105` behind everything in flight.
    Marker,
}

/// Round-trip estimator over the gaps between consecutive oks.
#[derive(Debug, Clone, Default)]
pub(super) struct AckClock {
    /// Smoothed gap and mean deviation, in seconds.
    srtt: Option<f64>,
    rttvar: f64,
}

/// The deadline before the first sample (RFC 6298 starts at 1 s).
const INITIAL: Duration = Duration::from_secs(1);
/// Margin over estimated motion: the estimate ignores acceleration.
const MOTION_SLACK: f64 = 1.5;

impl AckClock {
    pub(super) fn sample(&mut self, gap: Duration) {
        let r = gap.as_secs_f64();
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2.0;
            }
            Some(srtt) => {
                self.rttvar = 0.75 * self.rttvar + 0.25 * (srtt - r).abs();
                self.srtt = Some(0.875 * srtt + 0.125 * r);
            }
        }
    }

    /// srtt + 4 × rttvar, within [min, max].
    pub(super) fn rto(&self, min: Duration, max: Duration) -> Duration {
        let rto = match self.srtt {
            None => INITIAL,
            Some(srtt) => secs(srtt + 4.0 * self.rttvar),
        };
        rto.max(min).min(max.max(min))
    }
}

fn secs(x: f64) -> Duration {
    Duration::try_from_secs_f64(x.clamp(0.0, 86_400.0)).unwrap_or(Duration::ZERO)
}

impl HostProtocol {
    /// When the oldest line in flight is overdue, if anything is in flight
    /// and the printer is not waiting for a person.
    pub(super) fn ack_deadline(&self) -> Option<Instant> {
        if self.queue.in_flight_lines() == 0 || self.wait.waiting_for_person() {
            return None;
        }
        // Each time-out in a row doubles the wait (RFC 6298 5.5): a printer
        // that is only slow is not probed into overflowing its buffer.
        let backoff = 1u32 << self.timeouts_in_row.min(6);
        let rto = self
            .clock
            .rto(self.cfg.min_ack_timeout, self.cfg.ack_timeout)
            .saturating_mul(backoff)
            .min(self.cfg.ack_timeout.max(self.cfg.min_ack_timeout));
        let mut deadline = match self.cost_of_unacked() {
            Cost::Long => self.last_progress + self.cfg.long_command_timeout,
            Cost::Sync(dwell) => {
                // M400/G4: the planned moves, the moves in flight, the dwell.
                let moves: u64 = self
                    .queue
                    .in_flight()
                    .map(|e| match e.cost {
                        Cost::Move(us) => u64::from(us),
                        _ => 0,
                    })
                    .sum();
                let ahead = secs((moves + u64::from(dwell)) as f64 / 1e6 * MOTION_SLACK);
                let start = self
                    .planned
                    .drained_at()
                    .map_or(self.last_progress, |t| t.max(self.last_progress));
                (start + ahead + rto).min(self.last_progress + self.cfg.long_command_timeout)
            }
            Cost::Instant | Cost::Move(_) => {
                // With the planner full, the next ok waits for its oldest move.
                let floor = self.planned.slot_free_at().map(|t| t + rto);
                (self.last_progress + rto)
                    .max(floor.unwrap_or(self.last_progress))
                    .min(self.last_progress + self.cfg.ack_timeout.max(rto))
            }
        };
        if self.busy {
            deadline = deadline.max(self.last_progress + self.cfg.busy_timeout);
        }
        Some(deadline)
    }

    pub(super) fn on_ack_timeout(&mut self, now: Instant) {
        if self.timeouts_in_row == 0 {
            self.silent_since = self.last_progress;
        }
        self.timeouts_in_row += 1;
        self.stats.timeouts += 1;
        let silence = now.saturating_duration_since(self.silent_since);
        if self.timeouts_in_row > self.cfg.max_timeouts && silence >= self.cfg.ack_timeout {
            self.fail(PrinterError::NoResponse {
                secs: silence.as_secs(),
            });
            return;
        }
        let oldest = self.queue.acked();
        self.last_progress = now;
        self.busy = false;
        if self.firmware.checks_line_numbers() {
            // Send the oldest unacknowledged line again, alone. If its `ok`
            // was lost, the printer refuses the duplicate and says where it is.
            let _ = self.queue.rewind(oldest);
            self.probe = Some(Probe::Resend);
            self.stale = None;
        } else if let Some(m) = self.queue.first_marker_in_flight() {
            // No line check, and an M105 was sent before this silence: the
            // printer got through it and its ok was lost. Counted done by
            // inference (which proves no job end; see `end_job`).
            let lines = m + 1 - oldest;
            self.ack_through(now, m, Proof::Inferred, Recovery::Probe);
            self.stats.recovered_oks += lines;
            self.events.push_back(Event::Recovered {
                lines,
                by: Recovery::Probe,
            });
        } else {
            // No line check: never send a line twice. An M105 behind the
            // lines in flight answers `ok T:` once they have all run (and
            // shows that M105 works as a marker if the handshake's ping
            // could not).
            if !self.queue.marker_unacked() {
                self.push_host(MARKER);
            }
            self.probe = Some(Probe::Marker);
        }
        self.events.push_back(Event::Timeout { line: oldest });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rto_follows_the_gaps_and_stays_in_bounds() {
        let (min, max) = (Duration::from_millis(50), Duration::from_secs(10));
        let mut c = AckClock::default();
        assert_eq!(c.rto(min, max), INITIAL);
        for _ in 0..50 {
            c.sample(Duration::from_millis(2));
        }
        assert_eq!(c.rto(min, max), min, "steady 2 ms gaps: the floor");
        for i in 0..50 {
            c.sample(Duration::from_millis(if i % 2 == 0 { 100 } else { 300 }));
        }
        let rto = c.rto(min, max);
        assert!(
            rto > Duration::from_millis(300) && rto < Duration::from_secs(2),
            "{rto:?}"
        );
        c.sample(Duration::from_secs(1000));
        assert_eq!(c.rto(min, max), max);
    }
}
