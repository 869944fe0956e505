//! `printgate bench sdwear`: what a gateway writes to its SD card, per
//! printer-hour, at the default settings.
//!
//! Each scenario runs the real daemon (`printgate run`, a separate process)
//! with N simulated printers for one simulated hour, time-scaled with the
//! hidden `PRINTGATE_TIME_SCALE` knob (see [`crate::timescale`]): at the
//! default 60×, the progress interval of 10 s becomes 1/6 s and the hour a
//! minute, so every time-driven write happens as often per simulated hour as
//! in a real one. Scenarios: printing with the broker up, idle printers
//! (connected, plate clear, nothing to do), and printing with the broker
//! down for the whole hour (the outbox's worst case; its size is reported
//! after).
//!
//! Figures per printer-hour, over the window only (start-up, uploads and
//! job starts are before it): `write_bytes` of the daemon process from
//! `/proc/<pid>/io` (every page it dirtied, the `-shm` map included), the
//! store's own counters (bytes, fsyncs, commits, checkpoints; see
//! `store/wal.rs`), and the daemon's log volume (what journald would
//! store). Model files are payload and reported apart (per job). With
//! `--cross-check`, the kernel's count of fsync calls over the same window
//! (`perf` or `strace`) is shown beside the store's.
//!
//! The data folder must be on a real file system: tmpfs dirties no block
//! device and reads 0 bytes (refused unless `--allow-tmpfs`).

use super::farm::wait_for;
use super::sdwear_report::{print_table, PerJob, PerPrinterHour, ScenarioReport, SdwearReport};
use super::sdwear_rig::{
    add_job, broker_port, config_text, fs_type, keep_printers_busy, start_sims, Daemon, SyncProbe,
};
use crate::control::Request;
use crate::iostats::{IoReport, ProcessIo};
use crate::store::StoreReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Run the daemon with simulated printers for a simulated hour per scenario
/// and report bytes written and fsyncs per printer-hour.
#[derive(Debug, Clone, clap::Args)]
pub struct SdwearArgs {
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub printers: u16,
    /// How much faster than real time (a simulated hour takes 3600/SCALE s).
    #[arg(long, default_value_t = 60.0)]
    pub scale: f64,
    /// Where the data folders go (default: the system temp folder); must
    /// not be tmpfs.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Measure on tmpfs anyway (write_bytes will read 0).
    #[arg(long)]
    pub allow_tmpfs: bool,
    /// Also count fsyncs with the kernel's eyes (perf, else strace).
    #[arg(long)]
    pub cross_check: bool,
    /// Only these scenarios (printing, idle, broker-down, jobs); default all.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// One JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Keep the data folders (printed at the end) to look inside.
    #[arg(long)]
    pub keep: bool,
    /// Run this printgate binary as daemon and simulators (to measure
    /// another build from outside; without store counters only the
    /// kernel's figures are shown). Default: this one.
    #[arg(long, value_name = "PATH")]
    pub daemon_exe: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq)]
enum Load {
    /// One long job per printer, printing through the window.
    Printing,
    /// Connected, plate clear, nothing to do.
    Idle,
    /// Short jobs back to back, plates cleared at once: the cost of a job's
    /// life (accepted, started, finished, plate cleared), per job.
    Jobs,
}

struct Scenario {
    name: &'static str,
    load: Load,
    broker: bool,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "printing",
        load: Load::Printing,
        broker: true,
    },
    Scenario {
        name: "idle",
        load: Load::Idle,
        broker: true,
    },
    Scenario {
        name: "broker-down",
        load: Load::Printing,
        broker: false,
    },
    Scenario {
        name: "jobs",
        load: Load::Jobs,
        broker: true,
    },
];

/// Moves in a `jobs` scenario job: a few seconds at 250000 baud.
const SHORT_JOB_MOVES: usize = 1500;

pub fn run(args: SdwearArgs) -> anyhow::Result<std::process::ExitCode> {
    if !(args.scale.is_finite() && (1.0..=crate::timescale::MAX).contains(&args.scale)) {
        anyhow::bail!("--scale must be from 1 to {}", crate::timescale::MAX);
    }
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let fs = fs_type(&base).unwrap_or_else(|| "unknown".into());
    if matches!(fs.as_str(), "tmpfs" | "ramfs") && !args.allow_tmpfs {
        anyhow::bail!(
            "{} is on {fs}: nothing reaches a disk there; use --dir on a real file system (or --allow-tmpfs)",
            base.display()
        );
    }
    std::fs::create_dir_all(&base)?;
    let root = super::TempDir::new_in(&base, "sdwear")?;
    let exe = match &args.daemon_exe {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    let mut report = SdwearReport {
        machine: super::machine(),
        fs_type: fs,
        scale: args.scale,
        scenarios: Vec::new(),
        skipped: Vec::new(),
    };
    for sc in SCENARIOS
        .iter()
        .filter(|s| args.only.is_empty() || args.only.iter().any(|o| o == s.name))
    {
        if sc.broker && !cfg!(feature = "embedded-broker") {
            report
                .skipped
                .push(format!("{} (needs the embedded broker)", sc.name));
            continue;
        }
        if !args.json {
            eprintln!("bench sdwear: {} ...", sc.name);
        }
        report
            .scenarios
            .push(scenario(&args, &exe, root.path(), sc)?);
    }
    if args.keep {
        eprintln!("bench sdwear: data kept in {}", root.path().display());
        std::mem::forget(root);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn scenario(
    args: &SdwearArgs,
    exe: &Path,
    root: &Path,
    sc: &Scenario,
) -> anyhow::Result<ScenarioReport> {
    let n = usize::from(args.printers);
    let dir = root.join(sc.name);
    std::fs::create_dir_all(&dir)?;
    let data = dir.join("data");
    let sims = start_sims(exe, &dir, n)?;
    let port = broker_port(sc.broker)?;
    let config = dir.join("printgate.toml");
    std::fs::write(&config, config_text(&dir, &data, port, n))?;
    let daemon = Daemon::start(exe, &config, &data, args.scale)?;
    let window = Duration::from_secs_f64(3600.0 / args.scale);
    for i in 0..n {
        let clear = Request::Clear {
            printer: format!("p{i}"),
        };
        wait_for("a printer to connect", Duration::from_secs(30), || {
            daemon.ask(&clear).is_some_and(|r| r.ok)
        })?;
    }
    // At 250000 baud a simulator runs about 600 lines/s: a long job lasts
    // the window with room to spare.
    let moves = match sc.load {
        Load::Jobs => SHORT_JOB_MOVES,
        _ => (window.as_secs_f64() * 1200.0).max(20_000.0) as usize,
    };
    let job = super::sample_job(&dir, "job.gcode", moves)?;
    let model_bytes_per_job = std::fs::metadata(&job)?.len();
    if sc.load == Load::Printing {
        for i in 0..n {
            add_job(&data, &format!("p{i}"), &job)?;
        }
    }
    let want = if sc.load == Load::Printing {
        "printing"
    } else {
        "idle"
    };
    let all_there = || {
        StoreReader::open(&data)
            .and_then(|r| r.list_printers())
            .is_ok_and(|ps| ps.iter().filter(|p| p.state.as_str() == want).count() == n)
    };
    wait_for("every printer in place", Duration::from_secs(60), all_there)?;
    // Let the job starts settle (2 simulated minutes): they belong to the
    // job, not to the printing hour.
    std::thread::sleep(Duration::from_secs_f64(120.0 / args.scale).max(Duration::from_millis(500)));

    let before = Reading::take(&daemon)?;
    let probe = args.cross_check.then(|| SyncProbe::start(daemon.pid()));
    let t0 = Instant::now();
    let started_at = unix_now();
    if sc.load == Load::Jobs {
        keep_printers_busy(&data, &job, &daemon, t0 + window)?;
    } else {
        // The measurement window itself (not a synchronization).
        std::thread::sleep(window);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let (kernel, cross_check_error) = match probe {
        None => (None, None),
        Some(Err(e)) => (None, Some(e.to_string())),
        Some(Ok(p)) => match p.stop() {
            Ok(k) => (Some(k), None),
            Err(e) => (None, Some(e.to_string())),
        },
    };
    let after = Reading::take(&daemon)?;
    if sc.load != Load::Jobs && !all_there() {
        anyhow::bail!(
            "bench sdwear: a printer left `{want}` during the window (a job too short?); log:\n{}",
            daemon.log_tail()
        );
    }
    let reader = StoreReader::open(&data)?;
    let outbox_rows_after = reader.outbox_len()?;
    let jobs_completed = reader
        .list_jobs(100_000)?
        .iter()
        .filter(|j| j.state.as_str() == "completed" && j.finished_at >= Some(started_at))
        .count() as u64;
    let db_bytes_after = ["printgate.db", "printgate.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(data.join(f)).ok())
        .map(|m| m.len())
        .sum();
    drop(daemon);
    drop(sims);
    let hours = elapsed * args.scale / 3600.0;
    let per = |v: u64| v as f64 / n as f64 / hours;
    let d = after.minus(&before);
    let store = d.io.map(|io| io.store);
    let per_store = |f: fn(&crate::store::StoreIo) -> u64| store.as_ref().map(|s| per(f(s)));
    Ok(ScenarioReport {
        name: sc.name,
        printers: args.printers,
        window_seconds: elapsed,
        simulated_hours: hours,
        per_printer_hour: PerPrinterHour {
            process_write_bytes: per(d.write_bytes),
            store_bytes: per_store(|s| s.bytes_written),
            store_syncs: per_store(|s| s.syncs),
            commits_durable: per_store(|s| s.commits_durable),
            commits_non_durable: per_store(|s| s.commits_non_durable),
            checkpoints: per_store(|s| s.checkpoints),
            wal_frames: per_store(|s| s.wal_frames),
            log_bytes: per(d.log_bytes),
            log_lines: per(d.log_lines),
            kernel_syncs: kernel.as_ref().map(|k| per(k.fsync + k.fdatasync)),
        },
        store_syncs: store.map(|s| s.syncs),
        jobs_completed,
        per_job: (sc.load == Load::Jobs && jobs_completed > 0)
            .then(|| store.map(|s| PerJob::of(&s, jobs_completed)))
            .flatten(),
        kernel,
        cross_check_error,
        model_bytes_per_job,
        outbox_rows_after,
        db_bytes_after,
    })
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The daemon's counters at one moment.
struct Reading {
    /// `None` from a daemon that does not count (`--daemon-exe`).
    io: Option<IoReport>,
    write_bytes: u64,
    log_bytes: u64,
    log_lines: u64,
}

impl Reading {
    fn take(daemon: &Daemon) -> anyhow::Result<Reading> {
        let io = daemon
            .ask(&Request::Status)
            .ok_or_else(|| anyhow::anyhow!("bench sdwear: the daemon does not answer"))?
            .io;
        let process = ProcessIo::of(daemon.pid())
            .ok_or_else(|| anyhow::anyhow!("bench sdwear: cannot read /proc/<daemon>/io"))?;
        let (log_bytes, log_lines) = daemon.log_bytes();
        Ok(Reading {
            io,
            write_bytes: process.write_bytes,
            log_bytes,
            log_lines,
        })
    }

    /// `self - earlier`, counter by counter.
    fn minus(&self, earlier: &Reading) -> Reading {
        let io = self.io.zip(earlier.io).map(|(now, then)| {
            let (a, b) = (&now.store, &then.store);
            let mut io = now;
            io.store.bytes_written = a.bytes_written.saturating_sub(b.bytes_written);
            io.store.syncs = a.syncs.saturating_sub(b.syncs);
            io.store.commits_durable = a.commits_durable.saturating_sub(b.commits_durable);
            io.store.commits_non_durable =
                a.commits_non_durable.saturating_sub(b.commits_non_durable);
            io.store.checkpoints = a.checkpoints.saturating_sub(b.checkpoints);
            io.store.wal_frames = a.wal_frames.saturating_sub(b.wal_frames);
            io
        });
        Reading {
            io,
            write_bytes: self.write_bytes.saturating_sub(earlier.write_bytes),
            log_bytes: self.log_bytes.saturating_sub(earlier.log_bytes),
            log_lines: self.log_lines.saturating_sub(earlier.log_lines),
        }
    }
}
