//! What the outside world asks of the farm: MQTT assignments, robot
//! reports, commands and triggers, and the operator's control requests.

use super::{Farm, FarmInput};
use crate::control::{Request, Response};
use crate::lifecycle::{JobState, PrinterState};
use crate::mqtt::payload::{Command, CommandMsg};
use crate::printer::PrinterCommand;
use crate::store::{AddOutcome, JobSource, NewJob};
use log::{info, warn};
use std::path::PathBuf;

impl Farm {
    pub(crate) async fn on_input(&mut self, input: FarmInput) {
        match input {
            FarmInput::Assignment {
                printer,
                assignment,
                ack,
            } => {
                self.on_assignment(&printer, assignment).await;
                // Acknowledged only now: a crash before this point makes the
                // broker deliver the assignment again (and duplicates are ignored).
                if let Some(ack) = ack {
                    ack();
                }
            }
            FarmInput::Robot(p) => {
                if p.action == "pick" && p.is_completed() {
                    let by = format!("robot {}", p.robot_id);
                    if let Err(reason) = self.plate_cleared(&p.printer_id, &by).await {
                        info!("robot {}: pick completed ignored: {reason}", p.robot_id);
                    }
                } else {
                    info!(
                        "robot {}: {} {} on {}",
                        p.robot_id, p.action, p.status, p.printer_id
                    );
                }
            }
            FarmInput::Command { printer, msg } => {
                let answer = self.on_command(&printer, &msg).await;
                let (kind, text) = match &answer {
                    Ok(text) => ("command_accepted", text.clone()),
                    Err(text) => ("command_rejected", text.clone()),
                };
                let item = self
                    .msgs
                    .event(&printer, kind, msg.job_id.as_deref(), Some(&text));
                self.enqueue(item).await;
            }
            FarmInput::Trigger { topic } => self.on_trigger(&topic).await,
            FarmInput::Invalid { printer, problem } => {
                warn!("rejected input: {problem}");
                let printer = printer.unwrap_or_else(|| "gateway".into());
                let item = self
                    .msgs
                    .event(&printer, "input_rejected", None, Some(&problem));
                self.enqueue(item).await;
            }
            FarmInput::Control { req, upload, reply } => {
                let answer = self.on_control(req, upload).await;
                let _ = reply.send(answer);
            }
            FarmInput::Pulled { printer, result } => self.on_pulled(&printer, result).await,
            FarmInput::Downloaded {
                printer,
                job_id,
                result,
            } => self.on_downloaded(&printer, &job_id, result).await,
            FarmInput::DownloadRetry {
                printer,
                job_id,
                reason,
            } => {
                let message = format!("{reason}; retrying");
                let item =
                    self.msgs
                        .event(&printer, "download_retry", Some(&job_id), Some(&message));
                self.enqueue(item).await;
            }
        }
    }

    async fn on_assignment(&mut self, printer: &str, a: crate::mqtt::payload::Assignment) {
        let Some(slot) = self.slots.get(printer) else {
            return;
        };
        if let Some(have) = slot.filament.as_deref() {
            if !a.filament_type.is_empty() && a.filament_type != have {
                let reason = format!(
                    "filament {} does not match the printer's {have}",
                    a.filament_type
                );
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
                self.enqueue(item).await;
                return;
            }
        }
        if let Ok(AddOutcome::Inserted { .. }) = self.accept_job(printer, &a, JobSource::Mqtt).await
        {
            info!("printer {printer}: assignment {} accepted", a.job_id);
        }
        self.schedule().await;
    }

    async fn on_command(&mut self, printer: &str, msg: &CommandMsg) -> Result<String, String> {
        let Some(slot) = self.slots.get(printer) else {
            return Err(format!("unknown printer {printer}"));
        };
        let send = |cmd| {
            slot.commands
                .try_send(cmd)
                .map_err(|_| "printer task is busy or gone".to_owned())
        };
        match msg.command {
            Command::Pause | Command::Resume | Command::Cancel if slot.job.is_none() => {
                if msg.command == Command::Cancel {
                    if let Some(job) = &msg.job_id {
                        return self.cancel_waiting_job(job).await;
                    }
                }
                Err(format!("printer {printer} has no job running"))
            }
            Command::Pause => send(PrinterCommand::Pause).map(|_| "pausing".into()),
            Command::Resume => send(PrinterCommand::Resume).map(|_| "resuming".into()),
            Command::Cancel => {
                send(PrinterCommand::Cancel).map(|_| "cancelling; heaters off".into())
            }
            Command::EmergencyStop => {
                send(PrinterCommand::EmergencyStop).map(|_| "M112 sent".into())
            }
            Command::ClearPlate => self
                .plate_cleared(printer, "operator")
                .await
                .map(|_| "plate clear".into()),
        }
    }

    /// Cancels a job that is not printing yet (queued, downloading or ready).
    async fn cancel_waiting_job(&mut self, job: &str) -> Result<String, String> {
        if let Some(slot) = self.slots.values().find(|s| s.job.as_deref() == Some(job)) {
            let _ = slot.commands.try_send(PrinterCommand::Cancel);
            return Ok(format!("cancelling job {job} on {}; heaters off", slot.id));
        }
        match self.store.get_job(job).await {
            Ok(Some(j)) if !j.state.is_terminal() => {
                if self
                    .transition(job, JobState::Cancelled, Some("cancelled by operator"))
                    .await
                {
                    Ok(format!("job {job} cancelled"))
                } else {
                    Err(format!(
                        "job {job} cannot be cancelled from {}",
                        j.state.as_str()
                    ))
                }
            }
            Ok(Some(j)) => Err(format!("job {job} is already {}", j.state.as_str())),
            Ok(None) => Err(format!("no job {job}")),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn on_trigger(&mut self, topic: &str) {
        let matching: Vec<(String, String)> = self
            .settings
            .triggers
            .iter()
            .filter(|t| t.topic == topic)
            .map(|t| (t.printer.clone(), t.gcode.clone()))
            .collect();
        for (printer, gcode) in matching {
            let Some(slot) = self.slots.get(&printer) else {
                continue;
            };
            // Idle only: never while printing, and not on a plate nobody has
            // confirmed clear (a homing macro could hit the part).
            let idle = slot.connected && slot.job.is_none() && slot.state == PrinterState::Idle;
            let (kind, msg) = if idle
                && slot
                    .commands
                    .try_send(PrinterCommand::RunMacro { gcode })
                    .is_ok()
            {
                ("trigger_run", format!("macro from {topic}"))
            } else {
                (
                    "trigger_refused",
                    format!(
                        "macro from {topic} refused: printer is {}, not idle",
                        slot.state.as_str()
                    ),
                )
            };
            let item = self.msgs.event(&printer, kind, None, Some(&msg));
            self.enqueue(item).await;
        }
    }

    async fn on_control(&mut self, req: Request, upload: Option<PathBuf>) -> Response {
        let cmd = |command| CommandMsg {
            command,
            job_id: None,
        };
        let answer = match req {
            Request::Ping => return Response::ok("printgate is running"),
            Request::Status => return self.live_status(),
            Request::AddJob {
                printer,
                priority,
                id,
                ..
            } => {
                return self.add_local_job(&printer, priority, id, upload).await;
            }
            Request::CancelJob { job } => self.cancel_waiting_job(&job).await,
            Request::Clear { printer } => {
                self.on_command(&printer, &cmd(Command::ClearPlate)).await
            }
            Request::Pause { printer } => self.on_command(&printer, &cmd(Command::Pause)).await,
            Request::Resume { printer } => self.on_command(&printer, &cmd(Command::Resume)).await,
            Request::EmergencyStop { printer } => {
                self.on_command(&printer, &cmd(Command::EmergencyStop))
                    .await
            }
        };
        match answer {
            Ok(m) => Response::ok(m),
            Err(m) => Response::err(m),
        }
    }

    fn live_status(&self) -> Response {
        let printers = self
            .slots
            .values()
            .map(|s| crate::control::LivePrinter {
                id: s.id.clone(),
                state: s.state.as_str().to_owned(),
                plate_clear: s.plate_clear,
                connected: s.connected,
                job: s.job.clone(),
                percent: s.percent,
                nozzle: s.temps.nozzle,
                nozzle_target: s.temps.nozzle_target,
                bed: s.temps.bed,
                bed_target: s.temps.bed_target,
                link: s.link,
            })
            .collect();
        Response {
            printers: Some(printers),
            io: Some(crate::iostats::IoReport::collect(&self.store)),
            ..Response::ok("printgate is running")
        }
    }

    async fn add_local_job(
        &mut self,
        printer: &str,
        priority: i64,
        id: Option<String>,
        upload: Option<PathBuf>,
    ) -> Response {
        let Some(upload) = upload else {
            return Response::err("no file received");
        };
        let discard = |msg: String| {
            let _ = std::fs::remove_file(&upload);
            Response::err(msg)
        };
        let Some(slot) = self.slots.get(printer) else {
            return discard(format!("unknown printer {printer}"));
        };
        let filament = slot.filament.clone();
        let id = id.unwrap_or_else(new_job_id);
        if !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            || id.len() > 64
        {
            return discard(format!(
                "job id {id:?}: use letters, digits, '-' and '_' (at most 64)"
            ));
        }
        let check = upload.clone();
        match tokio::task::spawn_blocking(move || crate::printer::job_file::scan(&check)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return discard(format!("job {id} rejected: {e}")),
            Err(e) => return discard(format!("job {id}: check failed: {e}")),
        }
        let path = self.settings.spool_dir.join(format!("{id}.gcode"));
        if let Err(e) = std::fs::rename(&upload, &path) {
            return discard(format!("cannot spool job {id}: {e}"));
        }
        let new = NewJob {
            id: id.clone(),
            printer_id: Some(printer.to_owned()),
            source: JobSource::Local,
            model_url: None,
            gcode_path: Some(path.to_string_lossy().into_owned()),
            filament,
            priority,
            estimated_s: None,
            params: None,
        };
        let event = self
            .msgs
            .event(printer, "job_accepted", Some(&id), Some("local file"));
        let answer = match self.store.add_job(new, event).await {
            Ok(AddOutcome::Inserted { .. }) => {
                self.wake_pump();
                let message = format!("job {id} queued on {printer}");
                Response {
                    job_id: Some(id),
                    ..Response::ok(message)
                }
            }
            Ok(AddOutcome::Duplicate) => Response::err(format!("job {id} already exists")),
            Err(e) => Response::err(format!("job {id} not stored: {e}")),
        };
        self.schedule().await;
        answer
    }
}

/// `local-<unix ms>-<counter>`: unique per gateway, sortable by time.
fn new_job_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("local-{ms}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}
