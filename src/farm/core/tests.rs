//! The farm core byte for byte, without a daemon: each test feeds inputs and
//! looks at the effects. Regression tests are named `r<issue>_<what>`.

use super::model::Phase;
use super::*;
use crate::lifecycle::{JobState, PrinterState};
use crate::mqtt::payload::{rfc3339, Command, CommandMsg, RobotProgress};
use crate::mqtt::topics::Topics;
use crate::printer::{JobOutcome, JobProgress, PrinterReport, ReportKind};
use crate::protocol::{Firmware, Stats};
use crate::store::{Applied, Batch, OutboxItem, Write};
use serde_json::Value;

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
        };
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
            Effect::Download { job, dest, .. } => Some((job.clone(), dest.clone())),
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

    fn state(&self, printer: &str) -> PrinterState {
        self.core
            .printers()
            .find(|p| p.id == printer)
            .map(|p| p.state)
            .unwrap_or(PrinterState::Offline)
    }
}

/// The harness's wall clock starts here (2025-06-15).
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

// ---- issue 11: the seed's vocabulary, push-only, commands naming their job

#[test]
fn r11_the_handler_sees_busy_while_a_job_downloads_and_idle_100_when_it_ends() {
    let mut h = H::new();
    h.ready("p1");
    assert_eq!(
        wire(&h.last_progress("p1")),
        ("idle".into(), 0, Value::Null, "idle".into())
    );
    h.assign("p1", "j1", 1);
    // Downloading: busy, with the job (a handler must not assign again).
    assert_eq!(
        wire(&h.last_progress("p1")),
        ("printing".into(), 0, "j1".into(), "downloading".into())
    );
    h.tick(10);
    let beat = h
        .messages()
        .into_iter()
        .rev()
        .find(|(t, _)| t.ends_with("p1/progress"));
    assert_eq!(
        beat.map(|(_, v)| v["status"].clone()),
        Some("printing".into())
    );
    let (_, dest) = h.last_download().unwrap();
    h.downloaded("j1", dest);
    h.scanned("j1");
    h.report(
        "p1",
        ReportKind::JobStarted {
            job_id: "j1".into(),
        },
    );
    h.finish("p1", "j1", JobOutcome::Completed, 10);
    // The seed's completion signal, repeated until the plate is clear.
    let done = h.last_progress("p1");
    assert_eq!(
        wire(&done),
        ("idle".into(), 100, "j1".into(), "awaiting_clear".into())
    );
    assert_eq!(done["outcome"], "completed");
    assert_eq!(done["gatewayId"], "gw");
    h.tick(11);
    let beat = h
        .messages()
        .into_iter()
        .rev()
        .find(|(t, _)| t.ends_with("p1/progress"));
    let beat = beat.map(|(_, v)| wire(&v));
    assert_eq!(
        beat,
        Some(("idle".into(), 100, "j1".into(), "awaiting_clear".into()))
    );
    // job_complete for every outcome.
    let topics: Vec<String> = h.messages().into_iter().map(|(t, _)| t).collect();
    assert!(topics.contains(&"device/printer/p1/job_complete/j1".to_owned()));
    // The robot clears: idle, 0, no job.
    h.feed(Input::Robot {
        progress: robot("p1", "rob-1", h.wall()),
        retained: false,
    });
    assert_eq!(
        wire(&h.last_progress("p1")),
        ("idle".into(), 0, Value::Null, "idle".into())
    );
}

#[test]
fn r11_a_failed_download_leaves_the_plate_clear_and_the_printer_idle() {
    let mut h = H::new();
    h.ready("p1");
    h.assign("p1", "j1", 1);
    h.feed(Input::Downloaded {
        job: "j1".into(),
        result: Err("http 404".into()),
    });
    assert_eq!(
        wire(&h.last_progress("p1")),
        ("idle".into(), 0, Value::Null, "idle".into())
    );
    let complete: Vec<(String, Value)> = h
        .messages()
        .into_iter()
        .filter(|(t, _)| t.ends_with("job_complete/j1"))
        .collect();
    assert_eq!(complete.len(), 1);
    assert_eq!(complete[0].1["outcome"], "failed");
    assert_eq!(h.state("p1"), PrinterState::Idle);
}

#[test]
fn r11_cancel_naming_another_printers_job_is_rejected() {
    let mut h = H::new();
    h.ready("p1");
    h.ready("p2");
    h.print("p1", "j1");
    h.assign("p2", "j2", 2);
    h.take();
    // On p1's topic, naming p2's job: refused, nothing cancelled.
    h.command("p1", Command::Cancel, Some("j2"));
    let rejected = h.events("command_rejected");
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0]["message"]
        .as_str()
        .unwrap()
        .contains("not printing"));
    assert!(h
        .take()
        .iter()
        .all(|e| !matches!(e, Effect::Printer { .. })));
    assert!(h.core.jobs().any(|j| j.id == "j2" && j.stop.is_none()));
    // Naming p1's own job: cancelled on the printer.
    h.command("p1", Command::Cancel, Some("j1"));
    assert!(h.take().iter().any(|e| matches!(
        e,
        Effect::Printer { printer, cmd: PrinterCommand::Cancel } if printer == "p1"
    )));
    // Without a job id: whatever p2 holds (its download) is cancelled.
    h.command("p2", Command::Cancel, None);
    assert!(h
        .take()
        .iter()
        .any(|e| matches!(e, Effect::AbortDownload { job } if job == "j2")));
}

#[test]
fn r11_device_printers_only_when_this_gateway_owns_it() {
    for owns in [false, true] {
        let mut h = H::with(|s| s.publish_printers_list = owns);
        h.connect("p1");
        let lists = h
            .messages()
            .iter()
            .filter(|(t, _)| t == "device/printers")
            .count();
        assert_eq!(lists > 0, owns, "publish_printers_list = {owns}");
    }
}

#[test]
fn r11_gateway_events_go_to_the_gateways_own_topic() {
    let mut h = H::new();
    h.feed(Input::Invalid {
        printer: None,
        kind: "robot".into(),
        problem: "device/robot/x/progress: invalid json".into(),
        ack: Some(5),
    });
    let topics: Vec<String> = h.messages().into_iter().map(|(t, _)| t).collect();
    assert!(
        topics.contains(&"device/gateway/gw/event".to_owned()),
        "{topics:?}"
    );
    assert!(!topics.iter().any(|t| t.contains("printer/gateway")));
    assert_eq!(h.acks(), [5]);
}

// ---- issue 12: the defects found by reading

/// #1: a printer that drops while its job's file is checked is not left
/// blocked with a job stuck in `printing`.
#[test]
fn r12_1_a_printer_dropping_during_the_file_check_is_not_blocked() {
    let mut h = H::new();
    h.ready("p1");
    h.assign("p1", "j1", 1);
    let (_, dest) = h.last_download().unwrap();
    h.downloaded("j1", dest);
    h.report(
        "p1",
        ReportKind::Offline {
            reason: "unplugged".into(),
        },
    );
    h.scanned("j1");
    assert!(!h.started("p1", "j1"), "started on an offline printer");
    assert_eq!(h.held("p1"), None);
    assert!(h
        .core
        .jobs()
        .any(|j| j.id == "j1" && j.state == JobState::Ready));
    // Back: the same job starts (nothing was printed, the plate is clear).
    h.connect("p1");
    h.scanned("j1");
    assert!(h.started("p1", "j1"));
}

/// #1 (the other half): a start the printer refuses puts the job back.
#[test]
fn r12_1_a_refused_start_requeues_the_job() {
    let mut h = H::new();
    h.ready("p1");
    h.print("p1", "j0");
    h.finish("p1", "j0", JobOutcome::Completed, 10);
    h.command("p1", Command::ClearPlate, None);
    h.assign("p1", "j1", 1);
    let (_, dest) = h.last_download().unwrap();
    h.downloaded("j1", dest);
    h.scanned("j1");
    assert!(h.started("p1", "j1"));
    h.report(
        "p1",
        ReportKind::Rejected {
            reason: "printer is offline".into(),
            job_id: Some("j1".into()),
        },
    );
    // Back to ready, the printer idle, and the job is scheduled again.
    assert!(h
        .core
        .jobs()
        .any(|j| j.id == "j1" && j.state == JobState::Ready));
    assert_eq!(h.state("p1"), PrinterState::Idle);
    assert_eq!(h.held("p1"), Some(("j1".into(), Phase::Scanning)));
}

/// #3: no estimate, however absurd, panics or disarms the time limit.
#[test]
fn r12_3_absurd_estimates_never_panic() {
    let mut h = H::with(|s| s.timeout_factor = 100.0);
    h.ready("p1");
    let mut a = assignment("j1");
    a.estimated_time = Some(u64::MAX);
    h.feed(Input::Assignment {
        printer: "p1".into(),
        assignment: a,
        warnings: Vec::new(),
        ack: None,
    });
    let (_, dest) = h.last_download().unwrap();
    h.downloaded("j1", dest);
    h.scanned("j1");
    assert!(h.started("p1", "j1"));
    let deadline = h
        .core
        .printers()
        .find(|p| p.id == "p1")
        .and_then(|p| p.held.as_ref())
        .and_then(|h| h.deadline);
    assert!(deadline.is_some());
}

/// #9: no acknowledgement without a durable row; the insert is retried.
#[test]
fn r12_9_no_ack_before_the_job_is_stored() {
    let mut h = H::new();
    h.ready("p1");
    h.store_down = true;
    h.assign("p1", "j1", 7);
    assert!(h.acks().is_empty(), "acked while the store fails");
    assert!(h
        .out
        .iter()
        .any(|e| matches!(e, Effect::Status(s) if s.contains("store failing"))));
    h.tick(1);
    assert!(h.acks().is_empty());
    h.store_down = false;
    h.tick(2);
    assert_eq!(h.acks(), [7]);
    // And it prints.
    assert!(h.last_download().is_some());
}

/// #11: the time-limit cancel is sent again while the job has not ended.
#[test]
fn r12_11_the_time_limit_keeps_cancelling_until_the_job_ends() {
    let mut h = H::new();
    h.ready("p1");
    let mut a = assignment("j1");
    a.estimated_time = Some(1);
    h.feed(Input::Assignment {
        printer: "p1".into(),
        assignment: a,
        warnings: Vec::new(),
        ack: None,
    });
    let (_, dest) = h.last_download().unwrap();
    h.downloaded("j1", dest);
    h.scanned("j1");
    h.take();
    let cancels = |h: &mut H| {
        h.take()
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Effect::Printer {
                        cmd: PrinterCommand::Cancel,
                        ..
                    }
                )
            })
            .count()
    };
    h.tick(4);
    assert_eq!(cancels(&mut h), 1);
    h.tick(10);
    assert_eq!(cancels(&mut h), 0, "re-sent too soon");
    h.tick(25);
    assert_eq!(cancels(&mut h), 1, "the lost cancel was not re-sent");
    assert_eq!(h.events("job_timeout").len(), 1);
}

/// #13: the plate flag goes down in the very write that says printing.
#[test]
fn r12_13_the_printing_write_clears_the_plate_flag() {
    let mut h = H::new();
    h.ready("p1");
    h.print("p1", "j1");
    let printing = h.applied.iter().flat_map(|b| b.writes.iter()).find(|w| {
        matches!(
            w,
            Write::Printer {
                state: PrinterState::Printing,
                ..
            }
        )
    });
    assert!(
        matches!(
            printing,
            Some(Write::Printer {
                plate_clear: Some(false),
                ..
            })
        ),
        "{printing:?}"
    );
}

/// A start refused because the connection changed (the task counts its
/// losses) is decided again on the new connection, never run behind the
/// farm's back.
#[test]
fn r12_a_start_from_before_a_printer_loss_is_settled_by_the_task() {
    let mut h = H::new();
    h.ready("p1");
    h.assign("p1", "j1", 1);
    let (_, dest) = h.last_download().unwrap();
    h.downloaded("j1", dest);
    h.scanned("j1");
    let session = h.out.iter().find_map(|e| match e {
        Effect::Printer {
            cmd: PrinterCommand::StartJob { session, .. },
            ..
        } => Some(*session),
        _ => None,
    });
    assert_eq!(session, Some(0));
    h.report(
        "p1",
        ReportKind::Fault {
            reason: "reset".into(),
        },
    );
    // The start is still in flight: not ended by the core on its own.
    assert_eq!(h.held("p1").map(|(j, _)| j), Some("j1".into()));
    h.connect("p1");
    h.report(
        "p1",
        ReportKind::Rejected {
            reason: "the connection changed".into(),
            job_id: Some("j1".into()),
        },
    );
    assert_eq!(h.held("p1"), None);
    // After a fault the plate is asked for again, then the job restarts.
    assert_eq!(h.state("p1"), PrinterState::AwaitingClear);
    h.take();
    h.command("p1", Command::ClearPlate, None);
    h.scanned("j1");
    let again = h.take().into_iter().find_map(|e| match e {
        Effect::Printer {
            cmd: PrinterCommand::StartJob { session, .. },
            ..
        } => Some(session),
        _ => None,
    });
    assert_eq!(again, Some(1));
}

// ---- issue 13: stale, retained and unauthorised messages

#[test]
fn r13_retained_stale_and_foreign_robot_reports_never_clear_a_plate() {
    let mut h = H::with(|s| {
        s.robots = Some(vec![RobotRule {
            id: "rob-1".into(),
            printers: vec!["p1".into()],
        }])
    });
    h.secs = 10_000;
    h.connect("p1");
    assert_eq!(h.state("p1"), PrinterState::AwaitingClear);
    let now = h.wall();
    let cases = [
        (robot("p1", "rob-1", now), true, "retained"),
        (
            robot("p1", "rob-1", now - Duration::from_secs(3600)),
            false,
            "stale",
        ),
        (
            robot("p1", "rob-1", now + Duration::from_secs(3600)),
            false,
            "future",
        ),
        (robot("p1", "rob-9", now), false, "not allowed"),
    ];
    for (r, retained, why) in cases {
        h.feed(Input::Robot {
            progress: r,
            retained,
        });
        assert_eq!(h.state("p1"), PrinterState::AwaitingClear, "{why}");
    }
    // A report from before this plate started waiting is about an earlier print.
    h.feed(Input::Robot {
        progress: robot("p1", "rob-1", now - Duration::from_secs(100)),
        retained: false,
    });
    assert_eq!(h.state("p1"), PrinterState::AwaitingClear, "predates");
    h.feed(Input::Robot {
        progress: robot("p1", "rob-1", now),
        retained: false,
    });
    assert_eq!(h.state("p1"), PrinterState::Idle);
}

#[test]
fn r13_retained_or_stale_emergency_stops_never_fire() {
    let mut h = H::new();
    h.secs = 10_000;
    h.ready("p1");
    h.take();
    let old = Some(rfc3339(h.wall() - Duration::from_secs(3600)));
    h.command_msg("p1", Command::EmergencyStop, None, true, None);
    h.command_msg("p1", Command::EmergencyStop, None, false, old);
    assert!(
        !h.take().iter().any(|e| matches!(
            e,
            Effect::Printer {
                cmd: PrinterCommand::EmergencyStop,
                ..
            }
        )),
        "a replayed e-stop fired"
    );
    assert_eq!(h.events("command_rejected").len(), 2);
    h.command("p1", Command::EmergencyStop, None);
    assert!(h.take().iter().any(|e| matches!(
        e,
        Effect::Printer {
            cmd: PrinterCommand::EmergencyStop,
            ..
        }
    )));
}

// ---- issue 16: farm-unique printer ids

fn peer(h: &mut H, gateway: &str, claimed_at: SystemTime) {
    h.feed(Input::PeerProgress {
        printer: "p1".into(),
        gateway: Some(gateway.into()),
        claimed_at: Some(claimed_at),
    });
}

fn claim_of(h: &H) -> SystemTime {
    h.core
        .printers()
        .find(|p| p.id == "p1")
        .map(|p| p.claimed_at)
        .unwrap()
}

#[test]
fn r16_the_earlier_claimant_keeps_serving_and_says_so() {
    let mut h = H::new();
    h.ready("p1");
    let later = claim_of(&h) + Duration::from_secs(60);
    peer(&mut h, "gw-07", later);
    let errors: Vec<Value> = h
        .messages()
        .into_iter()
        .filter(|(t, v)| t == "device/gateway/gw/event" && v["type"] == "error")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let text = errors[0]["message"].as_str().unwrap();
    assert!(
        text.contains("printer id p1 is also claimed by gateway gw-07"),
        "{text}"
    );
    assert!(text.contains("keeps serving"), "{text}");
    h.assign("p1", "j1", 1);
    assert_eq!(h.acks(), [1]);
    assert!(
        h.last_download().is_some(),
        "the earlier claimant keeps serving"
    );
    // Hearing it again is not news.
    peer(&mut h, "gw-07", later);
    assert_eq!(h.events("error").len(), 1, "reported once");
}

#[test]
fn r16_a_later_claim_yields_until_the_other_claimant_is_gone() {
    let mut h = H::new();
    h.ready("p1");
    let earlier = claim_of(&h) - Duration::from_secs(3600);
    peer(&mut h, "gw-07", earlier);
    h.assign("p1", "j1", 3);
    // Refused (and acknowledged: the other gateway takes it), with the event
    // on this gateway's own topic.
    assert_eq!(h.acks(), [3]);
    assert!(h.last_download().is_none());
    let refused: Vec<(String, Value)> = h
        .messages()
        .into_iter()
        .filter(|(_, v)| v["type"] == "assignment_rejected")
        .collect();
    assert_eq!(refused.len(), 1, "{:?}", h.messages());
    assert_eq!(refused[0].0, "device/gateway/gw/event");
    assert!(refused[0].1["message"].as_str().unwrap().contains("gw-07"));
    // Silent about p1 meanwhile: no progress for it from this gateway.
    let count = |h: &H| {
        h.messages()
            .iter()
            .filter(|(t, _)| t == "device/printer/p1/progress")
            .count()
    };
    let mark = count(&h);
    h.tick(10);
    peer(&mut h, "gw-07", earlier);
    h.tick(10);
    assert_eq!(count(&h), mark, "published for an id it yields");
    // The retained gateway status names the conflict.
    let status = h
        .out
        .iter()
        .rev()
        .find_map(|e| match e {
            Effect::Publish {
                topic,
                payload,
                retain: true,
            } if topic == "device/gateway/gw/status" => {
                serde_json::from_slice::<Value>(payload).ok()
            }
            _ => None,
        })
        .expect("a retained status");
    assert_eq!(status["conflicts"]["p1"]["gateway"], "gw-07");
    assert_eq!(status["gatewayId"], "gw");
    // The other claimant goes quiet: after three heartbeat intervals the id
    // is served here again.
    h.tick(31);
    assert_eq!(h.events("claim_resolved").len(), 1, "the conflict is gone");
    h.assign("p1", "j2", 4);
    assert!(h.last_download().is_some_and(|(j, _)| j == "j2"));
}

#[path = "claims_tests.rs"]
mod claims_tests;

#[path = "recover_tests.rs"]
mod recover_tests;
