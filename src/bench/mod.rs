//! `printgate bench`: measurements that print numbers (a table, or JSON).
//! Every run is against the in-process simulator on real pseudo-terminals;
//! nothing here asserts a speed: the numbers go to the README.

#[cfg(feature = "embedded-broker")]
pub mod estop;
#[cfg(feature = "embedded-broker")]
mod estop_rig;
mod farm;
mod lost_ok;
mod lost_ok_drive;
#[cfg(feature = "embedded-broker")]
mod mqtt;
mod sdwear;
mod sdwear_report;
mod sdwear_rig;
mod serial;

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Smaller runs (for CI smoke tests); the README figures use the default.
    #[arg(long)]
    pub quick: bool,
    #[command(subcommand)]
    pub only: Option<BenchOnly>,
}

/// One measurement on its own.
#[derive(Debug, clap::Subcommand)]
pub enum BenchOnly {
    /// SD-card wear: bytes written and fsyncs per printer-hour, printing,
    /// idle and with the broker down, over a time-scaled simulated hour.
    Sdwear(sdwear::SdwearArgs),
    /// Lost `ok`s: the same job with and without them, stock Marlin and
    /// Marlin with ADVANCED_OK; the wall-time ratio and the recovery time.
    LostOk(lost_ok::LostOkArgs),
    /// Emergency stop: MQTT publish to `M112` on the wire, farm idle and
    /// farm busy (100 MB uploads scanned, fsyncs under the store). Heavy:
    /// not part of the default run.
    #[cfg(feature = "embedded-broker")]
    Estop(estop::EstopArgs),
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: String,
    pub serial: serial::SerialReport,
    pub lost_ok: lost_ok::LostOkReport,
    pub farm: Vec<farm::FarmRun>,
    #[cfg(feature = "embedded-broker")]
    pub mqtt: mqtt::MqttReport,
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.only {
        Some(BenchOnly::Sdwear(a)) => return sdwear::run(a),
        Some(BenchOnly::LostOk(a)) => return lost_ok::run_cli(a),
        #[cfg(feature = "embedded-broker")]
        Some(BenchOnly::Estop(a)) => return estop::run(a),
        None => {}
    }
    let dir = TempDir::new("bench")?;
    let window = std::time::Duration::from_secs(if args.quick { 3 } else { 10 });
    let sizes: &[usize] = if args.quick { &[2] } else { &[8, 16] };
    let report = Report {
        machine: machine(),
        serial: serial::run(dir.path(), args.quick)?,
        lost_ok: lost_ok::run(
            dir.path(),
            &lost_ok::LostOkArgs::with_lines(if args.quick { 2_000 } else { 20_000 }),
        )?,
        farm: sizes
            .iter()
            .map(|n| farm::run(dir.path(), *n, window))
            .collect::<anyhow::Result<_>>()?,
        #[cfg(feature = "embedded-broker")]
        mqtt: mqtt::run(dir.path(), if args.quick { 1000 } else { 10_000 })?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("machine: {}", report.machine);
        serial::print_table(&report.serial);
        lost_ok::print_table(&report.lost_ok);
        print_farm(&report.farm);
        #[cfg(feature = "embedded-broker")]
        println!(
            "\nmqtt: {} events into the outbox at {:.0}/s (fsynced); backlog drained to the broker in {:.2} s ({:.0} events/s, each PUBACKed)",
            report.mqtt.backlog, report.mqtt.enqueue_per_second, report.mqtt.drain_seconds, report.mqtt.delivered_per_second
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_farm(runs: &[farm::FarmRun]) {
    println!("\ndaemon with N printers streaming at 250000 baud (separate simulator processes)");
    println!(
        "{:>8} {:>13} {:>8} {:>10} {:>10} {:>22}",
        "printers", "cold start ms", "CPU %", "RSS KiB", "peak KiB", "store bytes/printer-h"
    );
    for r in runs {
        println!(
            "{:>8} {:>13.0} {:>8.1} {:>10} {:>10} {:>22.0}",
            r.printers,
            r.cold_start_ms,
            r.cpu_percent,
            r.rss_kib,
            r.peak_rss_kib,
            r.store_bytes_per_printer_hour
        );
    }
}

/// CPU model and core count, for the README's "measured on".
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cpu}, {cores} cores")
}

/// CPU time (user + system) of the calling thread, from /proc (10 ms ticks).
pub fn thread_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may contain spaces).
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// A simulator on a pseudo-terminal whose port is `dir/tty-<tag>`: the rig
/// of the serial benchmarks.
fn sim_port(
    dir: &Path,
    tag: &str,
    cfg: crate::sim::SimConfig,
) -> anyhow::Result<(PathBuf, crate::sim::SimHandle)> {
    let link = dir.join(format!("tty-{tag}"));
    let sim = crate::sim::spawn(&link, cfg)?;
    Ok((link, sim))
}

/// A scratch folder removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> std::io::Result<TempDir> {
        TempDir::new_in(&std::env::temp_dir(), tag)
    }

    /// A scratch folder under `base`.
    pub fn new_in(base: &Path, tag: &str) -> std::io::Result<TempDir> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = base.join(format!("printgate-{tag}-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a slicer-like file of `moves` unique moves; returns its path.
pub fn sample_job(dir: &Path, name: &str, moves: usize) -> std::io::Result<PathBuf> {
    use std::io::Write;
    let path = dir.join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
    writeln!(f, "; printgate sample job\nG21\nG90\nM82\nG28\nG92 E0")?;
    for i in 0..moves {
        writeln!(
            f,
            "G1 X{:.3} Y{:.3} E{:.5}",
            20.0 + (i % 160) as f64 * 0.75,
            20.0 + (i * 7 % 160) as f64 * 0.75,
            i as f64 * 0.0331
        )?;
    }
    writeln!(f, "M104 S0\nM140 S0\nM84")?;
    f.flush()?;
    Ok(path)
}
