//! The writer thread: owns the only writable connection, runs the closures
//! [`super::Store`] sends it one at a time, books every commit in the
//! [`WalBook`] and checkpoints when it is due. [`Pending`] carries each
//! answer back.
//!
//! Never decides what to write; the store's methods do.

use super::wal::{Counters, WalBook, CHECKPOINT_FRAMES};
use super::StoreError;
use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::future::Future;
use std::pin::Pin;
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub(crate) type Work = Box<dyn FnOnce(&mut Writer) + Send>;

pub(crate) enum Op {
    Run(Work),
    Close(oneshot::Sender<Result<(), StoreError>>),
}

/// State owned by the writer thread.
pub(crate) struct Writer {
    pub conn: Connection,
    wal: WalBook,
}

impl Writer {
    /// Runs `f` in one IMMEDIATE transaction. `durable = false` drops to
    /// `synchronous=NORMAL` for this transaction only: in WAL mode that skips
    /// the fsync at commit, so a power cut may lose this write but can never
    /// corrupt the file; the next FULL commit fsyncs it along with its own.
    /// (An application crash loses nothing either way: the write is in the
    /// kernel's page cache.)
    pub fn write<T>(
        &mut self,
        durable: bool,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if !durable {
            self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        let result = (|| {
            let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        })();
        self.wal.after_commit(durable);
        if !durable {
            // Restore before anything else runs on this connection.
            self.conn.pragma_update(None, "synchronous", "FULL")?;
        }
        result
    }

    fn checkpoint(&mut self) {
        if let Err(e) = self.wal.checkpoint(&self.conn) {
            // The WAL keeps growing until a later checkpoint works; nothing
            // is lost, so this is worth a warning, not an error path.
            log::warn!("store: checkpoint failed: {e}");
        }
    }
}

/// Starts the writer thread on `conn` and waits until it is ready (WAL hook
/// installed, leftover WAL checkpointed).
pub(crate) fn spawn(
    conn: Connection,
    counters: Arc<Counters>,
    idle: Duration,
) -> Result<mpsc::Sender<Op>, StoreError> {
    let (ops, rx) = mpsc::channel::<Op>();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("printgate-store".into())
        .spawn(move || match WalBook::start(&conn, counters) {
            Ok(wal) => {
                // `open` is waiting on the other end; if it gave up there is
                // nobody to serve and the loop ends with the channel.
                if ready_tx.send(Ok(())).is_err() {
                    log::debug!("store: opened after the opener gave up");
                }
                run(Writer { conn, wal }, rx, idle);
            }
            Err(e) => {
                if let Err(e) = ready_tx.send(Err(e)) {
                    log::warn!("store: could not start, and nobody waits: {:?}", e.0);
                }
            }
        })
        .map_err(StoreError::Thread)?;
    ready_rx.recv().unwrap_or(Err(StoreError::Closed))?;
    Ok(ops)
}

/// Serves operations until the last handle goes. "Idle" means no commit
/// wrote anything for `idle`: reads (the farm asks every second) do not
/// count, or a checkpoint would never come.
fn run(mut writer: Writer, ops: mpsc::Receiver<Op>, idle: Duration) {
    // An idle checkpoint that could not finish (a reader holds the WAL) is
    // tried again after another quiet spell, not in a loop.
    let mut since_attempt = Instant::now();
    loop {
        let quiet = writer.wal.quiet_for().min(since_attempt.elapsed());
        let wait = if writer.wal.waiting() > 0 {
            idle.saturating_sub(quiet)
        } else {
            idle
        };
        match ops.recv_timeout(wait) {
            Ok(Op::Run(work)) => work(&mut writer),
            Ok(Op::Close(done)) => {
                // SQLite checkpoints again and removes the WAL when the last
                // connection closes; ours is the one that gets counted.
                writer.checkpoint();
                let result = writer
                    .conn
                    .close()
                    .map_err(|(_, err)| StoreError::from(err));
                // The caller may have stopped waiting for the close.
                if let Err(e) = done.send(result) {
                    log::debug!("store: closed ({e:?}) after its caller stopped waiting");
                }
                return;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let waiting = writer.wal.waiting();
        let quiet = writer.wal.quiet_for().min(since_attempt.elapsed());
        if waiting >= CHECKPOINT_FRAMES || (waiting > 0 && quiet >= idle) {
            writer.checkpoint();
            since_attempt = Instant::now();
        }
    }
    writer.checkpoint();
}

/// An answer from the writer thread: a future, or [`Pending::blocking`].
#[must_use = "the operation's result (and any error) is in the Pending"]
pub struct Pending<T> {
    pub(crate) state: PendingState<T>,
}

pub(crate) enum PendingState<T> {
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
