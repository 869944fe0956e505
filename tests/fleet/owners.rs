//! The fleet's verdicts on who acted: no gateway on another's printer, no
//! claim conflict in a fleet of unique ids, and a farm (handler, robots)
//! that met no malformed input. Part of [`Verdict`]; reads, never acts.

use crate::checks::Verdict;
use std::collections::BTreeSet;

impl Verdict<'_> {
    /// No gateway acted on another's printer: every progress message for a
    /// printer names its owner, each gateway's store holds only jobs for
    /// its own printers (exactly the jobs assigned to them), and no
    /// gateway saw a claim conflict.
    pub fn owners_only(&mut self) {
        let mut wrong = BTreeSet::new();
        for m in &self.messages {
            let Some(p) = m
                .topic
                .strip_prefix("device/printer/")
                .and_then(|r| r.strip_suffix("/progress"))
            else {
                continue;
            };
            let gw = m.json()["gatewayId"]
                .as_str()
                .unwrap_or("(none)")
                .to_owned();
            if self.fleet.owner.get(p) != Some(&gw) {
                wrong.insert(format!("progress for {p} from {gw}"));
            }
        }
        for (gw, jobs) in &self.gateway_jobs {
            let mine: BTreeSet<&String> = self.fleet.gateway(gw).printers.iter().collect();
            for j in jobs {
                let printer = j["printerId"].as_str().unwrap_or("").to_owned();
                let id = j["id"].as_str().unwrap_or("");
                let assigned = self
                    .rec
                    .assignments
                    .iter()
                    .find(|a| a.job == id)
                    .map(|a| a.printer.clone());
                if !mine.contains(&printer) || assigned.as_ref() != Some(&printer) {
                    wrong.insert(format!(
                        "{gw} holds {id} for {printer} (assigned to {assigned:?})"
                    ));
                }
            }
        }
        for a in &self.rec.assignments {
            let holders: Vec<&String> = self
                .gateway_jobs
                .iter()
                .filter(|(_, jobs)| jobs.iter().any(|j| j["id"] == a.job.as_str()))
                .map(|(gw, _)| gw)
                .collect();
            if holders.len() != 1 || Some(holders[0]) != self.fleet.owner.get(&a.printer) {
                wrong.insert(format!(
                    "{} (assigned to {}) held by {holders:?}",
                    a.job, a.printer
                ));
            }
        }
        for m in &self.messages {
            if m.topic.starts_with("device/gateway/") && m.topic.ends_with("/event") {
                let e = m.json();
                if e["type"] == "assignment_rejected"
                    || e["message"]
                        .as_str()
                        .is_some_and(|t| t.contains("also claimed"))
                {
                    wrong.insert(format!("{}: {e}", m.topic));
                }
            }
        }
        if !wrong.is_empty() {
            let list: Vec<&String> = wrong.iter().take(20).collect();
            self.fail(format!(
                "{} cases of a gateway acting on another's printer: {list:?}",
                wrong.len()
            ));
        }
    }

    /// The handler and robots met no malformed input and no failed publish,
    /// and every progress `status` is one of the seed's words.
    pub fn clean_farm(&mut self) {
        if !self.rec.errors.is_empty() {
            self.fail(format!(
                "handler errors: {:?}",
                &self.rec.errors[..self.rec.errors.len().min(10)]
            ));
        }
        if !self.robot_errors.is_empty() {
            let errors = self.robot_errors.clone();
            self.fail(format!("robot errors: {errors:?}"));
        }
        let other: BTreeSet<&String> = self
            .rec
            .progress
            .iter()
            .filter(|h| h.status != "idle" && h.status != "printing")
            .map(|h| &h.status)
            .collect();
        if !other.is_empty() {
            self.fail(format!(
                "progress statuses outside the seed's idle/printing: {other:?}"
            ));
        }
    }
}
