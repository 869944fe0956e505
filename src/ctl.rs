//! Operator commands against a gateway: reading ones open SQLite read-only
//! (they work whether or not the daemon runs); changing ones go to the
//! running daemon over the control socket and say so when none is running.

use crate::control::{self, printable, Request};
use crate::store::{Job, StoreReader};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Which gateway: its config file, or its data folder directly.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The daemon's configuration file (its data_dir is used).
    #[arg(long, global = true, default_value = "/etc/printgate/printgate.toml")]
    pub config: PathBuf,
    /// The data folder, instead of reading it from the config.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
}

impl Target {
    pub fn data_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.data_dir {
            return Ok(dir.clone());
        }
        let config = crate::config::load(&self.config)?;
        Ok(config.gateway.data_dir)
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum JobCommand {
    /// Show one job and its history.
    Show { id: String },
    /// Cancel a job (heaters off if it is printing).
    Cancel { id: String },
    /// Submit a local G-code file to a printer's queue.
    Add {
        file: PathBuf,
        #[arg(long)]
        printer: String,
        /// Higher runs first.
        #[arg(long, default_value_t = 0)]
        priority: i64,
        /// Job id (default: local-<time>-<n>).
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum PrinterCtl {
    /// The firmware identity the printer's port answers with now (after a
    /// hold for another UUID or firmware) is the printer's: it then waits
    /// for its plate to be confirmed clear.
    Accept { printer: String },
}

/// `printgate printer …`.
pub fn printer(target: &Target, cmd: PrinterCtl) -> anyhow::Result<ExitCode> {
    let dir = target.data_dir()?;
    match cmd {
        PrinterCtl::Accept { printer } => send(&dir, &Request::AcceptIdentity { printer }, None),
    }
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: Target,
    /// One JSON object: the printers as stored, the running daemon's live
    /// view (temperatures, link counters) and its write and fsync counters.
    #[arg(long)]
    pub json: bool,
}

/// `printgate status --json`. `live` and `io` are null when no daemon runs.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusJson {
    daemon_running: bool,
    printers: Vec<crate::store::PrinterRow>,
    live: Option<Vec<control::LivePrinter>>,
    /// Rows waiting for the broker (grows while it is unreachable).
    outbox_len: u64,
    io: Option<crate::iostats::IoReport>,
}

pub fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let dir = args.target.data_dir()?;
    let reader = StoreReader::open(&dir)?;
    let printers = reader.list_printers()?;
    // Temperatures and counters live only in the running daemon; ask it, if it runs.
    let answer = control::request(&dir, &Request::Status, None).ok();
    if args.json {
        let answer = answer.filter(|a| a.ok);
        let status = StatusJson {
            daemon_running: answer.is_some(),
            outbox_len: reader.outbox_len()?,
            printers,
            io: answer.as_ref().and_then(|a| a.io),
            live: answer.and_then(|a| a.printers),
        };
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(ExitCode::SUCCESS);
    }
    let jobs = reader.list_jobs(500)?;
    let live = answer.and_then(|r| r.printers);
    println!(
        "{:<14} {:<15} {:<6} {:<24} {:>6}  {:>15}  {:>13}",
        "PRINTER", "STATE", "PLATE", "JOB", "DONE", "NOZZLE", "BED"
    );
    for p in &printers {
        let job = p
            .current_job
            .as_deref()
            .and_then(|id| jobs.iter().find(|j| j.id == id));
        let temps = live.as_ref().and_then(|l| l.iter().find(|l| l.id == p.id));
        let temp = |t: Option<f32>, target: Option<f32>| match (t, target) {
            (Some(t), Some(target)) => format!("{t:.1}/{target:.0}°C"),
            (Some(t), None) => format!("{t:.1}°C"),
            _ => "-".to_owned(),
        };
        println!(
            "{:<14} {:<15} {:<6} {:<24} {:>5.1}%  {:>15}  {:>13}",
            printable(&p.id),
            p.state.as_str(),
            if p.plate_clear { "clear" } else { "-" },
            printable(p.current_job.as_deref().unwrap_or("-")),
            job.map_or(0.0, |j| j.progress),
            temp(
                temps.and_then(|t| t.nozzle),
                temps.and_then(|t| t.nozzle_target)
            ),
            temp(temps.and_then(|t| t.bed), temps.and_then(|t| t.bed_target)),
        );
    }
    println!(
        "daemon: {}",
        if live.is_some() {
            "running"
        } else {
            "not running"
        }
    );
    Ok(ExitCode::SUCCESS)
}

pub fn jobs(target: &Target, json: bool, limit: usize) -> anyhow::Result<ExitCode> {
    let reader = StoreReader::open(&target.data_dir()?)?;
    let jobs = reader.list_jobs(limit)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&jobs)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<26} {:<12} {:<12} {:>4} {:>6}  REASON",
        "JOB", "PRINTER", "STATE", "PRIO", "DONE"
    );
    for j in &jobs {
        print_job_line(j);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_job_line(j: &Job) {
    println!(
        "{:<26} {:<12} {:<12} {:>4} {:>5.1}%  {}",
        printable(&j.id),
        printable(j.printer_id.as_deref().unwrap_or("-")),
        j.state.as_str(),
        j.priority,
        j.progress,
        printable(j.reason.as_deref().unwrap_or(""))
    );
}

pub fn job(target: &Target, cmd: JobCommand) -> anyhow::Result<ExitCode> {
    let dir = target.data_dir()?;
    match cmd {
        JobCommand::Show { id } => {
            let reader = StoreReader::open(&dir)?;
            let Some(job) = reader.get_job(&id)? else {
                eprintln!("printgate: no job {}", printable(&id));
                return Ok(ExitCode::from(1));
            };
            println!("{}", serde_json::to_string_pretty(&job)?);
            for e in reader.job_history(&id)? {
                let from = e.from_state.map_or("(new)", |s| s.as_str());
                println!(
                    "  {} {} -> {} {}",
                    e.at,
                    from,
                    e.to_state.as_str(),
                    printable(&e.reason.unwrap_or_default())
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Cancel { id } => send(&dir, &Request::CancelJob { job: id }, None),
        JobCommand::Add {
            file,
            printer,
            priority,
            id,
        } => {
            let size = std::fs::metadata(&file)
                .with_context(|| format!("cannot read G-code file {}", file.display()))?
                .len();
            send(
                &dir,
                &Request::AddJob {
                    printer,
                    priority,
                    id,
                    size,
                },
                Some(&file),
            )
        }
    }
}

/// Sends a changing request; prints the daemon's answer.
pub fn send(dir: &Path, req: &Request, file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let answer = control::request(dir, req, file)?;
    if answer.ok {
        println!("{}", printable(&answer.message));
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("printgate: {}", printable(&answer.message));
        Ok(ExitCode::from(1))
    }
}
