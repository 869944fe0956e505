//! The fault knobs: reset_after, drop_ok, corruption, and the oracle
//! property under all of them.

use super::{framed, marlin_1, ms, Harness, BANNER};
use crate::sim::SimConfig;

#[test]
fn reset_after_reboots_once_mid_stream() {
    let mut h = Harness::new(SimConfig {
        reset_after: Some(2),
        ..marlin_1()
    });
    h.send(&format!(
        "{}{}{}",
        framed(1, "G90"),
        framed(2, "G90"),
        framed(3, "G90")
    ));
    assert_eq!(h.read(), format!("ok\nok\n{BANNER}"));
    h.send(&framed(3, "G90"));
    assert_eq!(
        h.read(),
        "Error:Line Number is not Last Line Number+1, Last Line: 0\nResend: 1\nok\n"
    );
    h.send(&format!(
        "{}{}{}",
        framed(1, "G90"),
        framed(2, "G90"),
        framed(3, "G90")
    ));
    assert_eq!(h.read(), "ok\nok\nok\n");
    assert_eq!(h.stats().resets, 2); // the open and reset_after
}

#[test]
fn drop_ok_loses_the_ok_but_runs_the_command() {
    let cfg = SimConfig {
        drop_ok: 1.0,
        received_log: Some("/dev/null".into()),
        ..marlin_1()
    };
    let mut h = Harness::new(cfg);
    h.send(&framed(1, "M104 S200"));
    h.send(&framed(2, "M105"));
    assert_eq!(h.read(), "");
    assert_eq!(h.log(), "M104 S200\nM105\n");
    assert_eq!(h.stats().dropped_oks, 2);
    // Resend oks are not "executed command" oks: never dropped.
    h.send(&framed(2, "M105"));
    assert_eq!(
        h.read(),
        "Error:Line Number is not Last Line Number+1, Last Line: 2\nResend: 3\nok\n"
    );
}

#[test]
fn corruption_is_always_caught_on_numbered_lines() {
    let cfg = SimConfig {
        corrupt: 1.0,
        seed: 42,
        ..SimConfig::default()
    };
    let mut h = Harness::new(cfg);
    let mut sent = 0;
    for n in 1..=200 {
        let line = framed(n, &format!("G1 X{n} Y{} F1200", n * 3));
        if line.ends_with("*0\n") {
            continue; // `*0` damaged to a non-digit still reads as 0
        }
        h.send(&line);
        sent += 1;
    }
    let s = h.stats();
    assert_eq!((s.executed, s.corrupted, s.errors), (0, sent, sent));
}

/// The oracle property the host's tests rely on: a simple correct host (one
/// line in flight, resend on `Resend:`, resend the same line after a
/// silence) gets every line executed exactly once and in order, through
/// corruption and lost `ok`s, with both resend styles (Marlin 1.1 follows
/// `Resend:` with `ok`, Marlin 2 does not).
#[test]
fn a_correct_host_gets_each_line_executed_once_through_faults() {
    for resend_ok in [true, false] {
        correct_host_through_faults(resend_ok);
    }
}

fn correct_host_through_faults(resend_ok: bool) {
    let cfg = SimConfig {
        corrupt: 0.05,
        drop_ok: 0.05,
        received_log: Some("/dev/null".into()),
        seed: 7,
        resend_ok,
        ..SimConfig::default()
    };
    let mut h = Harness::new(cfg);
    let commands: Vec<String> = (0..3000)
        .map(|i| format!("G1 X{} Y{} E{}.5", i % 200, i % 170, i))
        .collect();
    let mut next = 1usize;
    let mut pending = String::new();
    let mut resend_to = None;
    h.send(&framed(1, &commands[0]));
    let mut log = String::new();
    while next <= commands.len() {
        let mut out = pending.clone() + &h.read();
        if out.is_empty() {
            out = h.advance(ms(1000)); // silence: resend the same line
            if out.is_empty() {
                h.send(&framed(next as i64, &commands[next - 1]));
                continue;
            }
        }
        let (complete, rest) = out.split_at(out.rfind('\n').map_or(0, |i| i + 1));
        pending = rest.to_string();
        for line in complete.lines() {
            if let Some(r) = line.strip_prefix("Resend: ") {
                let r = r.parse::<usize>().unwrap();
                if resend_ok {
                    resend_to = Some(r);
                } else {
                    next = r;
                    if next <= commands.len() {
                        h.send(&framed(next as i64, &commands[next - 1]));
                    }
                }
            } else if line == "ok" {
                next = resend_to.take().unwrap_or(next + 1);
                if next <= commands.len() {
                    h.send(&framed(next as i64, &commands[next - 1]));
                }
            }
        }
        log += &h.log();
    }
    log += &h.log();
    let expected: String = commands.iter().map(|c| format!("{c}\n")).collect();
    assert!(
        log == expected,
        "log differs from the file (resend_ok {resend_ok})"
    );
    let s = h.stats();
    assert!(
        s.corrupted > 50 && s.dropped_oks > 50 && s.resends > 50,
        "{s:?}"
    );
}
