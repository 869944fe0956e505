//! A filament runout during a print, per firmware flow: the printer pauses
//! within one line, keeps its heaters as the firmware does, waits 30
//! simulated minutes for a person without a time-out or an `M112` from the
//! host, resumes (by a prompt answer, the knob, or the host) and the job
//! completes exactly once.

use super::{job_part, print_job, sim, Pair};
use crate::protocol::Event;
use crate::sim::{Firmware, SimConfig};
use std::time::Duration;

const RUNOUT_AFTER: u64 = 400;
const HALF_HOUR: Duration = Duration::from_secs(30 * 60);
const MINUTE: Duration = Duration::from_secs(60);

fn is_pause(e: &Event) -> bool {
    matches!(e, Event::PrinterPaused { .. })
}

/// Runs `job` to the pause and checks the first half of the story: the
/// `M600` (where the firmware parks) directly after the runout line, then 30
/// minutes without a time-out, without `M112`, without a job line sent.
fn pause_for_half_an_hour(p: &mut Pair, parks: bool) -> Option<String> {
    let paused = p.run_until(10 * MINUTE, is_pause);
    assert!(
        paused,
        "the printer never paused: {:?} {:?}",
        p.board.stats(),
        trouble(p)
    );
    let reason = p.events.iter().find_map(|(_, e)| match e {
        Event::PrinterPaused { reason } => Some(reason.clone()),
        _ => None,
    });
    if parks {
        // Paused within one line: the runout came after command
        // RUNOUT_AFTER and the M600 (logged when it ends) blocks the rest.
        assert_eq!(p.executed().len() as u64, RUNOUT_AFTER);
    }
    let sent = p.host.job_lines_sent();
    let from = p.events.len();
    let executed = p.board.stats().executed;
    p.run_until(HALF_HOUR, |_| false);
    for e in p.events_since(from) {
        assert!(
            !matches!(
                e,
                Event::Timeout { .. } | Event::Failed(_) | Event::PrinterResumed
            ),
            "during the pause: {e:?}"
        );
    }
    assert_eq!(p.host.job_lines_sent(), sent, "job lines sent while paused");
    if parks {
        assert_eq!(p.board.stats().executed, executed, "the printer moved on");
    }
    assert!(!p.board.halted && !p.host.is_halted());
    reason.flatten()
}

/// The rest: resumed, then complete exactly once and in order, no `M112`
/// and no time-out in the whole run.
fn completes_once(p: &mut Pair, job: &[String], parked: bool) {
    assert!(
        p.run_until(30 * MINUTE, |e| matches!(e, Event::JobComplete)),
        "the job did not complete"
    );
    p.run_until(Duration::from_secs(5), |_| false);
    let completions = p
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::JobComplete))
        .count();
    assert_eq!(completions, 1);
    if parked {
        assert_eq!(
            p.executed().get(RUNOUT_AFTER as usize).map(String::as_str),
            Some("M600"),
            "M600 is not the command after the runout"
        );
    }
    assert_eq!(
        job_part(&p.executed()),
        job,
        "each line exactly once, in order"
    );
    assert!(!String::from_utf8_lossy(&p.host_wrote).contains("M112"));
    let timeouts = p
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Timeout { .. }))
        .count();
    assert_eq!(
        timeouts,
        0,
        "no ok was lost, so no time-out: {:?}",
        trouble(p)
    );
}

/// The heaters as the board has them, and as the host last heard.
fn heaters(p: &Pair) -> ((f64, f64), (Option<f32>, Option<f32>)) {
    let t = &p.board.machine.thermal;
    let host = p
        .events
        .iter()
        .rev()
        .find_map(|(_, e)| match e {
            Event::Temps(t) if t.bed_target.is_some() => Some((t.nozzle_target, t.bed_target)),
            _ => None,
        })
        .unwrap_or((None, None));
    ((t.hotend.target(), t.bed.target()), host)
}

#[test]
fn marlin_runout_waits_half_an_hour_then_resumes_by_prompt_answers() {
    let job = print_job(1500);
    let cfg = SimConfig {
        runout_after: Some(RUNOUT_AFTER),
        ..sim(Firmware::Marlin)
    };
    let mut p = Pair::new(cfg, job.clone());
    let reason = pause_for_half_an_hour(&mut p, true);
    assert_eq!(reason.as_deref(), Some("filament runout 0"));
    // PAUSE_PARK_NOZZLE_TIMEOUT: the nozzle idled after 45 s, the bed kept.
    assert_eq!(heaters(&p), ((0.0, 60.0), (Some(0.0), Some(60.0))));
    let prompts: Vec<_> = p
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Prompt { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        prompts,
        ["FilamentRunout T0", "Nozzle Parked", "HeaterTimeout"]
    );

    // The farm answers: Reheat, Continue, then Continue at the purge question.
    p.press("Reheat");
    let reheated = |e: &Event| matches!(e, Event::Prompt { text, .. } if text == "Reheat Done");
    assert!(p.run_until(10 * MINUTE, reheated), "never reheated");
    assert_eq!(p.board.machine.thermal.hotend.target(), 200.0);
    p.press("Continue");
    let purge = |e: &Event| matches!(e, Event::Prompt { text, .. } if text == "Paused");
    assert!(p.run_until(MINUTE, purge));
    p.press("Continue");
    assert!(
        p.run_until(MINUTE, |e| matches!(e, Event::PrinterResumed)),
        "no //action:resumed"
    );
    completes_once(&mut p, &job, true);
}

#[test]
fn prusa_runout_waits_at_the_knob_with_keepalives() {
    let job = print_job(1500);
    let cfg = SimConfig {
        runout_after: Some(RUNOUT_AFTER),
        // The person presses the knob after 31 minutes.
        person_after: Some(HALF_HOUR + MINUTE),
        ..sim(Firmware::PrusaMk3)
    };
    let mut p = Pair::new(cfg, job.clone());
    let reason = pause_for_half_an_hour(&mut p, true);
    assert_eq!(reason.as_deref(), Some("paused for user"));
    // M600_TIMEOUT (600 s): nozzle off, bed kept.
    assert_eq!(heaters(&p).0, (0.0, 60.0));
    assert!(
        p.run_until(5 * MINUTE, |e| matches!(e, Event::PrinterResumed)),
        "the knob press did not resume the job"
    );
    completes_once(&mut p, &job, true);
}

#[test]
fn klipper_pause_is_resumed_by_the_farm() {
    let job = print_job(1500);
    let cfg = SimConfig {
        runout_after: Some(RUNOUT_AFTER),
        ..sim(Firmware::Klipper)
    };
    let mut p = Pair::new(cfg, job.clone());
    let reason = pause_for_half_an_hour(&mut p, false);
    assert_eq!(reason, None);
    // Klipper's PAUSE leaves the heaters alone.
    assert_eq!(heaters(&p).0, (200.0, 60.0));
    p.host.resume(); // the farm's Resume: `RESUME`, then `// action:resume`
    completes_once(&mut p, &job, false);
    assert!(p.executed().iter().any(|l| l == "RESUME"));
}

#[test]
fn repetier_pause_is_resumed_at_the_printer() {
    let job = print_job(1500);
    let cfg = SimConfig {
        runout_after: Some(RUNOUT_AFTER),
        person_after: Some(HALF_HOUR + MINUTE),
        ..sim(Firmware::Repetier)
    };
    let mut p = Pair::new(cfg, job.clone());
    pause_for_half_an_hour(&mut p, false);
    assert!(
        p.run_until(5 * MINUTE, |e| matches!(e, Event::PrinterResumed)),
        "no // action:resume"
    );
    completes_once(&mut p, &job, false);
}

/// The events around the first time-out or resend, for failure messages.
fn trouble(p: &Pair) -> Vec<(Duration, &Event)> {
    let first = p
        .events
        .iter()
        .position(|(_, e)| matches!(e, Event::Timeout { .. } | Event::Resend { .. }))
        .unwrap_or(0);
    p.events[first.saturating_sub(12)..(first + 3).min(p.events.len())]
        .iter()
        .filter(|(_, e)| !matches!(e, Event::Temps(_)))
        .map(|(t, e)| (t.duration_since(p.events[0].0), e))
        .collect()
}

/// The control: with real motion (long moves in a full planner) and no
/// fault, the deadline never fires.
#[test]
fn a_print_with_real_motion_never_times_out() {
    let job = print_job(1500);
    let mut p = Pair::new(sim(Firmware::Marlin), job.clone());
    assert!(p.run_until(30 * MINUTE, |e| matches!(e, Event::JobComplete)));
    let timeouts = p
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Timeout { .. }))
        .count();
    assert_eq!(timeouts, 0, "{:?}", trouble(&p));
}

/// Buddy shows Marlin's prompts but reads `M876` only as an ordinary command,
/// which waits behind the blocking `M600`: the host refuses the farm's
/// answer (it would hit a later prompt), and the person at the printer's
/// screen reheats and continues; the job completes once.
#[test]
fn buddy_runout_prompts_are_answered_at_the_printer() {
    let job = print_job(1500);
    let cfg = SimConfig {
        runout_after: Some(RUNOUT_AFTER),
        person_after: Some(HALF_HOUR + MINUTE),
        ..sim(Firmware::PrusaBuddy)
    };
    let mut p = Pair::new(cfg, job.clone());
    let reason = pause_for_half_an_hour(&mut p, true);
    assert_eq!(reason.as_deref(), Some("filament runout 0"));
    assert_eq!(heaters(&p).0, (0.0, 60.0), "the nozzle idled, the bed kept");
    let (text, _) = p.open_prompt().expect("a prompt is open");
    assert_eq!(text, "HeaterTimeout");
    assert_eq!(
        p.host.answer_prompt(0),
        Err(crate::protocol::PromptError::PrinterBlocked)
    );
    assert!(
        p.run_until(10 * MINUTE, |e| matches!(e, Event::PrinterResumed)),
        "the person at the printer did not resume the job"
    );
    assert_eq!(p.board.machine.thermal.hotend.target(), 200.0, "reheated");
    completes_once(&mut p, &job, true);
    assert!(!String::from_utf8_lossy(&p.host_wrote).contains("M876"));
}
