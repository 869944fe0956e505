//! Runs the farm core with the real parts: the store, the printer tasks,
//! the MQTT link's acknowledgements and volatile publishes, the queue
//! manager (on blocking threads), the spool folder and systemd.
//!
//! Owns no decision. It turns outside messages into core inputs, executes
//! the core's effects in order (awaiting each store write and feeding its
//! answer back before the next effect), and runs everything slow (file
//! checks, downloads, HTTP, file moves) on blocking threads whose answers
//! come back as inputs. Printer commands are never dropped: a full command
//! channel keeps them in a per-printer backlog, in order.

mod convert;
mod work;

use super::core::{AckId, Effect, FarmCore, Input, PersistError, ReplyId};
use super::FarmInput;
use crate::control::Response;
use crate::mqtt::link::AckToken;
use crate::printer::{PrinterCommand, PrinterHandle, PrinterReport, ReportKind};
use crate::source::QueueClient;
use crate::store::{Store, StoreError};
use log::{debug, error, info, warn};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot, watch, Notify};

/// A volatile publish: (topic, payload, retain), never stored.
pub type Volatile = (String, Vec<u8>, bool);

/// How long shutdown waits for the printer tasks to leave their printers safe.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// One printer task as the driver reaches it.
pub struct PrinterLink {
    handle: PrinterHandle,
    backlog: VecDeque<PrinterCommand>,
    gone: bool,
}

impl PrinterLink {
    pub fn new(handle: PrinterHandle) -> Self {
        PrinterLink {
            handle,
            backlog: VecDeque::new(),
            gone: false,
        }
    }
}

/// Where models come from: the queue manager's client, or (without one) a
/// client for absolute URLs on `[models] allowed_hosts` only.
pub struct Models {
    pub client: Arc<QueueClient>,
    /// Relative `modelUrl`s resolve (a queue manager url is configured).
    pub relative: bool,
}

/// What the driver needs besides the core.
pub struct Parts {
    pub store: Store,
    pub printers: BTreeMap<String, PrinterLink>,
    /// The queue manager, for pulls.
    pub queue: Option<Arc<QueueClient>>,
    pub models: Option<Models>,
    pub spool_dir: PathBuf,
    pub volatile: Option<mpsc::Sender<Volatile>>,
    /// Wakes the outbox pump after a write that queued messages.
    pub outbox_ready: Arc<Notify>,
    pub max_download_retries: u32,
    /// Jitter seed of download back-offs (gateway id and clock).
    pub jitter_seed: u64,
}

pub struct Driver {
    core: FarmCore,
    p: Parts,
    acks: BTreeMap<AckId, AckToken>,
    replies: BTreeMap<ReplyId, oneshot::Sender<Response>>,
    next_id: u64,
    results_tx: mpsc::UnboundedSender<Input>,
    results_rx: mpsc::UnboundedReceiver<Input>,
    aborts: BTreeMap<String, Arc<AtomicBool>>,
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl Driver {
    pub fn new(core: FarmCore, parts: Parts) -> Self {
        // Unbounded by design: each result answers one effect the core
        // issued, so there are never more than the core asked for.
        let (results_tx, results_rx) = mpsc::unbounded_channel();
        Driver {
            core,
            p: parts,
            acks: BTreeMap::new(),
            replies: BTreeMap::new(),
            next_id: 1,
            results_tx,
            results_rx,
            aborts: BTreeMap::new(),
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
        let mut retry = tokio::time::interval(Duration::from_millis(50));
        self.drain().await;
        loop {
            let backlog = self.p.printers.values().any(|l| !l.backlog.is_empty());
            tokio::select! {
                Some(report) = reports.recv() => self.feed(Input::Report(report)).await,
                Some(input) = self.results_rx.recv() => self.feed(input).await,
                Some(input) = inputs.recv() => {
                    let input = self.convert(input);
                    self.feed(input).await;
                }
                _ = tick.tick() => {
                    self.feed(Input::Tick).await;
                    self.watchdog().await;
                }
                _ = retry.tick(), if backlog => self.flush_backlogs().await,
                changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { break },
            }
        }
        self.shut_down(&mut reports).await;
    }

    async fn feed(&mut self, input: Input) {
        self.core.handle(now(), SystemTime::now(), input);
        self.drain().await;
    }

    /// Executes the core's effects in order until it has none left.
    async fn drain(&mut self) {
        while let Some(effect) = self.core.poll_effect() {
            self.execute(effect).await;
        }
    }

    async fn execute(&mut self, effect: Effect) {
        match effect {
            Effect::Persist { op, batch } => {
                let wakes_pump = !batch.outbox.is_empty();
                let result = self.p.store.apply(batch).await.map_err(persist_error);
                if wakes_pump && result.is_ok() {
                    self.p.outbox_ready.notify_one();
                }
                self.core
                    .handle(now(), SystemTime::now(), Input::Persisted { op, result });
            }
            Effect::Printer { printer, cmd } => self.send_printer(&printer, cmd).await,
            Effect::Ack(id) => {
                if let Some(token) = self.acks.remove(&id) {
                    token.ack();
                }
            }
            Effect::Reply { id, mut response } => {
                // A status answer also says what the gateway wrote (the core
                // has no store to ask).
                if response.printers.is_some() {
                    response.io = Some(crate::iostats::IoReport::collect(&self.p.store));
                }
                if let Some(tx) = self.replies.remove(&id) {
                    if tx.send(response).is_err() {
                        debug!("control: the client left before its answer");
                    }
                }
            }
            Effect::Publish {
                topic,
                payload,
                retain,
            } => {
                if let Some(v) = &self.p.volatile {
                    // A last value: when the link is this far behind, the
                    // next one replaces it anyway.
                    if v.try_send((topic, payload, retain)).is_err() {
                        debug!("mqtt: volatile publish skipped (link busy)");
                    }
                }
            }
            Effect::Pull { printer } => self.pull(printer),
            Effect::Download {
                job,
                url,
                name,
                sha256,
            } => self.download(job, url, name, sha256),
            Effect::AbortDownload { job } => {
                if let Some(flag) = self.aborts.get(&job) {
                    flag.store(true, Ordering::Relaxed);
                }
            }
            Effect::Scan { job, path } => self.blocking(move || Input::Scanned {
                result: crate::printer::job_file::scan(&path).map_err(|e| e.to_string()),
                job,
            }),
            Effect::Spool { job, from, to } => self.blocking(move || Input::Spooled {
                result: work::spool(&from, &to),
                job,
            }),
            Effect::RemoveFile { path } => {
                tokio::task::spawn_blocking(move || match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => warn!("cannot remove {}: {e}", path.display()),
                });
            }
            Effect::Status(text) => crate::notify::status(&text),
        }
    }

    /// Delivers a command in order; a full channel keeps it for later, a
    /// closed one tells the core the task is gone.
    async fn send_printer(&mut self, printer: &str, cmd: PrinterCommand) {
        let Some(link) = self.p.printers.get_mut(printer) else {
            warn!("command for unknown printer {printer} dropped: {cmd:?}");
            return;
        };
        if link.gone {
            return;
        }
        // An emergency stop never waits behind queued commands.
        if matches!(cmd, PrinterCommand::EmergencyStop) {
            if link.handle.emergency_stop().is_err() {
                self.task_gone(printer.to_owned());
            }
            return;
        }
        link.backlog.push_back(cmd);
        self.flush_backlogs().await;
    }

    async fn flush_backlogs(&mut self) {
        let mut gone = Vec::new();
        for (id, link) in &mut self.p.printers {
            while let Some(cmd) = link.backlog.pop_front() {
                match link.handle.try_send(cmd) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(cmd)) => {
                        link.backlog.push_front(cmd);
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        link.gone = true;
                        link.backlog.clear();
                        gone.push(id.clone());
                    }
                }
            }
        }
        for printer in gone {
            self.task_gone(printer);
        }
    }

    /// A printer task ended (a bug, or shutdown): the core stops using it.
    fn task_gone(&mut self, printer: String) {
        if let Some(link) = self.p.printers.get_mut(&printer) {
            link.gone = true;
            link.backlog.clear();
        }
        error!("printer {printer}: its task is gone");
        self.core
            .handle(now(), SystemTime::now(), Input::PrinterGone { printer });
    }

    /// Pings systemd's watchdog from the farm loop itself, once the store
    /// answered too: a wedged farm loop or store stops the pings.
    async fn watchdog(&self) {
        if crate::notify::watchdog_interval().is_none() {
            return;
        }
        match self.p.store.outbox_len().await {
            Ok(_) => crate::notify::watchdog_ping(),
            Err(e) => error!("watchdog: store does not answer: {e}"),
        }
    }

    async fn shut_down(&mut self, reports: &mut mpsc::Receiver<PrinterReport>) {
        info!("stopping: no new jobs; leaving printers safe");
        self.feed(Input::Shutdown).await;
        let mut running = self.p.printers.values().filter(|l| !l.gone).count();
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        while running > 0 {
            let backlog = self.p.printers.values().any(|l| !l.backlog.is_empty());
            tokio::select! {
                report = tokio::time::timeout_at(deadline, reports.recv()) => match report {
                    Ok(Some(report)) => {
                        if matches!(report.kind, ReportKind::Stopped) {
                            running -= 1;
                        }
                        self.feed(Input::Report(report)).await;
                    }
                    _ => break,
                },
                Some(input) = self.results_rx.recv() => self.feed(input).await,
                _ = tokio::time::sleep(Duration::from_millis(50)), if backlog => {
                    self.flush_backlogs().await;
                }
            }
        }
        if running > 0 {
            warn!("{running} printer task(s) did not stop in time");
        }
    }
}

/// A store error as the core sees it: worth retrying (disk full, I/O, a
/// read-only or busy store) or refused for good (an illegal move: a bug).
fn persist_error(e: StoreError) -> PersistError {
    let retry = !matches!(
        e,
        StoreError::IllegalTransition { .. }
            | StoreError::IllegalPrinterTransition { .. }
            | StoreError::PlateNotClear { .. }
            | StoreError::UnknownJob(_)
            | StoreError::UnknownPrinter(_)
            | StoreError::BadRow { .. }
    );
    PersistError {
        message: e.to_string(),
        retry,
    }
}
