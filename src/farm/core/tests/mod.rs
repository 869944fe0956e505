//! The farm core byte for byte, without a daemon: each test feeds inputs and
//! looks at the effects. Regression tests are named `r<issue>_<what>`, one
//! file per issue; this file is the harness they share.

pub(super) use super::model::Phase;
pub(super) use super::*;
pub(super) use crate::lifecycle::{JobState, PrinterState};
pub(super) use crate::mqtt::payload::{rfc3339, Assignment, Command, CommandMsg, RobotProgress};
use crate::mqtt::topics::Topics;
use crate::printer::job_file::Summary;
pub(super) use crate::printer::{
    JobOutcome, JobProgress, PrinterCommand, PrinterReport, ReportKind,
};
use crate::protocol::{Firmware, Stats};
pub(super) use crate::store::{Applied, Batch, OutboxItem, Write};
pub(super) use serde_json::Value;
pub(super) use std::time::{Duration, SystemTime};

/// A core with printers `p1`, `p2` and a store that answers every write at
/// once (or fails while `store_down`).
struct H {
    core: FarmCore,
    t0: Instant,
    secs: u64,
    store_down: bool,
    /// Every batch the store applied, in order.
    applied: Vec<Batch>,
    /// Every other effect, in order.
    out: Vec<Effect>,
}

impl H {
    fn new() -> H {
        H::with(|_| {})
    }

    fn with(tune: impl FnOnce(&mut CoreSettings)) -> H {
        let mut s = CoreSettings::for_tests("gw");
        tune(&mut s);
        let snapshot = Snapshot {
            printers: vec![("p1".into(), None, None), ("p2".into(), None, None)],
            jobs: Vec::new(),
            identities: Vec::new(),
        };
        H::start(s, snapshot)
    }

    /// A core started from `snapshot` (a restart).
    fn start(s: CoreSettings, snapshot: Snapshot) -> H {
        let t0 = Instant::now();
        let wall = base();
        let core = FarmCore::new(
            s,
            Messages::new(Some(Topics::new("gw"))),
            snapshot,
            t0,
            wall,
        );
        let mut h = H {
            core,
            t0,
            secs: 0,
            store_down: false,
            applied: Vec::new(),
            out: Vec::new(),
        };
        h.drain();
        h
    }

    fn wall(&self) -> SystemTime {
        base() + Duration::from_secs(self.secs)
    }

    fn feed(&mut self, input: Input) {
        let now = self.t0 + Duration::from_secs(self.secs);
        self.core.handle(now, self.wall(), input);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(e) = self.core.poll_effect() {
            match e {
                Effect::Persist { op, batch } => {
                    let result = if self.store_down {
                        Err(PersistError {
                            message: "disk full".into(),
                            retry: true,
                        })
                    } else {
                        let dup = batch.writes.iter().any(|w| match w {
                            Write::AddJob(j) => self.applied.iter().any(|b| {
                                b.writes
                                    .iter()
                                    .any(|x| matches!(x, Write::AddJob(k) if k.id == j.id))
                            }),
                            _ => false,
                        });
                        if dup {
                            Ok(Applied::Duplicate)
                        } else {
                            self.applied.push(batch);
                            Ok(Applied::Done)
                        }
                    };
                    let now = self.t0 + Duration::from_secs(self.secs);
                    self.core
                        .handle(now, self.wall(), Input::Persisted { op, result });
                }
                other => self.out.push(other),
            }
        }
    }

    fn tick(&mut self, secs: u64) {
        self.secs += secs;
        self.feed(Input::Tick);
    }

    fn report(&mut self, printer: &str, kind: ReportKind) {
        self.feed(Input::Report(PrinterReport {
            printer: printer.into(),
            kind,
        }));
    }

    fn connect(&mut self, printer: &str) {
        self.report(printer, ReportKind::Connected(Firmware::default()));
    }

    /// Connected with a plate an operator confirmed clear.
    fn ready(&mut self, printer: &str) {
        self.connect(printer);
        self.command(printer, Command::ClearPlate, None);
    }

    fn command(&mut self, printer: &str, command: Command, job: Option<&str>) {
        self.command_msg(printer, command, job, false, Some(rfc3339(self.wall())));
    }

    fn command_msg(
        &mut self,
        printer: &str,
        command: Command,
        job: Option<&str>,
        retained: bool,
        timestamp: Option<String>,
    ) {
        self.feed(Input::Command {
            printer: printer.into(),
            msg: CommandMsg {
                command,
                job_id: job.map(Into::into),
                timestamp,
                choice: None,
            },
            retained,
            estop_sent: false,
            ack: None,
        });
    }

    fn assign(&mut self, printer: &str, job: &str, ack: AckId) {
        self.feed(Input::Assignment {
            printer: printer.into(),
            assignment: assignment(job),
            warnings: Vec::new(),
            ack: Some(ack),
        });
    }

    fn take(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.out)
    }

    /// The last download, file check or start asked for.
    fn last_download(&mut self) -> Option<(String, std::path::PathBuf)> {
        self.out.iter().rev().find_map(|e| match e {
            Effect::Download { job, name, .. } => Some((
                job.clone(),
                std::path::PathBuf::from(format!("/spool/{name}.gcode")),
            )),
            _ => None,
        })
    }

    fn downloaded(&mut self, job: &str, dest: std::path::PathBuf) {
        self.feed(Input::Downloaded {
            job: job.into(),
            result: Ok(crate::source::Downloaded {
                path: dest,
                bytes: 100,
                lines: 10,
                sha256: String::new(),
            }),
        });
    }

    fn scanned(&mut self, job: &str) {
        self.feed(Input::Scanned {
            job: job.into(),
            result: Ok(Summary {
                commands: 10,
                bytes: 100,
            }),
        });
    }

    /// Assignment → download → check → start on `printer`.
    fn print(&mut self, printer: &str, job: &str) {
        self.assign(printer, job, 900);
        let (j, dest) = self.last_download().expect("a download");
        assert_eq!(j, job);
        self.downloaded(job, dest);
        self.scanned(job);
        assert!(self.started(printer, job), "{job} did not start");
        self.report(printer, ReportKind::JobStarted { job_id: job.into() });
    }

    fn started(&self, printer: &str, job: &str) -> bool {
        self.out.iter().any(|e| {
            matches!(e, Effect::Printer { printer: p, cmd: PrinterCommand::StartJob { job_id, .. } }
                if p == printer && job_id == job)
        })
    }

    fn finish(&mut self, printer: &str, job: &str, outcome: JobOutcome, sent: u64) {
        self.report(
            printer,
            ReportKind::JobFinished {
                job_id: job.into(),
                outcome,
                progress: JobProgress {
                    lines_done: sent,
                    lines_total: 10,
                    lines_sent: sent,
                    percent: sent as f64 * 10.0,
                },
                stats: Stats {
                    lines_sent: sent,
                    ..Stats::default()
                },
            },
        );
    }

    /// Every message published or stored for the broker, in order.
    fn messages(&self) -> Vec<(String, Value)> {
        let stored = self.applied.iter().flat_map(|b| b.outbox.iter());
        let mut out: Vec<(String, Value)> = stored.map(json_of).collect();
        for e in &self.out {
            if let Effect::Publish { topic, payload, .. } = e {
                out.push((
                    topic.clone(),
                    serde_json::from_slice(payload).unwrap_or_default(),
                ));
            }
        }
        out
    }

    fn last_progress(&self, printer: &str) -> Value {
        let topic = format!("device/printer/{printer}/progress");
        let stored: Vec<(String, Value)> = self
            .applied
            .iter()
            .flat_map(|b| b.outbox.iter())
            .map(json_of)
            .filter(|(t, _)| *t == topic)
            .collect();
        stored.last().map(|(_, v)| v.clone()).unwrap_or_default()
    }

    fn events(&self, kind: &str) -> Vec<Value> {
        self.messages()
            .into_iter()
            .filter(|(t, v)| t.ends_with("/event") && v["type"] == kind)
            .map(|(_, v)| v)
            .collect()
    }

    fn acks(&self) -> Vec<AckId> {
        self.out
            .iter()
            .filter_map(|e| match e {
                Effect::Ack(a) => Some(*a),
                _ => None,
            })
            .collect()
    }

    fn held(&self, printer: &str) -> Option<(String, Phase)> {
        self.core
            .printers()
            .find(|p| p.id == printer)
            .and_then(|p| p.held.as_ref().map(|h| (h.job.clone(), h.phase)))
    }

    /// The last retained gateway status published.
    fn gateway_status(&self) -> Option<Value> {
        self.out.iter().rev().find_map(|e| match e {
            Effect::Publish {
                topic,
                payload,
                retain: true,
            } if topic == "device/gateway/gw/status" => serde_json::from_slice(payload).ok(),
            _ => None,
        })
    }

    fn state(&self, printer: &str) -> PrinterState {
        self.core
            .printers()
            .find(|p| p.id == printer)
            .map(|p| p.state)
            .unwrap_or(PrinterState::Offline)
    }
}

/// The harness's wall clock starts here (2025-06-15).
/// Another gateway heard claiming printer id `p1`.
fn peer(h: &mut H, gateway: &str, claimed_at: SystemTime) {
    h.feed(Input::PeerProgress {
        printer: "p1".into(),
        gateway: Some(gateway.into()),
        claimed_at: Some(claimed_at),
    });
}

fn base() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_749_976_200)
}

fn json_of(item: &OutboxItem) -> (String, Value) {
    (
        item.topic.clone(),
        serde_json::from_slice(&item.payload).unwrap_or_default(),
    )
}

fn assignment(job: &str) -> Assignment {
    Assignment {
        job_id: job.into(),
        model_url: format!("models/{job}.gcode"),
        filament_type: None,
        estimated_time: Some(600),
        priority: None,
        assigned_at: None,
        parameters: None,
        sha256: None,
    }
}

fn robot(printer: &str, robot: &str, at: SystemTime) -> RobotProgress {
    RobotProgress {
        robot_id: robot.into(),
        printer_id: printer.into(),
        action: "pick".into(),
        status: "completed".into(),
        timestamp: rfc3339(at),
    }
}

fn wire(v: &Value) -> (String, u64, Value, String) {
    (
        v["status"].as_str().unwrap_or("").to_owned(),
        v["progress"].as_u64().unwrap_or(999),
        v["jobId"].clone(),
        v["state"].as_str().unwrap_or("").to_owned(),
    )
}

mod r11;
mod r12;
mod r13;
mod r14;
mod r14_identity;
mod r16;

mod claims;
mod recover;
