//! Entry point: logging, the TLS provider, then the CLI.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    init_logging();
    // rumqttc and ureq both use rustls; exactly one process-wide provider
    // must be installed before either builds a client config.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = printgate::cli::Cli::parse();
    match printgate::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("printgate: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Under systemd (JOURNAL_STREAM set) journald adds timestamps, so we don't.
fn init_logging() {
    let mut builder = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,rumqttd=off,tracing=off"),
    );
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.format_timestamp(None);
    }
    builder.init();
}
