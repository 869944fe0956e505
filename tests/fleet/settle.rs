//! Waiting on the fleet: until the farm has settled (every job out of the
//! queue manager assigned and ended, every printer available again), or
//! until a condition holds; a wait that times out tells what it saw and the
//! gateways' last log lines. Part of [`Fleet`]; never acts on the farm.

use crate::rig::Fleet;
use crate::seed_handler::seat::Seat;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

impl Fleet {
    /// Waits until the queue manager's list is empty, every job it handed
    /// out was assigned and ended (printed and cleared, or ended before the
    /// plate), every printer the handler knows is available and its last
    /// list is empty. `Err` says why it stopped waiting.
    pub fn wait_settled(&mut self, until: Instant) -> Result<(), String> {
        loop {
            for g in &mut self.gateways {
                if let Some(Ok(Some(status))) = g.proc.as_mut().map(|p| p.0.try_wait()) {
                    return Err(format!("{}: printgate run exited ({status})", g.id));
                }
            }
            if self.settled() {
                return Ok(());
            }
            if Instant::now() > until {
                let seats = self.handler().seats();
                let busy: Vec<String> = seats
                    .iter()
                    .filter(|(_, s)| **s != Seat::Available)
                    .take(20)
                    .map(|(p, s)| format!("{p}: {s}"))
                    .collect();
                return Err(format!(
                    "not settled in time: {} jobs still queued; seats not available: {busy:?}",
                    self.qm.pending()
                ));
            }
            // Polling the handler's records: not a synchronisation.
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn settled(&self) -> bool {
        let seats = self.handler().seats();
        let handed = self.qm.handed().len();
        let n = self.plan.printers().len();
        self.handler().with_records(|r| {
            let ended: BTreeSet<(&str, &str)> = r
                .completions
                .iter()
                .chain(r.ended_before_plate.iter())
                .filter_map(|(_, p, j)| Some((p.as_str(), j.as_deref()?)))
                .collect();
            self.qm.pending() == 0
                && handed == r.assignments.len()
                && seats.len() == n
                && seats.values().all(|s| *s == Seat::Available)
                && r.lists.last().is_some_and(|(_, l)| l.is_empty())
                && r.assignments
                    .iter()
                    .all(|a| ended.contains(&(a.printer.as_str(), a.job.as_str())))
        })
    }

    /// Polls `cond` (every 100 ms) until it holds; fails with the last lines
    /// of every gateway's log after `limit`.
    pub fn wait_or_tell(&self, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !cond() {
            if Instant::now() > deadline {
                panic!(
                    "timed out after {limit:?} waiting for {what}\n\n{}",
                    self.logs(8)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `lines` of each gateway's log.
    pub fn logs(&self, lines: usize) -> String {
        let mut out = String::new();
        for g in &self.gateways {
            let log = std::fs::read_to_string(&g.log).unwrap_or_default();
            let all: Vec<&str> = log.lines().collect();
            out.push_str(&format!("--- {} (last {lines} lines)\n", g.id));
            out.push_str(&all[all.len().saturating_sub(lines)..].join("\n"));
            out.push('\n');
        }
        out
    }
}
