//! The fleet's verdicts (issue 16's "must show"), over what the farm
//! recorded: the simulators' own `--received` logs (what printed where),
//! the handler's and robots' records (with their log snapshots), the queue
//! manager's requests, every gateway's job store and the broker traffic.
//! Each check adds failures to a list so one run names everything wrong;
//! [`Verdict::finish`] fails the test with the list. Reads, never acts.

use crate::rig::{Ended, FarmRecords, Fleet};
use crate::seed_handler::mqtt::Msg;
use crate::seed_handler::robot::Clear;
use crate::seed_handler::{Records, Snapshot};
use crate::tally::tag_of;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

pub struct Verdict<'a> {
    pub fleet: &'a Fleet,
    pub rec: Records,
    pub clears: Vec<Clear>,
    pub robot_errors: Vec<String>,
    /// (gateway, printer) → moves its simulator executed, in order.
    pub executed: BTreeMap<(String, String), Vec<String>>,
    /// Gateway → its `jobs --json`.
    pub gateway_jobs: BTreeMap<String, Vec<Value>>,
    pub messages: Vec<Msg>,
    failures: Vec<String>,
}

impl<'a> Verdict<'a> {
    /// The verdict on what a run left ([`Fleet::wind_down`]), with the
    /// checks every scenario shares already made.
    pub fn after(fleet: &'a Fleet, ended: Ended) -> Verdict<'a> {
        let mut v = Verdict::new(fleet, ended.farm, ended.executed, ended.gateway_jobs);
        v.discovery();
        v.handed_once();
        v.printed_once();
        v.missing_models_failed();
        v.no_double_booking();
        v.starts_after_clears();
        v.clean_farm();
        v
    }

    pub fn new(
        fleet: &'a Fleet,
        farm: FarmRecords,
        executed: BTreeMap<(String, String), Vec<String>>,
        gateway_jobs: BTreeMap<String, Vec<Value>>,
    ) -> Verdict<'a> {
        Verdict {
            fleet,
            rec: farm.records,
            clears: farm.clears,
            robot_errors: farm.robot_errors,
            executed,
            gateway_jobs,
            messages: fleet.recorder.messages(),
            failures: Vec::new(),
        }
    }

    pub fn fail(&mut self, what: String) {
        self.failures.push(what);
    }

    /// The job id of a move (by its tag), or `?<line>`.
    fn job_of(&self, line: &str) -> String {
        match tag_of(line).and_then(|t| self.fleet.tally.tags.get(t)) {
            Some(job) => job.clone(),
            None => format!("?{line}"),
        }
    }

    /// Moves per job executed on the owner's simulator of `printer`.
    fn final_counts(&self, printer: &str) -> Snapshot {
        let mut counts = Snapshot::new();
        let Some(gw) = self.fleet.owner.get(printer) else {
            return counts;
        };
        for line in self
            .executed
            .get(&(gw.clone(), printer.to_owned()))
            .into_iter()
            .flatten()
        {
            *counts.entry(self.job_of(line)).or_default() += 1;
        }
        counts
    }

    /// The jobs a simulator executed, in order, one entry per run.
    fn runs(&self, printer: &str) -> Vec<String> {
        let Some(gw) = self.fleet.owner.get(printer) else {
            return Vec::new();
        };
        let mut runs: Vec<String> = self
            .executed
            .get(&(gw.clone(), printer.to_owned()))
            .into_iter()
            .flatten()
            .map(|l| self.job_of(l))
            .collect();
        runs.dedup();
        runs
    }

    /// The gateway's record of `job` (from the owner of the printer it was
    /// assigned to): its state, or "absent".
    fn gateway_state(&self, job: &str) -> String {
        let Some(a) = self.rec.assignments.iter().find(|a| a.job == job) else {
            return "never assigned".into();
        };
        let gw = self
            .fleet
            .owner
            .get(&a.printer)
            .cloned()
            .unwrap_or_default();
        self.gateway_jobs
            .get(&gw)
            .and_then(|jobs| jobs.iter().find(|j| j["id"] == job))
            .and_then(|j| j["state"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "absent".into())
    }

    /// The handler heard every printer in its discovery window.
    pub fn discovery(&mut self) {
        let missed: Vec<String> = self
            .fleet
            .plan
            .printers()
            .into_iter()
            .filter(|p| !self.rec.discovered.contains(p))
            .collect();
        if !missed.is_empty() {
            self.fail(format!(
                "{} printers not discovered in the handler's {:?} window: {:?}",
                missed.len(),
                self.fleet.plan.discovery,
                &missed[..missed.len().min(20)]
            ));
        }
    }

    /// Every job left the queue manager once, to the handler only (no
    /// gateway polled: `pull = false`), and was assigned once.
    pub fn handed_once(&mut self) {
        let pending = self.fleet.qm.pending();
        if pending != 0 {
            self.fail(format!("{pending} jobs never left the queue manager"));
        }
        let mut assigned: BTreeMap<&str, usize> = BTreeMap::new();
        for a in &self.rec.assignments {
            *assigned.entry(a.job.as_str()).or_default() += 1;
        }
        let wrong: Vec<String> = self
            .fleet
            .qm
            .handed()
            .iter()
            .filter(|h| assigned.get(h.job.as_str()).copied() != Some(1))
            .map(|h| format!("{} ×{}", h.job, assigned.get(h.job.as_str()).unwrap_or(&0)))
            .collect();
        if !wrong.is_empty() {
            self.fail(format!(
                "handed out once but not assigned exactly once: {wrong:?}"
            ));
        }
        let polls: Vec<_> = self
            .fleet
            .qm
            .requests()
            .into_iter()
            .filter(|r| r.path() == "/prioritary_job")
            .collect();
        let by_gateways = polls
            .iter()
            .filter(|r| r.query("printerId").is_some())
            .count();
        if by_gateways > 0 || polls.len() as u64 != self.rec.counters.polls {
            self.fail(format!(
                "gateways polled with pull = false: {by_gateways} polls with printerId; {} in all, {} by the handler",
                polls.len(),
                self.rec.counters.polls
            ));
        }
    }

    /// Each job with a model printed whole, once, on the simulator of the
    /// printer it was assigned to (its owner's), and its gateway says
    /// `completed`; no move executed twice anywhere.
    pub fn printed_once(&mut self) {
        // Job → [(gateway, printer, moves)], from one pass over the logs.
        let mut by_job: BTreeMap<String, BTreeMap<(String, String), Vec<String>>> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        let mut twice = Vec::new();
        for (sim, lines) in &self.executed {
            for line in lines {
                if !seen.insert(line.clone()) {
                    twice.push(format!("{}/{}: {line}", sim.0, sim.1));
                }
                by_job
                    .entry(self.job_of(line))
                    .or_default()
                    .entry(sim.clone())
                    .or_default()
                    .push(line.clone());
            }
        }
        if !twice.is_empty() {
            self.fail(format!(
                "{} moves executed twice, e.g. {:?}",
                twice.len(),
                &twice[..twice.len().min(5)]
            ));
        }
        let strays: Vec<&String> = by_job
            .keys()
            .filter(|j| j.starts_with('?'))
            .take(5)
            .collect();
        if !strays.is_empty() {
            self.fail(format!("moves of no job were executed: {strays:?}"));
        }
        let mut wrong = Vec::new();
        for (job, want) in &self.fleet.models {
            let assigned = self
                .rec
                .assignments
                .iter()
                .find(|a| &a.job == job)
                .map(|a| a.printer.clone());
            let target = assigned
                .as_ref()
                .and_then(|p| Some((self.fleet.owner.get(p)?.clone(), p.clone())));
            let got = by_job.get(job).cloned().unwrap_or_default();
            let sims: Vec<String> = got.keys().map(|(g, p)| format!("{g}/{p}")).collect();
            let state = self.gateway_state(job);
            match got.into_iter().next() {
                _ if sims.len() > 1 => wrong.push(format!("{job}: printed on {sims:?}")),
                None => wrong.push(format!(
                    "{job}: never printed (assigned to {assigned:?}, gateway state {state})"
                )),
                Some((sim, moves)) => {
                    if Some(&sim) != target.as_ref() {
                        wrong.push(format!(
                            "{job}: printed on {sims:?}, assigned to {assigned:?}"
                        ));
                    } else if moves != *want {
                        wrong.push(format!(
                            "{job}: {} of {} moves printed (gateway state {state})",
                            moves.len(),
                            want.len()
                        ));
                    } else if state != "completed" {
                        wrong.push(format!(
                            "{job}: printed whole, but its gateway says {state}"
                        ));
                    }
                }
            }
        }
        if !wrong.is_empty() {
            self.fail(format!(
                "{} jobs not printed exactly once: {:?}",
                wrong.len(),
                &wrong[..wrong.len().min(20)]
            ));
        }
    }

    /// Each job without a model failed at its gateway before the plate, and
    /// the handler saw it end (`printing`, then `idle` below 100).
    pub fn missing_models_failed(&mut self) {
        let mut wrong = Vec::new();
        for job in &self.fleet.missing {
            let state = self.gateway_state(job);
            let ended = self
                .rec
                .ended_before_plate
                .iter()
                .any(|(_, _, j)| j.as_deref() == Some(job.as_str()));
            if state != "failed" || !ended {
                wrong.push(format!(
                    "{job}: gateway state {state}, handler saw it end: {ended}"
                ));
            }
        }
        if !wrong.is_empty() {
            self.fail(format!(
                "missing-model jobs that did not fail cleanly: {wrong:?}"
            ));
        }
    }

    /// No printer got a second job before its first had printed: nothing of
    /// a printer's earlier job executed after the next was assigned.
    pub fn no_double_booking(&mut self) {
        let mut wrong = Vec::new();
        for p in self.fleet.plan.printers() {
            let fin = self.final_counts(&p);
            let assigned = self.rec.assignments_of(&p);
            for pair in assigned.windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                let then = b.witness.get(&a.job).copied().unwrap_or(0);
                let end = fin.get(&a.job).copied().unwrap_or(0);
                if then != end {
                    wrong.push(format!(
                        "{p}: {} assigned when {} had printed {then} of its {end} moves",
                        b.job, a.job
                    ));
                }
            }
        }
        if !wrong.is_empty() {
            self.fail(format!(
                "{} double bookings: {:?}",
                wrong.len(),
                &wrong[..wrong.len().min(20)]
            ));
        }
    }

    /// Before each print a robot cleared that printer: a clear whose log
    /// snapshot holds the previous print as it ended (or, for the first
    /// print, the plate left unconfirmed at start) and nothing of the next.
    pub fn starts_after_clears(&mut self) {
        let mut wrong = Vec::new();
        for p in self.fleet.plan.printers() {
            let fin = self.final_counts(&p);
            let runs = self.runs(&p);
            let mut before: Option<&String> = None;
            for next in &runs {
                let cleared = self.clears.iter().any(|c| {
                    c.printer == p
                        && before.is_none_or(|a| {
                            c.witness.get(a).copied().unwrap_or(0)
                                == fin.get(a).copied().unwrap_or(0)
                        })
                        && c.witness.get(next).copied().unwrap_or(0) == 0
                });
                if !cleared {
                    wrong.push(format!(
                        "{p}: {next} started with no robot clear after {before:?}"
                    ));
                }
                before = Some(next);
            }
        }
        if !wrong.is_empty() {
            self.fail(format!(
                "{} prints started on an uncleared plate: {:?}",
                wrong.len(),
                &wrong[..wrong.len().min(20)]
            ));
        }
    }

    /// Fails the test with every failure (and the gateways' last log lines).
    pub fn finish(mut self, settled: Result<(), String>) {
        crate::e2e_support::fail_with(&mut self.failures, settled, || self.fleet.logs(5));
    }
}
