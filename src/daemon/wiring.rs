//! The daemon's plumbing: signals, settings translation, the MQTT link with
//! its outbox pump and inbound dispatcher, the queue client, systemd glue.

use super::dispatch::{dispatch, triage, Dispatch, EstopPath};
use crate::config::{Config, SerialSettings};
use crate::farm::core::fresh::Freshness;
use crate::farm::{CoreSettings, FarmInput, RobotRule, Trigger};
use crate::mqtt::discovery::{self, DeviceInfo};
use crate::mqtt::link::{self, OutboxMessage};
use crate::mqtt::settings::link_settings;
use crate::printer::PrinterHandle;
use crate::source::{QueueClient, QueueSettings};
use crate::store::Store;
use anyhow::Context;
use log::error;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
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
/// from [`link_settings`]), the outbox pump, and the inbound triage (the
/// out-of-band emergency stop) and dispatcher.
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
    let (triaged_tx, triaged_rx) = mpsc::unbounded_channel();
    let estop = EstopPath {
        topics: topics.clone(),
        printers: printers.clone(),
        handles: estop,
        freshness,
    };
    let triage = tokio::spawn(triage(events_rx, estop, triaged_tx));
    let dispatcher = tokio::spawn(dispatch(
        triaged_rx,
        Dispatch {
            store,
            topics,
            printers,
            farm,
            volatile: volatile.clone(),
            discovery: discovery.unwrap_or_default(),
        },
    ));
    Ok(Some(Mqtt {
        volatile,
        tasks: vec![pump, triage, dispatcher],
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
