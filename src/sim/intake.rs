//! Moving received lines from the RX buffer into the command queue, with
//! each firmware's line check and its answer to a bad line. No I/O.
//!
//! - Marlin `gcode/queue.cpp` `get_serial_commands`, Prusa `cmdqueue.cpp`
//!   `get_command`: number, checksum, missing checksum; an error flushes
//!   the RX buffer and asks for `Resend: <last+1>` (Marlin 1.x, Prusa: then
//!   `ok`). Without an emergency parser, `M112` acts as the line is read.
//! - Repetier `gcode.cpp` `checkAndPushCommand`: `ok <n>` when a line is
//!   stored; a line seen in the last 40 gets `skip <n>` + `ok`; a missing
//!   line asks `Resend:<n>` + `ok` and the next 14 wrong lines are skipped.
//! - RepRapFirmware `StringParser.cpp` `LineFinished`: a bad checksum drops
//!   the line without a word; numbers are not checked.
//! - Klipper `gcode.py`: `N<n>` and `*<sum>` are skipped, nothing checked;
//!   `M112` acts when read (`GCodeIO._process_data`).

use std::time::Instant;

use super::faults::corrupt_line;
use super::gcode::{check_line, strtol, xor_checksum, Command, LineError, MAX_LINE};
use super::marlin::{Marlin, Queued};
use super::profile::LineCheck;

impl Marlin {
    /// `get_serial_commands`: moves complete lines from RX into the queue.
    pub(super) fn read_serial(&mut self, t: Instant) {
        while !self.halted && self.queue.len() < self.slots {
            let Some(b) = self.rx.pop_front() else { break };
            if b == b'\n' || b == b'\r' {
                let line = std::mem::take(&mut self.line);
                self.skipping = false;
                self.on_line(t, line);
            } else if !self.skipping {
                if b == b';' {
                    self.skipping = true;
                } else {
                    self.line.push(b);
                    self.skipping = self.line.len() >= MAX_LINE;
                }
            }
        }
    }

    fn on_line(&mut self, t: Instant, mut line: Vec<u8>) {
        if line.iter().any(|&b| b != b' ') {
            // Klipper's pty does not corrupt: the fault applies to a wire.
            if self.profile.check != LineCheck::Nothing && self.rng.chance(self.corrupt) {
                corrupt_line(&mut self.rng, &mut line);
                self.stats.corrupted += 1;
            }
            match self.profile.check {
                LineCheck::Marlin | LineCheck::Prusa => self.check_marlin(t, &line),
                LineCheck::Repetier => self.check_repetier(t, &line),
                LineCheck::ChecksumOnly => self.check_checksum_only(t, &line),
                LineCheck::Nothing => self.accept(t, strip_framing(&line), None, true),
            }
        }
        line.clear();
        if self.line.capacity() < line.capacity() {
            self.line = line; // keep the allocation
        }
    }

    fn check_marlin(&mut self, t: Instant, line: &[u8]) {
        match check_line(line, self.last_n) {
            Ok(None) => {}
            Ok(Some(accepted)) => {
                if let Some(n) = accepted.new_last {
                    self.last_n = n;
                }
                let text = accepted.command.to_vec();
                self.accept(t, &text, accepted.number, true);
            }
            Err(e) => self.line_error(t, e),
        }
    }

    /// Queues a checked command; acts at once on what the firmware handles
    /// as it reads (`M112` without an emergency parser).
    fn accept(&mut self, t: Instant, command: &[u8], number: Option<i64>, from_host: bool) {
        let cmd = Command::parse(command);
        let code = cmd.filter(|c| c.letter == b'M').map(|c| c.code);
        if code == Some(112) && !self.profile.emergency_parser {
            return self.kill(t);
        }
        self.queue.push_back(Queued {
            number,
            text: command.to_vec(),
            from_host,
        });
    }

    /// `gcode_line_error`: report, flush RX, ask for the next line again.
    fn line_error(&mut self, t: Instant, e: LineError) {
        self.stats.errors += 1;
        self.tx.line(
            t,
            &format!("Error:{}, Last Line: {}", e.message(), self.last_n),
        );
        // Prusa asks for a resend after every kind of line error.
        if e.requests_resend() || self.profile.check == LineCheck::Prusa {
            self.rx.clear();
            self.line.clear();
            self.skipping = false;
            self.request_resend(t);
        }
    }

    fn request_resend(&mut self, t: Instant) {
        self.stats.resends += 1;
        let line = format!(
            "{}{}",
            self.profile.resend_prefix,
            self.last_n.saturating_add(1)
        );
        self.tx.line(t, &line);
        if self.resend_ok {
            self.tx.line(t, "ok");
        }
    }

    fn check_repetier(&mut self, t: Instant, line: &[u8]) {
        let body_end = line.iter().rposition(|&b| b == b'*');
        let numbered = line.first() == Some(&b'N');
        if numbered {
            let Some(star) = body_end else {
                return self.repetier_resend(t);
            };
            let body = line.get(..star).unwrap_or_default();
            let sum = strtol(line.get(star + 1..).unwrap_or_default());
            if sum != i64::from(xor_checksum(body)) {
                self.stats.errors += 1;
                self.tx.line(t, "Error:Wrong checksum");
                return self.repetier_resend(t);
            }
        }
        let command = strip_framing(line);
        let n = numbered.then(|| strtol(line.get(1..).unwrap_or_default()));
        let is_m110 = Command::parse(command).is_some_and(|c| c.letter == b'M' && c.code == 110);
        if let (Some(n), false) = (n, is_m110) {
            if (self.last_n + 1) & 0xffff != n & 0xffff {
                let seen = (self.last_n - n) & 0xffff;
                if seen < 40 {
                    // A line it has: a repeated resend.
                    self.tx.line(t, &format!("skip {n}"));
                    self.tx.line(t, "ok");
                } else if self.waiting_for_resend < 0 {
                    self.repetier_resend(t);
                } else {
                    self.waiting_for_resend -= 1;
                    self.tx.line(t, &format!("skip {n}"));
                    self.tx.line(t, "ok");
                }
                return;
            }
        }
        if let Some(n) = n {
            self.last_n = n;
        }
        self.waiting_for_resend = -1;
        self.accept(t, command, n, true);
        // ACK_WITH_LINENUMBER: `ok <n>` on receipt (plain for M110).
        if self.lose_ok(t, n) {
            return;
        }
        match n {
            Some(n) if !is_m110 => self.tx.line(t, &format!("ok {n}")),
            _ => self.tx.line(t, "ok"),
        }
    }

    fn repetier_resend(&mut self, t: Instant) {
        self.rx.clear();
        self.line.clear();
        self.skipping = false;
        self.waiting_for_resend = 14;
        self.request_resend(t);
    }

    /// RepRapFirmware: a bad checksum, and the line is gone without a word.
    fn check_checksum_only(&mut self, t: Instant, line: &[u8]) {
        if line.first() == Some(&b'N') {
            if let Some(star) = line.iter().rposition(|&b| b == b'*') {
                let body = line.get(..star).unwrap_or_default();
                let sum = strtol(line.get(star + 1..).unwrap_or_default());
                if sum != i64::from(xor_checksum(body)) {
                    self.stats.errors += 1;
                    return;
                }
            }
        }
        let command = strip_framing(line).to_vec();
        self.accept(t, &command, None, true);
    }
}

/// The command without `N<n> ` in front and `*<sum>` behind.
fn strip_framing(line: &[u8]) -> &[u8] {
    let line = match line.iter().rposition(|&b| b == b'*') {
        Some(star) => line.get(..star).unwrap_or_default(),
        None => line,
    };
    let start = line.iter().position(|&b| b != b' ').unwrap_or(line.len());
    let line = line.get(start..).unwrap_or_default();
    if line.first() != Some(&b'N') {
        return line;
    }
    let digits = line
        .iter()
        .skip(1)
        .take_while(|b| b.is_ascii_digit() || **b == b'-')
        .count();
    let rest = line.get(1 + digits..).unwrap_or_default();
    let spaces = rest.iter().take_while(|&&b| b == b' ').count();
    rest.get(spaces..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::strip_framing;

    #[test]
    fn framing_is_stripped() {
        assert_eq!(strip_framing(b"N12 G1 X1*33"), b"G1 X1");
        assert_eq!(strip_framing(b"  M105"), b"M105");
        assert_eq!(strip_framing(b"N-1 M110 N-1*97"), b"M110 N-1");
    }
}
