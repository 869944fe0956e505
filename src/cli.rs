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
    /// Run a virtual Marlin printer on a pseudo-terminal.
    Sim(crate::sim::cli::SimArgs),
}

/// Runs the parsed command. Errors are reported by `main`.
pub fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    match cli.command {
        Command::Version => {
            println!("printgate {}", env!("CARGO_PKG_VERSION"));
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Sim(args) => crate::sim::cli::run(args),
    }
}
