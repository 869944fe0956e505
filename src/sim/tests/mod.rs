//! Byte-for-byte tests of the sans-IO board, on simulated time: a harness
//! feeds bytes at chosen instants and reads what the board sent by then.
//! This file: framing, line checks, buffers, resets; `faults.rs`: the fault
//! knobs; `firmware.rs`: what commands do and how long they take.

mod faults;
mod firmware;
mod with_host;

use std::time::{Duration, Instant};

use super::gcode::xor_checksum;
use super::marlin::Marlin;
use super::{SimConfig, SimStats};

pub(super) const BANNER: &str =
    "start\necho:Marlin 2.1.2.4\necho: Last Updated: 2024-01-01 | Author: (printgate sim)\n\
echo:Compiled: Jan  1 2024\necho: Free Memory: 2048  PlannerBufferBytes: 1232\necho:SD card ok\n";

pub(super) struct Harness {
    board: Marlin,
    t0: Instant,
    now: Instant,
}

impl Harness {
    /// A board a host has just opened, banner already read.
    fn new(cfg: SimConfig) -> Self {
        let t0 = Instant::now();
        let mut h = Harness {
            board: Marlin::new(&cfg, t0),
            t0,
            now: t0,
        };
        h.board.handle_open(t0);
        assert_eq!(h.advance(Duration::from_millis(500)), BANNER); // 183 ms at 9600
        h.t0 = h.now;
        h
    }

    fn send(&mut self, text: &str) {
        self.board.handle_bytes(self.now, text.as_bytes());
    }

    /// Moves the clock by `d`, waking the board at each deadline on the way.
    fn advance(&mut self, d: Duration) -> String {
        let end = self.now + d;
        let mut out = String::new();
        while let Some(t) = self.board.poll_timeout().filter(|t| *t <= end) {
            self.now = t.max(self.now);
            self.board.handle_timeout(self.now);
            out += &self.read();
        }
        self.now = end;
        self.board.handle_timeout(end);
        out + &self.read()
    }

    /// Everything the board has finished sending by now.
    fn read(&mut self) -> String {
        let mut buf = Vec::new();
        while self.board.poll_transmit(self.now, &mut buf) {}
        String::from_utf8(buf).unwrap()
    }

    fn log(&mut self) -> String {
        let mut buf = Vec::new();
        let _ = self.board.poll_log(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    fn stats(&self) -> SimStats {
        self.board.stats().clone()
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }
}

/// `N<n> <cmd>*<xor>\n`.
pub(super) fn framed(n: i64, cmd: &str) -> String {
    let body = format!("N{n} {cmd}");
    format!("{body}*{}\n", xor_checksum(body.as_bytes()))
}

/// Marlin 1.1: `Resend:` is followed by `ok` (FlushSerialRequestResend).
pub(super) fn marlin_1() -> SimConfig {
    SimConfig {
        resend_ok: true,
        ..SimConfig::default()
    }
}

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn checksum_vectors_are_accepted() {
    let mut h = Harness::new(SimConfig::default());
    h.send("N0 M110 N0*125\n");
    assert_eq!(h.read(), "ok\n");
    h.send("N1 M115*39\n");
    let m115 = h.read();
    assert!(m115.starts_with("FIRMWARE_NAME:Marlin 2.1.2.4 (printgate sim) SOURCE_CODE_URL:github.com/MarlinFirmware/Marlin PROTOCOL_VERSION:1.0 MACHINE_TYPE:printgate-sim EXTRUDER_COUNT:1 UUID:"));
    for cap in [
        "Cap:AUTOREPORT_TEMP:1\n",
        "Cap:EMERGENCY_PARSER:1\n",
        "Cap:ADVANCED_OK:0\n",
        "Cap:EEPROM:0\n",
    ] {
        assert!(m115.contains(cap), "{cap} missing from {m115}");
    }
    assert!(m115.ends_with("\nok\n"));
    h.send("M110 N48\n");
    assert_eq!(h.read(), "ok\n");
    h.send("N49 M105*26\n");
    assert_eq!(h.read(), "ok T:21.00 /0.00 B:21.00 /0.00 @:0 B@:0\n");
    assert_eq!(h.stats().errors, 0);
}

#[test]
fn each_line_error_has_its_text_resend_and_ok() {
    let mut h = Harness::new(marlin_1());
    h.send("N1 M115*38\n");
    assert_eq!(
        h.read(),
        "Error:checksum mismatch, Last Line: 0\nResend: 1\nok\n"
    );
    h.send("N1 M115\n");
    assert_eq!(
        h.read(),
        "Error:No Checksum with line number, Last Line: 0\nResend: 1\nok\n"
    );
    h.send(&framed(2, "M105"));
    assert_eq!(
        h.read(),
        "Error:Line Number is not Last Line Number+1, Last Line: 0\nResend: 1\nok\n"
    );
    h.send("M105*5\n");
    assert_eq!(
        h.read(),
        "Error:No Line Number with checksum, Last Line: 0\n"
    );
    h.send(&framed(1, "G90"));
    assert_eq!(h.read(), "ok\n");
    // A duplicate of an executed line: rejected, resend of the next one.
    h.send(&framed(1, "G90"));
    assert_eq!(
        h.read(),
        "Error:Line Number is not Last Line Number+1, Last Line: 1\nResend: 2\nok\n"
    );
    let s = h.stats();
    assert_eq!((s.errors, s.resends, s.executed), (5, 4, 1));
}

#[test]
fn marlin_2_sends_no_ok_after_resend() {
    let mut h = Harness::new(SimConfig::default());
    h.send("N1 M115*38\n");
    assert_eq!(
        h.read(),
        "Error:checksum mismatch, Last Line: 0\nResend: 1\n"
    );
}

#[test]
fn an_error_flushes_the_rx_buffer_but_not_the_wire() {
    // Unpaced: the whole write is in the RX buffer at once, so it is flushed.
    let mut h = Harness::new(marlin_1());
    h.send(&format!(
        "N1 G90*0\n{}{}",
        framed(2, "G90"),
        framed(3, "G90")
    ));
    assert_eq!(
        h.read(),
        "Error:checksum mismatch, Last Line: 0\nResend: 1\nok\n"
    );
    assert_eq!(h.stats().executed, 0);

    // Paced: later lines were still on the wire; each gets its own error.
    let mut h = Harness::new(SimConfig {
        baud: 115_200,
        ..marlin_1()
    });
    h.send(&format!("N1 G90*0\n{}", framed(2, "G90")));
    let out = h.advance(ms(100));
    assert_eq!(
        out,
        "Error:checksum mismatch, Last Line: 0\nResend: 1\nok\n\
         Error:Line Number is not Last Line Number+1, Last Line: 0\nResend: 1\nok\n"
    );
}

#[test]
fn m110_resets_the_counter() {
    let mut h = Harness::new(SimConfig::default());
    h.send(&framed(1, "G90"));
    h.send(&framed(2, "G90"));
    h.send(&framed(-1, "M110 N-1"));
    h.send(&framed(0, "G91"));
    assert_eq!(h.read(), "ok\nok\nok\nok\n");
    h.send(&framed(7, "M110"));
    h.send(&framed(8, "G90"));
    assert_eq!(h.read(), "ok\nok\n");
}

#[test]
fn unknown_commands_get_an_echo_and_ok() {
    let mut h = Harness::new(SimConfig::default());
    h.send("M999 S1\n");
    assert_eq!(h.read(), "echo:Unknown command: \"M999 S1\"\nok\n");
    h.send("\n\r\n   \n");
    assert_eq!(h.read(), "", "blank lines get no ok");
    h.send("G1 X1 ; comment\n");
    assert_eq!(h.read(), "ok\n");
}

#[test]
fn the_log_has_commands_exactly_as_executed() {
    let cfg = SimConfig {
        received_log: Some("/dev/null".into()),
        ..SimConfig::default()
    };
    let mut h = Harness::new(cfg);
    h.send(&framed(1, "G1 X10 F3000"));
    h.send("M105\n");
    h.send("N2 G1 X11*0\n"); // rejected: not logged
    h.send(&framed(2, "M106 S255"));
    assert_eq!(h.log(), "G1 X10 F3000\nM105\nM106 S255\n");
}

#[test]
fn rx_overflow_drops_bytes_while_a_slow_command_blocks_the_queue() {
    let mut h = Harness::new(SimConfig::default());
    h.send("G4 P1000\n");
    h.send("M105\nM105\nM105\n"); // the queue (4 slots) is now full
    assert_eq!(h.read(), "");
    let burst = "G1 X1\n".repeat(30); // 180 bytes into a 128-byte buffer
    h.send(&burst);
    assert_eq!(h.stats().dropped_rx_bytes, 180 - 128);
    assert_eq!(h.advance(ms(999)), "");
    let out = h.advance(ms(1));
    // G4, three M105, then the 21 whole lines that fit (126 bytes); the
    // partial 22nd line is completed by the start of the dropped bytes.
    assert_eq!(out.matches("ok").count(), 1 + 3 + 21, "{out}");
    assert_eq!(h.stats().executed, 25);
}

#[test]
fn m112_halts_at_reception_even_with_a_full_queue() {
    let mut h = Harness::new(SimConfig::default());
    h.send("G4 P1000\nG4 P1000\nG4 P1000\nG4 P1000\n");
    h.send(&"G1 X2\n".repeat(30)); // RX full, bytes dropping
    h.send("M112\n");
    assert_eq!(h.read(), "Error:Printer halted. kill() called!\n");
    h.send("M105\n");
    assert_eq!(h.advance(ms(5000)), "", "halted: input ignored");
    assert_eq!(h.stats().executed, 0);
    h.board.handle_open(h.now);
    assert_eq!(h.read(), BANNER);
    h.send(&framed(1, "M105"));
    assert_eq!(h.read(), "ok T:21.00 /0.00 B:21.00 /0.00 @:0 B@:0\n");
}

#[test]
fn numbered_m112_also_kills() {
    let mut h = Harness::new(SimConfig::default());
    h.send(&framed(1, "M112"));
    assert_eq!(h.read(), "Error:Printer halted. kill() called!\n");
}

#[test]
fn paced_wire_delays_arrival_and_replies() {
    let mut h = Harness::new(SimConfig {
        baud: 115_200,
        ..SimConfig::default()
    });
    h.send("G90\n"); // 4 bytes in (347.2 µs), "ok\n" out (260.4 µs)
    assert_eq!(h.advance(Duration::from_micros(607)), "");
    assert_eq!(h.advance(Duration::from_micros(1)), "ok\n");
}

#[test]
fn reopening_resets_the_line_counter_and_queue() {
    let mut h = Harness::new(SimConfig::default());
    h.send(&framed(1, "G90"));
    h.send("G4 P1000\nG90\n");
    assert_eq!(h.read(), "ok\n");
    h.board.handle_open(h.now);
    assert_eq!(h.read(), BANNER);
    h.send(&framed(1, "G90"));
    assert_eq!(h.advance(ms(2000)), "ok\n");
    assert_eq!(h.stats().opens, 2);
}

#[test]
fn a_line_longer_than_max_cmd_size_is_truncated() {
    let mut h = Harness::new(marlin_1());
    // The `*` falls past character 95, so the truncated line has no checksum.
    let long = framed(1, &format!("M117 {}", "x".repeat(100)));
    h.send(&long);
    assert_eq!(
        h.read(),
        "Error:No Checksum with line number, Last Line: 0\nResend: 1\nok\n"
    );
    let fits = framed(1, &format!("M117 {}", "y".repeat(80)));
    assert!(fits.len() <= 96);
    h.send(&fits);
    assert_eq!(h.read(), "ok\n");
}

#[test]
fn reopening_a_paced_port_starts_an_idle_wire() {
    let mut h = Harness::new(SimConfig {
        baud: 9600,
        ..SimConfig::default()
    });
    h.send(&"G4 P0\n".repeat(20)); // 120 bytes: 125 ms on the wire
    h.board.handle_open(h.now);
    let banner = h.advance(ms(200));
    assert_eq!(banner, BANNER, "bytes in flight are lost in the reboot");
    h.send("G90\n"); // 4 bytes in, 3 out: 7.3 ms
    assert_eq!(h.advance(ms(7)), "");
    assert_eq!(h.advance(ms(1)), "ok\n");
}
