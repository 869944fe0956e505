//! The firmware side: ADVANCED_OK counters, the planner, heating waits,
//! dwell/homing keep-alives and temperature autoreport.

use super::{framed, ms, Harness};
use crate::sim::SimConfig;

#[test]
fn advanced_ok_reports_line_planner_and_queue() {
    let cfg = SimConfig {
        advanced_ok: true,
        motion_time_scale: 1.0,
        ..SimConfig::default()
    };
    let mut h = Harness::new(cfg);
    h.send(&framed(1, "G90"));
    assert_eq!(h.read(), "ok N1 P15 B3\n");
    h.send("G91\n");
    assert_eq!(h.read(), "ok P15 B3\n");
    // Three 1 s moves go into the planner at once.
    h.send(&format!(
        "{}{}{}",
        framed(2, "G1 X100 F6000"),
        framed(3, "G1 X100"),
        framed(4, "G1 X100")
    ));
    assert_eq!(h.read(), "ok N2 P14 B1\nok N3 P13 B2\nok N4 P12 B3\n");
    h.send("M400\n");
    assert_eq!(h.advance(ms(2999)), "echo:busy: processing\n");
    assert_eq!(h.advance(ms(1)), "ok P15 B3\n");
    h.send("M115\n");
    assert!(h.read().contains("Cap:ADVANCED_OK:1\n"));
}

#[test]
fn a_full_planner_blocks_the_next_move() {
    let cfg = SimConfig {
        advanced_ok: true,
        motion_time_scale: 1.0,
        ..SimConfig::default()
    };
    let mut h = Harness::new(cfg);
    for _ in 0..10 {
        h.send("G1 X10 F600\n"); // 10 mm at 10 mm/s: 1 s each
        h.send("G1 X0\n");
    }
    let out = h.read();
    assert_eq!(out.matches("ok").count(), 15, "{out}");
    assert!(
        out.starts_with("ok P14 B3\nok P13 B3\n") && out.ends_with("ok P0 B3\n"),
        "{out}"
    );
    // The 16th move waits for a slot; three more lines fill the queue.
    assert_eq!(h.advance(ms(999)), "");
    assert_eq!(h.advance(ms(1)), "ok P0 B0\n");
    assert_eq!(h.advance(ms(1000)), "ok P0 B0\n");
}

#[test]
fn m109_waits_with_temperature_and_busy_lines() {
    let cfg = SimConfig {
        heat_time_scale: 0.1,
        ..SimConfig::default()
    }; // 25 °C/s
    let mut h = Harness::new(cfg);
    h.send("M109 S71\n");
    assert_eq!(h.read(), " T:21.00 /71.00 B:21.00 /0.00 @:127 B@:0 W:?\n");
    assert_eq!(
        h.advance(ms(1000)),
        " T:46.00 /71.00 B:21.00 /0.00 @:127 B@:0 W:?\n"
    );
    // Within 1 °C at 1.96 s; residency 10 s × 0.1.
    assert_eq!(
        h.advance(ms(1000)),
        " T:71.00 /71.00 B:21.00 /0.00 @:0 B@:0 W:0\necho:busy: processing\n"
    );
    assert_eq!(h.advance(ms(959)), "");
    assert_eq!(h.advance(ms(1)), "ok\n");
    assert_eq!(h.elapsed(), ms(2960));
    h.send("M105\n");
    assert_eq!(h.read(), "ok T:71.00 /71.00 B:21.00 /0.00 @:0 B@:0\n");
}

#[test]
fn m190_and_instant_heating() {
    let mut h = Harness::new(SimConfig::default());
    h.send("M190 S60\n");
    assert_eq!(h.read(), " T:21.00 /0.00 B:60.00 /60.00 @:0 B@:0 W:0\nok\n");
    h.send("M109 S0\n"); // S does not wait for cooling
    assert_eq!(h.read(), "ok\n");
}

#[test]
fn m108_cancels_a_heating_wait() {
    let mut h = Harness::new(SimConfig {
        heat_time_scale: 1.0,
        ..SimConfig::default()
    });
    h.send("M109 S210\n");
    let _ = h.advance(ms(1500));
    h.send("M108\n");
    assert_eq!(h.read(), "ok\nok\n"); // M109 ends, then M108 itself
}

#[test]
fn dwell_and_homing_print_busy_every_two_seconds() {
    let mut h = Harness::new(SimConfig {
        motion_time_scale: 0.5,
        ..SimConfig::default()
    });
    h.send("G28\n"); // 12 s × 0.5
    assert_eq!(
        h.advance(ms(5999)),
        "echo:busy: processing\necho:busy: processing\n"
    );
    assert_eq!(h.advance(ms(1)), "echo:busy: processing\nok\n");
    h.send("G4 S1\n");
    assert_eq!(h.advance(ms(1000)), "ok\n");
    h.send("M114\n");
    assert_eq!(
        h.read(),
        "X:0.00 Y:0.00 Z:0.00 E:0.00 Count X:0 Y:0 Z:0\nok\n"
    );
}

#[test]
fn autoreport_runs_on_sim_time_even_while_busy() {
    let mut h = Harness::new(SimConfig::default());
    h.send("M155 S1\n");
    assert_eq!(h.read(), "ok\n");
    h.send("G4 P2500\n");
    let out = h.advance(ms(3000));
    assert_eq!(
        out,
        " T:21.00 /0.00 B:21.00 /0.00 @:0 B@:0\n T:21.00 /0.00 B:21.00 /0.00 @:0 B@:0\n\
         echo:busy: processing\nok\n T:21.00 /0.00 B:21.00 /0.00 @:0 B@:0\n"
    );
    h.send("M155 S0\n");
    assert_eq!(h.read(), "ok\n");
    assert_eq!(h.advance(ms(5000)), "");
}
