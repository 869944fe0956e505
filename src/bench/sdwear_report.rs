//! The report of `bench sdwear`: figures per printer-hour for each
//! scenario, as JSON or as a table. Formatting only.

use super::sdwear_rig::KernelSyncs;
use serde::Serialize;

/// Per printer and simulated hour, over the window.
#[derive(Debug, Default, Serialize)]
pub struct PerPrinterHour {
    /// `write_bytes` of the daemon process.
    pub process_write_bytes: f64,
    /// The store's own counters (`None` from a daemon without them).
    pub store_bytes: Option<f64>,
    pub store_syncs: Option<f64>,
    pub commits_durable: Option<f64>,
    pub commits_non_durable: Option<f64>,
    pub checkpoints: Option<f64>,
    pub wal_frames: Option<f64>,
    pub log_bytes: f64,
    pub log_lines: f64,
    /// The kernel's count, with `--cross-check`.
    pub kernel_syncs: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ScenarioReport {
    pub name: &'static str,
    pub printers: u16,
    pub window_seconds: f64,
    pub simulated_hours: f64,
    pub per_printer_hour: PerPrinterHour,
    /// Totals over the window, for the record.
    pub store_syncs: Option<u64>,
    /// Jobs that completed in the window.
    pub jobs_completed: u64,
    /// The `jobs` scenario's store counters divided by its jobs.
    pub per_job: Option<PerJob>,
    pub kernel: Option<KernelSyncs>,
    pub cross_check_error: Option<String>,
    /// Size of each job's G-code file (uploaded before the window).
    pub model_bytes_per_job: u64,
    pub outbox_rows_after: u64,
    /// `printgate.db` + `-wal` after the window.
    pub db_bytes_after: u64,
}

/// What one job's life costs the store (in the `jobs` scenario, where
/// almost all writes are job life: the printing share is small).
#[derive(Debug, Serialize)]
pub struct PerJob {
    pub store_bytes: f64,
    pub store_syncs: f64,
    pub commits_durable: f64,
    pub commits_non_durable: f64,
}

impl PerJob {
    pub fn of(s: &crate::store::StoreIo, jobs: u64) -> PerJob {
        let per = |v: u64| v as f64 / jobs as f64;
        PerJob {
            store_bytes: per(s.bytes_written),
            store_syncs: per(s.syncs),
            commits_durable: per(s.commits_durable),
            commits_non_durable: per(s.commits_non_durable),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SdwearReport {
    pub machine: String,
    pub fs_type: String,
    pub scale: f64,
    pub scenarios: Vec<ScenarioReport>,
    /// Scenarios this build cannot run (no embedded broker).
    pub skipped: Vec<String>,
}

pub fn print_table(r: &SdwearReport) {
    println!("machine: {}", r.machine);
    println!(
        "data on {}; a simulated hour takes {:.0} s (time scale {}); figures per printer-hour",
        r.fs_type,
        3600.0 / r.scale,
        r.scale
    );
    println!(
        "{:<12} {:>12} {:>12} {:>7} {:>7} {:>8} {:>9} {:>5} {:>10} {:>7}",
        "scenario",
        "write_bytes",
        "store bytes",
        "fsyncs",
        "kernel",
        "durable",
        "non-dur.",
        "ckpt",
        "log bytes",
        "outbox"
    );
    let opt = |v: Option<f64>, prec: usize| v.map_or_else(|| "-".into(), |v| format!("{v:.prec$}"));
    for s in &r.scenarios {
        let p = &s.per_printer_hour;
        println!(
            "{:<12} {:>12.0} {:>12} {:>7} {:>7} {:>8} {:>9} {:>5} {:>10.0} {:>7}",
            s.name,
            p.process_write_bytes,
            opt(p.store_bytes, 0),
            opt(p.store_syncs, 1),
            opt(p.kernel_syncs, 1),
            opt(p.commits_durable, 1),
            opt(p.commits_non_durable, 1),
            opt(p.checkpoints, 2),
            p.log_bytes,
            s.outbox_rows_after,
        );
        if let Some(j) = &s.per_job {
            println!(
                "  per job ({} jobs in the window): {:.0} store bytes, {:.1} fsyncs, {:.1} durable and {:.1} non-durable commits",
                s.jobs_completed, j.store_bytes, j.store_syncs, j.commits_durable, j.commits_non_durable
            );
        }
        if let Some(e) = &s.cross_check_error {
            println!("  cross-check failed: {e}");
        }
    }
    if let Some(s) = r.scenarios.iter().find(|s| s.name == "printing") {
        println!(
            "model files (payload, written once per job, not above): {} bytes per job",
            s.model_bytes_per_job
        );
    }
    for s in &r.skipped {
        println!("skipped: {s}");
    }
    println!("targets: printing <= 500000 bytes and <= 120 fsyncs, idle <= 50000 bytes and <= 10 fsyncs per printer-hour");
}
