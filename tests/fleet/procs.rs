//! CPU time and memory of the fleet's processes, from /proc: a sampler
//! thread reads `/proc/<pid>/stat` (user + system ticks) and
//! `/proc/<pid>/status` (VmRSS, VmHWM) of every watched process once a
//! second, so a figure can be taken over any stretch of the run. Linux
//! only; a process that has exited keeps its last sample.

use crate::seed_handler::mqtt::lock;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One reading of one process.
#[derive(Clone, Copy, Debug)]
pub struct Reading {
    pub at: Instant,
    /// User + system CPU time so far, in seconds.
    pub cpu: f64,
    pub rss_kib: u64,
    /// Peak RSS so far.
    pub hwm_kib: u64,
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux if it fails).
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Reads one process now; `None` once it has gone.
pub fn read(pid: u32, hz: f64) -> Option<Reading> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields after it.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(Reading {
        at: Instant::now(),
        cpu: ticks / hz,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    })
}

type Book = BTreeMap<String, (u32, Vec<Reading>)>;

/// Samples named processes every second until dropped.
pub struct Sampler {
    book: Arc<Mutex<Book>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    hz: f64,
}

impl Sampler {
    pub fn start() -> Sampler {
        let book: Arc<Mutex<Book>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let hz = ticks_per_second();
        let thread = {
            let (book, stop) = (book.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let pids: Vec<(String, u32)> = lock(&book)
                        .iter()
                        .map(|(k, (p, _))| (k.clone(), *p))
                        .collect();
                    let readings: Vec<(String, Reading)> = pids
                        .into_iter()
                        .filter_map(|(k, pid)| read(pid, hz).map(|r| (k, r)))
                        .collect();
                    let mut b = lock(&book);
                    for (k, r) in readings {
                        if let Some((_, v)) = b.get_mut(&k) {
                            v.push(r);
                        }
                    }
                    drop(b);
                    // The sampling period, not a synchronisation.
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
        };
        Sampler {
            book,
            stop,
            thread: Some(thread),
            hz,
        }
    }

    /// Watches `pid` under `name` (e.g. `gateway gw-01`), reading it at once.
    pub fn watch(&self, name: &str, pid: u32) {
        let first: Vec<Reading> = read(pid, self.hz).into_iter().collect();
        lock(&self.book).insert(name.to_owned(), (pid, first));
    }

    /// Reads every watched process now (for the ends of a stretch).
    pub fn mark(&self) -> Instant {
        let pids: Vec<(String, u32)> = lock(&self.book)
            .iter()
            .map(|(k, (p, _))| (k.clone(), *p))
            .collect();
        for (k, pid) in pids {
            if let Some(r) = read(pid, self.hz) {
                if let Some((_, v)) = lock(&self.book).get_mut(&k) {
                    v.push(r);
                }
            }
        }
        Instant::now()
    }

    /// CPU used by `name` between two instants, as a share of one core
    /// (readings nearest inside the stretch).
    pub fn cpu_share(&self, name: &str, from: Instant, to: Instant) -> Option<f64> {
        let book = lock(&self.book);
        let (_, v) = book.get(name)?;
        let a = v.iter().find(|r| r.at >= from)?;
        let b = v.iter().rev().find(|r| r.at <= to)?;
        let secs = b.at.saturating_duration_since(a.at).as_secs_f64();
        (secs > 0.0).then(|| (b.cpu - a.cpu) / secs)
    }

    /// Peak RSS of `name` so far (KiB).
    pub fn peak_rss_kib(&self, name: &str) -> Option<u64> {
        let book = lock(&self.book);
        let (_, v) = book.get(name)?;
        v.iter().map(|r| r.hwm_kib.max(r.rss_kib)).max()
    }

    /// Names watched whose name starts with `prefix`.
    pub fn names(&self, prefix: &str) -> Vec<String> {
        lock(&self.book)
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The `q`-quantile (0..=1) of `values` (nearest rank), `NaN` if empty.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}
