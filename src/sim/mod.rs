//! A virtual Marlin printer on a pseudo-terminal: the host's test oracle, the
//! demo's printers, and the benchmarks' wire.
//!
//! [`spawn`] creates a pty, points a symlink at its slave side and runs a
//! simulated Marlin 2.x board on the master side, on its own thread with its
//! own current-thread tokio runtime (so an in-process simulator never competes
//! with the host's runtime). A host opens the symlink like a USB serial port;
//! each open resets the board (Arduino DTR auto-reset) and prints the banner.
//!
//! Parts:
//! - `gcode`: the simulator's own line checks (`N<n> <cmd>*<xor>`), number
//!   and word parsing, and the emergency parser. It never uses
//!   `crate::protocol`: a framing bug shared by host and simulator would hide
//!   from every test.
//! - `marlin`: the board as a sans-IO state machine (RX buffer, command
//!   queue, line checks, ok/resend, faults, resets), in virtual time.
//! - `machine`, `motion`, `thermal`: what commands do and how long they take.
//! - `wire`: 8N1 pacing (baud/10 bytes/s) in both directions.
//! - `faults`: seeded xorshift for corruption and lost `ok`s.
//! - `pty`: the driver (pseudo-terminal, host open/close, timers); `link`:
//!   the symlink that names the port.
//! - `cli`: `printgate sim`.
//!
//! Fault knobs (like rustls's `transfer_altered`): `corrupt` flips one byte of
//! a received line before the checks (after the emergency parser saw its
//! bytes: out-of-band `M112`/`M108`/`M876` arrive intact, while a corrupted
//! unnumbered line runs as received, as it would on a real board), `drop_ok`
//! loses an executed command's `ok` (Repetier: its receipt `ok`), `reset_after` reboots the board once mid-stream, and `received_log`
//! records every executed command so a test can compare it with the file.
//!
//! Marlin details a host will meet here, as in stock Marlin 2.x:
//! - ADVANCED_OK echoes the acknowledged command's *own* `N` (none for an
//!   unnumbered command: `ok P15 B3`); `B` counts that command as still queued.
//! - A G0/G1 is acknowledged when it enters the planner (15 free moves), not
//!   when the move ends; only a full planner delays its `ok`. M400, G4, G28
//!   and G29 wait for the planner to empty.
//! - M110 sets the line counter when the line is checked *and again* when it
//!   executes; lines sent behind an M110 before its `ok` can be rejected.
//! - A line error flushes what is in the RX buffer; lines still on the wire
//!   each get their own error and `Resend:`. Unpaced, a whole read from the
//!   pty lands at one instant, before the firmware looks (an infinite baud
//!   rate): bytes past the RX buffer's free space are lost, so a host must
//!   keep its unacknowledged bytes within `rx_buffer`, as on a real UART.
//! - Lines are cut at 95 characters (MAX_CMD_SIZE); `;` starts a comment.
//! - A host that closes and reopens the port within a few microseconds may
//!   not be seen as a new open (no reset).

pub mod cli;
mod commands;
mod faults;
mod gcode;
mod intake;
mod link;
mod machine;
mod marlin;
mod motion;
mod pause;
pub mod profile;
mod pty;
mod thermal;
mod wire;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use profile::{Firmware, Identity};

/// The simulated board. `Default` is a stock Marlin 2.1 (128-byte RX
/// buffer, BUFSIZE 4, no `ok` after `Resend:`), unpaced, instant motion and
/// heating, no faults; [`SimConfig::for_firmware`] gives another firmware
/// with its own buffers and resend style.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Which firmware's dialect and behaviour (see `profile.rs`).
    pub firmware: Firmware,
    /// What `M115` says about the machine (to swap identities).
    pub identity: Identity,
    /// Wire speed, 8N1 (baud/10 bytes/s each way); 0 = as fast as the pty goes.
    pub baud: u32,
    /// Serial RX buffer (Marlin RX_BUFFER_SIZE); bytes arriving when full are lost.
    pub rx_buffer: usize,
    /// Command queue lines (Marlin BUFSIZE).
    pub slots: usize,
    /// `ok N<n> P<planner> B<queue>` instead of `ok`.
    pub advanced_ok: bool,
    /// Send `ok` after `Resend:` (Marlin versions differ).
    pub resend_ok: bool,
    /// Probability that a received line gets one byte flipped.
    pub corrupt: f64,
    /// Probability that an executed command's `ok` is not sent.
    pub drop_ok: f64,
    /// Reset the board once after this many executed commands.
    pub reset_after: Option<u64>,
    /// Write every executed command to this file, one per line.
    pub received_log: Option<PathBuf>,
    /// Move durations are distance / feedrate × this (0 = instant).
    pub motion_time_scale: f64,
    /// Heating times are real rates × this (0 = instant).
    pub heat_time_scale: f64,
    /// Seed of the fault generator.
    pub seed: u64,
    /// The filament runs out after this many executed commands.
    pub runout_after: Option<u64>,
    /// A person at the printer acts this long after a pause began
    /// (Prusa's knob, the `M600` dialogue on a Marlin or Buddy screen,
    /// Klipper's and Repetier's resume); `None`: nobody.
    pub person_after: Option<Duration>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig::for_firmware(Firmware::Marlin)
    }
}

impl SimConfig {
    /// A firmware with its own buffers, `ADVANCED_OK` and resend style.
    pub fn for_firmware(firmware: Firmware) -> Self {
        let p = profile::Profile::of(firmware);
        SimConfig {
            firmware,
            identity: Identity::default(),
            baud: 0,
            rx_buffer: p.rx_buffer,
            slots: p.slots,
            advanced_ok: p.advanced_ok,
            resend_ok: p.ok_after_resend,
            corrupt: 0.0,
            drop_ok: 0.0,
            reset_after: None,
            received_log: None,
            motion_time_scale: 0.0,
            heat_time_scale: 0.0,
            seed: 1,
            runout_after: None,
            person_after: None,
        }
    }

    /// Checks the knobs; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if self.rx_buffer == 0 {
            return Err("rx buffer must be at least 1 byte".into());
        }
        if self.slots == 0 {
            return Err("slots must be at least 1".into());
        }
        for (name, p) in [("corrupt", self.corrupt), ("drop-ok", self.drop_ok)] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!(
                    "{name} must be a probability between 0 and 1, got {p}"
                ));
            }
        }
        for (name, x) in [
            ("motion time scale", self.motion_time_scale),
            ("heat time scale", self.heat_time_scale),
        ] {
            if !(0.0..=1000.0).contains(&x) {
                return Err(format!("{name} must be between 0 and 1000, got {x}"));
            }
        }
        if self.reset_after == Some(0) {
            return Err("reset-after must be at least 1 command".into());
        }
        Ok(())
    }
}

/// Counters of what the simulator saw and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Commands executed (each logged, each owed an `ok`).
    pub executed: u64,
    /// `Error:` lines for rejected lines.
    pub errors: u64,
    /// `Resend:` requests.
    pub resends: u64,
    /// Lines damaged by the `corrupt` fault.
    pub corrupted: u64,
    /// `ok`s withheld by the `drop_ok` fault.
    pub dropped_oks: u64,
    /// Bytes lost because the RX buffer was full.
    pub dropped_rx_bytes: u64,
    /// Board resets (every host open, plus `reset_after`).
    pub resets: u64,
    /// Filament runouts (`runout_after`).
    pub runouts: u64,
    /// When the driver last read `M112` from the host (for latency
    /// measurements in the same process).
    pub m112_read_at: Option<Instant>,
    /// Times a host opened the port.
    pub opens: u64,
    /// Bytes read from the host.
    pub bytes_in: u64,
    /// Bytes written to the host.
    pub bytes_out: u64,
}

impl fmt::Display for SimStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "executed={} errors={} resends={} corrupted={} dropped_oks={} dropped_rx_bytes={} \
             resets={} runouts={} opens={} bytes_in={} bytes_out={}",
            self.executed,
            self.errors,
            self.resends,
            self.corrupted,
            self.dropped_oks,
            self.dropped_rx_bytes,
            self.resets,
            self.runouts,
            self.opens,
            self.bytes_in,
            self.bytes_out
        )
    }
}

/// Why a simulator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    #[error("invalid simulator config: {0}")]
    Config(String),
    #[error("cannot create a pseudo-terminal")]
    Pty(#[source] std::io::Error),
    #[error("{}: exists and is not a symlink; refusing to replace it", path.display())]
    LinkIsNotSymlink { path: PathBuf },
    #[error("cannot create symlink {}", path.display())]
    Link {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create received log {}", path.display())]
    ReceivedLog {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the simulator thread")]
    Thread(#[source] std::io::Error),
}

/// A running simulator. Dropping it stops it too (like [`SimHandle::stop`]).
#[derive(Debug)]
pub struct SimHandle {
    link: PathBuf,
    stats: Arc<Mutex<SimStats>>,
    dropped: Arc<Mutex<Vec<(i64, Instant)>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<SimStats>>,
}

impl SimHandle {
    /// The symlink a host opens.
    pub fn link(&self) -> &Path {
        &self.link
    }

    /// The counters so far.
    pub fn stats(&self) -> SimStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The line number and time of every `ok` the `drop_ok` fault withheld
    /// so far (-1: an unnumbered command).
    pub fn dropped_oks(&self) -> Vec<(i64, Instant)> {
        self.dropped.lock().map(|d| d.clone()).unwrap_or_default()
    }

    /// Stops the simulator: flushes the received log, removes the symlink,
    /// joins the thread and returns the final counters.
    pub fn stop(mut self) -> SimStats {
        self.shutdown().unwrap_or_else(|| self.stats())
    }

    fn shutdown(&mut self) -> Option<SimStats> {
        if let Some(stop) = self.stop.take() {
            // The thread may have ended on its own (a start failure): the
            // join below collects what it left.
            if stop.send(()).is_err() {
                log::debug!("sim: the simulator thread had already stopped");
            }
        }
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts a simulator whose port is the symlink `link` (an existing symlink
/// is replaced, any other file is refused). Returns once the link exists.
pub fn spawn(link: &Path, cfg: SimConfig) -> Result<SimHandle, SimError> {
    cfg.validate().map_err(SimError::Config)?;
    let log = match &cfg.received_log {
        Some(path) => {
            Some(
                std::fs::File::create(path).map_err(|source| SimError::ReceivedLog {
                    path: path.clone(),
                    source,
                })?,
            )
        }
        None => None,
    };
    let stats = Arc::new(Mutex::new(SimStats::default()));
    let dropped = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let name = link
        .file_name()
        .map_or_else(|| "sim".into(), |n| format!("sim {}", n.to_string_lossy()));
    let args = pty::DriverArgs {
        link: link.to_path_buf(),
        cfg,
        log,
        stats: Arc::clone(&stats),
        dropped: Arc::clone(&dropped),
        stop: stop_rx,
    };
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || pty::run_thread(args, ready_tx))
        .map_err(SimError::Thread)?;
    let started = ready_rx.recv();
    let handle = SimHandle {
        link: link.to_path_buf(),
        stats,
        dropped,
        stop: Some(stop_tx),
        thread: Some(thread),
    };
    match started {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(SimError::Thread(std::io::Error::other(
            "simulator thread exited during start",
        ))),
    }
}
