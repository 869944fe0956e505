//! The supervisor: the one place that decides. It owns the in-memory view
//! of every printer, applies the job and printer state machines (through the
//! store, which checks every transition and writes the announcing outbox row
//! in the same transaction), enforces the plate-clear gate, and schedules
//! jobs onto printers. It never blocks: the store answers over channels and
//! HTTP runs on blocking threads.

mod inputs;
mod jobs;
pub mod messages;
mod pull;
mod reports;
#[cfg(test)]
mod tests;

use crate::lifecycle::PrinterState;
use crate::mqtt::payload::{Assignment, CommandMsg, RobotProgress};
use crate::printer::{PrinterCommand, PrinterReport, ReportKind};
use crate::protocol::Temps;
use crate::source::{Downloaded, QueueClient, QueueJob};
use crate::store::Store;
use log::{error, info, warn};
use messages::{Messages, ProgressView};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch, Notify};

/// Everything that reaches the farm from outside the printer tasks.
pub enum FarmInput {
    /// Push mode; `ack` is called once the job is durably stored.
    Assignment {
        printer: String,
        assignment: Assignment,
        ack: Option<Box<dyn FnOnce() + Send>>,
    },
    Robot(RobotProgress),
    Command {
        printer: String,
        msg: CommandMsg,
    },
    Trigger {
        topic: String,
    },
    /// An inbound message that failed validation: reported, nothing changes.
    Invalid {
        printer: Option<String>,
        problem: String,
    },
    /// From the control socket; `upload` is the spooled file of `AddJob`.
    Control {
        req: control::Request,
        upload: Option<PathBuf>,
        reply: oneshot::Sender<control::Response>,
    },
    Pulled {
        printer: String,
        result: Result<Option<QueueJob>, String>,
    },
    Downloaded {
        printer: String,
        job_id: String,
        result: Result<Downloaded, String>,
    },
    /// A model download failed and will be tried again.
    DownloadRetry {
        printer: String,
        job_id: String,
        reason: String,
    },
}

pub use crate::control;

/// One configured printer as the farm sees it.
pub struct Slot {
    pub id: String,
    pub filament: Option<String>,
    pub commands: mpsc::Sender<PrinterCommand>,
    pub state: PrinterState,
    pub plate_clear: bool,
    pub connected: bool,
    /// The job printing (or paused) on it.
    pub job: Option<String>,
    /// A job being downloaded for it: the printer is spoken for.
    pub reserved: Option<String>,
    pub temps: Temps,
    pub percent: f64,
    pub lines: Option<(u64, u64)>,
    pub job_deadline: Option<Instant>,
    pub last_announce: Option<Instant>,
    pub pull_in_flight: bool,
    pub next_pull: Option<Instant>,
    /// Back-off and log-once state of failing polls.
    pub pull_errors: PullErrors,
    /// The link's protocol counters, summed over finished jobs.
    pub link: control::LinkCounters,
}

impl Slot {
    /// A printer as the store last saw it, not yet connected.
    pub fn new(
        id: String,
        filament: Option<String>,
        commands: mpsc::Sender<PrinterCommand>,
        state: PrinterState,
        plate_clear: bool,
    ) -> Slot {
        Slot {
            id,
            filament,
            commands,
            state,
            plate_clear,
            connected: false,
            job: None,
            reserved: None,
            temps: Temps::default(),
            percent: 0.0,
            lines: None,
            job_deadline: None,
            last_announce: None,
            pull_in_flight: false,
            next_pull: None,
            pull_errors: PullErrors::default(),
            link: control::LinkCounters::default(),
        }
    }
}

/// Failing polls of one printer: exponential back-off with jitter from the
/// poll interval up to a minute, and one log line and event per streak.
#[derive(Debug, Default)]
pub struct PullErrors {
    backoff: Option<crate::backoff::Backoff>,
    streak: crate::backoff::ErrorStreak,
}

impl PullErrors {
    /// Records a failed poll: the delay before the next one, and whether
    /// this failure starts a streak (or changes its message) and is reported.
    pub fn failed(&mut self, interval: Duration, reason: &str, seed: u64) -> (Duration, bool) {
        let backoff = self.backoff.get_or_insert_with(|| {
            let max = Duration::from_secs(60).max(interval);
            crate::backoff::Backoff::new(interval, max, 0.2, seed)
        });
        (backoff.next_delay(), self.streak.failed(reason))
    }

    /// Records an answer; returns how many polls had failed before it.
    pub fn succeeded(&mut self) -> u64 {
        if let Some(b) = &mut self.backoff {
            b.reset();
        }
        self.streak.succeeded()
    }
}

pub struct Trigger {
    pub topic: String,
    pub printer: String,
    pub gcode: String,
}

pub struct FarmSettings {
    pub spool_dir: PathBuf,
    pub idle_announce: Duration,
    pub poll_interval: Duration,
    pub timeout_factor: f64,
    pub max_job: Duration,
    pub retention: Duration,
    pub max_download_retries: u32,
    pub triggers: Vec<Trigger>,
}

pub struct Farm {
    pub(crate) settings: FarmSettings,
    pub(crate) store: Store,
    pub(crate) msgs: Messages,
    pub(crate) slots: BTreeMap<String, Slot>,
    pub(crate) queue: Option<Arc<QueueClient>>,
    /// Wakes the outbox pump after a write that queued a message.
    pub(crate) outbox_ready: Arc<Notify>,
    /// Heartbeats that are not worth a disk write (QoS 0, dropped offline).
    pub(crate) volatile: Option<mpsc::Sender<(String, Vec<u8>, bool)>>,
    pub(crate) inputs_tx: mpsc::Sender<FarmInput>,
    pub(crate) awaiting_published: Vec<String>,
    pub(crate) last_purge: Instant,
    pub(crate) stopping: bool,
}

impl Farm {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: FarmSettings,
        store: Store,
        msgs: Messages,
        slots: Vec<Slot>,
        queue: Option<Arc<QueueClient>>,
        outbox_ready: Arc<Notify>,
        volatile: Option<mpsc::Sender<(String, Vec<u8>, bool)>>,
        inputs_tx: mpsc::Sender<FarmInput>,
    ) -> Self {
        Farm {
            settings,
            store,
            msgs,
            slots: slots.into_iter().map(|s| (s.id.clone(), s)).collect(),
            queue,
            outbox_ready,
            volatile,
            inputs_tx,
            awaiting_published: Vec::new(),
            last_purge: Instant::now(),
            stopping: false,
        }
    }

    /// Runs until `shutdown` turns true, then stops every printer safely
    /// (a print in progress is interrupted, heaters off) and returns.
    pub async fn run(
        mut self,
        mut reports: mpsc::Receiver<PrinterReport>,
        mut inputs: mpsc::Receiver<FarmInput>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Plates left waiting by the previous run (a print the restart
        // interrupted, a robot that never came): robots act on this list.
        self.publish_awaiting().await;
        loop {
            tokio::select! {
                Some(report) = reports.recv() => self.on_report(report).await,
                Some(input) = inputs.recv() => self.on_input(input).await,
                _ = tick.tick() => self.on_tick().await,
                changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { break },
            }
        }
        self.shut_down(&mut reports).await;
    }

    async fn shut_down(&mut self, reports: &mut mpsc::Receiver<PrinterReport>) {
        self.stopping = true;
        info!("stopping: no new jobs; leaving printers safe");
        for slot in self.slots.values() {
            let _ = slot.commands.send(PrinterCommand::Shutdown).await;
        }
        let mut running = self.slots.len();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while running > 0 {
            match tokio::time::timeout_at(deadline, reports.recv()).await {
                Ok(Some(report)) => {
                    if matches!(report.kind, ReportKind::Stopped) {
                        running -= 1;
                    }
                    self.on_report(report).await;
                }
                _ => break,
            }
        }
        if running > 0 {
            warn!("{running} printer task(s) did not stop in time");
        }
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        self.announce_idle(now);
        self.check_job_timeouts(now).await;
        if now.duration_since(self.last_purge) > Duration::from_secs(3600) {
            self.last_purge = now;
            self.purge().await;
        }
        self.schedule().await;
    }

    /// Idle printers say so every few seconds (the farm's job handler
    /// discovers printers from these). Heartbeats are volatile: repeating an
    /// unchanged state is not worth an SD-card write.
    fn announce_idle(&mut self, now: Instant) {
        let Some(volatile) = &self.volatile else {
            return;
        };
        let Some(topics) = self.msgs.topics() else {
            return;
        };
        for slot in self.slots.values_mut() {
            let due = slot
                .last_announce
                .is_none_or(|t| now.duration_since(t) >= self.settings.idle_announce);
            if !due || !slot.connected {
                continue;
            }
            slot.last_announce = Some(now);
            let view = view_of(slot);
            let payload = self.msgs.progress_payload(&view);
            let _ = volatile.try_send((topics.progress(&slot.id), payload, false));
        }
    }

    async fn purge(&mut self) {
        match self.store.purge_finished(self.settings.retention).await {
            Ok(purged) => {
                for job in purged {
                    if let Some(path) = job.gcode_path {
                        if PathBuf::from(&path).starts_with(&self.settings.spool_dir) {
                            let _ = std::fs::remove_file(path);
                        }
                    }
                }
            }
            Err(e) => error!("retention purge failed: {e}"),
        }
    }

    /// Writes an outbox item (if MQTT is on) and wakes the pump.
    pub(crate) async fn enqueue(&self, item: Option<crate::store::OutboxItem>) {
        if let Some(item) = item {
            match self.store.enqueue(item).await {
                Ok(_) => self.outbox_ready.notify_one(),
                Err(e) => error!("outbox write failed: {e}"),
            }
        }
    }

    pub(crate) fn wake_pump(&self) {
        self.outbox_ready.notify_one();
    }
}

pub(crate) fn view_of(slot: &Slot) -> ProgressView<'_> {
    ProgressView {
        printer: &slot.id,
        job: slot.job.as_deref(),
        state: slot.state,
        percent: slot.percent,
        lines: slot.lines,
        temps: slot.temps,
        eta_seconds: None,
    }
}
