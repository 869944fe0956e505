//! Jobs handed to the farm (pushed assignments, pulled jobs): checked,
//! stored durably before anything else, and acknowledged only then.

use super::commands::OPERATOR_CANCEL;
use super::model::{Job, Stop};
use super::persist::Tx;
use super::writes::{After, PersistError};
use super::{AckId, Effect, FarmCore, ReplyId};
use crate::control::Response;
use crate::lifecycle::JobState;
use crate::mqtt::payload::Assignment;
use crate::store::{Applied, JobSource, NewJob, OutboxItem, Write};
use log::{info, warn};
use std::path::PathBuf;

/// Assignments one listening claim keeps in memory; more are refused.
const MAX_HELD_ASSIGNMENTS: usize = 32;

impl FarmCore {
    pub(super) fn on_assignment(
        &mut self,
        printer: &str,
        a: Assignment,
        warnings: Vec<String>,
        ack: Option<AckId>,
    ) {
        let Some(p) = self.printers.get(printer) else {
            self.reject_input(None, "assignment", &format!("unknown printer {printer}"));
            self.push_ack(ack);
            return;
        };
        if let Some(reason) = self.claim_refusal(printer) {
            if !self.lost_claim(printer) && p.held_assignments.len() < MAX_HELD_ASSIGNMENTS {
                // A new claim listening: the handler may well have sent
                // this to us alone. Decided when listening ends.
                info!("printer {printer}: assignment {} held: {reason}", a.job_id);
                if let Some(p) = self.printers.get_mut(printer) {
                    p.held_assignments.push((a, warnings));
                }
                self.push_ack(ack);
                return;
            }
            log::warn!("assignment {} refused: {reason}", a.job_id);
            // On the gateway's own topic: the printer's belongs to the other.
            let item =
                self.msgs
                    .gateway_event("assignment_rejected", Some(&a.job_id), Some(&reason));
            self.announce(item);
            self.push_ack(ack);
            return;
        }
        if let (Some(want), Some(have)) = (a.filament_type.as_deref(), p.filament.as_deref()) {
            if want != have {
                let reason = format!("filament {want} does not match the printer's {have}");
                warn!(
                    "printer {printer}: assignment {} rejected: {reason}",
                    a.job_id
                );
                let item = self.msgs.event(
                    printer,
                    "assignment_rejected",
                    Some(&a.job_id),
                    Some(&reason),
                );
                self.announce(item);
                self.push_ack(ack);
                return;
            }
        }
        if a.filament_type.is_none() {
            info!(
                "printer {printer}: assignment {} states no filament; not checked",
                a.job_id
            );
        }
        for w in &warnings {
            warn!("printer {printer}: assignment {}: {w}", a.job_id);
        }
        self.accept(printer, a, JobSource::Mqtt, ack, warnings.join("; "), None);
    }

    /// Stores a new job durably before anything else happens to it; `ack`
    /// is sent once it is (a duplicate id is acknowledged and ignored).
    /// `fail`: the job is recorded as failed in the same write (a pulled job
    /// that cannot run here is kept in the history, never lost silently).
    pub(super) fn accept(
        &mut self,
        printer: &str,
        a: Assignment,
        source: JobSource,
        ack: Option<AckId>,
        note: String,
        fail: Option<String>,
    ) {
        if let Some(known) = self.jobs.get(&a.job_id) {
            let stored = known.stored;
            info!("printer {printer}: job {} already known; ignored", a.job_id);
            match ack {
                Some(ack) if !stored => {
                    // Acknowledged with the first copy, once durable.
                    if !self.add_ack_to_pending_insert(&a.job_id, ack) {
                        self.push(Effect::Ack(ack));
                    }
                }
                _ => self.push_ack(ack),
            }
            return;
        }
        let new = NewJob {
            id: a.job_id.clone(),
            printer_id: Some(printer.to_owned()),
            source,
            model_url: Some(a.model_url.clone()),
            gcode_path: None,
            filament: a.filament_type.clone(),
            priority: a.priority.unwrap_or(0),
            estimated_s: a.estimated_time.and_then(|t| i64::try_from(t).ok()),
            params: a.parameters.clone(),
            sha256: a.sha256.clone(),
        };
        let order = self.next_order;
        self.next_order += 1;
        self.jobs.insert(
            a.job_id.clone(),
            Job {
                id: a.job_id.clone(),
                printer: Some(printer.to_owned()),
                source,
                model_url: Some(a.model_url.clone()),
                gcode_path: None,
                filament: a.filament_type.clone(),
                priority: new.priority,
                estimated_s: a.estimated_time,
                sha256: a.sha256.clone(),
                params: a.parameters.clone(),
                state: if fail.is_some() {
                    JobState::Failed
                } else {
                    JobState::Queued
                },
                order,
                stored: false,
                file_pending: false,
                stop_answer: None,
                stop: fail.clone().map(Stop::Cancel),
            },
        );
        let note = (!note.is_empty()).then_some(note);
        let mut tx = Tx::default();
        tx.write(Write::AddJob(new)).out(self.msgs.event(
            printer,
            "job_accepted",
            Some(&a.job_id),
            note.as_deref(),
        ));
        if source == JobSource::Queue {
            tx.out(self.msgs.assignment(printer, &a));
        }
        if let Some(reason) = &fail {
            warn!("job {}: {reason}", a.job_id);
            tx.job(&a.job_id, JobState::Failed, Some(reason))
                .out(
                    self.msgs
                        .event(printer, "job_failed", Some(&a.job_id), Some(reason)),
                )
                .out(self.msgs.job_complete(printer, &a.job_id, "failed"));
        }
        tx.out(self.progress_item(printer));
        // No acknowledgement without a durable row: the write is retried
        // until it is (the job waits in memory meanwhile).
        let after = After::Accepted {
            job: a.job_id.clone(),
            acks: ack.into_iter().collect(),
            reply: None,
            spool: None,
        };
        self.commit(tx, after);
    }

    /// A new job's insert is durable (or a duplicate, or refused for good).
    pub(super) fn on_accept_answer(
        &mut self,
        job: &str,
        acks: Vec<AckId>,
        reply: Option<ReplyId>,
        spool: Option<(PathBuf, PathBuf)>,
        result: Result<Applied, PersistError>,
    ) {
        if spool.is_some() && !matches!(result, Ok(Applied::Done)) {
            self.local_adds.remove(job);
        }
        let response = match result {
            Ok(Applied::Duplicate) => {
                if self.jobs.get(job).is_some_and(|j| !j.stored) {
                    if let Some(j) = self.jobs.remove(job) {
                        self.answer_stop(
                            j.stop_answer,
                            Response::err(format!(
                                "job {job} is an earlier job's id: nothing cancelled"
                            )),
                        );
                    }
                }
                info!("job {job} already known; ignored");
                if let Some((upload, _)) = spool {
                    self.push(Effect::RemoveFile { path: upload });
                }
                Response::err(format!("job {job} already exists"))
            }
            Ok(_) => {
                let mut cancel = None;
                if let Some(j) = self.jobs.get_mut(job) {
                    j.stored = true;
                    let answer = j.stop_answer.take();
                    if j.state.is_terminal() {
                        self.jobs.remove(job);
                        self.answer_stop(answer, Response::ok(format!("job {job} cancelled")));
                    } else if j.stop.is_some() {
                        cancel = Some((j.printer.clone(), answer.unwrap_or((None, None))));
                    }
                }
                if let Some((printer, (reply, event))) = cancel {
                    self.write_cancel(job, printer.as_deref(), OPERATOR_CANCEL, reply, event);
                }
                if let Some((from, to)) = spool {
                    // Answered once the file is in place.
                    self.push(Effect::Spool {
                        job: job.to_owned(),
                        from,
                        to,
                    });
                    for a in acks {
                        self.push(Effect::Ack(a));
                    }
                    return;
                }
                Response::ok(format!("job {job} accepted"))
            }
            Err(e) => {
                // Refused for good, or (an operator waiting) not stored now:
                // it never runs, so a cancel waiting for it is done.
                if let Some(j) = self.jobs.remove(job) {
                    self.answer_stop(
                        j.stop_answer,
                        Response::ok(format!("job {job} cancelled (it was never stored)")),
                    );
                }
                if let Some((upload, _)) = spool {
                    self.push(Effect::RemoveFile { path: upload });
                }
                Response::err(format!("job {job} not stored: {}", e.message))
            }
        };
        if let Some(id) = reply {
            self.reply(id, response);
        }
        for a in acks {
            self.push(Effect::Ack(a));
        }
    }

    /// Gives a cancel's held-back answer (see `Job::stop_answer`).
    fn answer_stop(
        &mut self,
        answer: Option<(Option<ReplyId>, Option<OutboxItem>)>,
        response: Response,
    ) {
        let Some((reply, event)) = answer else {
            return;
        };
        let ok = response.ok;
        if let Some(id) = reply {
            self.reply(id, response);
        }
        // The event says the cancel was accepted: only if it was.
        if ok {
            self.announce(event);
        }
    }

    pub(super) fn push_ack(&mut self, ack: Option<AckId>) {
        if let Some(a) = ack {
            self.push(Effect::Ack(a));
        }
    }
}
