//! What each printer line means for the host: acknowledgements (and which
//! line they are for), resend requests, errors, keep-alives, identity.

use super::handshake::MAX_HANDSHAKES;
use super::recovery::Probe;
use super::{HostProtocol, Stale, State};
use crate::protocol::motion::Cost;
use crate::protocol::queue::AckedLine;
use crate::protocol::reply::{parse_reply, ErrorKind, OkReply, Reply};
use crate::protocol::{Event, PrinterError, Recovery};
use std::time::Instant;

/// Lines a firmware that acknowledges on receipt may hold unexecuted:
/// Repetier-Firmware's `GCODE_BUFFER_SIZE` (`Configuration.h`) is 2 by
/// default; 16 covers builds that raise it.
const RECEIPT_WINDOW: usize = 16;

/// How the host knows a line was acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Proof {
    /// The next plain `ok`, counted against the oldest line in flight.
    Counted,
    /// An ok that names its line: `ok N<n>`, `ok <n>`, or an `M105`'s `ok T:`.
    Named,
    /// Deduced from a probe's answer: the printer has the line, it may not
    /// have run it yet.
    Inferred,
}

impl HostProtocol {
    pub(super) fn handle_line(&mut self, now: Instant, line: &[u8]) {
        if self.state == State::Halted {
            return;
        }
        let reply = parse_reply(line);
        if self.style_check.deadline().is_some() && self.on_style_check_reply(now, &reply) {
            return;
        }
        let expected_resend_ok = std::mem::take(&mut self.expect_resend_ok);
        let expected_skip_ok = std::mem::take(&mut self.expect_skip_ok);
        if (expected_resend_ok || expected_skip_ok) && matches!(reply, Reply::Ok(_)) {
            // Marlin 1.x, Prusa and Repetier answer a refused line with an
            // `ok` that belongs to the refused line, not to any in flight.
            self.stats.swallowed_oks += 1;
            return;
        }
        match reply {
            Reply::Ok(ok) => self.on_ok(now, &ok),
            Reply::Resend(k) => self.on_resend(now, k),
            Reply::Skip(n) => self.on_skip(now, n),
            Reply::Error { kind, text } => match kind {
                ErrorKind::LineCheck { .. } => {
                    self.stats.line_errors += 1;
                    self.last_progress = now;
                }
                ErrorKind::Fatal => self.fail(PrinterError::Halted(text.to_owned())),
                ErrorKind::Other => self.events.push_back(Event::PrinterError(text.to_owned())),
            },
            Reply::Busy(what) => {
                self.last_progress = now;
                self.busy = true;
                self.on_busy_text(now, what);
                self.events.push_back(Event::Busy);
            }
            Reply::Start => self.on_start(now),
            Reply::Temps(t) => {
                // M109/M190 report every second while they wait: alive.
                if self.queue.long_in_flight() {
                    self.last_progress = now;
                }
                self.events.push_back(Event::Temps(t));
            }
            Reply::Action(a) => self.on_action(a),
            Reply::FirmwareName(text) => self.firmware.absorb_report(text),
            Reply::Capability { name, enabled } => self.firmware.set_capability(name, enabled),
            Reply::Wait => self.on_idle_wait(),
            Reply::Info(text) | Reply::Echo(text) | Reply::Other(text) if !text.is_empty() => {
                self.events.push_back(Event::Message(text.to_owned()));
            }
            Reply::Info(_) | Reply::Echo(_) | Reply::Other(_) | Reply::Empty => {}
        }
    }

    fn on_ok(&mut self, now: Instant, ok: &OkReply<'_>) {
        if ok.rest.starts_with("FIRMWARE_NAME:") {
            // Klipper answers M115 inside its ok (klippy/gcode.py cmd_M115).
            self.firmware.absorb_report(ok.rest);
        }
        if !ok.temps.is_empty() {
            self.events.push_back(Event::Temps(ok.temps));
        }
        if let Some(free) = ok.advanced.and_then(|a| a.queue_free) {
            self.firmware.advanced_ok = true;
            let slots = usize::try_from(free)
                .unwrap_or(usize::MAX)
                .saturating_add(1);
            let learned = self.learned_slots.unwrap_or(1).max(slots).min(64);
            self.learned_slots = Some(learned);
        }
        let was_busy = std::mem::take(&mut self.busy);
        self.timeouts_in_row = 0;
        self.probe = None;
        self.on_ok_for_wait();
        let gap = now.saturating_duration_since(self.last_progress);
        let oldest = self
            .queue
            .oldest_in_flight()
            .map(|e| (e.n, e.marker, e.cost));
        let Some((oldest_n, oldest_marker, oldest_cost)) = oldest else {
            self.stats.unexpected_oks += 1;
            self.last_progress = now;
            return;
        };
        let acked = if let Some(n) = ok.line {
            if n < oldest_n {
                // An ok for a line already counted (late, or after a probe).
                self.stats.unexpected_oks += 1;
                self.last_progress = now;
                return;
            }
            self.ack_through(now, n, Proof::Named, Recovery::LineNumber)
        } else if !ok.temps.is_empty() && oldest_marker {
            self.markers = true;
            self.ack_through(now, oldest_n, Proof::Named, Recovery::Marker)
        } else if let Some(m) = (!ok.temps.is_empty() && self.markers)
            .then(|| self.queue.marker_after_oldest())
            .flatten()
        {
            self.ack_through(now, m, Proof::Named, Recovery::Marker)
        } else if self.raw_oks.front().is_some_and(|&after| after <= oldest_n) {
            // Every line written before an out-of-band line is done: this
            // plain ok is that line's.
            self.raw_oks.pop_front();
            self.last_progress = now;
            return;
        } else {
            self.ack_through(now, oldest_n, Proof::Counted, Recovery::Marker)
        };
        let plain = acked == 1 && !was_busy && matches!(oldest_cost, Cost::Instant | Cost::Move(_));
        if plain {
            self.clock.sample(gap);
        }
        self.last_progress = now;
    }

    /// Acknowledges every line in flight up to and including `n`; returns how
    /// many. More than one means the oks of the others were lost.
    pub(super) fn ack_through(&mut self, now: Instant, n: u64, proof: Proof, by: Recovery) -> u64 {
        let mut count = 0;
        while self.queue.acked() <= n {
            let Some(line) = self.queue.ack_oldest() else {
                break;
            };
            count += 1;
            if self.stale.is_some_and(|s| line.n >= s.target) {
                // The printer handles bytes in order: it is past every stale line.
                self.stale = None;
            }
            self.on_acked(now, line, proof);
        }
        // The printer is past a line written after an out-of-band one: that
        // one's ok came (and was counted) or was lost.
        while self
            .raw_oks
            .front()
            .is_some_and(|&after| self.queue.acked() > after)
        {
            self.raw_oks.pop_front();
        }
        if count > 1 && proof != Proof::Inferred {
            self.stats.recovered_oks += count - 1;
            self.events.push_back(Event::Recovered {
                lines: count - 1,
                by,
            });
        }
        count
    }

    fn on_acked(&mut self, now: Instant, line: AckedLine, proof: Proof) {
        if self.firmware.acks_on_receipt() {
            // Its `ok` says the line is in the command buffer, not done: a
            // line is surely done once RECEIPT_WINDOW later ones were
            // acknowledged (no firmware buffers more).
            self.received.push_back(line.cost);
            if self.received.len() > RECEIPT_WINDOW {
                self.received.pop_front();
            }
        }
        match line.cost {
            Cost::Move(us) => self.planned.planned(now, us),
            Cost::Sync(_) if proof != Proof::Inferred => self.planned.clear(),
            _ => {}
        }
        if line.n >= self.acked_high {
            self.acked_high = line.n + 1;
            self.events.push_back(Event::Acked {
                line: line.n,
                kind: line.kind,
            });
        }
        if self.state == State::AwaitingFirmwareInfo && line.n >= self.handshake_last {
            self.continue_handshake(now);
        }
        self.check_proof(line.n, proof);
    }

    /// The job end waits for a proven ack of its proof line.
    fn check_proof(&mut self, n: u64, proof: Proof) {
        let Some(end) = self.job.end.as_mut() else {
            return;
        };
        if end.sync.is_none() {
            self.check_drained_end();
            return;
        }
        if n < end.proof_line {
            return;
        }
        let proven = match proof {
            Proof::Named => true,
            // A counted ok proves only where no marker could (the ok may
            // belong to an earlier line whose own ok was lost).
            Proof::Counted => !self.markers || self.firmware.acks_on_receipt(),
            Proof::Inferred => false,
        };
        if proven && self.firmware.acks_on_receipt() {
            end.awaiting_idle = true;
        } else if proven {
            self.complete_job();
        } else {
            self.resync();
        }
    }

    /// The proof line was counted done without proof: send the sync (and its
    /// marker) again; their oks come only after the first sync has run.
    fn resync(&mut self) {
        let Some(end) = self.job.end.as_mut() else {
            return;
        };
        end.resyncs += 1;
        if end.resyncs > 8 {
            self.job.end = None;
            self.fail(PrinterError::CompletionUnconfirmed);
            return;
        }
        let sync = end.sync.clone();
        let proof_line = self.push_proof(sync.as_deref());
        if let Some(end) = self.job.end.as_mut() {
            end.proof_line = proof_line;
        }
    }

    /// Repetier's `wait`: its command buffer is empty, everything it
    /// acknowledged on receipt has run.
    fn on_idle_wait(&mut self) {
        let idle_end = self.job.end.as_ref().is_some_and(|e| e.awaiting_idle);
        if idle_end && self.queue.in_flight_lines() == 0 {
            self.complete_job();
        }
    }

    pub(super) fn on_resend(&mut self, now: Instant, k: u64) {
        self.stats.resends += 1;
        self.last_progress = now;
        self.expect_resend_ok = self.resend_ok != Some(false);
        if let Some(stale) = self.stale.as_mut() {
            if stale.target == k && stale.lines > 0 {
                // The echo of a line sent before we rewound: already handled.
                stale.bytes -= stale.bytes / usize::try_from(stale.lines).unwrap_or(1).max(1);
                stale.lines -= 1;
                return;
            }
        }
        if k > self.queue.sent_high() {
            if self.state == State::AwaitingFirmwareInfo && self.handshakes < MAX_HANDSHAKES {
                // Our M110 was lost; the printer still counts from an old session.
                self.begin_handshake(now);
            } else {
                let next = self.queue.sent_high();
                self.fail(PrinterError::ResendAhead { line: k, next });
            }
            return;
        }
        if self.probe.take() == Some(Probe::Resend) {
            // The printer was quiet when probed: it has every line below k.
            self.timeouts_in_row = 0;
            if k > 0 {
                let through = k - 1;
                // Lines sent before the probe and below k count as in
                // flight first, so that all of them are counted done.
                if k > self.queue.send_next_line() && self.queue.rewind(k).is_none() {
                    return;
                }
                if self.queue.acked() <= through {
                    let lines = through + 1 - self.queue.acked();
                    self.ack_through(now, through, Proof::Inferred, Recovery::Probe);
                    self.stats.recovered_oks += lines;
                    self.events.push_back(Event::Recovered {
                        lines,
                        by: Recovery::Probe,
                    });
                }
            }
        }
        if k == self.resend_line {
            self.resend_count += 1;
            if self.resend_count > self.cfg.max_resends_per_line {
                self.fail(PrinterError::ResendLoop { line: k });
                return;
            }
        } else {
            self.resend_line = k;
            self.resend_count = 1;
        }
        let Some((lines, bytes)) = self.queue.rewind(k) else {
            let oldest = self.queue.first();
            self.fail(PrinterError::ResendOutOfHistory { line: k, oldest });
            return;
        };
        let first_len = self.queue.get(k).map_or(0, |e| e.len());
        self.stale = (lines > 1).then(|| {
            let stale_bytes = bytes.saturating_sub(first_len);
            Stale {
                target: k,
                lines: lines - 1,
                bytes: stale_bytes,
                until: now + self.wire_grace(stale_bytes),
            }
        });
        self.events.push_back(Event::Resend { line: k });
    }

    /// Repetier's `skip <n>`: line n was refused as one it has seen (a
    /// duplicate, e.g. our probe) or as garbage after a resend request. The
    /// `ok` that follows belongs to it.
    fn on_skip(&mut self, now: Instant, n: u64) {
        self.expect_skip_ok = true;
        self.last_progress = now;
        if let Some(stale) = self.stale.as_mut() {
            if n >= stale.target && stale.lines > 0 {
                stale.lines -= 1;
                return;
            }
        }
        // Repetier acknowledges on receipt, so a line it has seen is as good
        // as acknowledged (gcode.cpp: seen when last line - n < 40).
        if n >= self.queue.acked() && n < self.queue.sent_high() {
            if n >= self.queue.send_next_line() && self.queue.rewind(n + 1).is_none() {
                return;
            }
            self.probe = None;
            self.timeouts_in_row = 0;
            let lines = n + 1 - self.queue.acked();
            self.ack_through(now, n, Proof::Inferred, Recovery::Probe);
            self.stats.recovered_oks += lines;
            self.events.push_back(Event::Recovered {
                lines,
                by: Recovery::Probe,
            });
        }
    }
}
