//! The verdicts of issue 11's "must show", over what the farm recorded: the
//! simulators' logs (what printed), the handler's and the robots' records
//! (what the seed's farm saw and did), the queue manager's requests and the
//! broker traffic. Each check adds failures to a list instead of stopping
//! at the first, so one run names everything that is wrong; `finish` fails
//! the test with that list and the farm's story.

use crate::rig::{Rig, PRINTERS, STEP};
use crate::seed_handler::robot::Clear;
use crate::seed_handler::{Records, Snapshot};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

pub struct Verdict<'a> {
    rig: &'a Rig,
    pub rec: Records,
    pub clears: Vec<Clear>,
    /// Printer → moves executed per job, at the end.
    pub fin: BTreeMap<String, Snapshot>,
    /// Job id → the gateway's `jobs --json` entry.
    pub gateway_jobs: BTreeMap<String, Value>,
    failures: Vec<String>,
}

impl<'a> Verdict<'a> {
    pub fn new(rig: &'a Rig) -> Verdict<'a> {
        let gateway_jobs = rig.gateway_jobs();
        Verdict {
            rig,
            rec: rig.handler().records(),
            clears: rig.robots().clears(),
            fin: PRINTERS
                .iter()
                .map(|p| (p.to_string(), rig.tally.snapshot(p)))
                .collect(),
            gateway_jobs,
            failures: Vec::new(),
        }
    }

    pub fn fail(&mut self, what: String) {
        self.failures.push(what);
    }

    fn printer_of(&self, job: &str) -> Option<String> {
        let a = self.rec.assignments.iter().find(|a| a.job == job)?;
        Some(a.printer.clone())
    }

    fn gateway_state(&self, job: &str) -> String {
        let state = self.gateway_jobs.get(job).map(|j| j["state"].clone());
        state
            .and_then(|s| s.as_str().map(str::to_owned))
            .unwrap_or_else(|| "absent".into())
    }

    /// The handler found every printer in its 30 s window.
    pub fn discovery(&mut self) {
        for p in PRINTERS {
            if !self.rec.discovered.contains(p) {
                self.fail(format!(
                    "{p} was not discovered in the handler's discovery window"
                ));
            }
        }
    }

    /// Every job handed out once, to the handler only, and assigned once;
    /// the gateway never called `/prioritary_job` (`pull = false`).
    pub fn handed_once(&mut self) {
        let handed = self.rig.qm.handed();
        let pending = self.rig.qm.pending();
        if pending != 0 {
            self.fail(format!("{pending} jobs never left the queue manager"));
        }
        let assigned: Vec<String> = self.rec.assignments.iter().map(|a| a.job.clone()).collect();
        for h in &handed {
            let n = assigned.iter().filter(|j| **j == h.job).count();
            if n != 1 {
                self.fail(format!("{} handed out once but assigned {n} times", h.job));
            }
        }
        let polls = self.rig.qm.requests();
        let polls: Vec<_> = polls
            .iter()
            .filter(|r| r.path() == "/prioritary_job")
            .collect();
        let by_gateway = polls
            .iter()
            .filter(|r| r.query("printerId").is_some())
            .count();
        if by_gateway > 0 || polls.len() as u64 != self.rec.counters.polls {
            self.fail(format!(
                "the gateway polled the queue manager with pull = false: {by_gateway} polls with printerId, {} polls in all, {} by the handler",
                polls.len(),
                self.rec.counters.polls
            ));
        }
    }

    /// Each job with a model printed whole, once, on the printer it was
    /// assigned to (those in `partial` may stop part-way, never repeat);
    /// no move anywhere executed twice.
    pub fn printed_once(&mut self, partial: &BTreeSet<String>) {
        for (job, want) in &self.rig.models.clone() {
            let got = self.rig.tally.executed(job);
            let assigned = self.printer_of(job);
            let printers: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
            let state = self.gateway_state(job);
            if got.len() > 1 || (got.len() == 1 && assigned.as_deref() != Some(printers[0])) {
                self.fail(format!(
                    "{job}: printed on {printers:?}, assigned to {assigned:?}"
                ));
                continue;
            }
            let moves = got.first().map(|(_, m)| m.clone()).unwrap_or_default();
            let whole = moves == *want;
            let prefix = moves.len() < want.len() && moves[..] == want[..moves.len()];
            if partial.contains(job) {
                if !prefix && !whole {
                    self.fail(format!(
                        "{job}: {} moves, not a prefix of its model",
                        moves.len()
                    ));
                }
            } else if !whole {
                self.fail(format!(
                    "{job} ({:?}): {} of {} moves printed (gateway state {state})",
                    self.rig.twists[job],
                    moves.len(),
                    want.len()
                ));
            } else if state != "completed" {
                self.fail(format!(
                    "{job}: printed whole, but the gateway says {state}"
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for p in PRINTERS {
            for line in self.rig.tally.lines(p) {
                if !seen.insert(line.clone()) {
                    self.fail(format!("{line} executed twice"));
                }
            }
        }
    }

    /// The job without a model failed before the plate, and its printer
    /// took the next job.
    pub fn missing_model(&mut self, job: &str) {
        let state = self.gateway_state(job);
        if state != "failed" {
            self.fail(format!(
                "{job} (model 404): gateway state {state}, not failed"
            ));
        }
        let Some(printer) = self.printer_of(job) else {
            self.fail(format!("{job} (model 404) was never assigned"));
            return;
        };
        let ended = self
            .rec
            .ended_before_plate
            .iter()
            .find(|(_, p, j)| *p == printer && j.as_deref() == Some(job));
        let Some((ended_at, _, _)) = ended.cloned() else {
            self.fail(format!(
                "{job} (model 404) on {printer}: the handler never saw it end (printing, then idle below 100)"
            ));
            return;
        };
        if !self
            .rec
            .assignments_of(&printer)
            .iter()
            .any(|a| a.at > ended_at)
        {
            self.fail(format!("{printer} took no job after {job} failed"));
        }
    }

    /// No printer got a second job before its first had printed: nothing of
    /// a printer's earlier job executed after the next was assigned.
    pub fn one_job_at_a_time(&mut self) {
        let mut failures = Vec::new();
        for p in PRINTERS {
            let assigned = self.rec.assignments_of(p);
            for pair in assigned.windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                let then = b.witness.get(&a.job).copied().unwrap_or(0);
                let end = self.fin[p].get(&a.job).copied().unwrap_or(0);
                if then != end {
                    failures.push(format!(
                        "{p}: {} assigned when {} had printed {then} of its {end} moves",
                        b.job, a.job
                    ));
                }
            }
        }
        self.failures.extend(failures);
    }

    /// The handler saw `idle` + 100 (with the job's id) for every job that
    /// reached the plate.
    pub fn completions_seen(&mut self) {
        for a in self.rec.assignments.clone() {
            let printed = self.fin[&a.printer].get(&a.job).copied().unwrap_or(0);
            if printed > 0 && !self.rec.completed(&a.printer, &a.job) {
                let statuses = self.statuses_of(&a.printer);
                self.fail(format!(
                    "{}: the handler never saw idle + 100 for {} (statuses heard: {statuses})",
                    a.printer, a.job
                ));
            }
        }
    }

    /// Between two prints on a printer, a robot cleared it: a clear whose
    /// snapshot has the earlier job as it ended and nothing of the next.
    /// Sound but not sharp: a simulator writes its log out when its board
    /// idles (or every 64 KiB), so a print started just before a clear may
    /// not show in that clear's snapshot yet.
    pub fn starts_after_clears(&mut self) {
        for p in PRINTERS {
            for pair in self.rig.tally.runs(p).windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                let end = self.fin[p].get(a).copied().unwrap_or(0);
                let cleared = self.clears.iter().any(|c| {
                    c.printer == p
                        && c.witness.get(a).copied().unwrap_or(0) == end
                        && c.witness.get(b).copied().unwrap_or(0) == 0
                });
                if !cleared {
                    self.fail(format!("{p}: {b} started with no robot clear after {a}"));
                }
            }
        }
    }

    /// `device/printers` carries the handler's lists only.
    pub fn handler_owns_the_list(&mut self) {
        // The recorder hears the handler's last list a moment after it.
        let (recorder, mine) = (&self.rig.recorder, self.rec.lists.len());
        let deadline = Instant::now() + STEP;
        while recorder.on("device/printers").len() < mine && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let on_broker: Vec<Value> = self
            .rig
            .recorder
            .on("device/printers")
            .iter()
            .map(|m| m.json())
            .collect();
        let mine: Vec<Value> = self
            .rec
            .lists
            .iter()
            .map(|(_, l)| serde_json::json!(l))
            .collect();
        if on_broker != mine {
            self.fail(format!(
                "device/printers: {} messages on the broker, {} from the handler (another publisher: {:?})",
                on_broker.len(),
                mine.len(),
                on_broker.iter().filter(|m| !mine.contains(m)).take(5).collect::<Vec<_>>()
            ));
        }
    }

    /// Every progress `status` is one of the seed's words.
    pub fn seed_statuses(&mut self) {
        let mut other: BTreeMap<String, usize> = BTreeMap::new();
        for h in &self.rec.progress {
            if h.status != "idle" && h.status != "printing" {
                *other.entry(h.status.clone()).or_default() += 1;
            }
        }
        if !other.is_empty() {
            self.fail(format!(
                "progress statuses outside the seed's idle/printing: {other:?}"
            ));
        }
    }

    /// Distinct (status, progress ≥ 100) pairs heard from `printer`.
    fn statuses_of(&self, printer: &str) -> String {
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for h in self.rec.progress.iter().filter(|h| h.printer == printer) {
            let hundred = if h.progress >= 100.0 { "+100" } else { "" };
            seen.insert(format!("{}{hundred}", h.status));
        }
        seen.into_iter().collect::<Vec<_>>().join(", ")
    }

    /// Fails the test with every failure and the farm's story, if any.
    pub fn finish(mut self, settled: Result<(), String>) {
        crate::e2e_support::fail_with(&mut self.failures, settled, || {
            crate::story::story(self.rig, &self.rec, &self.clears, &self.gateway_jobs)
        });
    }
}
