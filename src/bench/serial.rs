//! Serial throughput against the wire limit, and unpaced host cost per line.

use super::{sample_job, sim_port, thread_cpu_seconds};
use crate::printer::job_file;
use crate::printer::send::{send_file, SendArgs};
use crate::protocol::line;
use crate::sim::SimConfig;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct PacedRun {
    pub baud: u32,
    pub mode: &'static str,
    pub lines: u64,
    pub seconds: f64,
    pub lines_per_second: f64,
    pub wire_limit_lines_per_second: f64,
    pub percent_of_wire: f64,
}

#[derive(Debug, Serialize)]
pub struct SerialReport {
    pub avg_framed_bytes: f64,
    pub paced: Vec<PacedRun>,
    pub unpaced_lines: u64,
    pub unpaced_lines_per_second: f64,
    pub host_cpu_us_per_line: f64,
}

fn args(port: &Path, file: &Path, baud: u32, ping_pong: bool) -> SendArgs {
    SendArgs {
        port: port.to_path_buf(),
        baud,
        file: file.to_path_buf(),
        json: false,
        rx_buffer: 128,
        max_lines: 4,
        ping_pong,
        boot_timeout_ms: 2000,
        ack_timeout_ms: 2000,
        end_sync: "M400".into(),
    }
}

/// Average framed length (with newline) of the file's commands, numbered as
/// the host numbers them (after the 3-line handshake).
fn avg_framed(file: &Path) -> anyhow::Result<f64> {
    let mut reader = job_file::JobFile::open(file, None)?;
    let (mut bytes, mut n) = (0usize, 0u64);
    let mut buf = Vec::with_capacity(128);
    while let Some((cmd, index)) = reader.next_command()? {
        buf.clear();
        bytes += line::frame(index + 3, cmd, &mut buf);
        n += 1;
    }
    Ok(bytes as f64 / n.max(1) as f64)
}

fn one_run(
    dir: &Path,
    file: &Path,
    baud: u32,
    ping_pong: bool,
    tag: &str,
) -> anyhow::Result<(u64, f64, f64)> {
    let (link, sim) = sim_port(
        dir,
        tag,
        SimConfig {
            baud,
            ..SimConfig::default()
        },
    )?;
    let summary = job_file::scan(file)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cpu0 = thread_cpu_seconds();
    let result = runtime.block_on(send_file(
        args(&link, file, baud, ping_pong).settings(),
        file,
        summary,
    ));
    let cpu = thread_cpu_seconds() - cpu0;
    sim.stop();
    if let Some(e) = result.error {
        anyhow::bail!("bench run {tag} failed: {e}");
    }
    Ok((result.lines, result.seconds, cpu))
}

pub fn run(dir: &Path, quick: bool) -> anyhow::Result<SerialReport> {
    let paced_file = sample_job(dir, "paced.gcode", if quick { 600 } else { 4000 })?;
    let avg = avg_framed(&paced_file)?;
    let mut paced = Vec::new();
    for baud in [115_200u32, 250_000] {
        for (mode, ping_pong) in [("windowed", false), ("ping-pong", true)] {
            let (lines, seconds, _) =
                one_run(dir, &paced_file, baud, ping_pong, &format!("{baud}-{mode}"))?;
            let lps = lines as f64 / seconds.max(1e-9);
            let limit = f64::from(baud) / 10.0 / avg;
            paced.push(PacedRun {
                baud,
                mode,
                lines,
                seconds,
                lines_per_second: lps,
                wire_limit_lines_per_second: limit,
                percent_of_wire: lps * 100.0 / limit,
            });
        }
    }
    let unpaced_file = sample_job(dir, "unpaced.gcode", if quick { 20_000 } else { 200_000 })?;
    let (lines, seconds, cpu) = one_run(dir, &unpaced_file, 0, false, "unpaced")?;
    Ok(SerialReport {
        avg_framed_bytes: avg,
        paced,
        unpaced_lines: lines,
        unpaced_lines_per_second: lines as f64 / seconds.max(1e-9),
        host_cpu_us_per_line: cpu * 1e6 / lines.max(1) as f64,
    })
}

pub fn print_table(r: &SerialReport) {
    println!("\nserial throughput (stock Marlin buffers: 128-byte RX, 4 slots; {:.1} bytes per framed line)", r.avg_framed_bytes);
    println!(
        "{:>8} {:<10} {:>8} {:>10} {:>12} {:>8}",
        "baud", "mode", "lines", "lines/s", "wire lines/s", "% wire"
    );
    for p in &r.paced {
        println!(
            "{:>8} {:<10} {:>8} {:>10.0} {:>12.0} {:>7.1}%",
            p.baud,
            p.mode,
            p.lines,
            p.lines_per_second,
            p.wire_limit_lines_per_second,
            p.percent_of_wire
        );
    }
    println!(
        "unpaced (pty, no wire pacing): {} lines at {:.0} lines/s, host CPU {:.2} us/line",
        r.unpaced_lines, r.unpaced_lines_per_second, r.host_cpu_us_per_line
    );
}
