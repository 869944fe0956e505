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
    /// Check a config file: prints a summary and exits 0, or prints every
    /// problem as FILE:LINE: key: message and exits 1.
    CheckConfig {
        /// The config file, e.g. /etc/printgate/printgate.toml.
        file: std::path::PathBuf,
    },
}

/// Runs the parsed command. Errors are reported by `main`.
pub fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    match cli.command {
        Command::Version => {
            println!("printgate {}", env!("CARGO_PKG_VERSION"));
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Send(args) => crate::printer::send::run(args),
        Command::CheckConfig { file } => match crate::config::check(&file) {
            Ok(config) => {
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
    }
}
