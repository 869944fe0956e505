//! `printgate sim`: runs one virtual printer until SIGINT/SIGTERM and
//! prints its counters as one line at exit.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use super::{Firmware, Identity, SimConfig, SimStats};

/// Run a virtual printer on a pseudo-terminal (for tests and demos).
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Symlink to create, pointing at the pty slave (the "serial port").
    #[arg(long)]
    pub link: PathBuf,
    /// The firmware to be: marlin, marlin-advanced, prusa-mk3, prusa-buddy,
    /// creality, repetier, reprap, klipper.
    #[arg(long, default_value = "marlin")]
    pub firmware: Firmware,
    /// Wire speed (8N1: baud/10 bytes/s each way); 0 = unpaced.
    #[arg(long, default_value_t = SimConfig::default().baud)]
    pub baud: u32,
    /// Serial RX buffer in bytes (default: the firmware's).
    #[arg(long)]
    pub rx_buffer: Option<usize>,
    /// Command queue lines (default: the firmware's BUFSIZE).
    #[arg(long)]
    pub slots: Option<usize>,
    /// Answer `ok N<n> P<planner> B<queue>` (ADVANCED_OK).
    #[arg(long)]
    pub advanced_ok: bool,
    /// Send `ok` after `Resend:` (Marlin 1.x style), whatever the firmware.
    #[arg(long, conflicts_with = "no_resend_ok")]
    pub resend_ok: bool,
    /// Do not send `ok` after `Resend:` (Marlin 2.x style).
    #[arg(long)]
    pub no_resend_ok: bool,
    /// The UUID `M115` reports (to swap identities).
    #[arg(long)]
    pub uuid: Option<String>,
    /// The MACHINE_TYPE `M115` reports.
    #[arg(long)]
    pub machine_type: Option<String>,
    /// The filament runs out after this many executed commands.
    #[arg(long, value_parser = at_least_one)]
    pub runout_after: Option<u64>,
    /// A person at the printer acts this many seconds (simulated) after a
    /// pause began: presses the knob (Prusa), goes through the M600 dialogue
    /// on the screen (Marlin prompts, Buddy), resumes (Klipper, Repetier).
    #[arg(long)]
    pub person_after_s: Option<f64>,
    /// Probability (0..=1) that a received line gets one byte flipped.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub corrupt: f64,
    /// Probability (0..=1) that an executed command's `ok` is lost.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub drop_ok: f64,
    /// Reset the board once after this many executed commands.
    #[arg(long, value_parser = at_least_one)]
    pub reset_after: Option<u64>,
    /// Write every executed command to this file, one per line.
    #[arg(long)]
    pub received: Option<PathBuf>,
    /// Move durations = distance / feedrate × this (0 = instant, 1 = real time).
    #[arg(long, default_value_t = SimConfig::default().motion_time_scale, value_parser = time_scale)]
    pub motion_time_scale: f64,
    /// Heating times = real rates × this (0 = instant, 1 = real time).
    #[arg(long, default_value_t = SimConfig::default().heat_time_scale, value_parser = time_scale)]
    pub heat_time_scale: f64,
    /// Seed of the fault generator.
    #[arg(long, default_value_t = SimConfig::default().seed)]
    pub seed: u64,
}

impl SimArgs {
    /// The simulator configuration these arguments describe.
    pub fn config(&self) -> SimConfig {
        let base = SimConfig::for_firmware(self.firmware);
        SimConfig {
            identity: Identity {
                uuid: self.uuid.clone(),
                machine_type: self.machine_type.clone(),
            },
            baud: self.baud,
            rx_buffer: self.rx_buffer.unwrap_or(base.rx_buffer),
            slots: self.slots.unwrap_or(base.slots),
            advanced_ok: self.advanced_ok || base.advanced_ok,
            resend_ok: (base.resend_ok || self.resend_ok) && !self.no_resend_ok,
            corrupt: self.corrupt,
            drop_ok: self.drop_ok,
            reset_after: self.reset_after,
            received_log: self.received.clone(),
            motion_time_scale: self.motion_time_scale,
            heat_time_scale: self.heat_time_scale,
            seed: self.seed,
            runout_after: self.runout_after,
            person_after: self
                .person_after_s
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64),
            ..base
        }
    }
}

pub(crate) fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not a probability (expected 0 to 1)"))
    }
}

fn at_least_one(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        Ok(_) => Err("must be at least 1 command".into()),
        Err(_) => Err(format!("`{s}` is not a whole number")),
    }
}

fn time_scale(s: &str) -> Result<f64, String> {
    let x: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..=1000.0).contains(&x) {
        Ok(x)
    } else {
        Err(format!("{x} is out of range (expected 0 to 1000)"))
    }
}

/// Runs the simulator until SIGINT or SIGTERM; prints the counters at exit.
pub fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.config();
    cfg.validate()
        .map_err(anyhow::Error::msg)
        .context("invalid arguments")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let sim = super::spawn(&args.link, cfg)
        .with_context(|| format!("cannot start simulator at {}", args.link.display()))?;
    log::info!(
        "sim: virtual {} printer at {} (Ctrl-C to stop)",
        args.firmware,
        sim.link().display()
    );
    let waited = runtime.block_on(wait_for_signal());
    let stats: SimStats = sim.stop();
    println!("sim {}: {stats}", args.link.display());
    waited.context("cannot wait for signals")?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        args: SimArgs,
    }

    #[test]
    fn arguments_map_to_config_and_are_validated() {
        let w = Wrap::try_parse_from([
            "x",
            "--link",
            "/tmp/p",
            "--baud",
            "250000",
            "--advanced-ok",
            "--no-resend-ok",
            "--drop-ok",
            "0.1",
            "--reset-after",
            "5",
        ])
        .unwrap();
        let cfg = w.args.config();
        assert_eq!(
            (
                cfg.baud,
                cfg.advanced_ok,
                cfg.resend_ok,
                cfg.drop_ok,
                cfg.reset_after
            ),
            (250_000, true, false, 0.1, Some(5))
        );
        assert_eq!(cfg.rx_buffer, 128);
        let w = Wrap::try_parse_from([
            "x",
            "--link",
            "/tmp/p",
            "--firmware",
            "prusa-mk3",
            "--uuid",
            "u-1",
            "--runout-after",
            "100",
            "--person-after-s",
            "90",
        ])
        .unwrap();
        let cfg = w.args.config();
        assert_eq!(cfg.firmware, Firmware::PrusaMk3);
        assert!(cfg.resend_ok, "Prusa sends ok after Resend");
        assert_eq!(cfg.identity.uuid.as_deref(), Some("u-1"));
        assert_eq!(cfg.runout_after, Some(100));
        assert_eq!(cfg.person_after, Some(Duration::from_secs(90)));
        assert!(Wrap::try_parse_from(["x", "--link", "/p", "--firmware", "nope"]).is_err());
        for bad in [
            ["--corrupt", "1.5"],
            ["--drop-ok", "x"],
            ["--reset-after", "0"],
            ["--heat-time-scale", "-1"],
        ] {
            let err = Wrap::try_parse_from(["x", "--link", "/tmp/p", bad[0], bad[1]]).unwrap_err();
            assert!(
                err.to_string().contains(bad[1]) || err.to_string().contains("range"),
                "{err}"
            );
        }
    }
}
