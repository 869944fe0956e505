//! The cost of lost `ok`s (issue 14): the same job at 250000 baud against
//! the simulated Marlin, without and with `ADVANCED_OK`, once with no lost
//! `ok` and once with a seeded share of them lost; the ratio of the wall
//! times, and how long each lost `ok` went unnoticed.
//!
//! Recovery time of a lost `ok`: from the instant the simulator withheld it
//! (`SimHandle::dropped_oks`, the moment it would have written it) to the
//! instant the host core reported the lines behind it recovered
//! (`Event::Recovered`, clocked by `lost_ok_drive`). Both are the same
//! process's monotonic clock. Recoveries are paired with losses in time
//! order, each taking as many of the earliest unpaired losses as it
//! recovered lines. This is the time the host's count was wrong, whatever it
//! did meanwhile (without `ADVANCED_OK` it keeps streaming with one slot
//! fewer until a marker or a probe sets the count right).
//!
//! Never asserts a speed; prints numbers (and JSON) for the README.

use super::lost_ok_drive::{self, Recovered};
use super::sim_port;
use crate::protocol::{self, Recovery};
use crate::sim::{Firmware, SimConfig};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const BAUD: u32 = 250_000;

#[derive(Debug, Clone, clap::Args)]
pub struct LostOkArgs {
    /// Job length in commands.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..=1_000_000))]
    pub lines: u64,
    /// Share of executed commands whose `ok` the simulator loses, in percent.
    #[arg(long, default_value_t = 0.1)]
    pub lost_percent: f64,
    /// Seed of the simulator's fault generator (the same losses every run).
    #[arg(long, default_value_t = 14)]
    pub seed: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl LostOkArgs {
    /// The figures of the README (or `lines` of them for quick runs).
    pub fn with_lines(lines: u64) -> Self {
        LostOkArgs {
            lines,
            lost_percent: 0.1,
            seed: 14,
            json: false,
        }
    }
}

/// One run of the job.
#[derive(Debug, Serialize)]
pub struct RunFigures {
    pub seconds: f64,
    pub lines_per_second: f64,
    /// `ok`s the simulator withheld.
    pub lost_oks: u64,
    /// Lines the host found done after their `ok` was lost.
    pub recovered_oks: u64,
    /// Recovered lines by how they were found.
    pub by_line_number: u64,
    pub by_marker: u64,
    pub by_probe: u64,
    pub timeouts: u64,
    pub resends: u64,
    /// Median and largest recovery time (see the module doc); `None`
    /// without lost `ok`s.
    pub recovery_ms_median: Option<f64>,
    pub recovery_ms_max: Option<f64>,
    /// Lost `ok`s no recovery accounted for by the end of the job.
    pub unpaired: u64,
}

#[derive(Debug, Serialize)]
pub struct FirmwareRun {
    pub firmware: String,
    pub clean: RunFigures,
    pub lossy: RunFigures,
    /// Lossy wall time over clean wall time (issue 14: at most 1.25).
    pub ratio: f64,
}

#[derive(Debug, Serialize)]
pub struct LostOkReport {
    pub lines: u64,
    pub baud: u32,
    pub lost_percent: f64,
    pub seed: u64,
    /// The upper bound of the adaptive deadline (the production default).
    pub ack_timeout_ms: u64,
    pub firmwares: Vec<FirmwareRun>,
}

/// `printgate bench lost-ok`.
pub fn run_cli(args: LostOkArgs) -> anyhow::Result<ExitCode> {
    let dir = super::TempDir::new("bench-lost-ok")?;
    let report = run(dir.path(), &args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(dir: &Path, args: &LostOkArgs) -> anyhow::Result<LostOkReport> {
    if !(0.0..=100.0).contains(&args.lost_percent) {
        anyhow::bail!(
            "--lost-percent must be between 0 and 100, got {}",
            args.lost_percent
        );
    }
    let job = short_moves_job(dir, "lost-ok.gcode", args.lines)?;
    let cfg = protocol::Config {
        baud: BAUD,
        ..protocol::Config::default()
    };
    let mut firmwares = Vec::new();
    for firmware in [Firmware::Marlin, Firmware::MarlinAdvanced] {
        let clean = one_run(dir, &job, &cfg, firmware, 0.0, args)?;
        let lossy = one_run(dir, &job, &cfg, firmware, args.lost_percent / 100.0, args)?;
        firmwares.push(FirmwareRun {
            firmware: firmware.to_string(),
            ratio: lossy.seconds / clean.seconds.max(1e-9),
            clean,
            lossy,
        });
    }
    Ok(LostOkReport {
        lines: args.lines,
        baud: BAUD,
        lost_percent: args.lost_percent,
        seed: args.seed,
        ack_timeout_ms: u64::try_from(cfg.ack_timeout.as_millis()).unwrap_or(u64::MAX),
        firmwares,
    })
}

fn one_run(
    dir: &Path,
    job: &Path,
    cfg: &protocol::Config,
    firmware: Firmware,
    drop_ok: f64,
    args: &LostOkArgs,
) -> anyhow::Result<RunFigures> {
    let tag = format!(
        "lost-ok-{firmware}-{}",
        if drop_ok > 0.0 { "lossy" } else { "clean" }
    );
    let sim_cfg = SimConfig {
        baud: BAUD,
        drop_ok,
        seed: args.seed,
        // Real move times: the host's planner estimate meets a real planner.
        motion_time_scale: 1.0,
        ..SimConfig::for_firmware(firmware)
    };
    let (link, sim) = sim_port(dir, &tag, sim_cfg)?;
    // Generous: a run as slow as before issue 14 (≈ 7×) still finishes.
    let limit = Duration::from_secs(30) + Duration::from_millis(15 * args.lines);
    let streamed = lost_ok_drive::stream(&link, cfg.clone(), job, limit);
    let drops: Vec<Instant> = sim.dropped_oks().into_iter().map(|(_, at)| at).collect();
    sim.stop();
    let s = streamed.map_err(|e| anyhow::anyhow!("lost-ok bench run {tag}: {e:#}"))?;
    let (times, unpaired) = recovery_times(&drops, &s.recoveries);
    let by = |want: Recovery| -> u64 {
        s.recoveries
            .iter()
            .filter(|r| r.by == want)
            .map(|r| r.lines)
            .sum()
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(RunFigures {
        seconds: s.seconds,
        lines_per_second: s.lines as f64 / s.seconds.max(1e-9),
        lost_oks: drops.len() as u64,
        recovered_oks: s.stats.recovered_oks,
        by_line_number: by(Recovery::LineNumber),
        by_marker: by(Recovery::Marker),
        by_probe: by(Recovery::Probe),
        timeouts: s.stats.timeouts,
        resends: s.stats.resends,
        recovery_ms_median: median(&times).map(ms),
        recovery_ms_max: times.iter().max().copied().map(ms),
        unpaired,
    })
}

/// The recovery time of each loss (see the module doc), and how many losses
/// no recovery accounted for. `drops` in time order, as the simulator
/// records them.
fn recovery_times(drops: &[Instant], recoveries: &[Recovered]) -> (Vec<Duration>, u64) {
    let mut times = Vec::with_capacity(drops.len());
    let mut next = 0;
    for r in recoveries {
        for _ in 0..r.lines {
            match drops.get(next) {
                Some(&lost) if lost <= r.at => {
                    times.push(r.at - lost);
                    next += 1;
                }
                _ => break,
            }
        }
    }
    (times, drops.len().saturating_sub(next) as u64)
}

fn median(times: &[Duration]) -> Option<Duration> {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => sorted.get(mid).copied(),
        _ => Some((*sorted.get(mid - 1)? + *sorted.get(mid)?) / 2),
    }
}

/// A slicer-like job of `lines` commands: a slow spiral of 0.1 mm segments
/// at 80 mm/s with relative extrusion (PrusaSlicer's style). Each move takes
/// about 1.25 ms, less than its ~1.6 ms on the wire, so the wire sets the
/// pace and the printer's planner holds real moves.
pub fn short_moves_job(dir: &Path, name: &str, lines: u64) -> std::io::Result<PathBuf> {
    // G92 puts the head at the spiral's start: no long first travel.
    const HEADER: [&str; 5] = ["G21", "G90", "M83", "G92 X150 Y110 E0", "G1 F4800"];
    let path = dir.join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
    writeln!(f, "; printgate lost-ok bench job: 0.1 mm segments")?;
    for cmd in HEADER {
        writeln!(f, "{cmd}")?;
    }
    let step = 0.1 / 40.0; // radians per 0.1 mm chord at r = 40 mm
    for i in 0..lines.saturating_sub(HEADER.len() as u64) {
        let a = i as f64 * step;
        let r = 40.0 + a / std::f64::consts::TAU * 0.2;
        writeln!(
            f,
            "G1 X{:.3} Y{:.3} E{:.5}",
            110.0 + r * a.cos(),
            110.0 + r * a.sin(),
            0.00416
        )?;
    }
    f.flush()?;
    Ok(path)
}

pub fn print_table(r: &LostOkReport) {
    println!(
        "\nlost oks: {}-line job at {} baud, {} % of oks lost (seed {}), deadline bound {} ms",
        r.lines, r.baud, r.lost_percent, r.seed, r.ack_timeout_ms
    );
    println!(
        "{:<16} {:>8} {:>8} {:>6} {:>5} {:>9} {:>13} {:>10} {:>8}",
        "firmware",
        "clean s",
        "lossy s",
        "ratio",
        "lost",
        "recovered",
        "by N/mark/prb",
        "median ms",
        "max ms"
    );
    let opt = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    for f in &r.firmwares {
        let l = &f.lossy;
        println!(
            "{:<16} {:>8.2} {:>8.2} {:>5.2}x {:>5} {:>9} {:>13} {:>10} {:>8}",
            f.firmware,
            f.clean.seconds,
            l.seconds,
            f.ratio,
            l.lost_oks,
            l.recovered_oks,
            format!("{}/{}/{}", l.by_line_number, l.by_marker, l.by_probe),
            opt(l.recovery_ms_median),
            opt(l.recovery_ms_max)
        );
        if l.timeouts > 0 || l.unpaired > 0 {
            println!(
                "{:<16} lossy run: {} time-outs, {} resends, {} lost oks never recovered",
                "", l.timeouts, l.resends, l.unpaired
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(at: Instant, lines: u64) -> Recovered {
        Recovered {
            at,
            lines,
            by: Recovery::Marker,
        }
    }

    #[test]
    fn recoveries_pair_with_the_earliest_losses_before_them() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let drops = [t, t + ms(10), t + ms(100)];
        // One recovery covers the first two, a later one the third; a
        // recovery of a loss not yet recorded pairs with nothing.
        let recs = [rec(t + ms(30), 2), rec(t + ms(50), 1), rec(t + ms(160), 1)];
        let (times, unpaired) = recovery_times(&drops, &recs);
        assert_eq!(times, vec![ms(30), ms(20), ms(60)]);
        assert_eq!(unpaired, 0);
        assert_eq!(median(&times), Some(ms(30)));
        let (times, unpaired) = recovery_times(&drops, &recs[..1]);
        assert_eq!((times.len(), unpaired), (2, 1));
        assert_eq!(median(&[ms(1), ms(3)]), Some(ms(2)));
        assert_eq!(median(&[]), None);
    }

    /// The section runs end to end on a small job and sees the losses it
    /// injects (no timing is asserted).
    #[test]
    fn a_small_run_reports_its_lost_oks() {
        let dir = crate::bench::TempDir::new("lost-ok-test").unwrap();
        let args = LostOkArgs {
            lost_percent: 2.0,
            ..LostOkArgs::with_lines(500)
        };
        let report = run(dir.path(), &args).unwrap();
        assert_eq!(report.firmwares.len(), 2);
        for f in &report.firmwares {
            assert_eq!(f.clean.lost_oks, 0, "{}", f.firmware);
            assert!(f.lossy.lost_oks > 0, "{}: no ok was lost", f.firmware);
            assert_eq!(
                f.lossy.unpaired, 0,
                "{}: a loss went unrecovered",
                f.firmware
            );
            assert!(f.lossy.recovery_ms_median.is_some(), "{}", f.firmware);
            assert!(f.ratio > 0.0);
        }
    }
}
