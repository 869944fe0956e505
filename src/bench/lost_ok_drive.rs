//! Streams one job through the sans-IO host core over a real port and
//! timestamps the core's events, for the lost-`ok` benchmark.
//!
//! Why not the printer task (`printer::spawn`, as `serial.rs` uses): the
//! task keeps the core's events to itself (it reports jobs, not lines), and
//! the recovery time of each lost `ok` needs the instant of each
//! [`Event::Recovered`]. This loop is the same core, the same port code and
//! the same feeding rule as the task (lines while `wants_line`, then
//! `end_job("M400")`), without commands, reports or a reader thread. It
//! never decides anything the core decides; it only clocks it.

use crate::printer::job_file::JobFile;
use crate::printer::link::now;
use crate::printer::port;
use crate::protocol::{self, Event, HostProtocol, LineKind, Recovery, Stats};
use anyhow::{bail, Context};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The command that ends the job (as `printgate send` and the daemon do).
const END_SYNC: &str = "M400";

/// One `Event::Recovered`, when the core emitted it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Recovered {
    pub at: Instant,
    pub lines: u64,
    pub by: Recovery,
}

/// What one streamed job showed.
#[derive(Debug)]
pub(super) struct Streamed {
    /// From the first job line queued (after the handshake) to `JobComplete`.
    pub seconds: f64,
    pub lines: u64,
    pub stats: Stats,
    pub recoveries: Vec<Recovered>,
}

/// Streams `job` to the printer at `link` with the core configured by `cfg`;
/// fails when the job does not complete within `limit`.
pub(super) fn stream(
    link: &Path,
    cfg: protocol::Config,
    job: &Path,
    limit: Duration,
) -> anyhow::Result<Streamed> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(drive(link, cfg, job, limit))
}

async fn drive(
    link: &Path,
    cfg: protocol::Config,
    job: &Path,
    limit: Duration,
) -> anyhow::Result<Streamed> {
    let mut io = port::open(link, cfg.baud)?;
    let mut core = HostProtocol::new(cfg, now());
    let mut file = JobFile::open(job, None)?;
    let (mut rx, mut tx) = (vec![0u8; 4096], Vec::with_capacity(1024));
    let give_up = now() + limit;
    let mut started: Option<Instant> = None;
    let mut ended = false;
    let mut recoveries = Vec::new();
    // The instant of the input (or timer) that produced the pending events.
    let mut woke_at = now();
    loop {
        while let Some(ev) = core.poll_event() {
            match ev {
                Event::Ready(_) if started.is_none() => {
                    core.set_job_active(true);
                    started = Some(now());
                }
                Event::Recovered { lines, by } => recoveries.push(Recovered {
                    at: woke_at,
                    lines,
                    by,
                }),
                Event::JobComplete => {
                    let seconds = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
                    return Ok(Streamed {
                        seconds,
                        lines: file.commands_read(),
                        stats: core.stats(),
                        recoveries,
                    });
                }
                Event::Failed(e) => bail!("the printer failed: {e}"),
                Event::Reset => bail!("the printer reset during the run"),
                _ => {}
            }
        }
        if started.is_some() && !ended {
            while core.wants_line() {
                match file.next_command()? {
                    Some((cmd, index)) => {
                        core.queue_line(cmd, LineKind::Job(index))
                            .with_context(|| format!("{}: command {}", job.display(), index + 1))?;
                    }
                    None => {
                        core.end_job(Some(END_SYNC))?;
                        ended = true;
                        break;
                    }
                }
            }
        }
        tx.clear();
        if core.poll_transmit(now(), &mut tx) {
            io.write_all(&tx).await?;
        }
        if now() >= give_up {
            bail!(
                "the job did not complete within {} s ({} of its lines read)",
                limit.as_secs(),
                file.commands_read()
            );
        }
        let deadline = core.poll_timeout().map_or(give_up, |d| d.min(give_up));
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => {
                woke_at = now();
                core.handle_timeout(woke_at);
            }
            read = io.read(&mut rx) => {
                let n = read.context("reading the printer's port")?;
                if n == 0 {
                    bail!("the printer's port closed");
                }
                woke_at = now();
                core.handle_bytes(woke_at, rx.get(..n).unwrap_or(&[]));
                if core.poll_timeout().is_some_and(|d| woke_at >= d) {
                    core.handle_timeout(woke_at);
                }
            }
        }
    }
}
