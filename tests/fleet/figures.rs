//! The fleet's figures, printed (never asserted): time against the ideal,
//! clear-to-next-start latency, broker traffic from Mosquitto's `$SYS`
//! counters and, by kind, from the recorder; CPU and memory of Mosquitto,
//! the gateways, the simulators and the test process (handler, robots,
//! recorder, queue manager) from /proc. Reads, never judges.

use crate::checks::Verdict;
use crate::procs::quantile;
use crate::rig::Fleet;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// The stretches of a run.
pub struct Marks {
    pub created: Instant,
    pub gateways_up: Instant,
    pub farm_started: Instant,
    pub discovery_end: Instant,
    pub settled: Instant,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn dist(name: &str, v: &[f64], unit: &str) -> String {
    format!(
        "{name}: p50 {:.0} {unit}, p99 {:.0} {unit}, max {:.0} {unit} (n = {})",
        quantile(v, 0.5),
        quantile(v, 0.99),
        quantile(v, 1.0),
        v.len()
    )
}

/// What kind of farm traffic a topic (and payload) is.
fn kind(topic: &str, body: &serde_json::Value) -> &'static str {
    let Some(rest) = topic.strip_prefix("device/") else {
        return "other";
    };
    if rest == "printers" {
        return "device/printers lists";
    }
    if rest.starts_with("robot/") {
        return "robot progress";
    }
    if rest.starts_with("gateway/") {
        return if rest.ends_with("/status") {
            "gateway status (retained)"
        } else {
            "gateway events"
        };
    }
    if rest.ends_with("/assignement") {
        return "assignments";
    }
    if rest.ends_with("/event") {
        return "printer events";
    }
    if rest.contains("/job_complete/") {
        return "job_complete";
    }
    if rest.ends_with("/progress") {
        return match body["state"].as_str() {
            Some("printing" | "downloading" | "starting" | "paused") => "progress (holding a job)",
            Some("queued") => "progress (queued)",
            _ => "heartbeats (idle, awaiting_clear)",
        };
    }
    "other"
}

pub fn print(fleet: &Fleet, v: &Verdict<'_>, marks: &Marks) {
    let mut out = String::new();
    let plan = &fleet.plan;
    let printers = plan.printers();
    let n = printers.len() as f64;
    let phase = marks.settled.saturating_duration_since(marks.discovery_end);
    let secs = phase.as_secs_f64().max(1e-9);
    let _ = writeln!(
        out,
        "fleet: {} gateways, {} printers, {} jobs ({} without a model), {} moves per model at motion scale {}, {} robots ({} ms a pick), heartbeat {} s, progress {} s, discovery {:?}",
        fleet.gateways.len(),
        printers.len(),
        fleet.models.len() + fleet.missing.len(),
        fleet.missing.len(),
        plan.moves,
        plan.motion_scale,
        plan.robots,
        plan.pick.as_millis(),
        plan.heartbeat_s,
        plan.progress_interval_s,
        plan.discovery,
    );
    let _ = writeln!(
        out,
        "time: {:.1} s to start simulators and gateways, {:.1} s discovery, {:.1} s from the end of discovery to settled",
        (marks.gateways_up - marks.created).as_secs_f64(),
        (marks.discovery_end - marks.farm_started).as_secs_f64(),
        secs
    );

    // Events by (printer, job): when the gateway said it started printing,
    // and when its job_complete came.
    let mut started: BTreeMap<(String, String), Instant> = BTreeMap::new();
    let mut done: BTreeMap<(String, String), Instant> = BTreeMap::new();
    let mut starts_by_printer: BTreeMap<String, Vec<Instant>> = BTreeMap::new();
    for m in &v.messages {
        let Some(rest) = m.topic.strip_prefix("device/printer/") else {
            continue;
        };
        let body = m.json();
        if let Some(p) = rest.strip_suffix("/event") {
            if body["type"] == "job_printing" {
                let job = body["jobId"].as_str().unwrap_or("").to_owned();
                started.insert((p.to_owned(), job), m.at);
                starts_by_printer
                    .entry(p.to_owned())
                    .or_default()
                    .push(m.at);
            }
        } else if let Some((p, _)) = rest.split_once("/job_complete/") {
            if body["outcome"] == "completed" {
                let job = body["jobId"].as_str().unwrap_or("").to_owned();
                done.insert((p.to_owned(), job), m.at);
            }
        }
    }
    let print_times: Vec<f64> = started
        .iter()
        .filter_map(|(k, s)| Some(done.get(k)?.saturating_duration_since(*s).as_secs_f64()))
        .collect();
    let mean = print_times.iter().sum::<f64>() / print_times.len().max(1) as f64;
    let ideal = fleet.models.len() as f64 * mean / n;
    let _ = writeln!(
        out,
        "print time per job (job_printing event to job_complete): mean {mean:.2} s, p50 {:.2} s, max {:.2} s; ideal {:.1} s (printed jobs × mean / printers) against {secs:.1} s actual: {:.0} % of ideal",
        quantile(&print_times, 0.5),
        quantile(&print_times, 1.0),
        ideal,
        100.0 * ideal / secs
    );

    // Clear → next start, and its two halves.
    let (mut to_start, mut to_assign, mut assign_to_start) = (Vec::new(), Vec::new(), Vec::new());
    for c in &v.clears {
        let next_start = starts_by_printer
            .get(&c.printer)
            .and_then(|s| s.iter().find(|t| **t > c.at).copied());
        let next_assign = v
            .rec
            .assignments
            .iter()
            .find(|a| a.printer == c.printer && a.at > c.at);
        if let Some(s) = next_start {
            to_start.push(ms(s - c.at));
            if let Some(a) = next_assign.filter(|a| a.at < s) {
                to_assign.push(ms(a.at - c.at));
                assign_to_start.push(ms(s - a.at));
            }
        }
    }
    let _ = writeln!(
        out,
        "{}",
        dist(
            "robot clear -> next print started (job_printing event)",
            &to_start,
            "ms"
        )
    );
    let _ = writeln!(
        out,
        "  {}",
        dist("clear -> handler's assignment", &to_assign, "ms")
    );
    let _ = writeln!(
        out,
        "  {}",
        dist(
            "assignment -> job_printing (accept, download, check, start)",
            &assign_to_start,
            "ms"
        )
    );

    // Traffic by kind, from the recorder, during the printing phase.
    let mut kinds: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    let mut recorded = 0u64;
    for m in v
        .messages
        .iter()
        .filter(|m| m.at >= marks.discovery_end && m.at <= marks.settled)
    {
        let e = kinds.entry(kind(&m.topic, &m.json())).or_default();
        e.0 += 1;
        e.1 += (m.topic.len() + m.payload.len()) as u64;
        recorded += 1;
    }
    let jobs = (fleet.models.len() + fleet.missing.len()).max(1) as f64;
    let _ = writeln!(out, "farm traffic by kind (published, from a recorder of device/#, end of discovery to settled):");
    for (k, (count, bytes)) in &kinds {
        let _ = writeln!(
            out,
            "  {k:36} {count:7} msgs  {:8.1} msg/s  {:9.0} B/s  {:6.3} msg/s per printer  {:5.2} per job  {:4.0} B avg",
            *count as f64 / secs,
            *bytes as f64 / secs,
            *count as f64 / secs / n,
            *count as f64 / jobs,
            *bytes as f64 / (*count).max(1) as f64,
        );
    }

    if let Some(sys) = &fleet.sys {
        let (a, b) = (marks.discovery_end, marks.settled);
        let w = Duration::from_secs(5);
        let rate = |name: &str| sys.rate(name, a, b).unwrap_or(f64::NAN);
        let peak = |name: &str| sys.peak_rate(name, a, b, w).unwrap_or(f64::NAN);
        let sys_in_phase = sys.received() as f64 / (b - marks.created).as_secs_f64();
        let _ = writeln!(
            out,
            "broker ($SYS, end of discovery to settled): PUBLISH in {:.0}/s (peak 5 s {:.0}/s), out {:.0}/s (peak {:.0}/s; {:.0}/s without the recorder's and $SYS listener's copies); bytes in {:.0} B/s, out {:.0} B/s",
            rate("publish/messages/received"),
            peak("publish/messages/received"),
            rate("publish/messages/sent"),
            peak("publish/messages/sent"),
            rate("publish/messages/sent") - recorded as f64 / secs - sys_in_phase,
            rate("bytes/received"),
            rate("bytes/sent"),
        );
        let _ = writeln!(
            out,
            "broker: all MQTT packets in {:.0}/s, out {:.0}/s; clients connected max {:.0}; retained messages max {:.0}; subscriptions max {:.0}",
            rate("messages/received"),
            rate("messages/sent"),
            sys.max("clients/connected").unwrap_or(f64::NAN),
            sys.max("retained messages/count").unwrap_or(f64::NAN),
            sys.max("subscriptions/count").unwrap_or(f64::NAN),
        );
    }

    let s = &fleet.sampler;
    let (a, b) = (marks.discovery_end, marks.settled);
    let share = |name: &str| s.cpu_share(name, a, b).unwrap_or(f64::NAN) * 100.0;
    let gw_names = s.names("gateway ");
    let gw_cpu: Vec<f64> = gw_names.iter().map(|g| share(g)).collect();
    let gw_rss: Vec<f64> = gw_names
        .iter()
        .filter_map(|g| s.peak_rss_kib(g))
        .map(|k| k as f64 / 1024.0)
        .collect();
    let sim_names = s.names("sim ");
    let sim_cpu: Vec<f64> = sim_names.iter().map(|g| share(g)).collect();
    let _ = writeln!(
        out,
        "CPU (% of one core, end of discovery to settled): mosquitto {:.1} % (peak RSS {:.1} MiB); per gateway p50 {:.1} %, max {:.1} %, all {} gateways {:.0} %; per simulator p50 {:.2} %, all {:.0} %; test process (handler, robots, recorder, queue manager) {:.1} %",
        share("mosquitto"),
        s.peak_rss_kib("mosquitto").unwrap_or(0) as f64 / 1024.0,
        quantile(&gw_cpu, 0.5),
        quantile(&gw_cpu, 1.0),
        gw_cpu.len(),
        gw_cpu.iter().filter(|x| x.is_finite()).sum::<f64>(),
        quantile(&sim_cpu, 0.5),
        sim_cpu.iter().filter(|x| x.is_finite()).sum::<f64>(),
        share("test process"),
    );
    let _ = writeln!(
        out,
        "gateway RSS (peak, VmHWM): p50 {:.1} MiB, max {:.1} MiB; per printer at p50 {:.2} % CPU",
        quantile(&gw_rss, 0.5),
        quantile(&gw_rss, 1.0),
        quantile(&gw_cpu, 0.5) / (n / fleet.gateways.len() as f64),
    );
    let r = &v.rec;
    let _ = writeln!(
        out,
        "handler: {} assignments, {} completions, {} ended before the plate, {} robot clears acted on, {} lists, {} polls ({} empty), {} progress messages heard, {} set aside; load average at the end: {}",
        r.assignments.len(),
        r.completions.len(),
        r.ended_before_plate.len(),
        r.clears.len(),
        r.lists.len(),
        r.counters.polls,
        r.counters.empty,
        r.progress.len(),
        r.ignored.len(),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    );
    for (_, printer, why) in r.ignored.iter().take(5) {
        let _ = writeln!(out, "  set aside from {printer}: {why}");
    }
    eprintln!("{out}");
}
