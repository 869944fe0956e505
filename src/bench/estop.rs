//! `printgate bench estop`: how long an MQTT `emergency_stop` takes to put
//! `M112` on the printer's wire, with the farm idle and with the farm busy
//! (big uploads copied, scanned and cancelled on another printer; a disk
//! writer fsyncing beside the store). Issue 12, defect 5: the stop goes to
//! the printer task out of band and must be on the wire within 100 ms.
//!
//! Each sample is one fresh print: the plate cleared, a job added, lines
//! streaming and heaters on, then the publish. Latency runs from the
//! instant before the publish to the instant the simulator read the bytes
//! holding `M112` from the pty (both clocks are this process's). Then the
//! bench checks what must follow: the job ended; then, after a power cycle
//! (a halted Marlin answers nothing until reset, and the gateway does not
//! reset it), the printer is back with the plate to confirm, no job and
//! both heater targets 0 (nothing resumed or heated again). Asserts no
//! speed; the numbers go to the README.

use super::estop_rig::{Load, LoadTally, Rig, LOADED, STOPPED};
use crate::control::Request;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct EstopArgs {
    /// E-stops per phase (idle farm, busy farm), one per fresh print.
    #[arg(long, default_value_t = 20)]
    pub count: usize,
    /// Size of the big G-code file the busy phase uploads, in MB.
    #[arg(long, default_value_t = 100)]
    pub big_mb: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// What one run is asked to do (the test passes its own daemon binary).
#[derive(Debug, Clone)]
pub struct Options {
    /// The `printgate` binary to run as the daemon.
    pub exe: PathBuf,
    pub count: usize,
    pub big_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct EstopReport {
    pub idle: Phase,
    pub busy: Phase,
    pub big_file_bytes: u64,
    pub load: LoadTally,
}

/// One phase's e-stops.
#[derive(Debug, Default, Serialize)]
pub struct Phase {
    /// Publish → `M112` read by the simulator, per e-stop, in ms.
    pub latencies_ms: Vec<f64>,
    /// E-stops whose `M112` reached the simulator (of `latencies_ms.len()`
    /// attempted; a missing one is an error, not a sample).
    pub m112_seen: usize,
    /// Jobs that ended `failed` or `cancelled` after their e-stop.
    pub jobs_ended: usize,
    /// E-stops after which the printer came back with both heater targets 0.
    pub heaters_off: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Phase {
    fn summarize(mut self) -> Phase {
        let mut sorted = self.latencies_ms.clone();
        sorted.sort_by(f64::total_cmp);
        self.p50_ms = nearest_rank(&sorted, 0.50);
        self.p99_ms = nearest_rank(&sorted, 0.99);
        self.max_ms = sorted.last().copied().unwrap_or(0.0);
        self
    }
}

/// The nearest-rank percentile of sorted values (with 20 samples p99 is
/// the maximum).
fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len()) - 1)
        .copied()
        .unwrap_or(0.0)
}

pub fn run(args: EstopArgs) -> anyhow::Result<ExitCode> {
    let opts = Options {
        exe: std::env::current_exe()?,
        count: args.count.max(1),
        big_bytes: args.big_mb.max(1) * 1_000_000,
    };
    let report = measure(&opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn print_table(r: &EstopReport) {
    println!("emergency stop: MQTT publish → M112 read by the simulator (250000 baud pty)");
    println!(
        "{:>6} {:>6} {:>9} {:>9} {:>9} {:>6} {:>11} {:>12}",
        "farm", "stops", "p50 ms", "p99 ms", "max ms", "M112", "jobs ended", "heaters off"
    );
    for (name, p) in [("idle", &r.idle), ("busy", &r.busy)] {
        println!(
            "{:>6} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>6} {:>11} {:>12}",
            name,
            p.latencies_ms.len(),
            p.p50_ms,
            p.p99_ms,
            p.max_ms,
            p.m112_seen,
            p.jobs_ended,
            p.heaters_off
        );
    }
    println!(
        "busy: {} uploads of a {:.0} MB G-code file to {LOADED} (copied, scanned, cancelled); \
         {} × 16 MiB written and fsynced beside the store ({} refusals)",
        r.load.big_jobs,
        r.big_file_bytes as f64 / 1e6,
        r.load.fsyncs,
        r.load.refused
    );
}

/// Both phases against one daemon: idle first, then with the load on.
pub fn measure(opts: &Options) -> anyhow::Result<EstopReport> {
    let tmp = super::TempDir::new("estop")?;
    let dir = tmp.path();
    let job = dir.join("job.gcode");
    // 2 MB: minutes of printing at 250000 baud, never finished by a sample.
    write_job(&job, 2_000_000)?;
    let big = dir.join("big.gcode");
    let big_file_bytes = write_job(&big, opts.big_bytes)?;
    let mut rig = Rig::start(&opts.exe, dir)?;
    let idle = phase(&mut rig, &job, "idle", opts.count)?;
    let load = Load::start(&rig, &big)?;
    // One big job through already: the farm is in the thick of it.
    rig.wait(
        "the first big job uploaded, scanned, cancelled",
        300,
        || load.big_jobs() > 0,
    )?;
    let busy = phase(&mut rig, &job, "busy", opts.count);
    let load = load.stop();
    Ok(EstopReport {
        idle,
        busy: busy?,
        big_file_bytes,
        load,
    })
}

fn phase(rig: &mut Rig, job: &Path, name: &str, count: usize) -> anyhow::Result<Phase> {
    let mut out = Phase::default();
    for i in 0..count {
        one_stop(rig, job, &format!("estop-{name}-{i}"), &mut out)?;
    }
    Ok(out.summarize())
}

/// One fresh print, stopped: see the module comment.
fn one_stop(rig: &mut Rig, job: &Path, id: &str, out: &mut Phase) -> anyhow::Result<()> {
    let ready = |state: &str| state == "idle" || state == "awaiting_clear";
    rig.wait(&format!("{STOPPED} connected and idle"), 60, || {
        rig.printer(STOPPED)
            .is_some_and(|p| p.connected && ready(&p.state))
    })?;
    if rig
        .printer(STOPPED)
        .is_some_and(|p| p.state == "awaiting_clear")
    {
        let clear = Request::Clear {
            printer: STOPPED.to_owned(),
        };
        let answer = rig.ask(&clear, None)?;
        if !answer.ok {
            anyhow::bail!("bench estop: clear {STOPPED}: {}", answer.message);
        }
    }
    let add = Request::AddJob {
        printer: STOPPED.to_owned(),
        priority: 10,
        id: Some(id.to_owned()),
        size: std::fs::metadata(job)?.len(),
    };
    let answer = rig.ask(&add, Some(job))?;
    if !answer.ok {
        anyhow::bail!("bench estop: job add {id}: {}", answer.message);
    }
    let sim = rig.sim(STOPPED)?;
    let streamed = sim.stats().bytes_in;
    rig.wait(&format!("{id} printing, heaters on"), 60, || {
        rig.printer(STOPPED).is_some_and(|p| {
            p.state == "printing"
                && p.job.as_deref() == Some(id)
                && p.nozzle_target.is_some_and(|t| t > 0.0)
        }) && sim.stats().bytes_in > streamed + 2_000
    })?;
    let before = sim.stats().m112_read_at;
    let t0 = rig.publish_estop(STOPPED)?;
    let mut at = None;
    // Polled often; the instant itself comes from the simulator's thread.
    let deadline = Instant::now() + Duration::from_secs(10);
    while at.is_none() && Instant::now() < deadline {
        at = sim
            .stats()
            .m112_read_at
            .filter(|t| Some(*t) != before && *t >= t0);
        if at.is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let Some(at) = at else {
        anyhow::bail!("bench estop: no M112 reached {STOPPED} within 10 s of the publish ({id})");
    };
    out.latencies_ms
        .push(at.duration_since(t0).as_secs_f64() * 1000.0);
    out.m112_seen += 1;
    let ended = rig.wait(&format!("{id} ended"), 60, || {
        crate::store::StoreReader::open(&rig.data)
            .and_then(|r| r.get_job(id))
            .ok()
            .flatten()
            .is_some_and(|j| matches!(j.state.as_str(), "failed" | "cancelled"))
    });
    if ended.is_ok() {
        out.jobs_ended += 1;
    }
    rig.power_cycle(STOPPED)?;
    // Back after the power cycle: the plate is unknown (awaiting a clear),
    // the job not resumed, nothing heated again.
    let cold = rig.wait(&format!("{STOPPED} back, heaters off"), 60, || {
        rig.printer(STOPPED).is_some_and(|p| {
            p.connected
                && p.state == "awaiting_clear"
                && p.job.is_none()
                && p.nozzle_target == Some(0.0)
                && p.bed_target == Some(0.0)
        })
    });
    if cold.is_ok() {
        out.heaters_off += 1;
    }
    Ok(())
}

/// A slicer-like file of about `bytes` bytes that heats up first (so the
/// heaters' state after the stop says something).
fn write_job(path: &Path, bytes: u64) -> anyhow::Result<u64> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "; printgate bench estop\nG21\nG90\nM82\nM140 S60\nM104 S200\nM190 S60\nM109 S200\nG28\nG92 E0")?;
    let mut written = 0u64;
    let mut i = 0u64;
    while written < bytes {
        let line = format!(
            "G1 X{:.3} Y{:.3} E{:.5}\n",
            20.0 + (i % 160) as f64 * 0.75,
            20.0 + (i * 7 % 160) as f64 * 0.75,
            i as f64 * 0.0331
        );
        f.write_all(line.as_bytes())?;
        written += line.len() as u64;
        i += 1;
    }
    writeln!(f, "M104 S0\nM140 S0\nM84")?;
    f.flush()?;
    Ok(std::fs::metadata(path)?.len())
}
