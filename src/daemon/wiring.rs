//! The daemon's plumbing: signals, settings translation, the MQTT link with
//! its outbox pump and inbound dispatcher, the queue client, systemd glue.

use crate::config::{Config, SerialSettings};
use crate::farm::core::fresh::{self, Freshness};
use crate::farm::{CoreSettings, FarmInput, RobotRule, Trigger};
use crate::mqtt::discovery::{self, DeviceInfo};
use crate::mqtt::inbound::{parse_inbound, Inbound, InboundError, InboundErrorKind};
use crate::mqtt::link::{self, LinkEvent, OutboxMessage};
use crate::mqtt::payload::Command;
use crate::mqtt::settings::link_settings;
use crate::mqtt::topics::{InTopic, Topics};
use crate::printer::PrinterHandle;
use crate::source::{QueueClient, QueueSettings};
use crate::store::Store;
use anyhow::Context;
use log::{debug, error, info, warn};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

/// Registers SIGTERM and SIGINT handlers now (so a signal that arrives
/// right after READY is never fatal) and returns a future that completes on
/// either. Must be called inside the runtime.
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    })
}

pub fn protocol_config(s: &SerialSettings) -> crate::protocol::Config {
    crate::protocol::Config {
        rx_buffer: s.rx_buffer as usize,
        max_lines_in_flight: s.max_lines_in_flight as usize,
        ping_pong: s.ping_pong,
        boot_timeout: Duration::from_millis(s.boot_timeout_ms),
        ack_timeout: Duration::from_millis(s.ack_timeout_ms),
        long_command_timeout: Duration::from_secs(s.long_command_timeout_s),
        baud: s.baud,
        ..crate::protocol::Config::default()
    }
}

/// The end-of-job sync command (`[serial] end_sync`; empty: none).
pub fn end_sync(s: &SerialSettings) -> Option<String> {
    let cmd = s.end_sync.trim();
    (!cmd.is_empty()).then(|| cmd.to_owned())
}

/// Takes an exclusive lock on `<data_dir>/printgate.lock` (held while the
/// returned file is open; the kernel drops it when the process dies, even
/// by `kill -9`).
pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let path = data_dir.join("printgate.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another printgate is already running on {} (it holds {}); stop it first",
            data_dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// The farm core's settings from the config. The jitter seed mixes the
/// gateway id and the clock, so gateways (and restarts) never retry in step.
pub fn core_settings(
    config: &Config,
    spool_dir: &Path,
    wall: SystemTime,
    scale: crate::timescale::TimeScale,
) -> CoreSettings {
    let mqtt = config.mqtt.as_ref();
    let secs = |s: u64| Duration::from_secs(s.max(1));
    // Benchmarks run the daemon's intervals faster (see crate::timescale).
    let scaled = |s: u64| scale.apply(secs(s));
    let clock = wall
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let jitter_seed = crate::backoff::mix_seed(clock, &[&config.gateway.id]);
    CoreSettings {
        require_thermal_protection: config
            .printers()
            .iter()
            .filter(|p| p.require_thermal_protection)
            .map(|p| p.id.clone())
            .collect(),
        gateway_id: config.gateway.id.clone(),
        spool_dir: spool_dir.to_path_buf(),
        idle_announce: scaled(mqtt.map_or(10, |m| m.idle_announce_s)),
        progress_interval: scaled(mqtt.map_or(10, |m| m.progress_interval_s)),
        progress_persist: scaled(config.jobs.progress_persist_s),
        pull: config.pulls(),
        poll_interval: scaled(
            config
                .queue_manager
                .as_ref()
                .map_or(5, |q| q.poll_interval_s),
        ),
        downloads: true,
        publish_printers_list: config.publishes_printers_list(),
        timeout_factor: config.jobs.timeout_factor,
        max_job: Duration::from_secs(config.jobs.max_job_hours.max(1).saturating_mul(3600)),
        retention: Duration::from_secs(config.jobs.retention_hours.saturating_mul(3600)),
        triggers: config
            .triggers
            .iter()
            .map(|t| Trigger {
                topic: t.topic.clone(),
                printer: t.printer.clone(),
                gcode: t.gcode.clone(),
                complete_topic: t.complete_topic.clone(),
            })
            .collect(),
        robots: (!config.robots.is_empty()).then(|| {
            config
                .robots
                .iter()
                .map(|r| RobotRule {
                    id: r.id.clone(),
                    printers: r.printers.clone(),
                })
                .collect()
        }),
        max_message_age: secs(mqtt.map_or(120, |m| m.max_message_age_s)),
        clock_skew: Duration::from_secs(mqtt.map_or(30, |m| m.clock_skew_s)),
        jitter_seed,
        // A heartbeat and a half: every live claimant speaks once in it.
        // Without a broker there is nobody to hear, and no listening.
        claim_listen: mqtt.map_or(Duration::ZERO, |m| secs(m.idle_announce_s) * 3 / 2),
    }
}

pub fn queue_client(config: &Config, spool_dir: &Path) -> anyhow::Result<Option<Arc<QueueClient>>> {
    let Some(q) = &config.queue_manager else {
        return Ok(None);
    };
    let mut settings = QueueSettings::from_config(q, spool_dir)?;
    settings.allowed_hosts = config.model_hosts();
    Ok(Some(Arc::new(QueueClient::new(settings)?)))
}

/// Where models come from: the queue manager's client (relative
/// `modelUrl`s resolve against its url), or without one a client that
/// fetches absolute URLs on `[models] allowed_hosts` only (its base is a
/// name that never resolves, `.invalid` by RFC 2606, and relative URLs are
/// refused before they reach it).
pub fn model_source(
    config: &Config,
    queue: Option<&Arc<QueueClient>>,
    spool_dir: &Path,
) -> anyhow::Result<Option<crate::farm::Models>> {
    if let Some(client) = queue {
        return Ok(Some(crate::farm::Models {
            client: client.clone(),
            relative: true,
        }));
    }
    let hosts = config.model_hosts();
    if hosts.is_empty() {
        return Ok(None);
    }
    let defaults = crate::config::QueueManagerConfig {
        url: "http://models.invalid".into(),
        ..Default::default()
    };
    let mut settings = QueueSettings::from_config(&defaults, spool_dir)?;
    settings.allowed_hosts = hosts;
    Ok(Some(crate::farm::Models {
        client: Arc::new(QueueClient::new(settings)?),
        relative: false,
    }))
}

/// The running MQTT side: the link, the outbox pump, the inbound dispatcher.
pub struct Mqtt {
    /// Heartbeats and discovery: (topic, payload, retain), never stored.
    pub volatile: mpsc::Sender<(String, Vec<u8>, bool)>,
    tasks: Vec<JoinHandle<()>>,
    forwarder: JoinHandle<()>,
}

impl Mqtt {
    /// After the shutdown signal: the link publishes `offline` and closes.
    pub async fn stop(self) {
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
        }
        drop(self.volatile);
        let _ = tokio::time::timeout(Duration::from_secs(6), self.forwarder).await;
    }
}

/// Starts the MQTT side when the config has `[mqtt]`: the link (settings
/// from [`link_settings`]), the outbox pump and the inbound dispatcher.
pub fn start_mqtt(
    config: &Config,
    store: Store,
    outbox_ready: Arc<Notify>,
    farm: mpsc::Sender<FarmInput>,
    estop: BTreeMap<String, PrinterHandle>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Option<Mqtt>> {
    let (Some(m), Some(settings)) = (&config.mqtt, link_settings(config, SystemTime::now())?)
    else {
        return Ok(None);
    };
    let (topics, printers) = (settings.topics.clone(), settings.printers.clone());
    let (outbox_tx, outbox_rx) = mpsc::channel(link::WINDOW * 2);
    let (events_tx, events_rx) = mpsc::channel(256);
    let handle = link::spawn(settings, outbox_rx, events_tx, shutdown.clone());
    let (volatile, mut volatile_rx) = mpsc::channel::<(String, Vec<u8>, bool)>(256);
    let forwarder = tokio::spawn(async move {
        while let Some((topic, payload, retain)) = volatile_rx.recv().await {
            handle.publish_volatile(topic, payload, retain);
        }
        handle.join().await;
    });
    let pump = tokio::spawn(pump(store.clone(), outbox_ready, outbox_tx, shutdown));
    let discovery = m.homeassistant.then(|| {
        let info = DeviceInfo {
            sw_version: env!("CARGO_PKG_VERSION").to_owned(),
            model: None,
        };
        printers
            .iter()
            .flat_map(|p| discovery::printer_configs(&topics, p, &info))
            .collect::<Vec<_>>()
    });
    let freshness = Freshness {
        max_age: Duration::from_secs(m.max_message_age_s),
        skew: Duration::from_secs(m.clock_skew_s),
    };
    let dispatcher = tokio::spawn(dispatch(
        events_rx,
        Dispatch {
            store,
            topics,
            printers,
            farm,
            volatile: volatile.clone(),
            discovery: discovery.unwrap_or_default(),
            estop,
            freshness,
        },
    ));
    Ok(Some(Mqtt {
        volatile,
        tasks: vec![pump, dispatcher],
        forwarder,
    }))
}

/// Feeds the link from the outbox, oldest first. The seq is written into
/// each JSON object here, from the row: the store assigned it in the same
/// transaction as the change the message announces.
async fn pump(
    store: Store,
    ready: Arc<Notify>,
    link: mpsc::Sender<OutboxMessage>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = 0u64;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let rows = match store.outbox_after(last, link::WINDOW).await {
            Ok(rows) => rows,
            Err(e) => {
                error!("outbox read failed: {e}");
                Vec::new()
            }
        };
        if rows.is_empty() {
            tokio::select! {
                _ = ready.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
            continue;
        }
        for row in rows {
            last = row.seq;
            let msg = OutboxMessage {
                seq: row.seq,
                topic: row.topic,
                payload: with_seq(row.payload, row.seq),
                retain: row.retain,
            };
            tokio::select! {
                sent = link.send(msg) => if sent.is_err() { return },
                _ = shutdown.changed() => return,
            }
        }
    }
}

fn with_seq(payload: Vec<u8>, seq: u64) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Value>(&payload) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.insert("seq".into(), seq.into());
            serde_json::to_vec(&map).unwrap_or(payload)
        }
        _ => payload,
    }
}

/// Home Assistant's `online` republishes discovery at most this often (a
/// flood of `online` messages must not turn into a flood of retained writes).
const DISCOVERY_MIN_INTERVAL: Duration = Duration::from_secs(60);

/// What the dispatcher needs besides the link's events.
pub struct Dispatch {
    pub store: Store,
    pub topics: Topics,
    pub printers: Vec<String>,
    pub farm: mpsc::Sender<FarmInput>,
    pub volatile: mpsc::Sender<(String, Vec<u8>, bool)>,
    pub discovery: Vec<discovery::DiscoveryConfig>,
    /// Each printer task's handle, for `M112` out of band.
    pub estop: BTreeMap<String, PrinterHandle>,
    pub freshness: Freshness,
}

/// What the link reports: deliveries delete outbox rows, inbound messages
/// are validated and handed to the farm (with their PUBACK, which the farm
/// sends once it has stored what it must). An emergency stop goes to its
/// printer task from here, before the farm sees it: it never waits behind
/// the farm's work.
async fn dispatch(mut events: mpsc::Receiver<LinkEvent>, d: Dispatch) {
    // On every connect the configs go out; on Home Assistant's `online` at
    // most once a minute.
    let mut asked: Option<Instant> = None;
    let mut announce = |volatile: &mpsc::Sender<(String, Vec<u8>, bool)>, by_request: bool| {
        if by_request {
            if asked.is_some_and(|t| t.elapsed() < DISCOVERY_MIN_INTERVAL) {
                debug!("discovery asked for again within a minute; skipped");
                return;
            }
            asked = Some(Instant::now());
        }
        for c in &d.discovery {
            if volatile
                .try_send((c.topic.clone(), c.payload_bytes(), true))
                .is_err()
            {
                debug!("discovery config for {} not queued (link busy)", c.topic);
            }
        }
    };
    while let Some(event) = events.recv().await {
        match event {
            LinkEvent::Delivered { seq } => {
                if let Err(e) = d.store.outbox_delivered(seq).await {
                    error!("outbox: cannot delete delivered row {seq}: {e}");
                }
            }
            LinkEvent::Rejected { seq, reason } => {
                error!("outbox row {seq} cannot be published ({reason}); dropped");
                if let Err(e) = d.store.outbox_delivered(seq).await {
                    error!("outbox: cannot drop row {seq}: {e}");
                }
            }
            LinkEvent::Connected => {
                info!("mqtt: connected");
                announce(&d.volatile, false);
                if d.farm.send(FarmInput::BrokerConnected).await.is_err() {
                    debug!("farm stopped");
                }
            }
            LinkEvent::Disconnected { reason } => info!("mqtt: disconnected: {reason}"),
            LinkEvent::Discarded { reason, count } => info!("mqtt: {count} × {reason}"),
            LinkEvent::Inbound(msg) => {
                if let Some(input) = inbound(&d, msg, &mut announce) {
                    if d.farm.send(input).await.is_err() {
                        debug!("farm stopped; inbound message dropped (the broker redelivers it)");
                    }
                }
            }
        }
    }
}

/// One inbound message as a farm input (or `None`: handled here).
fn inbound(
    d: &Dispatch,
    msg: crate::mqtt::link::InboundMessage,
    announce: &mut impl FnMut(&mpsc::Sender<(String, Vec<u8>, bool)>, bool),
) -> Option<FarmInput> {
    let retained = msg.retain;
    let ack = msg.ack;
    match parse_inbound(&d.topics, &msg.topic, &msg.payload, &d.printers) {
        Ok(Inbound::Assignment {
            printer,
            assignment,
            warnings,
        }) => Some(FarmInput::Assignment {
            printer,
            assignment,
            warnings,
            ack: Some(ack),
        }),
        Ok(Inbound::RobotProgress { progress, .. }) => {
            // A lost clear is safe (the plate waits): no need to hold the ack.
            ack.ack();
            Some(FarmInput::Robot { progress, retained })
        }
        Ok(Inbound::Command { printer, command }) => {
            let estop_sent = command.command == Command::EmergencyStop
                && fresh::check(
                    retained,
                    command.timestamp.as_deref(),
                    SystemTime::now(),
                    d.freshness,
                )
                .is_ok()
                && d.estop
                    .get(&printer)
                    .is_some_and(|h| h.emergency_stop().is_ok());
            if estop_sent {
                warn!("printer {printer}: emergency stop (sent at once)");
            }
            Some(FarmInput::Command {
                printer,
                msg: command,
                retained,
                estop_sent,
                ack: Some(ack),
            })
        }
        Ok(Inbound::Trigger { index, .. }) => {
            ack.ack();
            d.topics.triggers().get(index).map(|t| FarmInput::Trigger {
                topic: t.clone(),
                retained,
            })
        }
        Ok(Inbound::PeerProgress {
            printer,
            gateway,
            claimed_at,
        }) => {
            ack.ack();
            // Our own messages come back (we listen to our printers' topics
            // only to notice another claimant); a retained one is history,
            // not a live claimant.
            if retained || gateway.as_deref() == Some(d.topics.gateway_id()) {
                return None;
            }
            Some(FarmInput::PeerProgress {
                printer,
                gateway,
                claimed_at,
            })
        }
        Ok(Inbound::HomeAssistantStatus { online }) => {
            ack.ack();
            if online {
                announce(&d.volatile, true);
            }
            None
        }
        // Robots report on every gateway's printers: normal farm traffic,
        // not bad input (no event, no warning).
        Err(InboundError {
            kind: InboundErrorKind::UnknownPrinter { printer },
            ..
        }) if matches!(
            d.topics.classify(&msg.topic),
            Some(InTopic::RobotProgress { .. })
        ) =>
        {
            debug!("robot report about printer {printer:?}: not on this gateway");
            ack.ack();
            None
        }
        Err(e) => {
            let (printer, kind) = match d.topics.classify(&msg.topic) {
                Some(InTopic::Assignment { printer }) => (Some(printer), "assignment"),
                Some(InTopic::Command { printer }) => (Some(printer), "command"),
                Some(InTopic::Progress { .. }) => (None, "progress"),
                Some(InTopic::RobotProgress { .. }) => (None, "robot"),
                Some(InTopic::Trigger { .. }) => (None, "trigger"),
                Some(InTopic::HomeAssistantStatus) => (None, "homeassistant"),
                None => (None, "unknown"),
            };
            // An unknown printer id must not become our event topic.
            let printer = printer.filter(|p| d.printers.contains(p));
            Some(FarmInput::Invalid {
                printer,
                kind: kind.to_owned(),
                problem: e.to_string(),
                ack: Some(ack),
            })
        }
    }
}

pub fn notify_ready(config: &Config) {
    crate::notify::ready();
    crate::notify::status(&format!(
        "{} printer(s) configured",
        config.printers().len()
    ));
}

pub fn notify_stopping() {
    crate::notify::stopping();
}
