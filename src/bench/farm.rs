//! The daemon as a separate process with N paced simulated printers (also
//! separate processes), measured from outside: CPU %, resident memory, cold
//! start to ready, and bytes the store thread wrote per printer-hour.

use super::sample_job;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Serialize)]
pub struct FarmRun {
    pub printers: usize,
    pub cold_start_ms: f64,
    pub window_seconds: f64,
    pub cpu_percent: f64,
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
    /// Store thread writes (SQLite + WAL) scaled to one printer printing for
    /// an hour, at the 1 s progress interval this run uses (10× the default).
    pub store_bytes_per_printer_hour: f64,
}

/// A child process stopped with SIGTERM (then SIGKILL after 10 s) on drop.
pub(super) struct Kid(pub Child);
impl Drop for Kid {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(super) fn exe() -> anyhow::Result<PathBuf> {
    Ok(std::env::current_exe()?)
}

pub(super) fn wait_for(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() > deadline {
            anyhow::bail!("bench: timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `wchar` of the daemon's store thread (named `printgate-store`).
fn store_thread_bytes(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == "printgate-store" {
            let io = std::fs::read_to_string(task.path().join("io")).unwrap_or_default();
            return io
                .lines()
                .find_map(|l| l.strip_prefix("wchar: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
        }
    }
    0
}

fn config(dir: &Path, printers: usize) -> anyhow::Result<PathBuf> {
    // MQTT to a port nobody listens on: events and progress stay in the
    // outbox (the worst case for the SD card: the broker is down).
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut text = format!(
        "[gateway]\nid = \"bench\"\ndata_dir = \"{}\"\n[serial]\nbaud = 250000\nboot_timeout_ms = 1500\n[mqtt]\nport = {dead}\nprogress_interval_s = 1\n",
        dir.join("data").display()
    );
    for i in 0..printers {
        text.push_str(&format!(
            "[[printer]]\nid = \"p{i}\"\nport = \"{}\"\nfilament = \"PLA\"\n",
            dir.join(format!("tty{i}")).display()
        ));
    }
    let path = dir.join("printgate.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn cli(args: &[&str]) -> bool {
    exe()
        .ok()
        .and_then(|e| {
            Command::new(e)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .ok()
        })
        .is_some_and(|s| s.success())
}

pub fn run(root: &Path, printers: usize, window: Duration) -> anyhow::Result<FarmRun> {
    let dir = root.join(format!("farm{printers}"));
    std::fs::create_dir_all(&dir)?;
    let exe = exe()?;
    let sims = super::sdwear_rig::start_sims(&exe, &dir, printers)?;
    let config = config(&dir, printers)?;
    let data = dir.join("data");
    let data_s = data.to_string_lossy().into_owned();
    let started = Instant::now();
    let daemon = Kid(Command::new(&exe)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?);
    wait_for(
        "the daemon's control socket",
        Duration::from_secs(30),
        || crate::control::request(&data, &crate::control::Request::Ping, None).is_ok(),
    )?;
    let cold_start_ms = started.elapsed().as_secs_f64() * 1000.0;
    let job = sample_job(&dir, "long.gcode", 200_000)?;
    let job_s = job.to_string_lossy().into_owned();
    for i in 0..printers {
        let p = format!("p{i}");
        wait_for("printer connected", Duration::from_secs(30), || {
            cli(&["clear", &p, "--data-dir", &data_s])
        })?;
        if !cli(&["job", "add", &job_s, "--printer", &p, "--data-dir", &data_s]) {
            anyhow::bail!("bench: job add failed on {p}");
        }
    }
    let reader = || crate::store::StoreReader::open(&data);
    wait_for("every printer printing", Duration::from_secs(60), || {
        reader().and_then(|r| r.list_printers()).is_ok_and(|ps| {
            ps.iter().filter(|p| p.state.as_str() == "printing").count() == printers
        })
    })?;
    let pid = daemon.0.id();
    let (cpu0, bytes0, t0) = (cpu_seconds(pid), store_thread_bytes(pid), Instant::now());
    // The measurement window itself (not a synchronization).
    std::thread::sleep(window);
    let (cpu1, bytes1, wall) = (
        cpu_seconds(pid),
        store_thread_bytes(pid),
        t0.elapsed().as_secs_f64(),
    );
    let run = FarmRun {
        printers,
        cold_start_ms,
        window_seconds: wall,
        cpu_percent: (cpu1 - cpu0) * 100.0 / wall,
        rss_kib: status_kib(pid, "VmRSS:"),
        peak_rss_kib: status_kib(pid, "VmHWM:"),
        store_bytes_per_printer_hour: (bytes1.saturating_sub(bytes0)) as f64 * 3600.0
            / wall
            / printers as f64,
    };
    drop(daemon);
    drop(sims);
    Ok(run)
}
