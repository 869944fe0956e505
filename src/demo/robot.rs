//! The demo's robot, which is also its MQTT observer: one client on
//! `device/#`.
//!
//! As a robot it clears plates the way the farm's robots do: it answers every
//! printer listed on `device/printers` with `pick completed` on
//! `device/robot/rob-1/progress`, and clears each printer once at start (the
//! first time it reports `awaiting_clear`: new printers start with the plate
//! not confirmed clear). As an observer it keeps each printer's last status
//! and temperatures (from `device/printer/+/progress`), counts the messages
//! on `device/printer/+/event`, and notes the gateway's retained status.
//!
//! [`Brain`] is the sans-IO part (message in, picks out); [`Robot`] runs it
//! on a rumqttc event loop. One wildcard subscription keeps the broker's
//! per-subscription ordering: the gateway's `offline` status arrives after
//! every event it published before it.

use crate::mqtt::payload::{rfc3339, Availability, GatewayStatus, Progress, RobotProgress};
use crate::mqtt::topics::Topics;
use anyhow::Context;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub const ROBOT_ID: &str = "rob-1";
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
const RECONNECT_DELAY: Duration = Duration::from_millis(200);

/// What the observer last saw of one printer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    pub status: String,
    /// The last progress published (a last value: never stored per tick).
    pub progress: f64,
    pub nozzle: Option<f64>,
    pub bed: Option<f64>,
}

/// Everything the observer knows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub printers: BTreeMap<String, Seen>,
    /// Messages on `device/printer/+/event`.
    pub events: u64,
    /// `pick completed` messages sent.
    pub picks: u64,
    /// The gateway's last retained status.
    pub gateway: Option<Availability>,
}

/// The robot's decisions, without I/O.
#[derive(Debug, Default)]
pub struct Brain {
    prefix: String,
    seen: Observed,
    /// Picks sent for plates not yet reported cleared.
    picking: BTreeSet<String>,
    /// Printers picked at least once (the start-up clear is done).
    picked_once: BTreeSet<String>,
}

impl Brain {
    pub fn new(topics: &Topics) -> Brain {
        Brain {
            prefix: topics.prefix().to_owned(),
            ..Brain::default()
        }
    }

    pub fn observed(&self) -> &Observed {
        &self.seen
    }

    /// Handles one message; returns the printers whose plates to clear now.
    pub fn on_message(&mut self, topic: &str, payload: &[u8]) -> Vec<String> {
        let Some(rest) = topic.strip_prefix(&self.prefix) else {
            return Vec::new();
        };
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["printers"] => {
                let listed: Vec<String> = serde_json::from_slice(payload).unwrap_or_default();
                listed.into_iter().filter_map(|p| self.pick(p)).collect()
            }
            ["printer", printer, "progress"] => {
                let Ok(p) = serde_json::from_slice::<Progress>(payload) else {
                    return Vec::new();
                };
                // printgate's `state` is the full truth; `status` is the
                // seed's two words.
                let status = if p.state.is_empty() {
                    serde_json::to_value(p.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                } else {
                    p.state.clone()
                };
                let awaiting = status == "awaiting_clear";
                if !awaiting {
                    self.picking.remove(*printer);
                }
                let entry = self.seen.printers.entry((*printer).to_owned()).or_default();
                entry.status = status;
                entry.progress = f64::from(p.progress);
                entry.nozzle = p.nozzle_temp.or(entry.nozzle);
                entry.bed = p.bed_temp.or(entry.bed);
                // At start the robot clears each printer once.
                if awaiting && !self.picked_once.contains(*printer) {
                    return self.pick((*printer).to_owned()).into_iter().collect();
                }
                Vec::new()
            }
            ["printer", _, "event"] => {
                self.seen.events += 1;
                Vec::new()
            }
            ["gateway", _, "status"] => {
                if let Ok(s) = serde_json::from_slice::<GatewayStatus>(payload) {
                    self.seen.gateway = Some(s.status);
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn pick(&mut self, printer: String) -> Option<String> {
        if !self.picking.insert(printer.clone()) {
            return None;
        }
        self.seen.picks += 1;
        self.picked_once.insert(printer.clone());
        Some(printer)
    }
}

/// The robot's `pick completed` for `printer`.
pub fn pick_completed(printer: &str) -> Vec<u8> {
    let msg = RobotProgress {
        robot_id: ROBOT_ID.to_owned(),
        printer_id: printer.to_owned(),
        action: "pick".to_owned(),
        status: "completed".to_owned(),
        timestamp: rfc3339(SystemTime::now()),
    };
    serde_json::to_vec(&msg).unwrap_or_default()
}

/// The running robot.
pub struct Robot {
    observed: watch::Receiver<Observed>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Robot {
    /// Connects to the broker on 127.0.0.1:`port` and returns once it is
    /// subscribed (so it sees every printer from its first message).
    pub async fn start(port: u16, topics: &Topics) -> anyhow::Result<Robot> {
        let mut options = MqttOptions::new(format!("demo-{ROBOT_ID}"), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(512 * 1024, 512 * 1024);
        let (client, eventloop) = AsyncClient::new(options, 64);
        let (observed_tx, observed) = watch::channel(Observed::default());
        let (stop, stop_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = oneshot::channel();
        let filter = format!("{}#", topics.prefix());
        let robot_topic = format!("{}robot/{ROBOT_ID}/progress", topics.prefix());
        let brain = Brain::new(topics);
        let task = tokio::spawn(async move {
            let io = Io {
                client,
                filter,
                robot_topic,
                ready: Some(ready_tx),
            };
            io.run(eventloop, brain, observed_tx, stop_rx).await;
        });
        tokio::time::timeout(SUBSCRIBE_TIMEOUT, ready_rx)
            .await
            .ok()
            .and_then(Result::ok)
            .with_context(|| {
                format!(
                    "the demo robot could not subscribe on 127.0.0.1:{port} within {} s",
                    SUBSCRIBE_TIMEOUT.as_secs()
                )
            })?;
        Ok(Robot {
            observed,
            stop,
            task,
        })
    }

    /// What the observer knows now.
    pub fn observed(&self) -> Observed {
        self.observed.borrow().clone()
    }

    /// Waits (at most `limit`) for the gateway's `offline` status; true if seen.
    pub async fn wait_gateway_offline(&mut self, limit: Duration) -> bool {
        let offline = self
            .observed
            .wait_for(|o| o.gateway == Some(Availability::Offline));
        matches!(tokio::time::timeout(limit, offline).await, Ok(Ok(_)))
    }

    /// Disconnects; returns the final observations.
    pub async fn stop(self) -> Observed {
        // A robot task that already ended has nothing left to stop.
        if self.stop.send(true).is_err() {
            log::debug!("robot: already stopped");
        }
        let _ = tokio::time::timeout(Duration::from_secs(3), self.task).await;
        self.observed.borrow().clone()
    }
}

struct Io {
    client: AsyncClient,
    filter: String,
    robot_topic: String,
    ready: Option<oneshot::Sender<()>>,
}

impl Io {
    /// Polls until `stop`; a failed poll reconnects after a short pause.
    async fn run(
        mut self,
        mut eventloop: rumqttc::EventLoop,
        mut brain: Brain,
        observed: watch::Sender<Observed>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let event = tokio::select! {
                _ = stop.changed() => break,
                event = eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if let Err(e) = self.client.try_subscribe(&self.filter, QoS::AtLeastOnce) {
                        log::warn!("demo robot: cannot subscribe: {e}");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(ready) = self.ready.take() {
                        if ready.send(()).is_err() {
                            log::debug!("robot: subscribed after the demo stopped waiting");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    for printer in brain.on_message(&p.topic, &p.payload) {
                        // try_publish: never await a publish on the polling task.
                        let payload = pick_completed(&printer);
                        let sent = self.client.try_publish(
                            &self.robot_topic,
                            QoS::AtLeastOnce,
                            false,
                            payload,
                        );
                        if let Err(e) = sent {
                            log::warn!("demo robot: pick for {printer} not sent: {e}");
                        }
                    }
                    observed.send_replace(brain.observed().clone());
                }
                Ok(_) => {}
                Err(e) => {
                    log::debug!("demo robot: {e}; reconnecting");
                    tokio::select! {
                        _ = stop.changed() => break,
                        _ = tokio::time::sleep(RECONNECT_DELAY) => {}
                    }
                }
            }
        }
        let _ = self.client.try_disconnect();
        // Let the disconnect go out (bounded: one more poll at most).
        let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(printer: &str, state: &str) -> Vec<u8> {
        let status = if matches!(state, "idle" | "awaiting_clear") {
            "idle"
        } else {
            "printing"
        };
        format!(
            r#"{{"printerId":"{printer}","jobId":null,"status":"{status}","progress":0,
                "state":"{state}","timestamp":"2025-06-15T08:30:00Z","nozzleTemp":200.5,"bedTemp":60.0}}"#
        )
        .into_bytes()
    }

    #[test]
    fn clears_each_printer_once_at_start_then_only_when_listed() {
        let mut b = Brain::new(&Topics::new("gw"));
        let t = "device/printer/p1/progress";
        assert!(b.on_message(t, &progress("p1", "offline")).is_empty());
        assert_eq!(b.on_message(t, &progress("p1", "awaiting_clear")), ["p1"]);
        // Repeated idle announcements of the same state: no second pick.
        assert!(b
            .on_message(t, &progress("p1", "awaiting_clear"))
            .is_empty());
        assert!(b.on_message("device/printers", br#"["p1"]"#).is_empty());
        assert!(b.on_message(t, &progress("p1", "idle")).is_empty());
        assert!(b.on_message(t, &progress("p1", "printing")).is_empty());
        // After a print: only the list makes the robot act.
        assert!(b
            .on_message(t, &progress("p1", "awaiting_clear"))
            .is_empty());
        assert_eq!(
            b.on_message("device/printers", br#"["p1","p2"]"#),
            ["p1", "p2"]
        );
        assert_eq!(b.observed().picks, 3);
        let seen = &b.observed().printers["p1"];
        assert_eq!((seen.nozzle, seen.bed), (Some(200.5), Some(60.0)));
    }

    #[test]
    fn counts_events_and_notes_the_gateway_status_and_ignores_junk() {
        let mut b = Brain::new(&Topics::new("gw"));
        b.on_message("device/printer/p1/event", b"{}");
        b.on_message("device/printer/gateway/event", b"not json");
        b.on_message("device/printer/p1/progress", b"not json");
        b.on_message("device/printers", b"{");
        b.on_message("elsewhere/printer/p1/event", b"{}");
        b.on_message(
            "device/gateway/gw/status",
            br#"{"status":"offline","version":"0","printers":[],"timestamp":"x"}"#,
        );
        assert_eq!(b.observed().events, 2);
        assert_eq!(b.observed().gateway, Some(Availability::Offline));
        assert!(b.observed().printers.is_empty());
    }
}
