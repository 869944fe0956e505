//! Command-line front end: parses arguments and dispatches to subcommands.
//!
//! Each subcommand's arguments live next to the code that runs it; this file
//! only lists them.

use clap::{Parser, Subcommand};

/// printgate: serial G-code host, MQTT mirror and job store for print farms.
#[derive(Debug, Parser)]
#[command(name = "printgate", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the version and exit (same as --version).
    Version,
    /// Stream one G-code file to one printer (no database, no broker).
    Send(crate::printer::send::SendArgs),
    /// Run the gateway daemon (foreground; SIGTERM or Ctrl-C stops it in order).
    Run(crate::daemon::RunArgs),
    /// Printers: state, plate, job, progress.
    Status(crate::ctl::StatusArgs),
    /// Recent jobs, newest first.
    Jobs {
        #[command(flatten)]
        target: crate::ctl::Target,
        /// One JSON array of job objects.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show, add or cancel one job.
    Job {
        #[command(flatten)]
        target: crate::ctl::Target,
        #[command(subcommand)]
        cmd: crate::ctl::JobCommand,
    },
    /// Confirm a printer's plate is clear (what the robot's "pick completed" does).
    Clear {
        printer: String,
        #[command(flatten)]
        target: crate::ctl::Target,
    },
    /// Operator decisions about a printer (`printer accept p1`).
    Printer {
        #[command(flatten)]
        target: crate::ctl::Target,
        #[command(subcommand)]
        cmd: crate::ctl::PrinterCtl,
    },
    /// Pause the job on a printer.
    Pause {
        printer: String,
        #[command(flatten)]
        target: crate::ctl::Target,
    },
    /// Resume the job on a printer.
    Resume {
        printer: String,
        #[command(flatten)]
        target: crate::ctl::Target,
    },
    /// Answer the question a printer asks a person (filament runout,
    /// `M600`): CHOICE is the button's index in the printer's prompt, as
    /// published on `device/printer/<id>/prompt` and in its `prompt` event.
    Answer {
        printer: String,
        choice: u32,
        #[command(flatten)]
        target: crate::ctl::Target,
    },
    /// Check a config file: prints a summary (and FILE: warning: lines for
    /// what is allowed but weak, such as no TLS) and exits 0, or prints
    /// every problem as FILE:LINE: key: message and exits 1.
    CheckConfig {
        /// The config file, e.g. /etc/printgate/printgate.toml.
        file: std::path::PathBuf,
    },
    /// Run a virtual Marlin printer on a pseudo-terminal.
    Sim(crate::sim::cli::SimArgs),
    /// Measure serial throughput and host cost against the simulator.
    Bench(crate::bench::BenchArgs),
    /// Run the whole farm on this machine (simulated printers, MQTT broker,
    /// queue manager, robot) with a live status table.
    #[cfg(feature = "embedded-broker")]
    Demo(crate::demo::DemoArgs),
}

/// Runs the parsed command. Errors are reported by `main`.
pub fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    match cli.command {
        Command::Version => {
            println!("printgate {}", env!("CARGO_PKG_VERSION"));
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Send(args) => crate::printer::send::run(args),
        Command::Run(args) => crate::daemon::run(args),
        Command::Status(args) => crate::ctl::status(&args),
        Command::Jobs {
            target,
            json,
            limit,
        } => crate::ctl::jobs(&target, json, limit),
        Command::Job { target, cmd } => crate::ctl::job(&target, cmd),
        Command::Clear { printer, target } => crate::ctl::send(
            &target.data_dir()?,
            &crate::control::Request::Clear { printer },
            None,
        ),
        Command::Printer { target, cmd } => crate::ctl::printer(&target, cmd),
        Command::Pause { printer, target } => crate::ctl::send(
            &target.data_dir()?,
            &crate::control::Request::Pause { printer },
            None,
        ),
        Command::Resume { printer, target } => crate::ctl::send(
            &target.data_dir()?,
            &crate::control::Request::Resume { printer },
            None,
        ),
        Command::Answer {
            printer,
            choice,
            target,
        } => crate::ctl::send(
            &target.data_dir()?,
            &crate::control::Request::PromptAnswer { printer, choice },
            None,
        ),
        Command::CheckConfig { file } => match crate::config::check(&file) {
            Ok(config) => {
                // Allowed but weak: said on stderr, the exit code stays 0.
                for warning in config.warnings() {
                    eprintln!("{}: warning: {warning}", file.display());
                }
                println!("{}", config.summary());
                Ok(std::process::ExitCode::SUCCESS)
            }
            Err(errors) => {
                for err in errors {
                    eprintln!("{err}");
                }
                Ok(std::process::ExitCode::from(1))
            }
        },
        Command::Sim(args) => crate::sim::cli::run(args),
        Command::Bench(args) => crate::bench::run(args),
        #[cfg(feature = "embedded-broker")]
        Command::Demo(args) => crate::demo::run(args),
    }
}
