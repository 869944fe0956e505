//! How the core writes: one batch per decision, sent to the store one at a
//! time and in order, retried on a transient failure before anything after
//! it; and what follows each write once it is settled (the continuations:
//! acknowledge a job, tell a printer to start, confirm a cancel, answer an
//! operator).

use super::model::Stop;
use super::persist::Tx;
use super::{AckId, Effect, FarmCore, OpId, ReplyId};
use crate::control::Response;
use crate::lifecycle::{JobState, PrinterState};
use crate::printer::job_file::Summary;
use crate::printer::PrinterCommand;
use crate::store::{Applied, Batch};
use log::{error, info, warn};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What to do once a store write is durable (or refused for good).
#[derive(Debug)]
pub(super) enum After {
    /// An optimistic write: memory already moved on.
    Nothing,
    /// A new job's insert: acknowledge it.
    Accepted {
        job: String,
        acks: Vec<AckId>,
        reply: Option<ReplyId>,
        /// A local upload to move into place once the row exists.
        spool: Option<(PathBuf, PathBuf)>,
    },
    /// `printing` written: now the printer may be told.
    Started {
        printer: String,
        job: String,
        path: PathBuf,
        summary: Summary,
    },
    /// A waiting job's cancel: confirm it once durable.
    Cancelled {
        job: String,
        reply: Option<ReplyId>,
    },
    Purged,
}

/// Why a write was not applied. `retry`: a transient failure (disk full,
/// I/O error, a busy or read-only store) worth trying again; otherwise the
/// store refused it for good (a bug: an illegal move).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistError {
    pub message: String,
    pub retry: bool,
}

/// A batch waiting for the store, with what follows it.
#[derive(Debug)]
pub(super) struct Queued {
    op: OpId,
    batch: Batch,
    after: After,
}

/// The first retry of a failed write; doubling up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Writes go to the store one at a time and in order; a failed one is
/// retried (with back-off) before anything after it, so the store is always
/// an older, consistent version of memory, never a reordered one.
#[derive(Debug, Default)]
pub(super) struct WriteQueue {
    queue: std::collections::VecDeque<Queued>,
    in_flight: Option<OpId>,
    retry_at: Option<Instant>,
    delay: Option<Duration>,
    /// Operator answers held until the write queued before them is settled:
    /// an answer describes what is stored.
    replies: Vec<(OpId, ReplyId, Response)>,
}

impl FarmCore {
    /// Queues `tx` as one durable batch and remembers what follows it.
    pub(super) fn commit(&mut self, tx: Tx, after: After) -> OpId {
        self.commit_with(tx, true, after)
    }

    pub(super) fn commit_with(&mut self, tx: Tx, durable: bool, after: After) -> OpId {
        let op = self.next_op;
        self.next_op += 1;
        let batch = Batch {
            writes: tx.writes,
            outbox: tx.outbox,
            durable,
        };
        self.writes.queue.push_back(Queued { op, batch, after });
        self.pump_writes();
        op
    }

    /// Sends the oldest queued write, unless one is in flight or a failed
    /// one waits for its retry time.
    pub(super) fn pump_writes(&mut self) {
        let w = &mut self.writes;
        if w.in_flight.is_some() || w.retry_at.is_some_and(|t| self.now < t) {
            return;
        }
        w.retry_at = None;
        if let Some(head) = w.queue.front() {
            w.in_flight = Some(head.op);
            let effect = Effect::Persist {
                op: head.op,
                batch: head.batch.clone(),
            };
            self.push(effect);
        }
    }

    /// Acknowledgements waiting on the insert of `job` (a duplicate
    /// delivery of a job still being stored): `true` if there was one.
    pub(super) fn add_ack_to_pending_insert(&mut self, job: &str, ack: AckId) -> bool {
        for q in &mut self.writes.queue {
            if let After::Accepted { job: j, acks, .. } = &mut q.after {
                if j == job {
                    acks.push(ack);
                    return true;
                }
            }
        }
        false
    }

    /// Answers an operator once every write queued so far is settled (at
    /// once when none is waiting).
    pub(super) fn reply(&mut self, id: ReplyId, response: Response) {
        match self.writes.queue.back() {
            Some(last) => self.writes.replies.push((last.op, id, response)),
            None => self.push(Effect::Reply { id, response }),
        }
    }

    /// Writes not yet durable.
    pub(super) fn writes_pending(&self) -> usize {
        self.writes.queue.len()
    }

    pub(super) fn on_persisted(&mut self, op: OpId, result: Result<Applied, PersistError>) {
        if self.writes.in_flight != Some(op) {
            warn!("store answer for write {op}, which is not in flight; ignored");
            return;
        }
        self.writes.in_flight = None;
        // An operator waiting on a local job gets the error now, and progress
        // is a last value: neither is worth holding the queue for.
        let retry_here = matches!(&result, Err(e) if e.retry)
            && self.writes.queue.front().is_some_and(|q| {
                q.batch.durable && !matches!(q.after, After::Accepted { reply: Some(_), .. })
            });
        // Settle the queue before anything below writes (and pumps) again.
        let done = if retry_here {
            let delay = self
                .writes
                .delay
                .map_or(RETRY_FIRST, |d| (d * 2).min(RETRY_MAX));
            self.writes.delay = Some(delay);
            self.writes.retry_at = Some(self.now + delay);
            None
        } else {
            self.writes.delay = None;
            self.writes.queue.pop_front()
        };
        match &result {
            Err(e) if e.retry => self.store_failed(&e.message),
            Err(e) => error!("store refused a write for good (a bug): {}", e.message),
            Ok(_) => self.store_ok(),
        }
        self.pump_writes();
        let Some(done) = done else {
            return;
        };
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.writes.replies)
            .into_iter()
            .partition(|(after, _, _)| *after == done.op);
        self.writes.replies = waiting;
        for (_, id, response) in ready {
            self.push(Effect::Reply { id, response });
        }
        let ok = result.is_ok();
        match done.after {
            After::Nothing => {}
            After::Accepted {
                job,
                acks,
                reply,
                spool,
            } => self.on_accept_answer(&job, acks, reply, spool, result),
            After::Started {
                printer,
                job,
                path,
                summary,
            } => self.on_start_answer(&printer, &job, path, summary, ok),
            After::Cancelled { job, reply } => {
                let response = match &result {
                    Ok(_) => {
                        self.jobs.remove(&job);
                        Response::ok(format!("job {job} cancelled"))
                    }
                    Err(e) => Response::err(format!("job {job}: cancel refused: {}", e.message)),
                };
                if let Some(id) = reply {
                    self.reply(id, response);
                }
            }
            After::Purged => {
                if let Ok(Applied::Purged(jobs)) = result {
                    for job in jobs {
                        let path = job.gcode_path.map(PathBuf::from);
                        if let Some(path) = path.filter(|p| p.starts_with(&self.s.spool_dir)) {
                            self.push(Effect::RemoveFile { path });
                        }
                    }
                }
            }
        }
    }

    /// `printing` is durable (or not): tell the printer, or put things back.
    fn on_start_answer(
        &mut self,
        printer: &str,
        job: &str,
        path: PathBuf,
        summary: Summary,
        stored: bool,
    ) {
        let stop = self.jobs.get(job).and_then(|j| j.stop.clone());
        let Some(p) = self.printers.get_mut(printer) else {
            return;
        };
        if p.held_job() != Some(job) {
            return;
        }
        let session = p.held.as_ref().map_or(0, |h| h.session);
        if stored && (!p.connected || p.losses != session || p.state != PrinterState::Printing) {
            // It dropped, faulted or reconnected while `printing` was
            // written: nothing was sent, and the plate gate must be asked
            // again on the new connection.
            if let Some(held) = p.held.as_mut() {
                held.phase = super::model::Phase::Printing;
            }
            self.on_start_refused(printer, job, "printer connection changed before the start");
            return;
        }
        if !stored {
            // Nothing durable says printing: nothing has been sent either.
            p.held = None;
            p.state = PrinterState::Idle;
            p.plate_clear = true;
            if let Some(j) = self.jobs.get_mut(job) {
                j.state = JobState::Ready;
            }
            return;
        }
        if let Some(stop) = stop {
            // Cancelled while `printing` was being written: end it now,
            // before a single line is sent.
            let outcome = match stop {
                Stop::Cancel(_) => crate::printer::JobOutcome::Cancelled,
                Stop::EmergencyStop => crate::printer::JobOutcome::Failed("emergency stop".into()),
            };
            self.finish_job(printer, job, outcome, 0);
            return;
        }
        let deadline = self.now + self.time_limit(job);
        let session = self.printers.get(printer).map_or(0, |p| p.losses);
        if let Some(held) = self.printers.get_mut(printer).and_then(|p| p.held.as_mut()) {
            held.phase = super::model::Phase::Printing;
            held.deadline = Some(deadline);
        }
        self.push(Effect::Printer {
            printer: printer.to_owned(),
            cmd: PrinterCommand::StartJob {
                job_id: job.to_owned(),
                path,
                summary,
                session,
            },
        });
        info!(
            "printer {printer}: starting job {job} ({} lines)",
            summary.commands
        );
    }

    fn time_limit(&self, job: &str) -> Duration {
        let estimate = self.jobs.get(job).and_then(|j| j.estimated_s);
        crate::jobspec::time_limit(estimate, self.s.timeout_factor, self.s.max_job)
    }
}
