//! What the outside world asks of the farm: assignments (pushed or pulled)
//! and their durable acceptance, robot reports, commands and triggers.

use super::fresh::{self, Freshness};
use super::model::{Job, Phase, Stop};
use super::persist::{After, PersistError, Tx};
use super::{AckId, Effect, FarmCore, ReplyId};
use crate::control::Response;
use crate::lifecycle::{JobState, PrinterState};
use crate::mqtt::payload::{parse_rfc3339, Assignment, Command, CommandMsg, RobotProgress};
use crate::printer::PrinterCommand;
use crate::store::{Applied, JobSource, NewJob, OutboxItem, Write};
use log::{info, warn};
use std::path::PathBuf;

impl FarmCore {
    fn freshness(&self) -> Freshness {
        Freshness {
            max_age: self.s.max_message_age,
            skew: self.s.clock_skew,
        }
    }

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
                    self.jobs.remove(job);
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
                    if j.state.is_terminal() {
                        self.jobs.remove(job);
                    } else if j.stop.is_some() {
                        cancel = Some(j.printer.clone());
                    }
                }
                if let Some(printer) = cancel {
                    self.write_cancel(job, printer.as_deref(), "cancelled by operator", None, None);
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
                // Refused for good, or (an operator waiting) not stored now.
                self.jobs.remove(job);
                if let Some((upload, _)) = spool {
                    self.push(Effect::RemoveFile { path: upload });
                }
                Response::err(format!("job {job} not stored: {}", e.message))
            }
        };
        if let Some(id) = reply {
            self.push(Effect::Reply { id, response });
        }
        for a in acks {
            self.push(Effect::Ack(a));
        }
    }

    pub(super) fn push_ack(&mut self, ack: Option<AckId>) {
        if let Some(a) = ack {
            self.push(Effect::Ack(a));
        }
    }

    pub(super) fn on_robot(&mut self, r: RobotProgress, retained: bool) {
        let fresh = fresh::check(retained, Some(&r.timestamp), self.wall, self.freshness());
        if let Err(why) = fresh {
            let problem = format!("robot {} about {}: {why}", r.robot_id, r.printer_id);
            self.reject_input(Some(&r.printer_id), "robot", &problem);
            return;
        }
        if let Some(rules) = &self.s.robots {
            let allowed = rules
                .iter()
                .any(|rule| rule.id == r.robot_id && rule.printers.contains(&r.printer_id));
            if !allowed {
                let problem = format!(
                    "robot {} may not clear printer {} (see [[robot]])",
                    r.robot_id, r.printer_id
                );
                self.reject_input(Some(&r.printer_id), "robot", &problem);
                return;
            }
        }
        if !(r.action == "pick" && r.is_completed()) {
            info!(
                "robot {}: {} {} on {}",
                r.robot_id, r.action, r.status, r.printer_id
            );
            return;
        }
        // A report written before this plate started waiting is about an
        // earlier print (a late or duplicated message): never clear on it.
        let since = self
            .printers
            .get(&r.printer_id)
            .and_then(|p| p.awaiting_since);
        let stamp = parse_rfc3339(&r.timestamp);
        if let (Some(since), Some(stamp)) = (since, stamp) {
            if stamp + self.s.clock_skew < since {
                let problem = format!(
                    "robot {}: pick completed at {} predates the end of the print on {}",
                    r.robot_id, r.timestamp, r.printer_id
                );
                self.reject_input(Some(&r.printer_id), "robot", &problem);
                return;
            }
        }
        // The id names another gateway's printer (or may): its robot's
        // clear says nothing about this gateway's plate (yet).
        if let Some(why) = self.hold_robot_clear(&r.printer_id, &r.robot_id) {
            info!("robot {}: pick completed {why}", r.robot_id);
            return;
        }
        let by = format!("robot {}", r.robot_id);
        if let Err(reason) = self.plate_cleared(&r.printer_id, &by) {
            info!("robot {}: pick completed ignored: {reason}", r.robot_id);
        }
    }

    pub(super) fn on_mqtt_command(
        &mut self,
        printer: &str,
        msg: &CommandMsg,
        retained: bool,
        estop_sent: bool,
        ack: Option<AckId>,
    ) {
        let answer = match fresh::check(
            retained,
            msg.timestamp.as_deref(),
            self.wall,
            self.freshness(),
        ) {
            Err(why) => Err(format!("{} dropped: {why}", command_name(msg.command))),
            Ok(()) => self.command(printer, msg, estop_sent, None),
        };
        // `Ok(None)`: answered with the durable write already.
        if let Some(answer) = answer.transpose() {
            self.answer_command(printer, msg, answer);
        }
        self.push_ack(ack);
    }

    /// The command's answer as an event on the printer's topic.
    pub(super) fn answer_command(
        &mut self,
        printer: &str,
        msg: &CommandMsg,
        answer: Result<String, String>,
    ) {
        let (kind, text) = match &answer {
            Ok(t) => ("command_accepted", t.as_str()),
            Err(t) => {
                warn!("printer {printer}: command refused: {t}");
                ("command_rejected", t.as_str())
            }
        };
        let item = self
            .msgs
            .event(printer, kind, msg.job_id.as_deref(), Some(text));
        self.announce(item);
    }

    /// Carries out one command and says how it went. With `reply` (a
    /// control request), the cancel of a waiting job is answered once it is
    /// durable instead: then the answer here is `Ok(None)`.
    pub(super) fn command(
        &mut self,
        printer: &str,
        msg: &CommandMsg,
        estop_sent: bool,
        reply: Option<ReplyId>,
    ) -> Result<Option<String>, String> {
        let Some(p) = self.printers.get(printer) else {
            return Err(format!("unknown printer {printer}"));
        };
        let held = p.held.as_ref().map(|h| (h.job.clone(), h.phase));
        let named = msg.job_id.as_deref();
        match msg.command {
            Command::Pause | Command::Resume => {
                let Some((job, phase)) = held.filter(|(_, ph)| ph.on_printer()) else {
                    return Err(format!("printer {printer} has no job running"));
                };
                if named.is_some_and(|n| n != job) {
                    return Err(format!(
                        "job {} is not the job on {printer} ({job})",
                        named.unwrap_or_default()
                    ));
                }
                let (cmd, text) = if msg.command == Command::Pause {
                    (PrinterCommand::Pause, "pausing")
                } else {
                    (PrinterCommand::Resume, "resuming")
                };
                if (msg.command == Command::Pause) == (phase == Phase::Paused) {
                    return Ok(Some(format!("job {job} is already {}", phase.state_word())));
                }
                self.push(Effect::Printer {
                    printer: printer.to_owned(),
                    cmd,
                });
                Ok(Some(text.into()))
            }
            Command::Cancel => match (named, held) {
                (Some(n), Some((job, _))) if n == job => {
                    let event = self.accepted_event(printer, n, reply);
                    Ok(self.cancel_held(printer, reply, event))
                }
                (Some(n), _) => {
                    let here = self
                        .jobs
                        .get(n)
                        .is_some_and(|j| j.printer.as_deref() == Some(printer));
                    if !here {
                        return Err(format!(
                            "job {n} is not printing, paused or waiting on {printer}"
                        ));
                    }
                    let event = self.accepted_event(printer, n, reply);
                    self.cancel_waiting(n, reply, event)
                }
                (None, Some((job, _))) => {
                    let event = self.accepted_event(printer, &job, reply);
                    Ok(self.cancel_held(printer, reply, event))
                }
                (None, None) => Err(format!("printer {printer} has no job running")),
            },
            Command::ClearPlate => self
                .plate_cleared(printer, "operator")
                .map(|()| Some("plate clear".into())),
            Command::EmergencyStop => {
                if !estop_sent {
                    self.push(Effect::Printer {
                        printer: printer.to_owned(),
                        cmd: PrinterCommand::EmergencyStop,
                    });
                }
                if let Some((job, phase)) = held {
                    if let Some(j) = self.jobs.get_mut(&job) {
                        j.stop = Some(Stop::EmergencyStop);
                    }
                    if !phase.on_printer() {
                        self.end_held_before_start(printer, "emergency stop", None, None);
                    }
                }
                Ok(Some("M112 sent".into()))
            }
        }
    }

    /// Cancels what `printer` holds, in whatever phase it is. When the job
    /// had not reached the printer, the cancel is written here and its
    /// answer (`reply`, or `event` for MQTT) goes with that durable write:
    /// then the result is `None`.
    pub(super) fn cancel_held(
        &mut self,
        printer: &str,
        reply: Option<ReplyId>,
        event: Option<OutboxItem>,
    ) -> Option<String> {
        let Some((job, phase)) = self
            .printers
            .get(printer)
            .and_then(|p| p.held.as_ref())
            .map(|h| (h.job.clone(), h.phase))
        else {
            return Some(format!("printer {printer} has no job"));
        };
        if let Some(j) = self.jobs.get_mut(&job) {
            j.stop = Some(Stop::Cancel("cancelled by operator".into()));
        }
        if phase.on_printer() {
            // Streaming: the printer task ends it (heaters off); a crash
            // before that leaves it interrupted, never restarted.
            self.push(Effect::Printer {
                printer: printer.to_owned(),
                cmd: PrinterCommand::Cancel,
            });
            return Some(format!("cancelling job {job}; heaters off"));
        }
        let later = reply.is_some() || event.is_some();
        self.end_held_before_start(printer, "cancelled by operator", reply, event);
        (!later).then(|| format!("job {job} cancelled"))
    }

    /// Ends the held job of `printer` that has not reached it (downloading,
    /// file check, or `printing` not yet durable): no line went out, the
    /// plate is as it was.
    fn end_held_before_start(
        &mut self,
        printer: &str,
        why: &str,
        reply: Option<ReplyId>,
        answer: Option<OutboxItem>,
    ) {
        let Some(h) = self.printers.get(printer).and_then(|p| p.held.clone()) else {
            return;
        };
        match h.phase {
            Phase::Printing | Phase::Paused => {}
            Phase::Downloading | Phase::Scanning => {
                if h.phase == Phase::Downloading {
                    self.push(Effect::AbortDownload { job: h.job.clone() });
                }
                if let Some(p) = self.printers.get_mut(printer) {
                    p.held = None;
                }
                self.write_cancel(&h.job, Some(printer), why, reply, answer);
            }
            Phase::Starting => {
                // `printing` is on its way to the store: the end is queued
                // right behind it, so the printer is never told to start.
                let Some(p) = self.printers.get_mut(printer) else {
                    return;
                };
                p.held = None;
                let to = match (p.state, p.connected) {
                    (PrinterState::Error, _) => PrinterState::Error,
                    (_, true) => PrinterState::Idle,
                    (_, false) => PrinterState::Offline,
                };
                if let Some(j) = self.jobs.get_mut(&h.job) {
                    j.state = JobState::Cancelled;
                }
                let mut tx = Tx::default();
                tx.job(&h.job, JobState::Cancelled, Some(why))
                    .out(answer)
                    .out(
                        self.msgs
                            .event(printer, "job_cancelled", Some(&h.job), Some(why)),
                    )
                    .out(self.msgs.job_complete(printer, &h.job, "cancelled"));
                let plate = (to != PrinterState::Error).then_some(true);
                self.move_printer(&mut tx, printer, to, plate, "job_not_started", Some(why));
                let job = h.job.clone();
                self.commit(tx, After::Cancelled { job, reply });
            }
        }
    }

    /// Without a reply channel (MQTT), a cancel's acceptance event is
    /// written with the cancel itself: it exists only if the cancel does.
    fn accepted_event(
        &self,
        printer: &str,
        job: &str,
        reply: Option<ReplyId>,
    ) -> Option<OutboxItem> {
        if reply.is_some() {
            return None;
        }
        let text = format!("job {job} cancelled");
        self.msgs
            .event(printer, "command_accepted", Some(job), Some(&text))
    }

    /// Cancels a job that is not on a printer yet; answered once durable.
    /// With `reply` or `event`, the answer goes with the durable write and
    /// the result here is `Ok(None)`.
    pub(super) fn cancel_waiting(
        &mut self,
        job: &str,
        reply: Option<ReplyId>,
        event: Option<OutboxItem>,
    ) -> Result<Option<String>, String> {
        let Some(j) = self.jobs.get_mut(job) else {
            return Err(format!("no open job {job}"));
        };
        if j.stop.is_some() {
            return Ok(Some(format!("job {job} is already being cancelled")));
        }
        if j.state.is_active() {
            return Err(format!("job {job} is {}", j.state.as_str()));
        }
        if !j.stored {
            // Its insert is still on the way: it will never start, and the
            // cancel is written once the row exists (or is dropped with it
            // if the id turns out to be an old job's).
            j.stop = Some(Stop::Cancel("cancelled by operator".into()));
            return Ok(Some(format!("job {job} cancelled before it was stored")));
        }
        j.stop = Some(Stop::Cancel("cancelled by operator".into()));
        let printer = j.printer.clone();
        let answered_later = reply.is_some() || event.is_some();
        self.write_cancel(
            job,
            printer.as_deref(),
            "cancelled by operator",
            reply,
            event,
        );
        Ok((!answered_later).then(|| format!("job {job} cancelled")))
    }

    /// The durable cancel of a job that never reached a printer.
    fn write_cancel(
        &mut self,
        job: &str,
        printer: Option<&str>,
        reason: &str,
        reply: Option<ReplyId>,
        answer: Option<OutboxItem>,
    ) {
        let mut tx = Tx::default();
        tx.job(job, JobState::Cancelled, Some(reason)).out(answer);
        match printer {
            Some(p) => {
                tx.out(self.msgs.event(p, "job_cancelled", Some(job), Some(reason)))
                    .out(self.msgs.job_complete(p, job, "cancelled"));
            }
            None => {
                tx.out(
                    self.msgs
                        .gateway_event("job_cancelled", Some(job), Some(reason)),
                );
            }
        }
        // The progress message is built after the job left the queue.
        let state_before = self.jobs.get(job).map(|j| j.state);
        if let Some(j) = self.jobs.get_mut(job) {
            j.state = JobState::Cancelled;
        }
        if let Some(p) = printer {
            tx.out(self.progress_item(p));
        }
        if let (Some(j), Some(s)) = (self.jobs.get_mut(job), state_before) {
            j.state = s;
        }
        self.commit(
            tx,
            After::Cancelled {
                job: job.to_owned(),
                reply,
            },
        );
    }

    pub(super) fn on_trigger(&mut self, topic: &str, retained: bool) {
        if retained {
            self.reject_input(
                None,
                "trigger",
                &format!("{topic}: retained trigger ignored"),
            );
            return;
        }
        let matching: Vec<(usize, String, String)> = self
            .s
            .triggers
            .iter()
            .enumerate()
            .filter(|(_, t)| t.topic == topic)
            .map(|(i, t)| (i, t.printer.clone(), t.gcode.clone()))
            .collect();
        for (index, printer, gcode) in matching {
            let Some(p) = self.printers.get(&printer) else {
                continue;
            };
            // Idle only: never while printing, and not on a plate nobody has
            // confirmed clear (a homing macro could hit the part).
            let idle = self.is_free(p) && self.queued_for(&printer).is_none();
            let state = self.view(p).wire.state;
            let (kind, msg) = if idle {
                self.push(Effect::Printer {
                    printer: printer.clone(),
                    cmd: PrinterCommand::RunMacro { gcode },
                });
                self.running_triggers.insert(printer.clone(), index);
                ("trigger_run", format!("macro from {topic}"))
            } else {
                (
                    "trigger_refused",
                    format!("macro from {topic} refused: printer is {state}, not idle"),
                )
            };
            let item = self.msgs.event(&printer, kind, None, Some(&msg));
            self.announce(item);
        }
    }

    pub(super) fn on_invalid(
        &mut self,
        printer: Option<&str>,
        kind: &str,
        problem: &str,
        ack: Option<AckId>,
    ) {
        self.reject_input(printer, kind, problem);
        self.push_ack(ack);
    }
}

fn command_name(c: Command) -> &'static str {
    Command::ALL
        .iter()
        .find(|(_, x)| *x == c)
        .map_or("command", |(n, _)| *n)
}
