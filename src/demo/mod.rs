//! `printgate demo`: the whole farm on one machine, in one process, with no
//! printer, no broker and no queue manager to install.
//!
//! [`rig`] starts the simulated printers, the embedded broker and the demo
//! [`queue_manager`]; the [`robot`] clears plates over MQTT and observes the
//! traffic; printgate itself runs as [`crate::daemon::run_daemon`] with a
//! generated config; [`table`] shows it live. This file parses the arguments
//! and runs the show: start, watch until every sample job is printed and
//! every plate cleared (or `--duration`, Ctrl-C, or nothing moving for a
//! minute), stop the gateway in order, print the summary.
//!
//! Exit status: 0 only if every sample job completed; 1 otherwise, with the
//! reason on stderr.

pub mod queue_manager;
mod rig;
pub mod robot;
pub mod table;

use crate::bench::TempDir;
use crate::control::LinkCounters;
use crate::lifecycle::{JobState, PrinterState};
use crate::mqtt::topics::Topics;
use crate::store::StoreReader;
use anyhow::Context;
use rig::Rig;
use robot::{Observed, Robot};
use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use table::{Row, Snapshot, Summary, View};

/// The status refresh period (about 2× per second).
const REFRESH: Duration = Duration::from_millis(500);
/// Without `--forever`, the demo gives up when nothing moved for this long.
const STALL_LIMIT: Duration = Duration::from_secs(60);
/// Bounds of the orderly stop.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
const STOP_LIMIT: Duration = Duration::from_secs(30);

/// Run the whole farm on this machine: simulated printers, an embedded MQTT
/// broker, a queue manager with sample jobs, a plate-clearing robot, and
/// printgate itself. 127.0.0.1 only.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Simulated printers.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub printers: u8,
    /// Sample jobs in the queue manager.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub jobs: u16,
    /// Line noise: the probability that a line arrives corrupted (lost `ok`s
    /// at a quarter of it).
    #[arg(long, default_value_t = 0.0, value_parser = crate::sim::cli::probability)]
    pub fault_rate: f64,
    /// Keep going: a new batch of jobs whenever the queue runs dry.
    #[arg(long)]
    pub forever: bool,
    /// Stop after this many seconds, with a summary.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub duration: Option<u64>,
    /// One line per change instead of the live table.
    #[arg(long)]
    pub plain: bool,
}

/// Why the demo stopped watching.
enum End {
    /// Every job ended (completed or not) and every plate is clear.
    Settled,
    Duration(u64),
    Interrupted,
    Stalled,
    /// The gateway returned on its own: a start-up error.
    GatewayExited(String),
    /// Stdout is gone (a closed pipe).
    OutputClosed(String),
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let live = !args.plain && std::io::stdout().is_terminal();
    if std::env::var_os("RUST_LOG").is_none() {
        // Log lines would tear the live table; warnings still show in plain mode.
        log::set_max_level(if live {
            log::LevelFilter::Error
        } else {
            log::LevelFilter::Warn
        });
    }
    let dir = TempDir::new("demo").context("cannot create a temporary folder")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(demo(&args, dir.path(), live))
}

async fn demo(args: &DemoArgs, dir: &std::path::Path, live: bool) -> anyhow::Result<ExitCode> {
    let rig = Rig::start(dir, args)?;
    let topics = Topics::new(rig::GATEWAY_ID);
    let mut robot = Robot::start(rig.broker_port, &topics).await?;
    let started = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut gateway = tokio::spawn(crate::daemon::run_daemon(rig.config.clone(), async {
        let _ = stop_rx.await;
    }));
    // A closed stdout is no reason to leave the gateway half-stopped: output
    // errors end the watch (below) and are otherwise ignored.
    let _ = std::io::stdout().write_all(header(args, &rig).as_bytes());
    let end = watch(args, &rig, &robot, &mut gateway, started, live).await;
    // The host's counters live in the running gateway: ask before it stops.
    let link = host_counters(&rig.data_dir).await.unwrap_or_default();
    if !gateway.is_finished() {
        stop_gateway(&mut robot, stop_tx, &mut gateway, &rig.data_dir).await;
    }
    let elapsed = started.elapsed();
    let events = robot.stop().await.events;
    Ok(finish(rig, &end, events, link, elapsed))
}

/// The gateway's own link counters, summed over its printers (`None` when
/// it does not answer). These, not the simulators' injected faults, are
/// what the demo reports: they show what the host noticed and recovered.
async fn host_counters(data_dir: &std::path::Path) -> Option<LinkCounters> {
    let dir = data_dir.to_path_buf();
    let answer = tokio::task::spawn_blocking(move || {
        crate::control::request(&dir, &crate::control::Request::Status, None)
    })
    .await
    .ok()?
    .ok()?;
    let mut sum = LinkCounters::default();
    for p in answer.printers? {
        sum.resends += p.link.resends;
        sum.timeouts += p.link.timeouts;
        sum.line_errors += p.link.line_errors;
        sum.recovered_oks += p.link.recovered_oks;
    }
    Some(sum)
}

/// Orderly stop: every event reaches the broker, then the gateway stops and
/// says `offline`, which the observer sees after all of them.
async fn stop_gateway(
    robot: &mut Robot,
    stop: tokio::sync::oneshot::Sender<()>,
    gateway: &mut tokio::task::JoinHandle<anyhow::Result<()>>,
    data_dir: &std::path::Path,
) {
    drain_outbox(data_dir).await;
    // A gateway that already ended (an error) is reported just below.
    if stop.send(()).is_err() {
        log::debug!("demo: the gateway had already stopped");
    }
    match tokio::time::timeout(STOP_LIMIT, gateway).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => eprintln!("printgate demo: the gateway stopped with: {e:#}"),
        Ok(Err(e)) => eprintln!("printgate demo: the gateway task failed: {e}"),
        Err(_) => eprintln!(
            "printgate demo: the gateway did not stop within {} s",
            STOP_LIMIT.as_secs()
        ),
    }
    if !robot.wait_gateway_offline(DRAIN_LIMIT).await {
        eprintln!("printgate demo: the gateway's offline status was not seen");
    }
}

/// Stops the rest, prints the summary, and says how it went.
fn finish(rig: Rig, end: &End, events: u64, link: LinkCounters, elapsed: Duration) -> ExitCode {
    let created = rig.qm.created();
    let jobs = StoreReader::open(&rig.data_dir)
        .and_then(|r| r.list_jobs(created.len() + 16))
        .unwrap_or_default();
    let mut summary = Summary {
        total: created.len(),
        printers: rig.sims.len(),
        events,
        resends: link.resends,
        line_errors: link.line_errors,
        timeouts: link.timeouts,
        recovered_oks: link.recovered_oks,
        elapsed,
        ..Summary::default()
    };
    let mut unfinished = Vec::new();
    for id in &created {
        match jobs.iter().find(|j| &j.id == id) {
            Some(j) if j.state == JobState::Completed => summary.completed += 1,
            Some(j) => unfinished.push(match &j.reason {
                Some(r) => format!("{id} {} ({r})", j.state.as_str()),
                None => format!("{id} {}", j.state.as_str()),
            }),
            None => unfinished.push(format!("{id} not handed out")),
        }
    }
    for (_, sim) in rig.sims {
        let s = sim.stop();
        summary.lines += s.executed;
        summary.injected_corrupt += s.corrupted;
        summary.injected_lost_oks += s.dropped_oks;
    }
    rig.qm.stop();
    let _ = writeln!(std::io::stdout(), "\n{}", table::summary(&summary));
    if summary.total > 0 && summary.completed == summary.total {
        return ExitCode::SUCCESS;
    }
    let why = match end {
        End::Settled => "not every job completed".to_owned(),
        End::Duration(secs) => format!("stopped after --duration {secs} s"),
        End::Interrupted => "interrupted".to_owned(),
        End::Stalled => format!("nothing moved for {} s", STALL_LIMIT.as_secs()),
        End::GatewayExited(e) => format!("the gateway stopped: {e}"),
        End::OutputClosed(e) => format!("cannot write the status: {e}"),
    };
    let mut detail = unfinished
        .iter()
        .take(5)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if unfinished.len() > 5 {
        detail.push_str(&format!(" and {} more", unfinished.len() - 5));
    }
    eprintln!(
        "printgate demo: {why}: {}/{} jobs printed; not completed: {detail}",
        summary.completed, summary.total,
    );
    ExitCode::from(1)
}

fn header(args: &DemoArgs, rig: &Rig) -> String {
    let data = rig.data_dir.display();
    let port = rig.broker_port;
    format!(
        "printgate demo: {} simulated printers, {} sample jobs{}, fault rate {}\n  \
         queue manager: {}\n  MQTT broker:   127.0.0.1:{port}\n  data folder:   {data} (removed at exit)\n\
         watch the MQTT traffic:\n  mosquitto_sub -h 127.0.0.1 -p {port} -t 'device/#' -v\n\
         ask the gateway (from another shell):\n  printgate status --data-dir {data}\n  \
         printgate jobs --data-dir {data}\n\n",
        args.printers,
        args.jobs,
        if args.forever { " per batch, forever" } else { "" },
        args.fault_rate,
        rig.qm.url(),
    )
}

/// Refreshes the view until the demo should end.
async fn watch(
    args: &DemoArgs,
    rig: &Rig,
    robot: &Robot,
    gateway: &mut tokio::task::JoinHandle<anyhow::Result<()>>,
    started: Instant,
    live: bool,
) -> End {
    let mut view = View::new(live);
    let mut tick = tokio::time::interval(REFRESH);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut reader: Option<StoreReader> = None;
    let (mut last_change, mut last_print) = (Instant::now(), String::new());
    let mut stdout = std::io::stdout();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut ctrl_c => return End::Interrupted,
            done = &mut *gateway => {
                let why = match done {
                    Ok(Ok(())) => "it returned".to_owned(),
                    Ok(Err(e)) => format!("{e:#}"),
                    Err(e) => e.to_string(),
                };
                return End::GatewayExited(why);
            }
        }
        if reader.is_none() {
            // The gateway creates the database as it starts.
            reader = StoreReader::open(&rig.data_dir).ok();
        }
        let Some(status) = reader
            .as_ref()
            .and_then(|r| look(r, rig, &robot.observed()))
        else {
            continue;
        };
        let mut snap = status.snap;
        snap.elapsed = started.elapsed();
        if let Some(link) = host_counters(&rig.data_dir).await {
            snap.resends = link.resends;
        }
        if let Err(e) = view.render(&mut stdout, &snap) {
            return End::OutputClosed(e.to_string());
        }
        if status.settled && !args.forever {
            return End::Settled;
        }
        if let Some(secs) = args.duration {
            if snap.elapsed >= Duration::from_secs(secs) {
                return End::Duration(secs);
            }
        }
        if status.fingerprint != last_print {
            (last_change, last_print) = (Instant::now(), status.fingerprint);
        } else if !args.forever && last_change.elapsed() >= STALL_LIMIT {
            return End::Stalled;
        }
    }
}

/// One look at the farm.
struct Status {
    snap: Snapshot,
    /// No job left to hand out, every job ended, every printer idle and clear.
    settled: bool,
    /// Changes whenever anything moves (for the stall check).
    fingerprint: String,
}

/// Reads the store (state, job, progress), the observer (temperatures,
/// events) and the simulators (lines). `None` if the store did not answer.
fn look(reader: &StoreReader, rig: &Rig, observed: &Observed) -> Option<Status> {
    let created: HashSet<String> = rig.qm.created().into_iter().collect();
    let printers = reader.list_printers().ok()?;
    let jobs = reader.list_jobs(created.len() + 16).ok()?;
    let mut snap = Snapshot {
        total: created.len(),
        queued: rig.qm.pending(),
        events: observed.events,
        ..Snapshot::default()
    };
    let mut ended = 0;
    for job in jobs.iter().filter(|j| created.contains(&j.id)) {
        snap.completed += usize::from(job.state == JobState::Completed);
        ended += usize::from(job.state.is_terminal());
    }
    let mut all_clear = true;
    for (id, sim) in &rig.sims {
        let stats = sim.stats();
        snap.lines += stats.executed;
        let row = printers.iter().find(|p| &p.id == id);
        let state = row.map_or(PrinterState::Offline, |p| p.state);
        all_clear &= state == PrinterState::Idle && row.is_some_and(|p| p.plate_clear);
        let job = row.and_then(|p| p.current_job.clone());
        let seen = observed.printers.get(id);
        // Progress is a last value published from memory (the store keeps
        // it only every few minutes): the observer has the latest.
        let progress = if job.is_some() {
            seen.map_or(0.0, |s| s.progress)
        } else {
            0.0
        };
        snap.rows.push(Row {
            printer: id.clone(),
            state: state.as_str().to_owned(),
            job,
            progress,
            nozzle: seen.and_then(|s| s.nozzle),
            bed: seen.and_then(|s| s.bed),
        });
    }
    let moved = snap.lines;
    let states: Vec<&str> = jobs.iter().map(|j| j.state.as_str()).collect();
    let rows: Vec<&str> = snap.rows.iter().map(|r| r.state.as_str()).collect();
    let fingerprint = format!("{moved} {states:?} {rows:?} {}", snap.queued);
    Some(Status {
        settled: snap.queued == 0 && ended == created.len() && all_clear,
        snap,
        fingerprint,
    })
}

/// Waits (bounded) until the gateway's outbox is empty: every event it
/// wrote has been acknowledged by the broker.
async fn drain_outbox(data_dir: &std::path::Path) {
    let deadline = Instant::now() + DRAIN_LIMIT;
    while Instant::now() < deadline {
        let empty = StoreReader::open(data_dir)
            .and_then(|r| r.outbox_len())
            .is_ok_and(|n| n == 0);
        if empty {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("printgate demo: some events were still unpublished at the stop");
}
