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

mod accept;
mod claims;
mod commands;
mod control;
pub mod fresh;
mod identity;
mod inputs;
mod io;
pub mod model;
mod persist;
mod pull;
mod recovery;
mod reports;
mod schedule;
mod settings;
pub mod status;
#[cfg(test)]
mod tests;
mod writes;

use super::messages::Messages;
use crate::printer::PrinterCommand;
pub use io::{ControlRequest, Effect, Input};
use model::{Job, Printer};
pub use settings::{CoreSettings, RobotRule, Snapshot, Trigger};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};
pub use writes::PersistError;

/// Ties an MQTT message to its PUBACK, held by the driver.
pub type AckId = u64;
/// Ties a control request to its answer channel, held by the driver.
pub type ReplyId = u64;
/// Ties a store write to its answer.
pub type OpId = u64;

/// The farm's decisions. See the module documentation.
pub struct FarmCore {
    s: CoreSettings,
    msgs: Messages,
    printers: BTreeMap<String, Printer>,
    jobs: BTreeMap<String, Job>,
    effects: VecDeque<Effect>,
    writes: writes::WriteQueue,
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
            writes: writes::WriteQueue::default(),
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
