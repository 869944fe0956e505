//! Pull mode end to end: the real daemon with three `printgate sim`
//! printers fetches jobs from a queue manager served by the test on
//! 127.0.0.1, mirrors the farm cycle over the embedded broker, and a test
//! robot clears the plates. This file: the full cycle and its throughput
//! figures; `queue_e2e/faults.rs`: what the queue manager does wrong;
//! `queue_e2e/crash.rs`: `kill -9` during downloads and prints
//! (`PRINTGATE_QUEUE_KILLS` kills, default 6).
//!
//! Figures are printed with `eprintln!` (`cargo test --test queue_e2e --
//! --nocapture`); only counts are asserted, never timings.
#![cfg(feature = "embedded-broker")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e_support;
#[path = "source_http/server.rs"]
mod server;
mod support;

#[path = "queue_e2e/crash.rs"]
mod crash;
#[path = "queue_e2e/faults.rs"]
mod faults;
#[path = "queue_e2e/qm.rs"]
mod qm;
#[path = "queue_e2e/rig.rs"]
mod rig;
#[path = "queue_e2e/robot.rs"]
mod robot;

use e2e_support::wait_until;
use qm::QmJob;
use rig::{Options, Rig, LIMIT, PRINTERS};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

#[test]
fn full_cycle_prints_every_job_once_in_priority_order() {
    // The farm's own topic prefix (the other tests use their own).
    let options = Options {
        prefix: Some("device/"),
        ..Options::default()
    };
    let mut rig = Rig::new("cycle", options);
    let priorities = [3, 9, 1, 5, 9, 7, 2, 5, 8, 4];
    for (n, p) in priorities.iter().enumerate() {
        rig.add(QmJob::new(&format!("job-{n}"), *p), 1200 + 100 * n);
    }
    let started = Instant::now();
    rig.start();
    rig.wait_connected();
    // No printer asks for work before its plate was confirmed clear (the
    // robot acts on the first `printers` list; the operator on the rest).
    let before_clear = std::time::Instant::now();
    rig.clear_waiting();
    let first_pick = rig.mqtt.picks().iter().map(|(at, _)| *at).min();
    let cleared_from = first_pick.map_or(before_clear, |p| p.min(before_clear));
    assert_eq!(
        rig.qm.polls_between(started, cleared_from),
        0,
        "polled before any plate was cleared"
    );
    wait_until("all ten jobs completed", LIMIT, || {
        let jobs = rig.jobs();
        jobs.len() == 10 && jobs.values().all(|j| j["state"] == "completed")
    });
    let elapsed = started.elapsed();

    // Handed out once each, most urgent first.
    let handed = rig.qm.handed();
    assert_eq!(handed.len(), 10);
    assert_eq!(rig.qm.pending(), 0);
    let order: Vec<i64> = handed.iter().map(|h| h.priority).collect();
    let mut sorted = order.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(order, sorted, "handed out in priority order");
    let ids: BTreeSet<&str> = handed.iter().map(|h| h.job.as_str()).collect();
    assert_eq!(ids.len(), 10, "a job was handed out twice");

    // Accounted for, each printed exactly once where it was assigned, and
    // every printer printed its jobs in the order it received them.
    let jobs = rig.jobs();
    let mut per_printer: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for h in &handed {
        let j = &jobs[&h.job];
        assert_eq!(j["source"], "queue", "{j}");
        assert_eq!(j["printerId"], h.printer.as_str(), "{j}");
        let model = format!("models/model-{}.gcode", h.job);
        assert_eq!(j["modelUrl"], model.as_str(), "{j}");
        assert_eq!(rig.printed_whole(&h.job), h.printer);
        per_printer.entry(&h.printer).or_default().push(&h.job);
    }
    for (printer, jobs) in &per_printer {
        let log = rig.dir.path().join(format!("{printer}.log"));
        let tags: Vec<String> = e2e_support::executed_moves(&log)
            .iter()
            .map(|l| {
                l.split(" E")
                    .nth(1)
                    .unwrap()
                    .split('.')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let mut runs = tags.clone();
        runs.dedup();
        assert_eq!(runs.len(), jobs.len(), "{printer}: jobs interleaved");
    }
    rig.check_no_repeats();

    // The farm saw each assignment and each completion.
    let msgs = rig.messages();
    let on = |suffix: &str| -> Vec<(String, serde_json::Value)> {
        msgs.iter()
            .filter(|m| m.topic.contains(suffix))
            .map(|m| (m.topic.clone(), m.json()))
            .collect()
    };
    let assigned: BTreeSet<(String, String)> = on("/assignement")
        .into_iter()
        .map(|(t, a)| (t, a["jobId"].as_str().unwrap_or("").to_owned()))
        .collect();
    let want: BTreeSet<(String, String)> = handed
        .iter()
        .map(|h| {
            (
                format!("{}printer/{}/assignement", rig.prefix, h.printer),
                h.job.clone(),
            )
        })
        .collect();
    assert_eq!(assigned, want, "one assignment per job, on its printer");
    assert_eq!(on("/assignement").len(), 10);
    for h in &handed {
        let topic = format!("{}printer/{}/job_complete/{}", rig.prefix, h.printer, h.job);
        let n = msgs.iter().filter(|m| m.topic == topic).count();
        assert_eq!(n, 1, "{topic}");
    }
    let picks = rig.mqtt.picks().len();
    assert!(picks >= 7, "the robot cleared only {picks} plates");
    // Every event names its printer, in its topic and its payload.
    for m in msgs.iter().filter(|m| m.topic.ends_with("/event")) {
        let p = m.json()["printerId"].as_str().unwrap_or("").to_owned();
        assert!(!p.is_empty(), "{} {:?}", m.topic, m.json());
        assert_eq!(m.topic, format!("{}printer/{p}/event", rig.prefix));
    }

    let polls = rig.qm.count("/prioritary_job");
    eprintln!(
        "queue e2e, full cycle: 10 jobs on {} printers in {:.1} s; {polls} polls ({} empty), {picks} robot picks",
        PRINTERS.len(),
        elapsed.as_secs_f64(),
        polls - 10,
    );
    throughput_figures(&rig);
}

/// While all printers print, the queue manager hears nothing (asserted);
/// the delay from a plate clear to the next job printing (printed).
fn throughput_figures(rig: &Rig) {
    let events = rig.events();
    let picks = rig.mqtt.picks();
    let kind = |e: &serde_json::Value| e["type"].as_str().unwrap_or("").to_owned();
    let printer = |e: &serde_json::Value| e["printerId"].as_str().unwrap_or("").to_owned();
    let mut busy: BTreeSet<String> = BTreeSet::new();
    let mut windows: Vec<(Instant, Instant)> = Vec::new();
    let mut open: Option<Instant> = None;
    for (at, e) in &events {
        match kind(e).as_str() {
            "job_printing" => {
                busy.insert(printer(e));
            }
            "job_completed" | "job_failed" | "job_cancelled" | "job_interrupted" => {
                busy.remove(&printer(e));
            }
            _ => continue,
        }
        match open {
            None if busy.len() == PRINTERS.len() => open = Some(*at),
            Some(from) if busy.len() < PRINTERS.len() => {
                // The robot may read the list before the observer reads the
                // completion: a poll can only follow the earlier of the two.
                let robot = picks.iter().map(|p| p.0).find(|t| *t > from);
                windows.push((from, robot.map_or(*at, |r| r.min(*at))));
                open = None;
            }
            _ => {}
        }
    }
    assert!(
        !windows.is_empty(),
        "the printers were never all busy at once"
    );
    let busy_polls: usize = windows
        .iter()
        .map(|(from, to)| rig.qm.polls_between(*from, *to))
        .sum();
    let busy_time: Duration = windows.iter().map(|(from, to)| *to - *from).sum();
    eprintln!(
        "queue e2e, busy windows: {} windows, {:.1} s with every printer printing, {busy_polls} polls to the queue manager",
        windows.len(),
        busy_time.as_secs_f64()
    );
    assert_eq!(busy_polls, 0, "polled while every printer was busy");

    // A plate cleared (the robot's pick, on the test's clock) → that
    // printer's next job printing (as the observer saw it: an upper bound).
    let mut delays: Vec<Duration> = Vec::new();
    for (at, p) in &picks {
        let next = events
            .iter()
            .find(|(t, e)| t > at && printer(e) == *p && kind(e) == "job_printing");
        let cleared_again =
            |until: &Instant| picks.iter().any(|(t, q)| q == p && t > at && t < until);
        if let Some((start, _)) = next.filter(|(t, _)| !cleared_again(t)) {
            delays.push(*start - *at);
        }
    }
    delays.sort();
    let ms = |d: &Duration| d.as_millis();
    eprintln!(
        "queue e2e, robot pick -> next job printing: n={} min {} ms, median {} ms, max {} ms (poll interval {} s)",
        delays.len(),
        delays.first().map_or(0, ms),
        delays.get(delays.len() / 2).map_or(0, ms),
        delays.last().map_or(0, ms),
        rig.options.poll_interval_s,
    );
}
