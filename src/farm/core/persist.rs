//! How the core writes: batches built from its decisions, what happens when
//! the store answers (the continuations), the store-failure state, the
//! rate limit on events about rejected input, and the start-up recovery.

use super::model::{Finished, Printer, Stop};
use super::status::wire_status;
use super::{AckId, Effect, FarmCore, OpId, ReplyId, Snapshot};
use crate::control::Response;
use crate::farm::messages::ProgressView;
use crate::lifecycle::{JobState, PrinterState};
use crate::printer::job_file::Summary;
use crate::printer::PrinterCommand;
use crate::store::{Applied, Batch, OutboxItem, Write};
use log::{error, info, warn};
use std::collections::BTreeMap;
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

/// A batch under construction.
#[derive(Default)]
pub(super) struct Tx {
    pub writes: Vec<Write>,
    pub outbox: Vec<OutboxItem>,
}

impl Tx {
    pub fn write(&mut self, w: Write) -> &mut Self {
        self.writes.push(w);
        self
    }
    pub fn out(&mut self, item: Option<OutboxItem>) -> &mut Self {
        self.outbox.extend(item);
        self
    }
    pub fn job(&mut self, id: &str, to: JobState, reason: Option<&str>) -> &mut Self {
        self.write(Write::Job {
            id: id.to_owned(),
            to,
            reason: reason.map(str::to_owned),
        })
    }
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
}

/// One event per kind of rejected input per window, with a count of the
/// rest: a flood of bad messages costs at most one store write a window.
#[derive(Debug, Default)]
pub(super) struct RateLimiter {
    windows: BTreeMap<String, (Instant, u64)>,
}

/// The window of [`RateLimiter`].
const REJECT_WINDOW: Duration = Duration::from_secs(10);

impl RateLimiter {
    /// `true` when this one should be reported (the first of a window).
    fn allow(&mut self, key: &str, now: Instant) -> bool {
        if let Some((start, count)) = self.windows.get_mut(key) {
            if now.saturating_duration_since(*start) < REJECT_WINDOW {
                *count += 1;
                return false;
            }
        }
        if self.windows.len() > 256 {
            // Bounded whatever the keys: forget the oldest windows.
            self.windows.clear();
        }
        self.windows.insert(key.to_owned(), (now, 0));
        true
    }

    /// Windows that ended with suppressed reports: (key, count).
    fn expired(&mut self, now: Instant) -> Vec<(String, u64)> {
        let done: Vec<String> = self
            .windows
            .iter()
            .filter(|(_, (start, _))| now.saturating_duration_since(*start) >= REJECT_WINDOW)
            .map(|(k, _)| k.clone())
            .collect();
        done.into_iter()
            .filter_map(|k| self.windows.remove(&k).map(|(_, n)| (k, n)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
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

    /// Writes not yet durable.
    pub(super) fn writes_pending(&self) -> usize {
        self.writes.queue.len()
    }

    /// An event with no state change (stored, so it is never missed).
    pub(super) fn announce(&mut self, item: Option<OutboxItem>) {
        if item.is_some() {
            let mut tx = Tx::default();
            tx.out(item);
            self.commit(tx, After::Nothing);
        }
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
                    self.push(Effect::Reply { id, response });
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

    fn store_ok(&mut self) {
        if let Some(reason) = self.store_fault.take() {
            info!("store: writes succeed again (after: {reason})");
            self.push(Effect::Status("running".into()));
            let item = self
                .msgs
                .gateway_event("store_recovered", None, Some(&reason));
            self.announce(item);
        }
    }

    /// A write failed (disk full, read-only card, I/O error): say so where an
    /// operator looks (log, systemd status, an event published without the
    /// store), once per streak.
    fn store_failed(&mut self, reason: &str) {
        if self.store_fault.as_deref() == Some(reason) {
            return;
        }
        error!("store: write failed: {reason}");
        self.store_fault = Some(reason.to_owned());
        self.push(Effect::Status(format!(
            "store failing: {reason}; no new jobs are acknowledged"
        )));
        if let Some(item) = self.msgs.gateway_event("store_error", None, Some(reason)) {
            self.push(Effect::Publish {
                topic: item.topic,
                payload: item.payload,
                retain: false,
            });
        }
    }

    /// The progress message of `printer` as it stands now (none while
    /// another gateway holds the printer id: see `claims`).
    pub(super) fn progress_item(&self, printer: &str) -> Option<OutboxItem> {
        let p = self.printers.get(printer)?;
        if self.yields(printer) {
            return None;
        }
        self.msgs.progress(&self.view(p))
    }

    pub(super) fn view<'a>(&'a self, p: &'a Printer) -> ProgressView<'a> {
        ProgressView {
            printer: &p.id,
            wire: wire_status(p, self.queued_for(&p.id)),
            lines: p.lines,
            temps: p.temps,
            claimed_at: p.claimed_at,
        }
    }

    /// The first open job waiting for `printer` (not held by it).
    pub(super) fn queued_for(&self, printer: &str) -> Option<&str> {
        self.jobs
            .values()
            .filter(|j| j.printer.as_deref() == Some(printer) && j.stop.is_none())
            .find(|j| !j.state.is_active())
            .map(|j| j.id.as_str())
    }

    /// Reports a rejected input: one event per kind and window.
    pub(super) fn reject_input(&mut self, printer: Option<&str>, kind: &str, problem: &str) {
        if !self.limiter.allow(kind, self.now) {
            return;
        }
        warn!("rejected input: {problem}");
        let item = match printer {
            Some(p) => self.msgs.event(p, "input_rejected", None, Some(problem)),
            None => self
                .msgs
                .gateway_event("input_rejected", None, Some(problem)),
        };
        self.announce(item);
    }

    pub(super) fn limiter_flush(&mut self) {
        for (kind, count) in self.limiter.expired(self.now) {
            let text = format!("{count} more {kind} message(s) rejected in the last window");
            warn!("{text}");
            let item = self.msgs.gateway_event("input_rejected", None, Some(&text));
            self.announce(item);
        }
    }

    /// See [`FarmCore::new`].
    pub(super) fn recover(&mut self, snapshot: Snapshot) {
        let mut tx = Tx::default();
        for (id, filament, row) in snapshot.printers {
            let (state, plate) = row
                .as_ref()
                .map_or((PrinterState::Offline, false), |r| (r.state, r.plate_clear));
            let mut p = Printer::new(&id, filament, state, plate);
            p.claimed_at = row
                .as_ref()
                .and_then(|r| r.claimed_at)
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.wall, |s| {
                    std::time::UNIX_EPOCH + Duration::from_secs(s)
                });
            p.listening =
                super::claims::listening_at_start(p.claimed_at, self.wall, self.s.claim_listen);
            if let Some(r) = &row {
                if r.state == PrinterState::AwaitingClear || r.last_job.is_some() {
                    p.finished = Some(Finished {
                        job: r.last_job.clone(),
                        outcome: outcome_name(r.last_outcome.as_deref()),
                    });
                }
            }
            self.printers.insert(id, p);
        }
        let mut interrupted: Vec<String> = Vec::new();
        for row in snapshot.jobs {
            let mut state = row.state;
            let reason = match state {
                JobState::Printing | JobState::Paused => {
                    Some((JobState::Interrupted, "gateway restarted during the print"))
                }
                JobState::Downloading => Some((JobState::Queued, "download starts over")),
                _ => None,
            };
            if let Some((to, why)) = reason {
                let printer = row.printer_id.as_deref();
                tx.job(&row.id, to, Some(why));
                tx.out(match printer {
                    Some(p) => self
                        .msgs
                        .event(p, &event_kind(to), Some(&row.id), Some(why)),
                    None => self
                        .msgs
                        .gateway_event(&event_kind(to), Some(&row.id), Some(why)),
                });
                warn!("job {}: {}: now {}", row.id, why, to.as_str());
                state = to;
                if to == JobState::Interrupted {
                    if let Some(p) = printer.and_then(|p| self.printers.get_mut(p)) {
                        // The state itself moves below, where the row is
                        // written too (`printgate status` reads the rows).
                        interrupted.push(p.id.clone());
                        p.plate_clear = false;
                        p.finished = Some(Finished {
                            job: Some(row.id.clone()),
                            outcome: Some("interrupted"),
                        });
                    }
                    continue;
                }
            }
            let order = self.next_order;
            self.next_order += 1;
            self.jobs
                .insert(row.id.clone(), job_from_row(row, state, order));
        }
        // Printers caught mid-print wait for a clear plate; the others are
        // offline until their task reports a handshake.
        for p in self.printers.values_mut() {
            let caught = interrupted.contains(&p.id);
            let to = match p.state {
                _ if caught => PrinterState::AwaitingClear,
                PrinterState::Printing | PrinterState::Paused | PrinterState::AwaitingClear => {
                    p.plate_clear = false;
                    PrinterState::AwaitingClear
                }
                _ => PrinterState::Offline,
            };
            let finished = p.finished.clone().unwrap_or(Finished {
                job: None,
                outcome: None,
            });
            if to == PrinterState::AwaitingClear {
                tx.write(Write::PrinterFinished {
                    id: p.id.clone(),
                    job: finished.job.clone(),
                    outcome: finished.outcome.map(str::to_owned),
                });
                p.finished = Some(finished);
            }
            if p.state != to {
                tx.write(Write::Printer {
                    id: p.id.clone(),
                    state: to,
                    plate_clear: None,
                    current_job: Some(None),
                });
                p.state = to;
            }
        }
        if !tx.writes.is_empty() {
            self.commit(tx, After::Nothing);
        }
        self.publish_awaiting();
    }
}

/// The event type announcing a job's move to `to` (`job_printing`, …).
pub(super) fn event_kind(to: JobState) -> String {
    format!("job_{}", to.as_str())
}

fn outcome_name(s: Option<&str>) -> Option<&'static str> {
    match s? {
        "completed" => Some("completed"),
        "failed" => Some("failed"),
        "cancelled" => Some("cancelled"),
        "interrupted" => Some("interrupted"),
        _ => None,
    }
}

fn job_from_row(row: crate::store::Job, state: JobState, order: u64) -> super::model::Job {
    super::model::Job {
        id: row.id,
        printer: row.printer_id,
        source: row.source,
        model_url: row.model_url,
        gcode_path: row.gcode_path,
        filament: row.filament,
        priority: row.priority,
        estimated_s: row.estimated_s.and_then(|s| u64::try_from(s).ok()),
        sha256: row.sha256,
        params: row.params,
        state,
        order,
        stored: true,
        file_pending: false,
        stop: None,
    }
}
