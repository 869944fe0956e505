//! The daemon's plumbing: signals, settings translation, the MQTT link with
//! its outbox pump and inbound dispatcher, the queue client, systemd glue.

use crate::config::{Config, SerialSettings};
use crate::farm::FarmInput;
use crate::mqtt::discovery::{self, DeviceInfo};
use crate::mqtt::inbound::{parse_inbound, Inbound, InboundError, InboundErrorKind};
use crate::mqtt::link::{self, LinkEvent, OutboxMessage};
use crate::mqtt::settings::link_settings;
use crate::mqtt::topics::{InTopic, Topics};
use crate::source::{Auth, QueueClient, QueueSettings};
use crate::store::Store;
use anyhow::Context;
use log::{debug, error, info};
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

pub fn queue_client(config: &Config, spool_dir: &Path) -> anyhow::Result<Option<Arc<QueueClient>>> {
    let Some(q) = &config.queue_manager else {
        return Ok(None);
    };
    let auth = match (&q.token, &q.username, &q.password) {
        (Some(token), _, _) => Auth::Bearer(token.clone()),
        (None, Some(user), password) => Auth::Basic {
            user: user.clone(),
            password: password.clone().unwrap_or_default(),
        },
        _ => Auth::None,
    };
    let ca_pem = match &q.ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read queue_manager.ca_file {}", path.display()))?,
        ),
        None => None,
    };
    let settings = QueueSettings {
        base_url: q.url.clone(),
        auth,
        ca_pem,
        allowed_hosts: q.allowed_hosts.clone(),
        max_model_bytes: q.max_model_bytes,
        connect_timeout: Duration::from_secs(q.connect_timeout_s),
        read_timeout: Duration::from_secs(q.read_timeout_s),
        total_timeout: Duration::from_secs(q.read_timeout_s.max(1) * 60),
        spool_dir: spool_dir.to_path_buf(),
    };
    Ok(Some(Arc::new(QueueClient::new(settings)?)))
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
    let dispatcher = tokio::spawn(dispatch(
        events_rx,
        store,
        topics,
        printers,
        farm,
        volatile.clone(),
        discovery.unwrap_or_default(),
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

/// What the link reports: deliveries delete outbox rows, inbound messages
/// are validated and handed to the farm.
async fn dispatch(
    mut events: mpsc::Receiver<LinkEvent>,
    store: Store,
    topics: Topics,
    printers: Vec<String>,
    farm: mpsc::Sender<FarmInput>,
    volatile: mpsc::Sender<(String, Vec<u8>, bool)>,
    discovery: Vec<discovery::DiscoveryConfig>,
) {
    let announce = |volatile: &mpsc::Sender<(String, Vec<u8>, bool)>| {
        for d in &discovery {
            let _ = volatile.try_send((d.topic.clone(), d.payload_bytes(), true));
        }
    };
    while let Some(event) = events.recv().await {
        match event {
            LinkEvent::Delivered { seq } => {
                if let Err(e) = store.outbox_delivered(seq).await {
                    error!("outbox: cannot delete delivered row {seq}: {e}");
                }
            }
            LinkEvent::Rejected { seq, reason } => {
                error!("outbox row {seq} cannot be published ({reason}); dropped");
                let _ = store.outbox_delivered(seq).await;
            }
            LinkEvent::Connected => {
                info!("mqtt: connected");
                announce(&volatile);
            }
            LinkEvent::Disconnected { reason } => info!("mqtt: disconnected: {reason}"),
            LinkEvent::Inbound(msg) => {
                let input = match parse_inbound(&topics, &msg.topic, &msg.payload, &printers) {
                    Ok(Inbound::Assignment {
                        printer,
                        assignment,
                    }) => {
                        let ack = msg.ack;
                        let ack: Box<dyn FnOnce() + Send> = Box::new(move || ack.ack());
                        farm.send(FarmInput::Assignment {
                            printer,
                            assignment,
                            ack: Some(ack),
                        })
                        .await
                        .ok();
                        continue;
                    }
                    Ok(Inbound::RobotProgress { progress, .. }) => Some(FarmInput::Robot(progress)),
                    Ok(Inbound::Command { printer, command }) => Some(FarmInput::Command {
                        printer,
                        msg: command,
                    }),
                    Ok(Inbound::Trigger { index, .. }) => topics
                        .triggers()
                        .get(index)
                        .map(|t| FarmInput::Trigger { topic: t.clone() }),
                    Ok(Inbound::HomeAssistantStatus { online }) => {
                        if online {
                            announce(&volatile);
                        }
                        None
                    }
                    // Robots report on every gateway's printers: normal
                    // farm traffic, not bad input (no event, no warning).
                    Err(InboundError {
                        kind: InboundErrorKind::UnknownPrinter { printer },
                        ..
                    }) if matches!(
                        topics.classify(&msg.topic),
                        Some(InTopic::RobotProgress { .. })
                    ) =>
                    {
                        debug!("robot report about printer {printer}: not on this gateway");
                        None
                    }
                    Err(e) => {
                        let printer = match topics.classify(&msg.topic) {
                            Some(
                                InTopic::Assignment { printer } | InTopic::Command { printer },
                            ) => Some(printer),
                            _ => None,
                        };
                        Some(FarmInput::Invalid {
                            printer,
                            problem: e.to_string(),
                        })
                    }
                };
                msg.ack.ack();
                if let Some(input) = input {
                    let _ = farm.send(input).await;
                }
            }
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

/// Pings systemd's watchdog from a loop that proves the store still answers.
pub fn spawn_watchdog(store: Store) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Some(every) = crate::notify::watchdog_interval() else {
            return;
        };
        loop {
            tokio::time::sleep(every).await;
            match store.outbox_len().await {
                Ok(pending) => {
                    crate::notify::watchdog_ping();
                    crate::notify::status(&format!(
                        "running; {pending} message(s) waiting for the broker"
                    ));
                }
                Err(e) => error!("watchdog: store does not answer: {e}"),
            }
        }
    })
}
