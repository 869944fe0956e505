//! The write-ahead log as the SD card sees it: when to checkpoint, and the
//! store's own count of what it made the card do (bytes, fsyncs, commits,
//! checkpoints).
//!
//! SQLite's automatic checkpoint is replaced by ours: a WAL hook (which
//! SQLite calls after every commit that wrote pages, with the WAL's length
//! in frames) records the length, and the writer thread checkpoints when
//! [`CHECKPOINT_FRAMES`] frames are waiting, when it has been idle for
//! [`IDLE_CHECKPOINT`], and before it closes. Installing a WAL hook is what
//! turns SQLite's own `wal_autocheckpoint` off.
//!
//! Counting fsyncs. The store cannot see the system calls (no custom VFS: the
//! crate forbids `unsafe`), so it counts the ones SQLite's WAL code issues
//! (`sqlite3WalFrames`, `walCheckpoint` in SQLite 3.53), one per event:
//! - a commit that wrote frames with `synchronous=FULL`: the WAL (none with
//!   `NORMAL`);
//! - the first commit into an empty or restarted WAL: its header, whatever
//!   the `synchronous` level;
//! - a checkpoint that copied frames: the WAL before copying, and the
//!   database file after, when every frame was copied.
//!
//! Not counted: the directory fsync when the `-wal` file is created (once
//! per process start) and the checkpoint SQLite runs itself when the last
//! connection closes. A reader holding an old snapshot can stop the WAL from
//! restarting after a complete checkpoint; the next header sync is then
//! counted but does not happen (the count errs high). `printgate bench
//! sdwear --cross-check` compares the count with the kernel's.
//!
//! Counting bytes: what SQLite passes to `write(2)` for us. WAL appends are
//! exact from the frame count (each frame is a 24-byte header and a page,
//! each new WAL a 32-byte header); a checkpoint's writes (each changed page
//! once, in the database file) are the writer thread's `wchar` (from
//! `/proc/thread-self/io`) across the checkpoint call, estimated as one page
//! per copied frame where `/proc` cannot be read (`bytes_estimated`). The
//! thread's `wchar` as a whole would also count the 8-byte eventfd writes
//! that wake the tokio tasks waiting for answers. The `-shm` index is a
//! shared memory map: the kernel writes it back without a system call; the
//! process's `write_bytes` includes it.

use super::StoreError;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Checkpoint when this many frames wait in the WAL (about 4 MiB at 4 KiB
/// pages, SQLite's default). Bigger means fewer checkpoints and more
/// rewrites of the same hot page absorbed by each; the WAL file stays at
/// most about this size (see `journal_size_limit` in `schema.rs`).
pub(crate) const CHECKPOINT_FRAMES: u64 = 1000;
/// Checkpoint when nothing was written for this long and frames wait: a
/// farm that went quiet leaves a small WAL behind (quick to open, quick for
/// readers), at the price of one checkpoint per quiet spell.
pub(crate) const IDLE_CHECKPOINT: Duration = Duration::from_secs(300);

thread_local! {
    /// WAL length in frames after the last commit on this thread's
    /// connection; set by [`on_commit`], taken by the writer.
    static WAL_LENGTH: Cell<Option<u64>> = const { Cell::new(None) };
}

/// The WAL hook: a plain `fn` (rusqlite's hook takes no closure), so it
/// hands the length over through a thread-local of the writer thread, the
/// only thread that commits on this connection.
fn on_commit(_: &rusqlite::hooks::Wal, frames: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_LENGTH.set(Some(u64::try_from(frames).unwrap_or(0)));
    Ok(())
}

/// What the store has made the storage do since it opened. Serialized in
/// camelCase for `printgate status --json` and the bench.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreIo {
    /// Bytes SQLite passed to `write(2)` for the store (WAL, database).
    pub bytes_written: u64,
    /// Part of `bytes_written` is an estimate (no `/proc`).
    pub bytes_estimated: bool,
    /// fsyncs SQLite issued for the store (counted as the module doc says).
    pub syncs: u64,
    /// Commits that wrote pages with `synchronous=FULL` (one fsync each).
    pub commits_durable: u64,
    /// Commits that wrote pages with `synchronous=NORMAL` (no fsync).
    pub commits_non_durable: u64,
    /// Checkpoints that copied pages into the database file.
    pub checkpoints: u64,
    /// Pages appended to the WAL.
    pub wal_frames: u64,
    /// WAL frames copied by checkpoints.
    pub checkpointed_frames: u64,
}

/// The counters, shared between the writer thread and every handle.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    syncs: AtomicU64,
    commits_durable: AtomicU64,
    commits_non_durable: AtomicU64,
    checkpoints: AtomicU64,
    wal_frames: AtomicU64,
    wal_headers: AtomicU64,
    checkpointed_frames: AtomicU64,
    checkpoint_bytes: AtomicU64,
    checkpoint_bytes_estimated: AtomicBool,
    page_size: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> StoreIo {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let wal = get(&self.wal_frames) * (get(&self.page_size) + FRAME_HEADER)
            + get(&self.wal_headers) * WAL_HEADER;
        StoreIo {
            bytes_written: wal + get(&self.checkpoint_bytes),
            bytes_estimated: self.checkpoint_bytes_estimated.load(Ordering::Relaxed),
            syncs: get(&self.syncs),
            commits_durable: get(&self.commits_durable),
            commits_non_durable: get(&self.commits_non_durable),
            checkpoints: get(&self.checkpoints),
            wal_frames: get(&self.wal_frames),
            checkpointed_frames: get(&self.checkpointed_frames),
        }
    }

    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Bytes before each page in the WAL, and at the start of a new WAL.
const FRAME_HEADER: u64 = 24;
const WAL_HEADER: u64 = 32;

/// `wchar` of the calling thread: bytes it passed to `write(2)` so far.
pub(crate) fn thread_wchar() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/io").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The writer thread's view of the WAL.
pub(crate) struct WalBook {
    counters: Arc<Counters>,
    /// Frames in the WAL (SQLite's `mxFrame`).
    length: u64,
    /// Of which already copied into the database file.
    backfilled: u64,
    /// Every frame was copied: the next commit starts the WAL over.
    restart_pending: bool,
    /// When a commit last wrote frames.
    last_write: Instant,
}

impl WalBook {
    /// Runs on the writer thread: installs the hook, learns the page size
    /// and the thread's `/proc` file, and checkpoints what an earlier run
    /// left so the book starts from a known WAL.
    pub fn start(conn: &Connection, counters: Arc<Counters>) -> Result<WalBook, StoreError> {
        conn.wal_hook(Some(on_commit));
        let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        counters
            .page_size
            .store(u64::try_from(page).unwrap_or(0), Ordering::Relaxed);
        let mut book = WalBook {
            counters,
            length: 0,
            backfilled: 0,
            restart_pending: false,
            last_write: Instant::now(),
        };
        book.checkpoint(conn)?;
        Ok(book)
    }

    /// Books the commit that just ran (if it wrote pages).
    pub fn after_commit(&mut self, durable: bool) {
        let Some(length) = WAL_LENGTH.take() else {
            return;
        };
        let c = &self.counters;
        let restarted = self.restart_pending || length <= self.length;
        let added = if restarted {
            length
        } else {
            length - self.length
        };
        if restarted {
            self.backfilled = 0;
            Counters::add(&c.wal_headers, 1);
            Counters::add(&c.syncs, 1); // the new header
        }
        if durable {
            Counters::add(&c.syncs, 1);
            Counters::add(&c.commits_durable, 1);
        } else {
            Counters::add(&c.commits_non_durable, 1);
        }
        Counters::add(&c.wal_frames, added);
        self.last_write = Instant::now();
        self.length = length;
        self.restart_pending = false;
    }

    /// How long no commit has written anything.
    pub fn quiet_for(&self) -> Duration {
        self.last_write.elapsed()
    }

    /// Frames not yet in the database file.
    pub fn waiting(&self) -> u64 {
        self.length.saturating_sub(self.backfilled)
    }

    /// A passive checkpoint (never waits for readers) and its bookkeeping.
    pub fn checkpoint(&mut self, conn: &Connection) -> Result<(), StoreError> {
        let wchar_before = thread_wchar();
        let (log, done): (i64, i64) =
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })?;
        let wrote = wchar_before
            .zip(thread_wchar())
            .map(|(a, b)| b.saturating_sub(a));
        let (log, done) = (log.max(0) as u64, done.max(0) as u64);
        // `done` counts every copied frame, including earlier checkpoints'.
        let copied = done.saturating_sub(self.backfilled);
        let c = &self.counters;
        if copied > 0 {
            if wrote.is_none() {
                c.checkpoint_bytes_estimated.store(true, Ordering::Relaxed);
            }
            let page = c.page_size.load(Ordering::Relaxed);
            Counters::add(&c.checkpoint_bytes, wrote.unwrap_or(copied * page));
            Counters::add(&c.checkpoints, 1);
            Counters::add(&c.checkpointed_frames, copied);
            Counters::add(&c.syncs, 1); // the WAL, before copying
            if done == log {
                Counters::add(&c.syncs, 1); // the database file
            }
        }
        self.length = log;
        self.backfilled = done;
        self.restart_pending = done == log;
        Ok(())
    }
}
