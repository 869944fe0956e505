//! The world around the gateway: a job handler that assigns the way seed
//! 000 says (from the progress it sees), a queue manager, model downloads
//! and files, robots, operators, and the broker's misbehaviour (duplicates,
//! retained replays, stale and bogus messages).

use super::printer::PrinterModel;
use super::{AnswerSink, Faults, Promise, World};
use crate::control::Response;
use crate::farm::core::{ControlRequest, Effect, Input};
use crate::mqtt::payload::{
    rfc3339, Assignment, Command, CommandMsg, PrinterStatus, Progress, RobotProgress,
};
use crate::printer::job_file::Summary;
use crate::rng::Xorshift64;
use crate::source::{Downloaded, QueueJob};
use crate::store::OutboxItem;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

/// What the traffic generator injects.
pub enum Inject {
    Assignment(String, Assignment),
    Control(ControlRequest, Promise),
    Input(Input),
    /// A command; if the gateway accepts it and it is a cancel or an
    /// e-stop, `job` must never start afterwards.
    Command {
        printer: String,
        msg: CommandMsg,
        retained: bool,
        estop_sent: bool,
        job: Option<String>,
    },
}

/// A job the world knows: how long it is and what is wrong with it.
#[derive(Debug, Clone, Copy)]
struct Spec {
    lines: u64,
    missing_model: bool,
    bad_file: bool,
}

#[derive(Debug, Default)]
pub struct Traffic {
    printers: Vec<String>,
    /// The last progress message per printer (what a handler sees).
    view: BTreeMap<String, (PrinterStatus, u8, Option<String>)>,
    /// Printers the handler believes busy or awaiting cleaning.
    busy: BTreeSet<String>,
    specs: BTreeMap<String, Spec>,
    files: BTreeMap<PathBuf, String>,
    queue: VecDeque<String>,
    pushed: Vec<(String, Assignment)>,
    robot_due: BTreeMap<String, u64>,
    next: u64,
    new_work: bool,
    /// Jobs whose cancel or e-stop was acknowledged (durably announced, or
    /// answered ok): they must never start afterwards.
    pub stopped: BTreeSet<String>,
    /// `command_accepted` events seen since the last look.
    accepted: Vec<(String, Option<String>)>,
    /// Legitimate e-stops sent per printer (a retained or stale one must
    /// never reach a printer).
    pub estops_sent: BTreeMap<String, u64>,
}

impl Traffic {
    pub fn new(printers: &[String]) -> Traffic {
        Traffic {
            printers: printers.to_vec(),
            new_work: true,
            ..Traffic::default()
        }
    }

    pub fn stop_new_work(&mut self) {
        self.new_work = false;
        self.queue.clear();
    }

    pub fn gateway_crashed(&mut self) {
        self.robot_due.clear();
    }

    /// Reads what the gateway published (applied outbox rows).
    pub fn observe(&mut self, items: &[OutboxItem]) {
        for item in items {
            self.observe_payload(&item.payload);
        }
    }

    pub fn observe_payload(&mut self, payload: &[u8]) {
        if let Ok(p) = serde_json::from_slice::<Progress>(payload) {
            // The seed handler's rules: printing → busy; idle + 100 →
            // awaiting cleaning (busy until the robot); idle + 0 → available.
            match (p.status, p.progress) {
                (PrinterStatus::Printing, _) | (PrinterStatus::Idle, 100) => {
                    self.busy.insert(p.printer_id.clone());
                }
                (PrinterStatus::Idle, _) => {
                    self.busy.remove(&p.printer_id);
                }
            }
            self.view
                .insert(p.printer_id, (p.status, p.progress, p.job_id));
            return;
        }
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) {
            if v["type"] == "command_accepted" {
                let printer = v["printerId"].as_str().unwrap_or_default().to_owned();
                let job = v["jobId"].as_str().map(str::to_owned);
                self.accepted.push((printer, job));
            }
        }
    }

    pub fn on_reply(
        &mut self,
        promise: &Promise,
        response: &Response,
        _printers: &mut BTreeMap<String, PrinterModel>,
    ) {
        if let (Promise::Cancel(job), true) = (promise, response.ok) {
            self.stopped.insert(job.clone());
        }
    }

    fn new_job(&mut self, rng: &mut Xorshift64, f: &Faults, faults_on: bool) -> String {
        self.next += 1;
        let id = format!("j{}", self.next);
        let spec = Spec {
            lines: 3 + rng.below(40),
            missing_model: faults_on && rng.chance(f.missing_model),
            bad_file: faults_on && rng.chance(f.bad_file),
        };
        self.specs.insert(id.clone(), spec);
        id
    }

    fn assignment(&self, job: &str, rng: &mut Xorshift64, faults_on: bool) -> Assignment {
        let estimate = match rng.below(4) {
            0 => None,
            // An estimate the print overruns: the time limit cancels it.
            1 if faults_on => Some(1),
            2 => Some(crate::jobspec::MAX_ESTIMATE_S),
            _ => Some(600),
        };
        Assignment {
            job_id: job.to_owned(),
            model_url: format!("models/{job}.gcode"),
            filament_type: None,
            estimated_time: estimate,
            priority: Some(rng.below(3) as i64),
            assigned_at: None,
            parameters: None,
            sha256: None,
        }
    }

    /// One step of outside traffic, chosen by the seed. (`w.traffic` is
    /// this value, taken out for the call.)
    pub fn generate(&mut self, w: &mut World) -> Vec<Inject> {
        let f = w.plan.faults;
        let faults_on = w.faults_on;
        let wall = UNIX_EPOCH + Duration::from_secs(1_750_000_000 + w.secs);
        let stamp = |ago: u64| rfc3339(wall - Duration::from_secs(ago));
        let printer = self.printers[w.rng.index(self.printers.len())].clone();
        let mut out = Vec::new();
        // The robot: clears each plate shown waiting (physically, then says so).
        let due: Vec<String> = self
            .robot_due
            .iter()
            .filter(|(_, at)| **at <= w.step)
            .map(|(p, _)| p.clone())
            .collect();
        for p in due {
            self.robot_due.remove(&p);
            if let Some(m) = w.printers.get_mut(&p) {
                m.dirty = false;
            }
            out.push(Inject::Input(Input::Robot {
                progress: robot(&p, &stamp(0)),
                retained: false,
            }));
        }
        for (p, (status, progress, _)) in &self.view {
            if *status == PrinterStatus::Idle && *progress == 100 && !self.robot_due.contains_key(p)
            {
                self.robot_due
                    .insert(p.clone(), w.step + 2 + w.rng.below(8));
            }
        }
        if faults_on && w.rng.chance(0.3) {
            return out;
        }
        let choice = w.rng.below(10);
        let rng = &mut w.rng;
        match choice {
            // The job handler: one assignment to a printer it believes idle.
            0..=3 if self.new_work && !w.plan.pull => {
                let idle = self
                    .view
                    .get(&printer)
                    .is_some_and(|(s, pr, _)| *s == PrinterStatus::Idle && *pr == 0);
                if idle && !self.busy.contains(&printer) {
                    let job = self.new_job(rng, &f, faults_on);
                    let a = self.assignment(&job, rng, faults_on && f.cancel > 0.0);
                    self.busy.insert(printer.clone());
                    self.pushed.push((printer.clone(), a.clone()));
                    out.push(Inject::Assignment(printer, a));
                }
            }
            0..=3 if self.new_work && self.queue.len() < 3 => {
                let job = self.new_job(rng, &f, faults_on);
                self.queue.push_back(job);
            }
            4 if faults_on && rng.chance(f.duplicate) && !self.pushed.is_empty() => {
                let (p, a) = self.pushed[rng.index(self.pushed.len())].clone();
                out.push(Inject::Assignment(p, a));
            }
            5 if faults_on && rng.chance(f.retained + f.stale) => {
                // Bogus plate clears: retained, stale, or about an earlier print.
                let (retained, ago) = if rng.chance(f.retained / (f.retained + f.stale)) {
                    (true, 0)
                } else if rng.below(2) == 0 {
                    (false, 10_000)
                } else {
                    (false, 200)
                };
                out.push(Inject::Input(Input::Robot {
                    progress: robot(&printer, &stamp(ago)),
                    retained,
                }));
            }
            6 if faults_on => {
                let ops = self.operator(w, &printer, &f);
                out.extend(ops);
            }
            7 if self.new_work && faults_on && rng.chance(0.2) => {
                self.next += 1;
                let job = format!("local-{}", self.next);
                let upload = PathBuf::from(format!("/spool/.upload-{}.part", self.next));
                self.specs.insert(
                    job.clone(),
                    Spec {
                        lines: 5,
                        missing_model: false,
                        bad_file: false,
                    },
                );
                self.files.insert(upload.clone(), job.clone());
                let req = ControlRequest::AddJob {
                    printer,
                    priority: 0,
                    id: Some(job.clone()),
                    upload,
                };
                out.push(Inject::Control(req, Promise::Job(job)));
            }
            8 if faults_on => out.push(Inject::Input(Input::Invalid {
                printer: None,
                kind: "robot".into(),
                problem: "device/robot/x/progress: invalid json".into(),
                ack: None,
            })),
            _ => {}
        }
        out
    }

    /// An operator (or a service) acting on one printer, sometimes with a
    /// retained or stale message the gateway must not act on.
    fn operator(&mut self, w: &mut World, printer: &str, f: &Faults) -> Vec<Inject> {
        let wall = UNIX_EPOCH + Duration::from_secs(1_750_000_000 + w.secs);
        let rng = &mut w.rng;
        let held = w
            .core
            .printers()
            .find(|p| p.id == printer)
            .and_then(|p| p.held_job().map(str::to_owned));
        let waiting = w
            .core
            .jobs()
            .filter(|j| j.printer.as_deref() == Some(printer))
            .map(|j| j.id.clone())
            .next();
        let bogus = rng.below(4) == 0;
        let (retained, ts) = if bogus {
            if rng.below(2) == 0 {
                (true, None)
            } else {
                (false, Some(rfc3339(wall - Duration::from_secs(3600))))
            }
        } else {
            (false, Some(rfc3339(wall)))
        };
        let msg = |command, job_id: Option<String>| CommandMsg {
            command,
            job_id,
            timestamp: ts.clone(),
            choice: None,
        };
        let pick = rng.unit();
        let (command, job) = if pick < f.cancel * 30.0 {
            (Command::Cancel, waiting.or(held.clone()))
        } else if pick < (f.cancel + f.estop) * 30.0 {
            (Command::EmergencyStop, held.clone())
        } else if pick < (f.cancel + f.estop + f.pause) * 30.0 {
            let c = if rng.below(2) == 0 {
                Command::Pause
            } else {
                Command::Resume
            };
            (c, held.clone())
        } else if pick < (f.cancel + f.estop + f.pause + f.operator_clear) * 30.0 {
            let waits = self
                .view
                .get(printer)
                .is_some_and(|(s, pr, _)| *s == PrinterStatus::Idle && *pr == 100);
            if !waits || bogus {
                return Vec::new();
            }
            // The operator really cleared it.
            if let Some(m) = w.printers.get_mut(printer) {
                m.dirty = false;
            }
            (Command::ClearPlate, None)
        } else if rng.chance(f.cancel * 30.0) {
            // The CLI's cancel, answered once durable.
            let Some(job) = w.core.jobs().map(|j| j.id.clone()).next() else {
                return Vec::new();
            };
            let req = ControlRequest::CancelJob { job: job.clone() };
            return vec![Inject::Control(req, Promise::Cancel(job))];
        } else {
            return Vec::new();
        };
        let estop_sent = command == Command::EmergencyStop && !bogus;
        if estop_sent {
            *self.estops_sent.entry(printer.to_owned()).or_default() += 1;
            // The dispatcher's out-of-band path: first in the task's queue.
            if let Some(m) = w.printers.get_mut(printer) {
                m.commands
                    .push_front(crate::printer::PrinterCommand::EmergencyStop);
            }
        }
        vec![Inject::Command {
            printer: printer.to_owned(),
            msg: msg(command, job.clone()),
            retained,
            estop_sent,
            job,
        }]
    }

    /// Whether `printer` got a `command_accepted` since the last call.
    pub fn take_accepted(&mut self, printer: &str) -> bool {
        let hit = self.accepted.iter().any(|(p, _)| p == printer);
        self.accepted.clear();
        hit
    }

    /// The queue manager, downloads, files: answers to the core's requests.
    pub fn external(&mut self, effect: Effect, rng: &mut Xorshift64, sink: &mut AnswerSink<'_>) {
        let f = sink.faults;
        match effect {
            Effect::Pull { printer } => {
                let delay = 1 + rng.below(3);
                if sink.fault(rng, "qm_error", f.qm_error) {
                    sink.push(
                        delay,
                        Input::Pulled {
                            printer,
                            result: Err("503 service unavailable".into()),
                        },
                    );
                    return;
                }
                let job = self.queue.pop_front().map(|id| queue_job(&id));
                sink.push(
                    delay,
                    Input::Pulled {
                        printer,
                        result: Ok(job),
                    },
                );
            }
            Effect::Download { job, name, .. } => {
                let dest = PathBuf::from(format!("/spool/{name}.gcode"));
                let spec = self.specs.get(&job).copied();
                let delay = 1 + rng.below(4);
                match spec {
                    Some(s) if !s.missing_model => {
                        if sink.fault(rng, "download_error", f.download_error) {
                            sink.push(
                                0,
                                Input::DownloadRetry {
                                    job: job.clone(),
                                    reason: "connection reset".into(),
                                },
                            );
                        }
                        self.files.insert(dest.clone(), job.clone());
                        sink.push(
                            delay,
                            Input::Downloaded {
                                job,
                                result: Ok(Downloaded {
                                    path: dest,
                                    bytes: s.lines * 20,
                                    lines: s.lines,
                                    sha256: String::new(),
                                }),
                            },
                        );
                    }
                    _ => sink.push(
                        delay,
                        Input::Downloaded {
                            job,
                            result: Err("http 404 for models/missing.gcode".into()),
                        },
                    ),
                }
            }
            Effect::Scan { job, path } => {
                let spec = self
                    .files
                    .get(&path)
                    .and_then(|owner| self.specs.get(owner))
                    .copied();
                let result = match spec {
                    Some(s) if s.bad_file => Err("line 3: line too long".to_owned()),
                    Some(s) => Ok(Summary {
                        commands: s.lines,
                        bytes: s.lines * 20,
                    }),
                    None => Err(format!("cannot read {}", path.display())),
                };
                sink.push(1 + rng.below(3), Input::Scanned { job, result });
            }
            Effect::Spool { job, from, to } => {
                let result = match (self.files.contains_key(&to), self.files.remove(&from)) {
                    (true, Some(owner)) => {
                        self.files.insert(from, owner);
                        Err("file exists".to_owned())
                    }
                    (false, Some(owner)) => {
                        self.files.insert(to, owner);
                        Ok(())
                    }
                    (_, None) => Err("upload vanished".to_owned()),
                };
                sink.push(1, Input::Spooled { job, result });
            }
            Effect::RemoveFile { path } => {
                self.files.remove(&path);
            }
            Effect::AbortDownload { .. } | Effect::Status(_) => {}
            Effect::Persist { .. }
            | Effect::Printer { .. }
            | Effect::Ack(_)
            | Effect::Reply { .. }
            | Effect::Publish { .. } => {}
        }
    }
}

fn robot(printer: &str, timestamp: &str) -> RobotProgress {
    RobotProgress {
        robot_id: "rob-1".into(),
        printer_id: printer.to_owned(),
        action: "pick".into(),
        status: "completed".into(),
        timestamp: timestamp.to_owned(),
    }
}

fn queue_job(id: &str) -> QueueJob {
    QueueJob {
        id: id.to_owned(),
        model_id: id.to_owned(),
        assigned_printer_id: None,
        priority: 0,
        status: None,
        submitted_at: None,
        updated_at: None,
        filament_type: None,
        estimated_time: Some(600),
        model_url: Some(format!("models/{id}.gcode")),
        parameters: None,
        sha256: None,
    }
}
