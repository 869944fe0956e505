//! Byte-for-byte tests of the host protocol with a quinn-style harness:
//! `expect_sent`, `reply`, `advance`. This file: framing, windows, resends,
//! handshake; `recovery.rs`: lost oks and the adaptive deadline;
//! `dialects.rs`: other firmwares, pauses, prompts, the end of a job.

mod dialects;
mod recovery;

use super::*;
use std::time::{Duration, Instant};

/// Where a test's clock starts (the core never reads a clock itself).
pub(super) fn start() -> Instant {
    Instant::now()
}

pub(super) struct Harness {
    pub(super) core: HostProtocol,
    pub(super) now: Instant,
    pub(super) events: Vec<Event>,
}

impl Harness {
    pub(super) fn new(cfg: Config) -> Self {
        let now = start();
        Harness {
            core: HostProtocol::new(cfg, now),
            now,
            events: Vec::new(),
        }
    }

    /// A printer past its handshake (no autoreport, no advanced ok, an
    /// `M105` answered with a plain `ok`: no markers). Job lines start at N3.
    pub(super) fn ready(cfg: Config) -> Self {
        Harness::ready_as(cfg, "FIRMWARE_NAME:TestFirmware 1.0\nok", "ok")
    }

    /// The handshake with a given answer to `M115` (its `ok` included) and
    /// to the `M105` ping.
    pub(super) fn ready_as(cfg: Config, m115: &str, ping: &str) -> Self {
        Harness::ready_styled(cfg, m115, ping, true)
    }

    /// Also says how the printer answers the resend-style check (a line
    /// with a bad checksum): with an `ok` after `Resend:` or without.
    pub(super) fn ready_styled(cfg: Config, m115: &str, ping: &str, resend_ok: bool) -> Self {
        let mut h = Harness::new(cfg);
        h.reply("start");
        h.expect_sent("N0 M110 N0*125\n");
        h.reply("ok");
        h.expect_sent("N1 M115*39\n");
        h.reply(m115);
        let out = h.sent();
        if out != line(2, "M105") {
            assert!(out.starts_with("N2 M105*"), "style check expected: {out:?}");
            h.reply("Error:checksum mismatch, Last Line: 1");
            h.reply("Resend: 2");
            if resend_ok {
                h.reply("ok");
            } else {
                h.advance(Duration::from_millis(200));
            }
            h.expect_sent(&line(2, "M105"));
        }
        h.reply(ping);
        assert!(h.core.is_ready());
        h.events.clear();
        h
    }

    pub(super) fn sent(&mut self) -> String {
        let mut buf = Vec::new();
        let _ = self.core.poll_transmit(self.now, &mut buf);
        self.drain();
        String::from_utf8(buf).unwrap()
    }
    pub(super) fn expect_sent(&mut self, want: &str) {
        assert_eq!(self.sent(), want);
    }
    pub(super) fn reply(&mut self, line: &str) {
        self.core
            .handle_bytes(self.now, format!("{line}\n").as_bytes());
        self.drain();
    }
    pub(super) fn advance(&mut self, d: Duration) {
        self.now += d;
        self.core.handle_timeout(self.now);
        self.drain();
    }
    pub(super) fn drain(&mut self) {
        while let Some(e) = self.core.poll_event() {
            self.events.push(e);
        }
    }
    pub(super) fn queue(&mut self, cmds: &[&str]) {
        for (i, c) in cmds.iter().enumerate() {
            self.core.queue_line(c, LineKind::Job(i as u64)).unwrap();
        }
    }
    pub(super) fn acked_jobs(&self) -> Vec<u64> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Acked {
                    kind: LineKind::Job(t),
                    ..
                } => Some(*t),
                _ => None,
            })
            .collect()
    }
}

pub(super) fn line(n: u64, cmd: &str) -> String {
    let mut v = Vec::new();
    line::frame(n, cmd, &mut v);
    String::from_utf8(v).unwrap()
}

pub(super) const MOVE: &str = "G1 X100.123 Y100.456 E12.34567 F1800"; // 36 bytes

#[test]
fn handshake_with_autoreport_and_capabilities() {
    let mut h = Harness::new(Config::default());
    h.expect_sent("");
    h.reply("start");
    h.reply("echo:Marlin 2.1.2");
    h.expect_sent("N0 M110 N0*125\n");
    h.expect_sent(""); // one line at a time during the handshake
    h.reply("ok");
    h.expect_sent("N1 M115*39\n");
    h.reply(
        "FIRMWARE_NAME:Marlin 2.1.2.4 (Github) SOURCE_CODE_URL:github.com/MarlinFirmware/Marlin",
    );
    h.reply("Cap:AUTOREPORT_TEMP:1");
    h.reply("Cap:EMERGENCY_PARSER:1");
    h.reply("ok");
    h.expect_sent(&line(2, "M155 S2"));
    assert!(!h.core.is_ready());
    h.reply("ok");
    // The resend-style check: the next number with a wrong checksum.
    let check = h.sent();
    assert!(
        check.starts_with("N3 M105*") && check != line(3, "M105"),
        "{check}"
    );
    h.reply("Error:checksum mismatch, Last Line: 2");
    h.reply("Resend: 3"); // and no ok: Marlin 2.x style
    h.advance(Duration::from_millis(200));
    // The ping: its ok carries the temperatures, so M105 can be a marker.
    h.expect_sent(&line(3, "M105"));
    h.reply("ok T:21.0 /0.0 B:21.0 /0.0");
    assert!(h.core.is_ready());
    assert!(h.core.uses_markers());
    let fw = h.events.iter().find_map(|e| match e {
        Event::Ready(fw) => Some(fw.clone()),
        _ => None,
    });
    let fw = fw.expect("ready");
    assert_eq!(fw.name, "Marlin 2.1.2.4 (Github)");
    assert!(fw.autoreport_temp && fw.emergency_parser && !fw.advanced_ok);
}

#[test]
fn boot_timeout_starts_handshake_without_banner() {
    let mut h = Harness::new(Config::default());
    h.advance(Duration::from_secs(2));
    h.expect_sent("");
    h.advance(Duration::from_secs(1));
    h.expect_sent("N0 M110 N0*125\n");
}

#[test]
fn window_is_bounded_by_rx_buffer_bytes() {
    let mut h = Harness::ready(Config::default());
    h.queue(&[MOVE; 8]);
    let first = h.sent();
    // Framed, each is 44 bytes: two fit in the 127-byte budget, three would not.
    assert_eq!(first, line(3, MOVE) + &line(4, MOVE));
    assert_eq!(h.core.stats().lines_sent, 3 + 2);
    h.reply("ok");
    assert_eq!(h.sent(), line(5, MOVE));
    assert_eq!(h.acked_jobs(), vec![0]);
}

#[test]
fn short_lines_are_bounded_by_command_slots() {
    let mut h = Harness::ready(Config::default());
    h.queue(&["G1 X1"; 8]);
    assert_eq!(h.sent().lines().count(), 4);
    h.reply("ok");
    assert_eq!(h.sent().lines().count(), 1);
}

#[test]
fn ping_pong_keeps_one_line_in_flight() {
    let mut h = Harness::ready(Config {
        ping_pong: true,
        ..Config::default()
    });
    h.queue(&["G1 X1", "G1 X2"]);
    assert_eq!(h.sent(), line(3, "G1 X1"));
    h.expect_sent("");
    h.reply("ok");
    assert_eq!(h.sent(), line(4, "G1 X2"));
}

#[test]
fn resend_with_trailing_ok_rewinds_once_and_ignores_stale_repeats() {
    let mut h = Harness::ready(Config::default());
    h.queue(&["G1 X1", "G1 X2", "G1 X3", "G1 X4", "G1 X5"]);
    assert_eq!(h.sent().lines().count(), 4); // N3..N6
    h.reply("ok"); // N3 done
    h.reply("Error:checksum mismatch, Last Line: 3");
    h.reply("Resend: 4");
    h.reply("ok"); // belongs to the refused line: not an ack
    assert_eq!(h.core.stats().swallowed_oks, 1);
    // N4 resent; the stale N5, N6 still count against the window.
    let resent = h.sent();
    assert_eq!(
        resent,
        line(4, "G1 X2") + &line(5, "G1 X3") + &line(6, "G1 X4") + &line(7, "G1 X5")
    );
    // The stale N5 and N6 arrive and are refused too: ignored.
    for _ in 0..2 {
        h.reply("Error:Line Number is not Last Line Number+1, Last Line: 3");
        h.reply("Resend: 4");
        h.reply("ok");
    }
    let rewinds = h
        .events
        .iter()
        .filter(|e| matches!(e, Event::Resend { .. }))
        .count();
    assert_eq!(rewinds, 1);
    h.reply("ok"); // N4
    h.reply("ok"); // N5
    h.reply("ok"); // N6
    h.reply("ok"); // N7
    assert_eq!(h.acked_jobs(), vec![0, 1, 2, 3, 4]);
}

#[test]
fn resend_without_trailing_ok_does_not_swallow_a_real_ok() {
    let mut h = Harness::ready(Config {
        ping_pong: true,
        ..Config::default()
    });
    h.queue(&["G1 X1", "G1 X2"]);
    h.expect_sent(&line(3, "G1 X1"));
    h.reply("rs 3");
    h.expect_sent(&line(3, "G1 X1"));
    h.reply("Error:Unknown thing"); // not an ok: this resend had none
    h.reply("ok");
    assert_eq!(h.acked_jobs(), vec![0]);
    assert_eq!(h.core.stats().swallowed_oks, 0);
}

#[test]
fn lost_ok_is_recovered_by_probing_with_the_oldest_line() {
    let cfg = Config {
        ack_timeout: Duration::from_millis(500),
        min_ack_timeout: Duration::from_millis(500),
        ..Config::default()
    };
    let mut h = Harness::ready(cfg);
    h.queue(&["G1 X1", "G1 X2"]);
    h.sent(); // N3, N4
    h.reply("ok"); // the ok for N4 is lost
    h.advance(Duration::from_millis(499));
    h.expect_sent("");
    h.advance(Duration::from_millis(1));
    assert!(h.events.contains(&Event::Timeout { line: 4 }));
    h.expect_sent(&line(4, "G1 X2"));
    h.reply("Error:Line Number is not Last Line Number+1, Last Line: 4");
    h.reply("Resend: 5");
    h.reply("ok");
    assert_eq!(h.acked_jobs(), vec![0, 1]);
    assert!(h.core.is_drained());
}

#[test]
fn silence_after_probes_fails_with_no_response() {
    let cfg = Config {
        ack_timeout: Duration::from_secs(1),
        max_timeouts: 2,
        ..Config::default()
    };
    let mut h = Harness::ready(cfg);
    h.queue(&["G1 X1"]);
    h.sent();
    for _ in 0..3 {
        h.advance(Duration::from_secs(1));
        h.sent();
    }
    assert!(h
        .events
        .iter()
        .any(|e| matches!(e, Event::Failed(PrinterError::NoResponse { .. }))));
    assert!(h.core.is_halted());
}

#[test]
fn long_commands_and_busy_extend_the_timeout() {
    let cfg = Config {
        ack_timeout: Duration::from_secs(1),
        busy_timeout: Duration::from_secs(3),
        long_command_timeout: Duration::from_secs(60),
        ..Config::default()
    };
    let mut h = Harness::ready(cfg);
    h.queue(&["G28"]);
    h.sent();
    h.advance(Duration::from_secs(59));
    assert_eq!(h.core.stats().timeouts, 0);
    h.reply("ok");
    h.queue(&["G1 X1"]);
    h.sent();
    h.reply("echo:busy: processing");
    h.advance(Duration::from_secs(2));
    assert_eq!(h.core.stats().timeouts, 0);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.core.stats().timeouts, 1);
}

#[test]
fn reset_mid_job_fails_and_stops_streaming() {
    let mut h = Harness::ready(Config::default());
    h.core.set_job_active(true);
    h.queue(&["G1 X1", "G1 X2"]);
    h.sent();
    h.reply("start");
    assert!(h
        .events
        .contains(&Event::Failed(PrinterError::ResetMidPrint)));
    h.reply("ok");
    h.queue(&["G1 X3"]);
    h.expect_sent("");
}

#[test]
fn reset_while_idle_redoes_the_handshake() {
    let mut h = Harness::ready(Config::default());
    h.reply("start");
    assert!(h.events.contains(&Event::Reset));
    h.expect_sent("N0 M110 N0*125\n");
}

#[test]
fn fatal_printer_error_halts() {
    let mut h = Harness::ready(Config::default());
    h.reply("Error:Printer halted. kill() called!");
    assert!(matches!(
        h.events.last(),
        Some(Event::Failed(PrinterError::Halted(_)))
    ));
    assert_eq!(h.core.poll_timeout(), None);
}

#[test]
fn emergency_stop_goes_first_and_unnumbered() {
    let mut h = Harness::ready(Config::default());
    h.queue(&["G1 X1"; 6]);
    h.sent();
    h.queue(&["G1 X2"]);
    h.core.emergency_stop();
    h.expect_sent("\nM112\n");
    assert!(h
        .events
        .contains(&Event::Failed(PrinterError::EmergencyStop)));
}

#[test]
fn cancel_drops_unsent_lines_and_turns_heaters_off() {
    let mut h = Harness::ready(Config {
        ping_pong: true,
        ..Config::default()
    });
    h.queue(&["G1 X1", "G1 X2", "G1 X3"]);
    h.expect_sent(&line(3, "G1 X1"));
    h.core.cancel();
    h.reply("ok");
    h.expect_sent(&line(4, "M104 S0"));
    h.reply("ok");
    h.expect_sent(&line(5, "M140 S0"));
}

#[test]
fn cancel_after_failure_sends_safety_commands_unnumbered() {
    let mut h = Harness::ready(Config::default());
    h.reply("Error:Printer halted. kill() called!");
    h.core.cancel();
    h.expect_sent("M104 S0\nM140 S0\nM107\nM84\n");
}

#[test]
fn advanced_ok_raises_the_slot_limit() {
    let mut h = Harness::ready(Config::default());
    h.queue(&["G1 X1"; 12]);
    assert_eq!(h.sent().lines().count(), 4);
    h.reply("ok N3 P15 B7");
    assert!(h.core.firmware().advanced_ok);
    assert_eq!(h.sent().lines().count(), 5); // 8 slots learned, 3 in flight
}

#[test]
fn temperatures_and_actions_are_reported() {
    let mut h = Harness::ready(Config::default());
    h.reply(" T:201.3 /210.0 B:59.0 /60.0 @:127 B@:0 W:?");
    h.reply("//action:out_of_filament T0");
    assert!(h
        .events
        .iter()
        .any(|e| matches!(e, Event::Temps(t) if t.nozzle == Some(201.3))));
    assert!(h
        .events
        .contains(&Event::Action("out_of_filament T0".into())));
}

#[test]
fn temperature_poll_without_autoreport() {
    let mut h = Harness::ready(Config::default());
    h.advance(Duration::from_secs(5));
    h.expect_sent(&line(3, "M105"));
}

#[test]
fn resend_of_an_unsent_line_fails_cleanly() {
    let mut h = Harness::ready(Config::default());
    h.reply("Resend: 99");
    assert!(matches!(
        h.events.last(),
        Some(Event::Failed(PrinterError::ResendAhead { line: 99, .. }))
    ));
}

#[test]
fn any_chunking_of_replies_gives_the_same_result() {
    let script = b"ok\nok T:20.0 /0.0 B:21.0 /0.0\r\nResend: 4\nok\nok\nok\n";
    let mut reference = None;
    for chunk in 1..script.len() {
        let mut h = Harness::ready(Config::default());
        h.queue(&["G1 X1", "G1 X2", "G1 X3"]);
        h.sent();
        for part in script.chunks(chunk) {
            h.core.handle_bytes(h.now, part);
        }
        h.drain();
        let got = (h.acked_jobs(), h.sent());
        if let Some(r) = &reference {
            assert_eq!(&got, r, "chunk size {chunk}");
        } else {
            reference = Some(got);
        }
    }
}
