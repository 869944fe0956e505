//! The parts `bench sdwear` runs: simulators and a `printgate run` daemon as
//! child processes (the daemon's log read through a pipe, as journald would
//! get it), its config, the broker (embedded, or a dead port), the operator
//! and robot of the `jobs` scenario, the file system under the data folder,
//! and the kernel's fsync count of a process (`perf`, else `strace`) for the
//! cross-check.
//!
//! Measures nothing itself; `sdwear.rs` decides when and what.

use super::farm::{wait_for, Kid};
use crate::control::{self, Request, Response};
use crate::store::StoreReader;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// N simulators on `<dir>/tty<i>` at 250000 baud, each once its link exists.
pub fn start_sims(exe: &Path, dir: &Path, printers: usize) -> anyhow::Result<Vec<Kid>> {
    let mut sims = Vec::new();
    for i in 0..printers {
        let link = dir.join(format!("tty{i}"));
        let child = Command::new(exe)
            .args(["sim", "--baud", "250000", "--link"])
            .arg(&link)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        sims.push(Kid(child));
        wait_for("a simulator", Duration::from_secs(10), || {
            std::fs::symlink_metadata(&link).is_ok()
        })?;
    }
    Ok(sims)
}

/// What the daemon logged so far (its stderr, at the default `info`).
#[derive(Debug, Default)]
pub struct LogTally {
    pub bytes: u64,
    pub lines: u64,
    /// The last lines, for error messages.
    pub tail: Vec<String>,
}

/// `printgate run` with the time scale, its stderr counted by a thread.
pub struct Daemon {
    pub kid: Kid,
    pub log: Arc<Mutex<LogTally>>,
    pub data: PathBuf,
}

impl Daemon {
    pub fn start(exe: &Path, config: &Path, data: &Path, scale: f64) -> anyhow::Result<Daemon> {
        let mut child: Child = Command::new(exe)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env(crate::timescale::ENV, scale.to_string())
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let log = Arc::new(Mutex::new(LogTally::default()));
        if let Some(stderr) = child.stderr.take() {
            let tally = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut t) = tally.lock() {
                        t.bytes += line.len() as u64 + 1;
                        t.lines += 1;
                        t.tail.push(line);
                        if t.tail.len() > 20 {
                            t.tail.remove(0);
                        }
                    }
                }
            });
        }
        let daemon = Daemon {
            kid: Kid(child),
            log,
            data: data.to_path_buf(),
        };
        let up = wait_for(
            "the daemon's control socket",
            Duration::from_secs(30),
            || daemon.ask(&Request::Ping).is_some(),
        );
        if let Err(e) = up {
            anyhow::bail!("{e}; its log ends:\n{}", daemon.log_tail());
        }
        Ok(daemon)
    }

    pub fn pid(&self) -> u32 {
        self.kid.0.id()
    }

    /// One control request; `None` if the daemon does not answer.
    pub fn ask(&self, req: &Request) -> Option<Response> {
        control::request(&self.data, req, None).ok()
    }

    pub fn log_bytes(&self) -> (u64, u64) {
        self.log.lock().map_or((0, 0), |t| (t.bytes, t.lines))
    }

    pub fn log_tail(&self) -> String {
        self.log.lock().map_or(String::new(), |t| t.tail.join("\n"))
    }
}

/// The file system type holding `dir` (from `/proc/self/mountinfo`: the
/// longest mount point above it).
pub fn fs_type(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        let (left, right) = line.split_once(" - ")?;
        let mount = left.split(' ').nth(4)?.replace("\\040", " ");
        let fstype = right.split(' ').next()?;
        if dir.starts_with(&mount) && best.as_ref().is_none_or(|(len, _)| mount.len() > *len) {
            best = Some((mount.len(), fstype.to_owned()));
        }
    }
    best.map(|(_, t)| t)
}

/// The kernel's count of `fsync`/`fdatasync` calls by one process, over
/// the time between `start` and `stop`.
pub struct SyncProbe {
    tool: &'static str,
    child: Child,
}

/// What a [`SyncProbe`] saw.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KernelSyncs {
    pub tool: &'static str,
    pub fsync: u64,
    pub fdatasync: u64,
}

impl SyncProbe {
    /// `perf stat` on the syscall tracepoints (no overhead), else `strace -c`
    /// (stops the daemon at every system call: slower, same count).
    pub fn start(pid: u32) -> anyhow::Result<SyncProbe> {
        let pid = pid.to_string();
        let events = "syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync";
        let perf = Command::new("perf")
            .args(["stat", "-x", ",", "-e", events, "-p", &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        if let Ok(child) = perf {
            return Ok(SyncProbe {
                tool: "perf",
                child,
            });
        }
        let child = Command::new("strace")
            .args(["-f", "-c", "-e", "trace=fsync,fdatasync", "-p", &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| anyhow::anyhow!("--cross-check needs perf or strace: {e}"))?;
        Ok(SyncProbe {
            tool: "strace",
            child,
        })
    }

    /// Stops the tool (SIGINT, as at a terminal) and reads its count.
    pub fn stop(self) -> anyhow::Result<KernelSyncs> {
        Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()?;
        let out = self.child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stderr);
        let count = |name: &str| -> u64 {
            text.lines()
                .filter_map(|l| match self.tool {
                    // perf -x,: "<count>,,syscalls:sys_enter_fsync,..."
                    "perf" => l
                        .split(',')
                        .nth(2)
                        .filter(|e| e.ends_with(&format!("sys_enter_{name}")))
                        .and_then(|_| l.split(',').next()?.parse::<u64>().ok()),
                    // strace -c: "% time seconds usecs/call calls [errors] syscall"
                    _ => {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        (f.last() == Some(&name))
                            .then(|| f.get(3)?.parse::<u64>().ok())
                            .flatten()
                    }
                })
                .sum()
        };
        // strace lists only the calls it saw, then a total line.
        if !(text.contains("sys_enter_fsync") || text.contains("total")) {
            anyhow::bail!("{} printed no fsync count: {}", self.tool, text.trim());
        }
        Ok(KernelSyncs {
            tool: self.tool,
            fsync: count("fsync"),
            fdatasync: count("fdatasync"),
        })
    }
}

pub fn add_job(data: &Path, printer: &str, file: &Path) -> anyhow::Result<()> {
    let add = Request::AddJob {
        printer: printer.to_owned(),
        priority: 0,
        id: None,
        size: std::fs::metadata(file)?.len(),
    };
    let answer = crate::control::request(data, &add, Some(file))?;
    if !answer.ok {
        anyhow::bail!("bench sdwear: job add on {printer}: {}", answer.message);
    }
    Ok(())
}

/// Until `end`: a short job for every idle printer, a cleared plate for
/// every finished one (what a queue and a robot would do).
pub fn keep_printers_busy(
    data: &Path,
    job: &Path,
    daemon: &Daemon,
    end: Instant,
) -> anyhow::Result<()> {
    while Instant::now() < end {
        let printers = StoreReader::open(data)?.list_printers()?;
        for p in printers {
            match p.state.as_str() {
                "idle" => add_job(data, &p.id, job)?,
                "awaiting_clear" => {
                    let clear = Request::Clear { printer: p.id };
                    daemon.ask(&clear);
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The embedded broker's port, or a port nobody listens on.
pub fn broker_port(up: bool) -> anyhow::Result<u16> {
    #[cfg(feature = "embedded-broker")]
    if up {
        let port = crate::broker::free_port()?;
        crate::broker::start_embedded(port)?;
        return Ok(port);
    }
    let _ = up;
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Defaults everywhere except what a simulator needs.
pub fn config_text(dir: &Path, data: &Path, port: u16, printers: usize) -> String {
    let mut text = format!(
        "[gateway]\nid = \"sdwear\"\ndata_dir = \"{}\"\n[serial]\nbaud = 250000\nboot_timeout_ms = 1500\n[mqtt]\nport = {port}\n",
        data.display()
    );
    for i in 0..printers {
        text.push_str(&format!(
            "[[printer]]\nid = \"p{i}\"\nport = \"{}\"\nfilament = \"PLA\"\n",
            dir.join(format!("tty{i}")).display()
        ));
    }
    text
}
