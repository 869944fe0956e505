//! Write and fsync counters for the SD card's budget: a shared counter the
//! parts that write files increment ([`SPOOL`] for model files), the
//! process's own `/proc/self/io`, and [`IoReport`], the three together with
//! the store's [`StoreIo`] as `printgate status --json` and the bench show
//! them.
//!
//! Counts only; never writes anything itself.

use crate::store::{Store, StoreIo};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes, fsyncs and files written by one part of the process. Lock-free:
/// increment it from any thread or task.
#[derive(Debug, Default)]
pub struct IoCounter {
    bytes: AtomicU64,
    syncs: AtomicU64,
    files: AtomicU64,
}

/// Model files written to the spool, by downloads and by `job add` uploads.
/// They are payload (written once, sequentially, then only read), reported
/// apart from the bookkeeping the budget is about. Process-wide like
/// `/proc/self/io`: one daemon per process.
pub static SPOOL: IoCounter = IoCounter::new();

impl IoCounter {
    pub const fn new() -> IoCounter {
        IoCounter {
            bytes: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            files: AtomicU64::new(0),
        }
    }

    /// `bytes` more written (call per chunk or once per file).
    pub fn wrote(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// One `fsync`/`fdatasync` (`File::sync_all`/`sync_data`) issued.
    pub fn synced(&self) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
    }

    /// One file completed (renamed into place).
    pub fn file_done(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> IoCount {
        IoCount {
            bytes: self.bytes.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            files: self.files.load(Ordering::Relaxed),
        }
    }
}

/// A reading of an [`IoCounter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoCount {
    pub bytes: u64,
    pub syncs: u64,
    pub files: u64,
}

/// The kernel's I/O accounting of a whole process (`/proc/<pid>/io`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessIo {
    /// Bytes the process caused to be sent to storage (page-cache pages it
    /// dirtied, `mmap`ed ones included): what the card is asked to write,
    /// before the file system's own journal.
    pub write_bytes: u64,
    /// Of those, bytes never written after all (truncated or deleted while
    /// dirty).
    pub cancelled_write_bytes: u64,
    /// Bytes passed to `write(2)` and friends, to any file, pipe or socket.
    pub wchar: u64,
    /// Write system calls.
    pub syscw: u64,
}

impl ProcessIo {
    /// This process; `None` where `/proc/self/io` cannot be read.
    pub fn own() -> Option<ProcessIo> {
        ProcessIo::read("/proc/self/io")
    }

    /// Another process (the bench reads its daemon's).
    pub fn of(pid: u32) -> Option<ProcessIo> {
        ProcessIo::read(&format!("/proc/{pid}/io"))
    }

    fn read(path: &str) -> Option<ProcessIo> {
        let text = std::fs::read_to_string(path).ok()?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Some(ProcessIo {
            write_bytes: field("write_bytes")?,
            cancelled_write_bytes: field("cancelled_write_bytes")?,
            wchar: field("wchar")?,
            syscw: field("syscw")?,
        })
    }
}

/// Everything counted, for `printgate status --json` (through the control
/// socket's `Status` answer) and the bench.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IoReport {
    /// The SQLite store, counted by its writer thread.
    pub store: StoreIo,
    /// Model files (payload, apart from the budget).
    pub spool: IoCount,
    /// The whole daemon as the kernel counts it (absent off Linux).
    pub process: Option<ProcessIo>,
}

impl IoReport {
    /// Reads every counter now.
    pub fn collect(store: &Store) -> IoReport {
        IoReport {
            store: store.io_stats(),
            spool: SPOOL.snapshot(),
            process: ProcessIo::own(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_adds_up_from_threads() {
        static C: IoCounter = IoCounter::new();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..100 {
                        C.wrote(10);
                    }
                    C.synced();
                    C.file_done();
                })
            })
            .collect();
        for t in threads {
            t.join()
                .unwrap_or_else(|_| panic!("counter thread panicked"));
        }
        assert_eq!(
            C.snapshot(),
            IoCount {
                bytes: 4000,
                syncs: 4,
                files: 4
            }
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn own_process_io_grows_with_a_write() {
        let before = ProcessIo::own().unwrap_or_default();
        let path = std::env::temp_dir().join(format!("printgate-iostats-{}", std::process::id()));
        std::fs::write(&path, vec![7u8; 8192]).unwrap_or_else(|e| panic!("{e}"));
        let after = ProcessIo::own().unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        assert!(
            after.wchar >= before.wchar + 8192,
            "{before:?} -> {after:?}"
        );
    }
}
