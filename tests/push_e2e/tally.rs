//! The oracle over the simulators' own `--received` logs: which job each
//! executed move belongs to (by the tag that `write_job` puts in its E
//! value), per printer and in order. Reads logs; never judges.

use crate::e2e_support::executed_moves;
use crate::seed_handler::Snapshot;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub struct Tally {
    /// Printer id → its simulator's log.
    pub logs: BTreeMap<String, PathBuf>,
    /// Tag (the digits before the `.` in ` E<tag>.<n>`) → job id.
    pub tags: BTreeMap<String, String>,
}

/// The tag of a move written by `write_job`.
pub fn tag_of(line: &str) -> Option<&str> {
    line.split(" E").nth(1)?.split('.').next()
}

impl Tally {
    /// The job of each move `printer` executed, in order (foreign or
    /// untagged moves as `?<line>`).
    pub fn jobs_in_order(&self, printer: &str) -> Vec<String> {
        let Some(log) = self.logs.get(printer) else {
            return Vec::new();
        };
        executed_moves(log)
            .iter()
            .map(|l| match tag_of(l).and_then(|t| self.tags.get(t)) {
                Some(job) => job.clone(),
                None => format!("?{l}"),
            })
            .collect()
    }

    /// Moves executed so far on `printer`, per job.
    pub fn snapshot(&self, printer: &str) -> Snapshot {
        let mut counts = Snapshot::new();
        for job in self.jobs_in_order(printer) {
            *counts.entry(job).or_default() += 1;
        }
        counts
    }

    /// The jobs `printer` executed, in order, each once per uninterrupted run.
    pub fn runs(&self, printer: &str) -> Vec<String> {
        let mut runs = self.jobs_in_order(printer);
        runs.dedup();
        runs
    }

    /// The moves of `job` each printer executed: (printer, moves in order).
    pub fn executed(&self, job: &str) -> Vec<(String, Vec<String>)> {
        let Some((tag, _)) = self.tags.iter().find(|(_, j)| *j == job) else {
            return Vec::new();
        };
        let mark = format!(" E{tag}.");
        self.logs
            .iter()
            .map(|(p, log)| {
                let moves = executed_moves(log)
                    .into_iter()
                    .filter(|l| l.contains(&mark))
                    .collect::<Vec<_>>();
                (p.clone(), moves)
            })
            .filter(|(_, moves)| !moves.is_empty())
            .collect()
    }

    /// Every move executed on `printer`.
    pub fn lines(&self, printer: &str) -> Vec<String> {
        self.logs
            .get(printer)
            .map(|log| executed_moves(log))
            .unwrap_or_default()
    }
}
