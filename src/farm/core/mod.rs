//! The farm's decisions as a sans-IO state machine: printer reports, MQTT
//! messages, queue-manager answers, control requests, store results and the
//! time go in ([`FarmCore::handle`]); printer commands, store writes,
//! publishes, downloads and answers come out ([`FarmCore::poll_effect`]).
//! No tokio, no store, no clock, no file system: `crate::farm::driver` runs
//! it with the real parts, and `crate::farm::sim` with models under a seeded
//! simulation that checks the invariants after every step.
//!
//! Call order: `handle(now, wall, input)`, then drain `poll_effect()` and
//! execute each effect in order. Effects that have an answer
//! ([`Effect::Persist`], [`Effect::Scan`], [`Effect::Download`], …) are
//! answered later with the matching [`Input`]; other inputs may arrive in
//! between, and the core never assumes otherwise. Call `handle(.., Tick)`
//! about once a second.
//!
//! Durability rules the core keeps:
//! - a job is acknowledged (MQTT PUBACK, control reply) only after its row
//!   is durable; until then it is kept in memory and its insert retried;
//! - a printer is told to start a job only after `printing` is durable, so a
//!   crash never prints a file twice;
//! - a cancel is confirmed only once durable, and a cancelled job never starts;
//! - everything else is written optimistically: if the store fails, memory
//!   goes on and a restart recovers from the older (always safe) rows.

mod claims;
mod control;
pub mod fresh;
mod inputs;
pub mod model;
mod persist;
mod pull;
mod reports;
mod schedule;
pub mod status;
#[cfg(test)]
mod tests;

use super::messages::Messages;
use crate::control::Response;
use crate::mqtt::payload::{Assignment, CommandMsg, RobotProgress};
use crate::printer::job_file::Summary;
use crate::printer::{PrinterCommand, PrinterReport};
use crate::source::{Downloaded, QueueJob};
use crate::store::{Applied, Batch, Job as JobRow, PrinterRow};
use model::{Job, Printer};
pub use persist::PersistError;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

/// Ties an MQTT message to its PUBACK, held by the driver.
pub type AckId = u64;
/// Ties a control request to its answer channel, held by the driver.
pub type ReplyId = u64;
/// Ties a store write to its answer.
pub type OpId = u64;

/// A configured MQTT trigger: a topic that runs a macro on an idle printer.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub topic: String,
    pub printer: String,
    pub gcode: String,
    /// Where the macro's completion is announced (seed 004's chaining).
    pub complete_topic: Option<String>,
}

/// A robot and the printers whose plates it may clear (`[[robot]]`).
#[derive(Debug, Clone)]
pub struct RobotRule {
    pub id: String,
    pub printers: Vec<String>,
}

/// The farm's settings, already checked by the config layer.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    pub gateway_id: String,
    pub spool_dir: PathBuf,
    /// Every connected printer says where it stands at least this often.
    pub idle_announce: Duration,
    /// A printing printer publishes its progress this often.
    pub progress_interval: Duration,
    /// A printing job's progress is written to the store at most this often.
    pub progress_persist: Duration,
    /// Pull mode: ask the queue manager for work for free printers.
    pub pull: bool,
    pub poll_interval: Duration,
    /// Models can be fetched (a queue manager or allowed hosts are set).
    pub downloads: bool,
    /// Publish `device/printers` (pull mode: no job handler owns it).
    pub publish_printers_list: bool,
    pub timeout_factor: f64,
    pub max_job: Duration,
    pub retention: Duration,
    pub triggers: Vec<Trigger>,
    /// `None`: any robot may clear any printer.
    pub robots: Option<Vec<RobotRule>>,
    /// Robot reports and commands older than this are not acted on.
    pub max_message_age: Duration,
    /// Tolerated clock difference between the gateway and other services.
    pub clock_skew: Duration,
    /// Seeds back-off jitter (gateway id, clock): gateways do not retry in lockstep.
    pub jitter_seed: u64,
    /// A printer id claimed at this start stays silent and refuses
    /// assignments this long after the first broker connection, listening
    /// for another claimant (see `claims`). Zero: no listening.
    pub claim_listen: Duration,
}

impl CoreSettings {
    /// Defaults for tests and the simulation.
    pub fn for_tests(gateway_id: &str) -> CoreSettings {
        CoreSettings {
            gateway_id: gateway_id.to_owned(),
            spool_dir: PathBuf::from("/spool"),
            idle_announce: Duration::from_secs(10),
            progress_interval: Duration::from_secs(10),
            progress_persist: Duration::from_secs(300),
            pull: false,
            poll_interval: Duration::from_secs(5),
            downloads: true,
            publish_printers_list: false,
            timeout_factor: 3.0,
            max_job: Duration::from_secs(72 * 3600),
            retention: Duration::from_secs(168 * 3600),
            triggers: Vec::new(),
            robots: None,
            max_message_age: Duration::from_secs(120),
            clock_skew: Duration::from_secs(30),
            jitter_seed: 1,
            claim_listen: Duration::ZERO,
        }
    }
}

/// What the store held at start: every configured printer's row (or none
/// for a printer never seen) and every job that had not ended.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub printers: Vec<(String, Option<String>, Option<PrinterRow>)>,
    pub jobs: Vec<JobRow>,
}

/// A control-socket request as the core sees it.
#[derive(Debug, Clone)]
pub enum ControlRequest {
    Status,
    Ping,
    AddJob {
        printer: String,
        priority: i64,
        id: Option<String>,
        /// The uploaded file, spooled under a temporary name.
        upload: PathBuf,
    },
    CancelJob {
        job: String,
    },
    Printer {
        printer: String,
        msg: CommandMsg,
    },
}

/// Everything that reaches the core.
#[derive(Debug)]
pub enum Input {
    Report(PrinterReport),
    /// A push assignment, validated. Acknowledged once durable.
    Assignment {
        printer: String,
        assignment: Assignment,
        warnings: Vec<String>,
        ack: Option<AckId>,
    },
    Robot {
        progress: RobotProgress,
        retained: bool,
    },
    Command {
        printer: String,
        msg: CommandMsg,
        retained: bool,
        /// The dispatcher already sent `M112` out of band.
        estop_sent: bool,
        ack: Option<AckId>,
    },
    Trigger {
        topic: String,
        retained: bool,
    },
    /// An inbound message that failed validation.
    Invalid {
        printer: Option<String>,
        /// Rate-limit key (the topic kind).
        kind: String,
        problem: String,
        ack: Option<AckId>,
    },
    Control {
        req: ControlRequest,
        reply: ReplyId,
    },
    Pulled {
        printer: String,
        result: Result<Option<QueueJob>, String>,
    },
    DownloadRetry {
        job: String,
        reason: String,
    },
    Downloaded {
        job: String,
        result: Result<Downloaded, String>,
    },
    Scanned {
        job: String,
        result: Result<Summary, String>,
    },
    /// A local upload was moved to its spool name (or could not be).
    Spooled {
        job: String,
        result: Result<(), String>,
    },
    Persisted {
        op: OpId,
        result: Result<Applied, PersistError>,
    },
    /// The broker link (re)connected: last values are published again
    /// (events wait in the outbox and follow in order on their own).
    BrokerConnected,
    /// Progress for one of our printer ids from someone else.
    PeerProgress {
        printer: String,
        gateway: Option<String>,
        claimed_at: Option<SystemTime>,
    },
    /// The printer task's command channel is closed.
    PrinterGone {
        printer: String,
    },
    Tick,
    /// Stop taking jobs; printers are told to stop safely.
    Shutdown,
}

/// Everything the core asks the outside world to do.
#[derive(Debug)]
pub enum Effect {
    /// Apply in one transaction; answer with [`Input::Persisted`].
    Persist {
        op: OpId,
        batch: Batch,
    },
    /// Deliver to the printer task, reliably and in order (an
    /// `EmergencyStop` on the task's out-of-band path).
    Printer {
        printer: String,
        cmd: PrinterCommand,
    },
    /// Send the PUBACK of a stored (or rejected) message.
    Ack(AckId),
    Reply {
        id: ReplyId,
        response: Response,
    },
    /// Publish now, not stored: a last value (heartbeats, progress) or an
    /// event that could not be stored.
    Publish {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
    /// Ask the queue manager for a job; answer with [`Input::Pulled`].
    Pull {
        printer: String,
    },
    /// Fetch a model to `dest` (created exclusively); answer with
    /// [`Input::Downloaded`] (retries are the driver's, announced with
    /// [`Input::DownloadRetry`]).
    Download {
        job: String,
        url: String,
        dest: PathBuf,
        sha256: Option<String>,
    },
    AbortDownload {
        job: String,
    },
    /// Check a G-code file; answer with [`Input::Scanned`].
    Scan {
        job: String,
        path: PathBuf,
    },
    /// Move a local upload to its spool name without replacing anything;
    /// answer with [`Input::Spooled`].
    Spool {
        job: String,
        from: PathBuf,
        to: PathBuf,
    },
    RemoveFile {
        path: PathBuf,
    },
    /// A one-line state for systemd (`STATUS=`).
    Status(String),
}

/// The farm's decisions. See the module documentation.
pub struct FarmCore {
    s: CoreSettings,
    msgs: Messages,
    printers: BTreeMap<String, Printer>,
    jobs: BTreeMap<String, Job>,
    effects: VecDeque<Effect>,
    writes: persist::WriteQueue,
    next_op: OpId,
    next_order: u64,
    now: Instant,
    wall: SystemTime,
    stopping: bool,
    /// The last store failure, while writes keep failing.
    store_fault: Option<String>,
    awaiting_published: Option<Vec<String>>,
    limiter: persist::RateLimiter,
    last_purge: Instant,
    /// Local uploads being checked before their job is stored.
    local_adds: BTreeMap<String, control::LocalAdd>,
    /// The trigger (index) whose macro runs on a printer.
    running_triggers: BTreeMap<String, usize>,
    /// The retained gateway status last published (without its time).
    status_published: Option<String>,
}

impl FarmCore {
    /// Builds the core from what the store held and queues the start-up
    /// recovery: jobs caught printing become `interrupted` (never resumed:
    /// the part is in an unknown state) and their printers wait for a clear
    /// plate; interrupted downloads start over; every printer is offline
    /// until its task reports a handshake.
    pub fn new(
        settings: CoreSettings,
        msgs: Messages,
        snapshot: Snapshot,
        now: Instant,
        wall: SystemTime,
    ) -> FarmCore {
        let mut core = FarmCore {
            s: settings,
            msgs,
            printers: BTreeMap::new(),
            jobs: BTreeMap::new(),
            effects: VecDeque::new(),
            writes: persist::WriteQueue::default(),
            next_op: 1,
            next_order: 0,
            now,
            wall,
            stopping: false,
            store_fault: None,
            awaiting_published: None,
            limiter: persist::RateLimiter::default(),
            last_purge: now,
            local_adds: BTreeMap::new(),
            running_triggers: BTreeMap::new(),
            status_published: None,
        };
        core.msgs.set_time(wall);
        core.recover(snapshot);
        core
    }

    /// Feeds one input at `now` (monotonic) and `wall` (for timestamps and
    /// message ages).
    pub fn handle(&mut self, now: Instant, wall: SystemTime, input: Input) {
        self.now = now.max(self.now);
        self.wall = wall;
        self.msgs.set_time(wall);
        match input {
            Input::Report(r) => self.on_report(r),
            Input::Assignment {
                printer,
                assignment,
                warnings,
                ack,
            } => self.on_assignment(&printer, assignment, warnings, ack),
            Input::Robot { progress, retained } => self.on_robot(progress, retained),
            Input::Command {
                printer,
                msg,
                retained,
                estop_sent,
                ack,
            } => self.on_mqtt_command(&printer, &msg, retained, estop_sent, ack),
            Input::Trigger { topic, retained } => self.on_trigger(&topic, retained),
            Input::Invalid {
                printer,
                kind,
                problem,
                ack,
            } => self.on_invalid(printer.as_deref(), &kind, &problem, ack),
            Input::Control { req, reply } => self.on_control(req, reply),
            Input::Pulled { printer, result } => self.on_pulled(&printer, result),
            Input::DownloadRetry { job, reason } => self.on_download_retry(&job, &reason),
            Input::Downloaded { job, result } => self.on_downloaded(&job, result),
            Input::Scanned { job, result } => self.on_scanned(&job, result),
            Input::Spooled { job, result } => self.on_spooled(&job, result),
            Input::Persisted { op, result } => self.on_persisted(op, result),
            Input::PrinterGone { printer } => self.on_printer_gone(&printer),
            Input::BrokerConnected => {
                self.start_listening();
                for p in self.printers.values_mut() {
                    p.last_publish = None;
                }
                self.publish_periodic();
                self.publish_gateway_status(true);
            }
            Input::PeerProgress {
                printer,
                gateway,
                claimed_at,
            } => self.on_peer(&printer, gateway, claimed_at),
            Input::Tick => self.on_tick(),
            Input::Shutdown => self.on_shutdown(),
        }
        self.schedule();
        self.publish_awaiting();
    }

    /// The next thing to do, in order.
    #[must_use]
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// The printers, for status views.
    pub fn printers(&self) -> impl Iterator<Item = &Printer> {
        self.printers.values()
    }

    /// The open jobs, for status views and the simulation's checks.
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values()
    }

    /// Whether shutdown was asked for.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// Store writes not yet durable (in flight or waiting for a retry).
    pub fn pending_writes(&self) -> usize {
        self.writes_pending()
    }

    fn push(&mut self, effect: Effect) {
        self.effects.push_back(effect);
    }

    fn on_tick(&mut self) {
        self.end_listening();
        self.expire_rivals();
        self.check_time_limits();
        self.publish_periodic();
        self.pump_writes();
        self.limiter_flush();
        if self.now.saturating_duration_since(self.last_purge) >= Duration::from_secs(3600) {
            self.last_purge = self.now;
            self.purge();
        }
    }

    fn on_shutdown(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        let downloads: Vec<String> = self
            .printers
            .values()
            .filter(|p| p.phase() == Some(model::Phase::Downloading))
            .filter_map(|p| p.held_job().map(str::to_owned))
            .collect();
        for job in downloads {
            self.push(Effect::AbortDownload { job });
        }
        let ids: Vec<String> = self.printers.keys().cloned().collect();
        for printer in ids {
            self.push(Effect::Printer {
                printer,
                cmd: PrinterCommand::Shutdown,
            });
        }
    }
}
