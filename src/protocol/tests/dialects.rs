//! Printer-initiated pauses and prompts, and the end of a job (proof that the
//! last move is done), across firmware dialects.

use super::{line, Harness};
use crate::protocol::*;
use std::time::Duration;

const TEMPS_OK: &str = "ok T:20.0 /0.0 B:20.0 /0.0";
const MARLIN_EP: &str =
    "FIRMWARE_NAME:Marlin 2.1.2.4 (Github)\nCap:EMERGENCY_PARSER:1\nCap:PROMPT_SUPPORT:1\nok";

fn has(h: &Harness, want: &Event) -> bool {
    h.events.contains(want)
}

#[test]
fn a_printer_pause_stops_the_stream_and_every_time_out_for_30_minutes() {
    let mut h = Harness::ready_as(Config::default(), MARLIN_EP, TEMPS_OK);
    h.core.set_job_active(true);
    h.queue(&["G1 X1", "G1 X2"]);
    h.sent();
    h.reply("//action:paused filament_runout 0");
    assert!(has(
        &h,
        &Event::PrinterPaused {
            reason: Some("filament runout 0".into())
        }
    ));
    assert!(!h.core.wants_line());
    h.queue(&["G1 X3"]);
    h.expect_sent(""); // not one more job line
    for _ in 0..30 {
        h.advance(Duration::from_secs(60));
        h.reply("echo:busy: paused for user");
    }
    assert!(!h
        .events
        .iter()
        .any(|e| matches!(e, Event::Timeout { .. } | Event::Failed(_))));
    h.reply("//action:resumed");
    assert!(has(&h, &Event::PrinterResumed));
    h.reply("ok");
    h.reply("ok");
    assert!(h.sent().starts_with(&line(5, "G1 X3")));
}

#[test]
fn prompts_are_reported_and_answered_out_of_band_with_an_emergency_parser() {
    let mut h = Harness::ready_as(Config::default(), MARLIN_EP, TEMPS_OK);
    h.queue(&["G1 X1"; 6]);
    h.sent(); // the window is full: an in-band answer would wait
    for l in [
        "//action:prompt_end",
        "//action:prompt_begin Paused",
        "//action:prompt_button PurgeMore",
        "//action:prompt_button Continue",
        "//action:prompt_show",
    ] {
        h.reply(l);
    }
    assert!(has(
        &h,
        &Event::Prompt {
            text: "Paused".into(),
            choices: vec!["PurgeMore".into(), "Continue".into()]
        }
    ));
    assert_eq!(
        h.core.answer_prompt(2),
        Err(PromptError::NoSuchChoice {
            choice: 2,
            choices: 2
        })
    );
    h.core.answer_prompt(1).unwrap();
    h.expect_sent("M876 S1\n");
    assert!(has(&h, &Event::PromptClosed));
    assert_eq!(h.core.answer_prompt(1), Err(PromptError::NoPrompt));
}

/// Buddy's `M115` answer: prompts, but no emergency parser.
const BUDDY_M115: &str =
    "FIRMWARE_NAME:Prusa-Firmware-Buddy 6.1.3 (Github) MACHINE_TYPE:Prusa-MK4\n\
                          Cap:EMERGENCY_PARSER:0\nCap:PROMPT_SUPPORT:1\nok";

#[test]
fn without_an_emergency_parser_the_answer_is_a_numbered_line() {
    let mut h = Harness::ready_as(Config::default(), BUDDY_M115, TEMPS_OK);
    h.reply("//action:prompt_begin Filament runout");
    h.reply("//action:prompt_choice Continue");
    h.reply("//action:prompt_show");
    h.core.answer_prompt(0).unwrap();
    h.expect_sent(&line(3, "M876 S0"));
}

/// Buddy's `M600` blocks its command queue (no emergency parser): an answer
/// could run only after the pause, against whatever prompt is open then.
#[test]
fn without_an_emergency_parser_an_answer_during_a_printer_pause_is_refused() {
    let mut h = Harness::ready_as(Config::default(), BUDDY_M115, TEMPS_OK);
    h.reply("//action:paused filament_runout 0");
    h.reply("//action:prompt_begin Nozzle Parked");
    h.reply("//action:prompt_button Continue");
    h.reply("//action:prompt_show");
    h.reply("echo:busy: paused for user");
    assert_eq!(h.core.answer_prompt(0), Err(PromptError::PrinterBlocked));
    h.expect_sent("");
    assert!(!has(&h, &Event::PromptClosed), "the prompt is still open");
    h.reply("//action:resumed");
    h.advance(Duration::from_secs(6)); // the keep-alives stopped
    h.reply("//action:prompt_begin Resuming");
    h.reply("//action:prompt_button Dismiss");
    h.reply("//action:prompt_show");
    h.core.answer_prompt(0).unwrap();
    let sent = h.sent();
    assert!(
        sent.starts_with('N') && sent.contains(" M876 S0*"),
        "{sent:?}"
    );
}

#[test]
fn a_busy_paused_for_user_is_a_printer_pause_until_the_next_ok() {
    let prusa =
        "FIRMWARE_NAME:Prusa-Firmware 3.14.1 based on Marlin MACHINE_TYPE:Prusa i3 MK3S\nok";
    let mut h = Harness::ready_as(Config::default(), prusa, TEMPS_OK);
    h.queue(&["M600", "G1 X1"]);
    h.sent();
    h.reply("echo:busy: paused for user");
    assert!(has(
        &h,
        &Event::PrinterPaused {
            reason: Some("paused for user".into())
        }
    ));
    h.advance(Duration::from_secs(45 * 60));
    assert!(!h.events.iter().any(|e| matches!(e, Event::Timeout { .. })));
    h.reply("ok"); // M600 done: the person reloaded the filament
    assert!(has(&h, &Event::PrinterResumed));
}

#[test]
fn klipper_pause_and_resume_by_the_farm() {
    let klipper = "ok FIRMWARE_NAME:Klipper FIRMWARE_VERSION:v0.12.0";
    let mut h = Harness::ready_as(Config::default(), klipper, TEMPS_OK);
    h.reply("// action:pause");
    assert!(has(&h, &Event::PrinterPaused { reason: None }));
    h.core.resume();
    h.drain();
    assert!(has(&h, &Event::PrinterResumed));
    h.expect_sent(&line(3, "RESUME"));
    h.reply("!! Must home axis first"); // Klipper: an error, then its ok
    h.reply("ok");
    assert!(!h.core.is_halted());
    h.reply("// Klipper state: Shutdown");
    assert!(h.core.is_halted());
}

fn complete(h: &Harness) -> bool {
    h.events.contains(&Event::JobComplete)
}

#[test]
fn a_job_ends_when_an_m105_after_the_m400_is_answered() {
    let mut h = Harness::ready_as(Config::default(), MARLIN_EP, TEMPS_OK);
    h.core.set_job_active(true);
    h.queue(&["G1 X1"]);
    h.core.end_job(Some("M400")).unwrap();
    assert_eq!(
        h.sent(),
        line(3, "G1 X1") + &line(4, "M400") + &line(5, "M105")
    );
    assert_eq!(h.core.job_lines_sent(), 1);
    h.reply("ok");
    h.reply("ok"); // M400: the moves are done
    assert!(!complete(&h), "a counted ok is no proof where markers work");
    h.reply(TEMPS_OK);
    assert!(complete(&h));
}

#[test]
fn an_ok_inferred_by_a_probe_sends_the_sync_again() {
    let cfg = Config {
        min_ack_timeout: Duration::from_millis(100),
        ..Config::default()
    };
    let adv = "FIRMWARE_NAME:Marlin 2.1.2.4\nCap:ADVANCED_OK:1\nok";
    let mut h = Harness::ready_as(cfg, adv, "ok N2 P15 B3");
    h.core.set_job_active(true);
    h.core.end_job(Some("M400")).unwrap();
    assert_eq!(h.sent(), line(3, "M400"));
    // The M400's ok is lost. The probe sends it again; the printer refuses
    // the duplicate: it has the M400, but may still be running it.
    h.advance(Duration::from_secs(2));
    assert_eq!(h.sent(), line(3, "M400"));
    h.reply("Error:Line Number is not Last Line Number+1, Last Line: 3");
    h.reply("Resend: 4");
    h.reply("ok"); // this build sends an ok after a resend request
    assert!(!complete(&h));
    // A second M400 is sent; its ok comes after the first one has run.
    assert_eq!(h.sent(), line(4, "M400"));
    h.reply("ok N4 P15 B3");
    assert!(complete(&h));
}

#[test]
fn repetier_ends_on_its_idle_wait_after_the_sync() {
    let repetier = "FIRMWARE_NAME:Repetier_1.0.4 MACHINE_TYPE:Mendel\nok";
    let mut h = Harness::ready_as(Config::default(), repetier, "ok 2");
    h.core.set_job_active(true);
    h.queue(&["G1 X1"]);
    h.core.end_job(Some("M400")).unwrap();
    h.sent();
    h.reply("ok 3");
    h.reply("ok 4"); // received, not done
    assert!(!complete(&h));
    h.reply("wait");
    assert!(complete(&h));
}

#[test]
fn without_a_sync_the_job_ends_at_the_last_ok() {
    let mut h = Harness::ready(Config::default());
    h.core.set_job_active(true);
    h.queue(&["G1 X1"]);
    h.core.end_job(None).unwrap();
    h.sent();
    assert!(!complete(&h));
    h.reply("ok");
    assert!(complete(&h));
}
