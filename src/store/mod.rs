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
//! Every write runs in an IMMEDIATE transaction with `synchronous=FULL`,
//! except progress updates (see [`Store::record_progress`]). A state change
//! and the outbox row announcing it share the transaction.
//!
//! All SQL of the crate lives under this module. It never builds MQTT
//! payloads (callers pass [`OutboxItem`]s) and never touches spool files.

mod error;
mod jobs;
mod outbox;
mod printers;
mod reader;
mod schema;
mod types;

#[cfg(test)]
pub(crate) mod testdir;
#[cfg(test)]
mod tests;

pub use error::StoreError;
pub use reader::StoreReader;
pub use schema::{DB_FILE, SCHEMA_VERSION, SPOOL_DIR};
pub use types::{
    AddOutcome, Job, JobEvent, JobSource, NewJob, OutboxItem, OutboxKind, OutboxRow, PrinterRow,
    PrinterSeed, PurgedJob, RecoveredJob, Recovery,
};

use crate::lifecycle::{JobState, PrinterState};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;

type Work = Box<dyn FnOnce(&mut Writer) + Send>;

enum Op {
    Run(Work),
    Close(oneshot::Sender<Result<(), StoreError>>),
}

/// State owned by the writer thread.
pub(crate) struct Writer {
    conn: Connection,
    /// Highest outbox seq handed to the MQTT link by `outbox_after` since this
    /// process started. Rows at or below it may be in flight, so progress
    /// coalescing must not rewrite them (the broker would ack the old payload
    /// and the new one would be deleted unseen).
    handed_out: u64,
}

impl Writer {
    /// Runs `f` in one IMMEDIATE transaction. `durable = false` drops to
    /// `synchronous=NORMAL` for this transaction only: in WAL mode that skips
    /// the fsync at commit, so a power cut may lose this write but can never
    /// corrupt the file; the next FULL commit fsyncs it along with its own.
    fn write<T>(
        &mut self,
        durable: bool,
        f: impl FnOnce(&Transaction<'_>, u64) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if !durable {
            self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        let result = (|| {
            let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
            let value = f(&tx, self.handed_out)?;
            tx.commit()?;
            Ok(value)
        })();
        if !durable {
            // Restore before anything else runs on this connection.
            self.conn.pragma_update(None, "synchronous", "FULL")?;
        }
        result
    }
}

/// Handle to the store. Clone it freely; the writer thread stops when the last
/// handle is dropped or [`Store::close`] is called.
#[derive(Clone, Debug)]
pub struct Store {
    ops: mpsc::Sender<Op>,
    data_dir: Arc<Path>,
}

/// An answer from the writer thread: a future, or [`Pending::blocking`].
#[must_use = "the operation's result (and any error) is in the Pending"]
pub struct Pending<T> {
    state: PendingState<T>,
}

enum PendingState<T> {
    Waiting(oneshot::Receiver<Result<T, StoreError>>),
    Failed(Option<StoreError>),
}

impl<T> Pending<T> {
    /// Waits on the current thread. Must not be called from inside a tokio
    /// runtime (use `.await` there).
    pub fn blocking(self) -> Result<T, StoreError> {
        match self.state {
            PendingState::Waiting(rx) => rx.blocking_recv().unwrap_or(Err(StoreError::Closed)),
            PendingState::Failed(err) => Err(err.unwrap_or(StoreError::Closed)),
        }
    }
}

impl<T> Future for Pending<T> {
    type Output = Result<T, StoreError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            PendingState::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(StoreError::Closed))),
            PendingState::Failed(err) => Poll::Ready(Err(err.take().unwrap_or(StoreError::Closed))),
        }
    }
}

impl Store {
    /// Opens `<data_dir>/printgate.db` (creating the directory, the spool
    /// folder and the database as needed), checks its integrity, migrates it,
    /// and starts the writer thread. Call once at startup; errors are fatal.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let conn = schema::open_writer(data_dir)?;
        let (ops, rx) = mpsc::channel::<Op>();
        std::thread::Builder::new()
            .name("printgate-store".into())
            .spawn(move || run_writer(conn, rx))
            .map_err(StoreError::Thread)?;
        Ok(Store {
            ops,
            data_dir: Arc::from(data_dir),
        })
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
            // The caller may have stopped waiting; that is its business.
            let _ = tx.send(f(w));
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
        self.submit(move |w| w.write(true, |tx, _| printers::sync(tx, &seeds)))
    }

    /// Run once at startup, before any printer task. Jobs caught `printing`
    /// or `paused` by a crash become `interrupted` (never resumed: the part
    /// is in an unknown state) and their printers `awaiting_clear` with the
    /// plate not clear; `downloading` jobs go back to `queued`; other
    /// printers become `offline` until their task reconnects. `announce`
    /// builds the outbox rows for each moved job (the store does not know
    /// the payload format); they are written in the same transaction.
    pub fn recover_on_start<F>(&self, announce: F) -> Pending<Recovery>
    where
        F: FnMut(&RecoveredJob) -> Vec<OutboxItem> + Send + 'static,
    {
        self.submit(move |w| w.write(true, |tx, h| jobs::recover(tx, h, announce)))
    }

    /// Stores a new job in `queued` (or `ready` when `gcode_path` is already
    /// set), with its first history row and `event`, durably. A job id seen
    /// before returns [`AddOutcome::Duplicate`] and changes nothing.
    pub fn add_job(&self, job: NewJob, event: Option<OutboxItem>) -> Pending<AddOutcome> {
        self.submit(move |w| w.write(true, |tx, h| jobs::add(tx, h, &job, event.as_ref())))
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
            w.write(true, |tx, h| {
                jobs::transition(tx, h, &id, to, reason.as_deref(), event.as_ref())
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
        self.submit(move |w| {
            w.write(true, |tx, h| {
                printers::set_state(tx, h, &change, event.as_ref())
            })
        })
    }

    /// Saves a job's progress. The caller coalesces (at most one call per
    /// progress interval). This transaction runs with `synchronous=NORMAL`:
    /// losing the last progress value to a power cut is harmless (the job is
    /// interrupted anyway and the next value overwrites it), and skipping the
    /// fsync saves SD-card wear at one write per printer per interval.
    /// `progress` is clamped to 0–100; a NaN is stored as 0.
    pub fn record_progress(
        &self,
        job_id: &str,
        lines_done: u64,
        bytes_done: u64,
        progress: f64,
        event: Option<OutboxItem>,
    ) -> Pending<Option<u64>> {
        let id = job_id.to_owned();
        self.submit(move |w| {
            w.write(false, |tx, h| {
                jobs::progress(tx, h, &id, lines_done, bytes_done, progress, event.as_ref())
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
            w.write(true, |tx, _| {
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
        self.submit(move |w| w.write(true, |tx, h| outbox::enqueue(tx, h, &item)))
    }

    /// Up to `limit` outbox rows with `seq > after_seq`, oldest first.
    pub fn outbox_after(&self, after_seq: u64, limit: usize) -> Pending<Vec<OutboxRow>> {
        self.submit(move |w| {
            let rows = outbox::after(&w.conn, after_seq, limit)?;
            if let Some(last) = rows.last() {
                w.handed_out = w.handed_out.max(last.seq);
            }
            Ok(rows)
        })
    }

    /// Deletes a row once the broker acknowledged it. Returns whether it existed.
    pub fn outbox_delivered(&self, seq: u64) -> Pending<bool> {
        self.submit(move |w| w.write(true, |tx, _| outbox::delivered(tx, seq)))
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
    /// `older_than` ago. Returns them so the caller can delete spool files.
    pub fn purge_finished(&self, older_than: Duration) -> Pending<Vec<PurgedJob>> {
        self.submit(move |w| w.write(true, |tx, _| jobs::purge(tx, older_than)))
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

fn run_writer(conn: Connection, ops: mpsc::Receiver<Op>) {
    let mut writer = Writer {
        conn,
        handed_out: 0,
    };
    while let Ok(op) = ops.recv() {
        match op {
            Op::Run(work) => work(&mut writer),
            Op::Close(done) => {
                let result = writer
                    .conn
                    .close()
                    .map_err(|(_, err)| StoreError::from(err));
                let _ = done.send(result);
                return;
            }
        }
    }
}
