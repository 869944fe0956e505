//! Lost oks: line-numbered oks, markers, probes, and the adaptive deadline.

use super::{line, Harness};
use crate::protocol::*;
use std::time::Duration;

const MARLIN_ADV: &str = "FIRMWARE_NAME:Marlin 2.1.2.4 (Github)\nCap:ADVANCED_OK:1\nok";
const MARLIN: &str = "FIRMWARE_NAME:Marlin 2.1.2.4 (Github)\nok";
const TEMPS_OK: &str = "ok T:20.0 /0.0 B:20.0 /0.0";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn recovered(h: &Harness) -> Vec<(u64, Recovery)> {
    h.events
        .iter()
        .filter_map(|e| match e {
            Event::Recovered { lines, by } => Some((*lines, *by)),
            _ => None,
        })
        .collect()
}

fn timeouts(h: &Harness) -> usize {
    h.events
        .iter()
        .filter(|e| matches!(e, Event::Timeout { .. }))
        .count()
}

#[test]
fn a_later_advanced_ok_proves_the_earlier_ok_lost() {
    let mut h = Harness::ready_as(Config::default(), MARLIN_ADV, "ok N2 P15 B3");
    assert!(!h.core.uses_markers(), "ADVANCED_OK needs no markers");
    h.queue(&["G1 X1", "G1 X2", "G1 X3"]);
    assert_eq!(h.sent().lines().count(), 3); // N3..N5
    h.reply("ok N4 P15 B2"); // the ok of N3 was lost
    assert_eq!(h.acked_jobs(), vec![0, 1]);
    assert_eq!(recovered(&h), vec![(1, Recovery::LineNumber)]);
    // A late ok for a line already counted changes nothing.
    h.reply("ok N3 P15 B2");
    assert_eq!(h.acked_jobs(), vec![0, 1]);
    assert_eq!(h.core.stats().unexpected_oks, 1);
    h.reply("ok N5 P15 B3");
    assert_eq!(h.acked_jobs(), vec![0, 1, 2]);
    assert_eq!(timeouts(&h), 0);
}

/// A fake printer step: answer every line sent so far, except the oks of
/// the job lines in `lose` (by line number).
fn answer_all(h: &mut Harness, lose: &[u64]) -> usize {
    let sent = h.sent();
    for l in sent.lines() {
        let n: u64 = l[1..l.find(' ').unwrap()].parse().unwrap();
        if lose.contains(&n) {
            continue;
        }
        if l.contains(" M105*") {
            h.reply(TEMPS_OK);
        } else {
            h.reply("ok");
        }
    }
    sent.lines().count()
}

#[test]
fn markers_find_a_lost_ok_without_waiting_for_a_time_out() {
    let mut h = Harness::ready_as(Config::default(), MARLIN, TEMPS_OK);
    assert!(h.core.uses_markers());
    let cmds: Vec<String> = (0..40).map(|i| format!("G1 X{i}")).collect();
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    h.queue(&refs);
    let mut rounds = 0;
    while answer_all(&mut h, &[7]) > 0 {
        rounds += 1;
        assert!(rounds < 100);
    }
    // Job line N7's ok was lost; the marker after the 32nd job line found it.
    assert_eq!(recovered(&h), vec![(1, Recovery::Marker)]);
    assert_eq!(h.acked_jobs(), (0..40).collect::<Vec<u64>>());
    assert_eq!(timeouts(&h), 0);
    assert_eq!(h.core.stats().recovered_oks, 1);
}

#[test]
fn the_deadline_adapts_to_the_ok_latency_within_its_bounds() {
    let cfg = Config {
        ack_timeout: Duration::from_secs(10),
        min_ack_timeout: ms(50),
        ..Config::default()
    };
    let mut h = Harness::ready(cfg);
    // Steady oks 5 ms apart teach the printer's pace.
    for i in 0..50 {
        h.core.queue_line("M117 x", LineKind::Job(i)).unwrap();
        h.sent();
        h.advance(ms(5));
        h.reply("ok");
    }
    h.queue(&["M117 y"]);
    h.sent(); // its ok is lost
    h.advance(ms(49));
    assert_eq!(timeouts(&h), 0);
    h.advance(ms(30));
    assert_eq!(
        timeouts(&h),
        1,
        "found in ~50 ms, not after ack_timeout (10 s)"
    );
}

#[test]
fn a_full_planner_holds_the_deadline_off_until_its_oldest_move_ends() {
    let cfg = Config {
        ack_timeout: Duration::from_secs(30),
        min_ack_timeout: ms(50),
        ..Config::default()
    };
    let mut h = Harness::ready(cfg);
    // 15 moves of 10 s (100 mm at 600 mm/min) fill Marlin's planner: their
    // oks come at once, as each is planned.
    for i in 0..15 {
        h.queue(&[if i % 2 == 0 { "G1 X100 F600" } else { "G1 X0" }]);
        h.sent();
        h.reply("ok");
    }
    // The next move's ok waits for room in the planner: no probe while the
    // oldest planned move can still be running (×1.5 for acceleration).
    h.queue(&["G1 X100"]);
    h.sent();
    h.advance(Duration::from_secs(14));
    assert_eq!(timeouts(&h), 0);
    h.advance(Duration::from_secs(2));
    assert_eq!(timeouts(&h), 1);
}

#[test]
fn with_room_in_the_planner_a_lost_ok_is_probed_after_the_round_trip() {
    let cfg = Config {
        ack_timeout: Duration::from_secs(30),
        min_ack_timeout: ms(50),
        ..Config::default()
    };
    let mut h = Harness::ready(cfg);
    // One long move planned: the planner has room, the next ok is prompt.
    h.queue(&["G1 X100 F600"]);
    h.sent();
    h.reply("ok");
    h.queue(&["G1 X0"]);
    h.sent();
    h.advance(Duration::from_secs(2));
    assert_eq!(timeouts(&h), 1, "not held off by the 10 s move");
}

#[test]
fn probes_back_off_exponentially_while_the_printer_stays_silent() {
    let cfg = Config {
        ack_timeout: Duration::from_secs(10),
        min_ack_timeout: ms(100),
        ..Config::default()
    };
    let mut h = Harness::ready(cfg);
    h.queue(&["M117 a"]);
    h.sent();
    let mut at = Vec::new();
    for step in 1..=40_000u64 {
        h.advance(ms(1));
        h.sent(); // the probe: the line again
        if timeouts(&h) > at.len() {
            at.push(step);
        }
        if at.len() == 5 {
            break;
        }
    }
    let gaps: Vec<u64> = at.windows(2).map(|w| w[1] - w[0]).collect();
    for pair in gaps.windows(2) {
        assert!(pair[1] >= pair[0] * 2 - 2, "no back-off: {at:?}");
    }
}

#[test]
fn without_line_checks_the_probe_is_a_marker_never_a_line_again() {
    let klipper = "ok FIRMWARE_NAME:Klipper FIRMWARE_VERSION:v0.12.0";
    let mut h = Harness::ready_as(Config::default(), klipper, TEMPS_OK);
    assert_eq!(h.core.firmware().kind, FirmwareKind::Klipper);
    assert!(!h.core.firmware().checks_line_numbers());
    h.queue(&["G1 X1", "G1 X2"]);
    h.sent();
    h.reply("ok"); // the ok of the second line is lost
    h.advance(Duration::from_secs(2));
    assert_eq!(timeouts(&h), 1);
    let probe = h.sent();
    assert_eq!(probe, line(5, "M105"), "a marker, not G1 X2 again");
    h.reply(TEMPS_OK);
    assert_eq!(h.acked_jobs(), vec![0, 1]);
    assert_eq!(recovered(&h), vec![(1, Recovery::Marker)]);
    assert!(h.core.is_drained());
}

#[test]
fn repetier_numbered_oks_and_skip_replies() {
    let repetier = "FIRMWARE_NAME:Repetier_1.0.4 COMPILED:Jan 1 2024 MACHINE_TYPE:Mendel\nok";
    let mut h = Harness::ready_as(Config::default(), repetier, "ok 2\nT:20.0 /0 B:20.0 /0");
    assert!(h.core.firmware().acks_on_receipt());
    assert!(!h.core.uses_markers());
    h.queue(&["G1 X1", "G1 X2", "G1 X3"]);
    h.sent(); // N3..N5
    h.reply("ok 4"); // N3's ok lost
    assert_eq!(recovered(&h), vec![(1, Recovery::LineNumber)]);
    // N5's ok is lost too, and nothing follows: the probe resends N5,
    // Repetier says it has seen it (`skip 5`) and an ok for the skip.
    h.advance(Duration::from_secs(2));
    assert_eq!(timeouts(&h), 1);
    assert_eq!(h.sent(), line(5, "G1 X3"));
    h.reply("skip 5");
    h.reply("ok");
    assert_eq!(h.acked_jobs(), vec![0, 1, 2]);
    assert_eq!(h.core.stats().swallowed_oks, 1);
    assert!(h.core.is_drained());
}

#[test]
fn the_resend_style_checked_at_connect_decides_which_ok_is_swallowed() {
    for resend_ok in [true, false] {
        let mut h = Harness::ready_styled(Config::default(), MARLIN, "ok", resend_ok);
        h.queue(&["G1 X1", "G1 X2"]);
        h.sent(); // N3, N4; N3 arrives damaged
        h.reply("Error:checksum mismatch, Last Line: 2");
        h.reply("Resend: 3");
        h.sent(); // N3 and N4 again
                  // The next ok: the resend request's own (swallowed) where the check
                  // found that style, else N3's.
        h.reply("ok");
        let swallowed = h.core.stats().swallowed_oks;
        assert_eq!(swallowed, u64::from(resend_ok), "resend_ok {resend_ok}");
        assert_eq!(h.acked_jobs().len() as u64, 1 - u64::from(resend_ok));
    }
}
