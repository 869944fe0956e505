//! Push mode end to end, behind the farm's job handler as seed 000 writes
//! it (issue 11): `printgate run` with `[queue_manager] pull = false` and
//! two `printgate sim` printers; the seed's job handler (30 s discovery,
//! `GET /prioritary_job`, assignments on `device/printer/<id>/assignement`,
//! its busy / awaiting-cleaning / available rules, `device/printers`), two
//! robots and a queue manager of seven jobs, one without a model. This
//! file: the plan and the two scenarios (a full cycle; the same with one
//! `kill -9` of the gateway mid-print). `push_e2e/rig.rs` builds the farm,
//! `push_e2e/checks.rs` holds the verdicts, `tests/seed_handler/` the
//! handler and robots (reused by the fleet tests).
//!
//! Each test takes the handler's 30 s discovery plus about half a minute
//! of printing. Figures are printed with `eprintln!` (`-- --nocapture`);
//! nothing about time is asserted.
#![cfg(feature = "embedded-broker")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e_support;
#[path = "queue_e2e/qm.rs"]
#[allow(dead_code)]
mod qm;
mod seed_handler;
#[path = "source_http/server.rs"]
mod server;

#[path = "push_e2e/checks.rs"]
mod checks;
#[path = "push_e2e/rig.rs"]
mod rig;
#[path = "push_e2e/story.rs"]
mod story;
#[path = "push_e2e/tally.rs"]
mod tally;

use checks::Verdict;
use rig::{PlanJob, Rig, Twist, CYCLE, STEP};
use seed_handler::seat::Seat;
use std::collections::BTreeSet;
use std::time::Instant;

/// The job whose model the queue manager does not have.
const MISSING: &str = "job-2";

/// Seven jobs, most urgent first; `moves` sets the size of the models.
fn plan(moves: usize) -> Vec<PlanJob> {
    let job = |id, priority, moves, twist| PlanJob {
        id,
        priority,
        moves,
        twist,
    };
    vec![
        job("job-1", 9, Some(moves), Twist::Seed),
        job(MISSING, 8, None, Twist::Seed),
        job("job-3", 7, Some(moves + 100), Twist::NoFilament),
        job("job-4", 6, Some(moves + 200), Twist::FloatTime),
        job("job-5", 5, Some(moves + 300), Twist::FloatPriority),
        job("job-6", 4, Some(moves), Twist::NoFilament),
        job("job-7", 3, Some(moves + 100), Twist::Seed),
    ]
}

/// Gateway up, plates confirmed once by the operator, then the farm.
fn start(rig: &mut Rig) {
    rig.start_gateway();
    rig.confirm_plates();
    rig.start_farm(2);
}

/// The checks both scenarios share; `partial`: jobs allowed to stop part-way.
fn seed_checks(v: &mut Verdict<'_>, partial: &BTreeSet<String>) {
    v.discovery();
    v.handed_once();
    v.printed_once(partial);
    v.missing_model(MISSING);
    v.one_job_at_a_time();
    v.completions_seen();
    v.starts_after_clears();
    v.handler_owns_the_list();
    v.seed_statuses();
}

fn figures(name: &str, v: &Verdict<'_>, started: Instant) {
    let r = &v.rec;
    eprintln!(
        "push e2e, {name}: {:.1} s in all ({:.1} s discovery); {} assignments, {} completions seen, {} robot clears, {} lists; {} polls ({} empty); {} progress messages heard, {} set aside",
        started.elapsed().as_secs_f64(),
        r.discovery_end.map_or(0.0, |d| (d - r.started).as_secs_f64()),
        r.assignments.len(),
        r.completions.len(),
        v.clears.len(),
        r.lists.len(),
        r.counters.polls,
        r.counters.empty,
        r.progress.len(),
        r.ignored.len(),
    );
    // What a handler that believed every message would have acted on.
    for (_, printer, why) in r.ignored.iter().take(20) {
        eprintln!("push e2e, {name}: set aside from {printer}: {why}");
    }
}

#[test]
fn seed_handler_prints_every_job_once() {
    let started = Instant::now();
    let mut rig = Rig::new("cycle", &plan(1200));
    start(&mut rig);
    let settled = rig.wait_settled(started + CYCLE);
    let mut v = Verdict::new(&rig);
    seed_checks(&mut v, &BTreeSet::new());
    figures("full cycle", &v, started);
    v.finish(settled);
}

#[test]
fn seed_handler_recovers_from_a_gateway_kill_dash_nine() {
    let started = Instant::now();
    let mut rig = Rig::new("restart", &plan(2500));
    start(&mut rig);
    let mut caught = None;
    rig.wait_or_tell("a print part-way", STEP, || {
        caught = rig.mid_print();
        caught.is_some()
    });
    let (printer, job) = caught.unwrap();
    let queued = rig.qm.pending();
    // Jobs on the printers at the kill may stop part-way (none may print
    // again); every printer is printing one (see `mid_print`).
    let partial: BTreeSet<String> = rig
        .handler()
        .seats()
        .into_values()
        .filter_map(|s| match s {
            Seat::Printing(job) => job,
            _ => None,
        })
        .collect();
    rig.kill9();
    let restarted = Instant::now();
    rig.start_gateway();
    let settled = rig.wait_settled(started + CYCLE);
    let mut v = Verdict::new(&rig);
    seed_checks(&mut v, &partial);
    recovered(&mut v, &printer, &job, restarted, queued > 0);
    figures("kill -9 mid-print", &v, started);
    v.finish(settled);
}

/// After the restart the interrupted printer says `idle` + 100 for its job
/// until a robot clears it, then takes more jobs; the job is `interrupted`.
fn recovered(v: &mut Verdict<'_>, printer: &str, job: &str, restarted: Instant, more: bool) {
    let state = v.gateway_jobs.get(job).map(|j| j["state"].clone());
    if state.as_ref().and_then(|s| s.as_str()) != Some("interrupted") {
        v.fail(format!(
            "{job}, killed mid-print: gateway state {state:?}, not interrupted"
        ));
    }
    let cleared = v
        .rec
        .clears
        .iter()
        .find(|(at, p)| *at > restarted && p == printer)
        .map(|(at, _)| *at);
    let Some(cleared) = cleared else {
        v.fail(format!(
            "{printer}: no robot clear acted on after the restart"
        ));
        return;
    };
    // Until the clear: `idle` + 100 for the job once it speaks of the plate
    // (an offline printer may say `printing` first), never a plain `idle`.
    let heard: Vec<String> = v
        .rec
        .progress
        .iter()
        .filter(|h| h.printer == printer && h.at > restarted && h.at < cleared)
        .map(|h| {
            format!(
                "{} {} {}",
                h.status,
                h.progress,
                h.job.as_deref().unwrap_or("null")
            )
        })
        .collect();
    let done = format!("idle 100 {job}");
    let first = heard.iter().position(|h| *h == done);
    let wrong = heard.iter().enumerate().any(|(i, h)| {
        h.starts_with("idle") && *h != done || first.is_some_and(|f| i > f && *h != done)
    });
    if first.is_none() || wrong {
        v.fail(format!(
            "{printer} between the restart and the robot's clear said {heard:?}; want {done:?} until the clear"
        ));
    }
    let next = v.rec.assignments_of(printer).iter().any(|a| a.at > cleared);
    if more && !next {
        v.fail(format!(
            "{printer} took no job after the restart and the clear"
        ));
    }
}
