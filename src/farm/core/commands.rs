//! Commands (MQTT and the operator's CLI): pause, resume, cancel (naming
//! its job, or whatever the printer holds), clear plate, emergency stop;
//! their freshness, and answers that go with the durable write they describe.

use super::fresh::{self, Freshness};
use super::model::{Phase, Stop};
use super::persist::Tx;
use super::writes::After;
use super::{AckId, Effect, FarmCore, ReplyId};
use crate::lifecycle::{JobState, PrinterState};
use crate::mqtt::payload::{Command, CommandMsg};
use crate::printer::PrinterCommand;
use crate::store::OutboxItem;
use log::warn;

/// The reason an operator's cancel (MQTT `cancel`, `printgate job cancel`)
/// gives the job, its events and its row.
pub(super) const OPERATOR_CANCEL: &str = "cancelled by operator";

impl FarmCore {
    pub(super) fn freshness(&self) -> Freshness {
        Freshness {
            max_age: self.s.max_message_age,
            skew: self.s.clock_skew,
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
            Command::PromptAnswer => {
                let Some((text, choices)) = p.prompt.as_ref() else {
                    return Err(format!("printer {printer} has no open prompt"));
                };
                let choice = msg.choice.unwrap_or(0);
                let Some(label) = usize::try_from(choice).ok().and_then(|i| choices.get(i)) else {
                    return Err(format!(
                        "prompt {text:?} has {} choice(s); {choice} is not one of them",
                        choices.len()
                    ));
                };
                let text = format!("answering {text:?} with {label:?} (M876 S{choice})");
                self.push(Effect::Printer {
                    printer: printer.to_owned(),
                    cmd: PrinterCommand::PromptAnswer { choice },
                });
                Ok(Some(text))
            }
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
            j.stop = Some(Stop::Cancel(OPERATOR_CANCEL.into()));
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
        self.end_held_before_start(printer, OPERATOR_CANCEL, reply, event);
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
        j.stop = Some(Stop::Cancel(OPERATOR_CANCEL.into()));
        let answered_later = reply.is_some() || event.is_some();
        if !j.stored {
            // Its insert is still on the way: it will never start, and the
            // cancel is written (and answered) once the row exists, or
            // answered when the insert is refused.
            if answered_later {
                j.stop_answer = Some((reply, event));
                return Ok(None);
            }
            return Ok(Some(format!("job {job} cancelled before it was stored")));
        }
        let printer = j.printer.clone();
        self.write_cancel(job, printer.as_deref(), OPERATOR_CANCEL, reply, event);
        Ok((!answered_later).then(|| format!("job {job} cancelled")))
    }

    /// The durable cancel of a job that never reached a printer.
    pub(super) fn write_cancel(
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
}

fn command_name(c: Command) -> &'static str {
    Command::ALL
        .iter()
        .find(|(_, x)| *x == c)
        .map_or("command", |(n, _)| *n)
}
