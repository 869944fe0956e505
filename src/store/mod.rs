//! The SQLite store: printers, jobs, job history and the outbox, behind one
//! writer thread.
//!
//! [`Store`] is a cheap cloneable handle. Every operation is a closure sent
//! over a std `mpsc` channel to the thread that owns the only writable
//! `rusqlite::Connection` (a `Connection` is not `Sync`, and one writer means
//! no `SQLITE_BUSY` between our own writes). Each operation returns a
//! [`Pending`] answer: `.await` it from async code, or call
//! [`Pending::blocking`] from plain threads.
//!
//! All SQL of the crate lives under this module. It never builds MQTT
//! payloads (callers pass [`OutboxItem`]s) and never touches spool files.
//!
//! # Writes and the SD card
//!
//! A gateway's SD card dies of small synchronous writes: every fsync makes
//! it program (often erase) a whole flash page or block. So:
//! - **Durable only where a consumer must not lose it.** Every write is one
//!   IMMEDIATE transaction; a state change and the outbox row announcing it
//!   share it, with `synchronous=FULL` (one WAL fsync). Three writes are not
//!   durable (`synchronous=NORMAL`, no fsync; safe from application crashes,
//!   may be lost to a power cut, never corrupt): progress
//!   ([`Store::record_progress`]: a last value, the next one replaces it),
//!   outbox deletions ([`Store::outbox_delivered`]: a lost one re-sends a row
//!   with its old seq, which consumers drop as a duplicate), and all but the
//!   last batch of a retention purge.
//! - **The WAL checkpoints on our schedule** (`wal.rs`): at about 4 MiB of
//!   frames, after five minutes without writes, and at close; never
//!   per commit. A checkpoint copies each changed page once however often it
//!   changed, and costs two fsyncs. `journal_size_limit` truncates the
//!   `-wal` back to that size after a burst (a long broker outage).
//! - **Retention** ([`Store::purge_finished`]) deletes in batches of
//!   [`PURGE_BATCH`] jobs, durable once at the end. Freed pages are reused by
//!   later rows; the store never runs `VACUUM` (it rewrites the whole file
//!   and as much WAL again, for space a gateway does not need back).
//! - **One decision, one fsync**: [`Store::apply`] commits several writes
//!   (job, printer, events) in one transaction.
//! - **Counted**: [`Store::io_stats`] says what the store made the storage
//!   do (bytes, fsyncs, commits by durability, checkpoints); see `wal.rs`
//!   for how exact each figure is.

mod batch;
mod error;
mod identity;
mod jobs;
mod outbox;
mod printers;
mod reader;
mod schema;
mod types;
mod wal;
mod writer;

#[cfg(test)]
pub(crate) mod testdir;
#[cfg(test)]
mod tests;

pub use batch::{Applied, Batch, Write};
pub use error::StoreError;
pub use identity::{Identity, IdentityRole, IdentityRow};
pub use jobs::PURGE_BATCH;
pub use reader::StoreReader;
pub use schema::{DB_FILE, SCHEMA_VERSION, SPOOL_DIR};
pub use types::{
    AddOutcome, Job, JobEvent, JobSource, NewJob, OutboxItem, OutboxKind, OutboxRow, PrinterRow,
    PrinterSeed, PurgedJob,
};
pub use wal::StoreIo;
pub use writer::Pending;

use crate::lifecycle::{JobState, PrinterState};
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use wal::Counters;
use writer::{Op, PendingState, Work, Writer};

/// Handle to the store. Clone it freely; the writer thread stops when the last
/// handle is dropped or [`Store::close`] is called.
#[derive(Clone, Debug)]
pub struct Store {
    ops: mpsc::Sender<Op>,
    data_dir: Arc<Path>,
    counters: Arc<Counters>,
}

impl Store {
    /// Opens `<data_dir>/printgate.db` (creating the directory, the spool
    /// folder and the database as needed), checks its integrity, migrates it,
    /// and starts the writer thread. Call once at startup; errors are fatal.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        // The benchmarks' time scale shortens "idle" like every other
        // interval (an invalid value is refused by the daemon before this).
        let idle = crate::timescale::TimeScale::from_env()
            .unwrap_or_default()
            .apply(wal::IDLE_CHECKPOINT);
        Store::open_with_idle(data_dir, idle)
    }

    /// [`Store::open`] with another quiet time before an idle checkpoint.
    pub(crate) fn open_with_idle(data_dir: &Path, idle: Duration) -> Result<Store, StoreError> {
        let conn = schema::open_writer(data_dir)?;
        let counters = Arc::new(Counters::default());
        let ops = writer::spawn(conn, counters.clone(), idle)?;
        Ok(Store {
            ops,
            data_dir: Arc::from(data_dir),
            counters,
        })
    }

    /// What the store has made the storage do since it opened (see the
    /// module doc). Answers at once, without waiting for the writer thread.
    pub fn io_stats(&self) -> StoreIo {
        self.counters.snapshot()
    }

    /// The data directory this store was opened on.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the writer thread after the operations already queued, and
    /// closes the database. Other handles then get [`StoreError::Closed`].
    pub fn close(self) -> Pending<()> {
        let (tx, rx) = oneshot::channel();
        let state = match self.ops.send(Op::Close(tx)) {
            Ok(()) => PendingState::Waiting(rx),
            Err(_) => PendingState::Failed(Some(StoreError::Closed)),
        };
        Pending { state }
    }

    /// Sends `f` to the writer thread.
    fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Writer) -> Result<T, StoreError> + Send + 'static,
    ) -> Pending<T> {
        let (tx, rx) = oneshot::channel();
        let work: Work = Box::new(move |w| {
            // The caller may have stopped waiting (the write itself is
            // done either way); that is its business.
            if tx.send(f(w)).is_err() {
                log::debug!("store: a write finished after its caller stopped waiting");
            }
        });
        match self.ops.send(Op::Run(work)) {
            Ok(()) => Pending {
                state: PendingState::Waiting(rx),
            },
            Err(_) => Pending {
                state: PendingState::Failed(Some(StoreError::Closed)),
            },
        }
    }

    /// Brings the `printers` table in line with the config: upserts each
    /// seed (port, filament); printers no longer configured are kept (their
    /// history stays readable) and marked `offline`. New printers start
    /// `offline` with the plate NOT confirmed clear.
    pub fn sync_printers(&self, seeds: &[PrinterSeed]) -> Pending<()> {
        let seeds = seeds.to_vec();
        self.submit(move |w| w.write(true, |tx| printers::sync(tx, &seeds)))
    }

    /// Applies one batch of the farm's writes and its outbox rows in one
    /// IMMEDIATE transaction (fsynced unless `batch.durable` is false). An
    /// `AddJob` must come first: a duplicate id then writes nothing.
    pub fn apply(&self, batch: Batch) -> Pending<Applied> {
        self.submit(move |w| {
            let add_later = batch
                .writes
                .iter()
                .skip(1)
                .any(|wr| matches!(wr, Write::AddJob(_)));
            if add_later {
                return Err(StoreError::BadRow {
                    table: "jobs",
                    key: "batch".into(),
                    detail: "an AddJob must be the first write of its batch".into(),
                });
            }
            w.write(batch.durable, |tx| batch::apply(tx, &batch))
        })
    }

    /// Every job that has not ended, oldest first.
    pub fn open_jobs(&self) -> Pending<Vec<Job>> {
        self.submit(|w| reader::open_jobs(&w.conn))
    }

    /// Stores a new job in `queued` (or `ready` when `gcode_path` is already
    /// set), with its first history row and `event`, durably. A job id seen
    /// before returns [`AddOutcome::Duplicate`] and changes nothing.
    pub fn add_job(&self, job: NewJob, event: Option<OutboxItem>) -> Pending<AddOutcome> {
        self.submit(move |w| w.write(true, |tx| jobs::add(tx, &job, event.as_ref())))
    }

    /// Moves a job to `to` if [`crate::lifecycle::job_transition_allowed`]
    /// says so, else [`StoreError::IllegalTransition`]. Writes the history row
    /// and `event` in the same transaction; sets `started_at` on the first
    /// `printing` and `finished_at` on a terminal state. Returns the event's seq.
    pub fn transition_job(
        &self,
        job_id: &str,
        to: JobState,
        reason: Option<&str>,
        event: Option<OutboxItem>,
    ) -> Pending<Option<u64>> {
        let (id, reason) = (job_id.to_owned(), reason.map(str::to_owned));
        self.submit(move |w| {
            w.write(true, |tx| {
                jobs::transition(tx, &id, to, reason.as_deref(), event.as_ref())
            })
        })
    }

    /// Sets a printer's state (checked with
    /// [`crate::lifecycle::printer_transition_allowed`]). `plate_clear`:
    /// `None` keeps it; entering `awaiting_clear` always clears it, and
    /// `awaiting_clear → idle` requires `Some(true)`. `current_job`: `None`
    /// keeps it, `Some(None)` clears it.
    pub fn set_printer_state(
        &self,
        printer_id: &str,
        state: PrinterState,
        plate_clear: Option<bool>,
        current_job: Option<Option<&str>>,
        event: Option<OutboxItem>,
    ) -> Pending<Option<u64>> {
        let change = printers::Change {
            id: printer_id.to_owned(),
            state,
            plate_clear,
            current_job: current_job.map(|j| j.map(str::to_owned)),
        };
        self.submit(move |w| w.write(true, |tx| printers::set_state(tx, &change, event.as_ref())))
    }

    /// Saves a job's last known progress, with no outbox row: progress is a
    /// last value, published from memory. Call it at state changes and at
    /// most every `jobs.progress_persist_s` (so that an interrupted job's
    /// last line survives a crash), never per progress tick: each call is a
    /// commit of about two pages. Not durable (`synchronous=NORMAL`): a power
    /// cut may lose it, which costs nothing (the job is interrupted anyway),
    /// and it saves an fsync. `percent` is clamped to 0–100; NaN is stored
    /// as 0.
    pub fn record_progress(&self, job_id: &str, lines_done: u64, percent: f64) -> Pending<()> {
        let id = job_id.to_owned();
        self.submit(move |w| {
            w.write(false, |tx| {
                jobs::progress(tx, &id, lines_done, 0, percent, None).map(|_| ())
            })
        })
    }

    /// Records the downloaded G-code file of a job.
    pub fn set_job_file(
        &self,
        job_id: &str,
        gcode_path: &str,
        bytes_total: u64,
        lines_total: u64,
    ) -> Pending<()> {
        let (id, path) = (job_id.to_owned(), gcode_path.to_owned());
        self.submit(move |w| {
            w.write(true, |tx| {
                jobs::set_file(tx, &id, &path, bytes_total, lines_total)
            })
        })
    }

    /// Adds one message to the outbox and returns its seq. Progress is
    /// coalesced: when the newest queued row of the same printer is a
    /// progress row not yet handed to the MQTT link, its payload is replaced
    /// in place and its seq returned (one row per printer through a broker
    /// outage, no seq gap, no overtaking of that printer's events).
    pub fn enqueue(&self, item: OutboxItem) -> Pending<u64> {
        self.submit(move |w| w.write(true, |tx| outbox::enqueue(tx, &item)))
    }

    /// Up to `limit` outbox rows with `seq > after_seq`, oldest first.
    pub fn outbox_after(&self, after_seq: u64, limit: usize) -> Pending<Vec<OutboxRow>> {
        self.submit(move |w| outbox::after(&w.conn, after_seq, limit))
    }

    /// Deletes a row once the broker acknowledged it. Returns whether it
    /// existed. Not durable (no fsync): a power cut may bring the row back,
    /// and it is published again with its seq, which consumers already
    /// treat as a duplicate (delivery is at least once). Durable deletes
    /// cost one fsync per published event.
    pub fn outbox_delivered(&self, seq: u64) -> Pending<bool> {
        self.submit(move |w| w.write(false, |tx| outbox::delivered(tx, seq)))
    }

    /// Rows waiting for delivery.
    pub fn outbox_len(&self) -> Pending<u64> {
        self.submit(|w| outbox::len(&w.conn))
    }

    /// The next job to start on `printer_id`: the most urgent `ready` or
    /// `queued` job assigned to it, or unassigned with a matching (or no)
    /// filament; FIFO within a priority (higher number = more urgent).
    pub fn next_job_for(&self, printer_id: &str, filament: Option<&str>) -> Pending<Option<Job>> {
        let (id, filament) = (printer_id.to_owned(), filament.map(str::to_owned));
        self.submit(move |w| jobs::next_for(&w.conn, &id, filament.as_deref()))
    }

    /// Deletes terminal jobs (and their history) finished at least
    /// `older_than` ago, [`PURGE_BATCH`] per transaction, only the last one
    /// durable (a power cut may bring back some old jobs, purged again next
    /// time). Returns them so the caller can delete spool files. Nothing to
    /// purge writes nothing.
    pub fn purge_finished(&self, older_than: Duration) -> Pending<Vec<PurgedJob>> {
        self.submit(move |w| {
            let cutoff = jobs::purge_cutoff(older_than);
            let mut purged = Vec::new();
            // Bounded: each round deletes up to a batch of what it counted.
            loop {
                let due = jobs::purge_due(&w.conn, cutoff)?;
                if due == 0 {
                    return Ok(purged);
                }
                let last = due <= PURGE_BATCH as u64;
                purged.extend(w.write(last, |tx| jobs::purge(tx, cutoff))?);
                if last {
                    return Ok(purged);
                }
            }
        })
    }

    /// Every printer's stored firmware identities (the start-up snapshot).
    pub fn identities(&self) -> Pending<Vec<IdentityRow>> {
        self.submit(|w| identity::list(&w.conn))
    }

    pub fn list_printers(&self) -> Pending<Vec<PrinterRow>> {
        self.submit(|w| reader::list_printers(&w.conn))
    }

    /// Newest first.
    pub fn list_jobs(&self, limit: usize) -> Pending<Vec<Job>> {
        self.submit(move |w| reader::list_jobs(&w.conn, limit))
    }

    pub fn get_job(&self, job_id: &str) -> Pending<Option<Job>> {
        let id = job_id.to_owned();
        self.submit(move |w| reader::get_job(&w.conn, &id))
    }

    /// Oldest first.
    pub fn job_history(&self, job_id: &str) -> Pending<Vec<JobEvent>> {
        let id = job_id.to_owned();
        self.submit(move |w| reader::job_history(&w.conn, &id))
    }
}
