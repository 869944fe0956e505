//! What a failed push test prints: the farm's story, per printer and in
//! time order (seconds since the handler started), then the queue manager,
//! the gateway's jobs, errors and the daemon's last log lines.

use crate::rig::{Rig, PRINTERS};
use crate::seed_handler::robot::Clear;
use crate::seed_handler::Records;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

pub fn story(rig: &Rig, rec: &Records, clears: &[Clear], jobs: &BTreeMap<String, Value>) -> String {
    let t = |at: &Instant| at.saturating_duration_since(rec.started).as_secs_f64();
    let mut out = String::new();
    for p in PRINTERS {
        let mut lines: Vec<(f64, String)> = Vec::new();
        for a in rec.assignments.iter().filter(|a| a.printer == p) {
            lines.push((
                t(&a.at),
                format!("assigned {} (witness {:?})", a.job, a.witness),
            ));
        }
        for (at, _, c) in rec.changes.iter().filter(|(_, q, _)| q == p) {
            let from = c.from.as_ref().map_or("-".into(), ToString::to_string);
            lines.push((t(at), format!("{from} -> {} ({:?})", c.to, c.why)));
        }
        for (at, _, why) in rec.ignored.iter().filter(|(_, q, _)| q == p) {
            lines.push((t(at), format!("set aside: {why}")));
        }
        let events = rig.recorder.on(&format!("device/printer/{p}/event"));
        for m in events {
            let e = m.json();
            let what = format!(
                "gateway event {} {} {}",
                e["type"], e["jobId"], e["message"]
            );
            lines.push((t(&m.at), what));
        }
        for c in clears.iter().filter(|c| c.printer == p) {
            lines.push((
                t(&c.at),
                format!("{} clears (witness {:?})", c.robot, c.witness),
            ));
        }
        lines.sort_by(|a, b| a.0.total_cmp(&b.0));
        let _ = writeln!(out, "{p}: runs {:?}", rig.tally.runs(p));
        for (at, line) in lines {
            let _ = writeln!(out, "  {at:7.2} {line}");
        }
    }
    let handed: Vec<String> = rig.qm.handed().iter().map(|h| h.job.clone()).collect();
    let _ = writeln!(out, "queue manager handed out: {handed:?}");
    let _ = writeln!(
        out,
        "handler: {:?}; lists {:?}",
        rec.counters,
        rec.lists.iter().map(|(_, l)| l).collect::<Vec<_>>()
    );
    for (id, j) in jobs {
        let _ = writeln!(
            out,
            "gateway job {id}: {} on {}",
            j["state"], j["printerId"]
        );
    }
    for e in rec.errors.iter().take(10) {
        let _ = writeln!(out, "handler error: {e}");
    }
    for e in rig.robots().errors() {
        let _ = writeln!(out, "robot error: {e}");
    }
    let _ = writeln!(out, "daemon log (last lines):\n{}", rig.log_tail(25));
    out
}
