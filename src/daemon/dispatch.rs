//! The MQTT link's events on their way in. [`triage`] sees every event
//! first and sends an emergency stop to its printer task at once; only then
//! does [`dispatch`] do what may wait (deleting delivered outbox rows,
//! handing inputs to a farm that may be busy rescanning a file or behind a
//! slow store), in the link's order.

use crate::farm::core::fresh::{self, Freshness};
use crate::farm::FarmInput;
use crate::mqtt::discovery;
use crate::mqtt::inbound::{parse_inbound, Inbound, InboundError, InboundErrorKind};
use crate::mqtt::link::LinkEvent;
use crate::mqtt::payload::Command;
use crate::mqtt::topics::{InTopic, Topics};
use crate::printer::PrinterHandle;
use crate::store::Store;
use log::{debug, error, info, warn};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// A link event, and whether [`triage`] already sent its `M112`.
pub struct Triaged {
    pub event: LinkEvent,
    pub estop_sent: bool,
}

/// What [`triage`] needs to recognise an emergency stop.
pub struct EstopPath {
    pub topics: Topics,
    pub printers: Vec<String>,
    /// Each printer task's handle, for `M112` out of band.
    pub handles: BTreeMap<String, PrinterHandle>,
    pub freshness: Freshness,
}

/// Passes every link event on in order, sending a fresh emergency stop to
/// its printer task first. Never waits on anything but the link: the queue
/// to `dispatch` is unbounded, and bounded in practice by the link (a
/// delivery per outbox row in flight, an inbound message per PUBACK the
/// farm has not sent yet).
pub async fn triage(
    mut events: mpsc::Receiver<LinkEvent>,
    path: EstopPath,
    out: mpsc::UnboundedSender<Triaged>,
) {
    while let Some(event) = events.recv().await {
        let estop_sent = match &event {
            LinkEvent::Inbound(msg) => emergency_stop(&path, &msg.topic, &msg.payload, msg.retain),
            _ => false,
        };
        if out.send(Triaged { event, estop_sent }).is_err() {
            debug!("dispatcher stopped; link events are no longer read");
            return;
        }
    }
}

/// Sends `M112` if this message is a fresh, valid `emergency_stop` for one
/// of our printers; says whether it did.
fn emergency_stop(path: &EstopPath, topic: &str, payload: &[u8], retained: bool) -> bool {
    if !matches!(path.topics.classify(topic), Some(InTopic::Command { .. })) {
        return false;
    }
    let Ok(Inbound::Command { printer, command }) =
        parse_inbound(&path.topics, topic, payload, &path.printers)
    else {
        return false;
    };
    let sent = command.command == Command::EmergencyStop
        && fresh::check(
            retained,
            command.timestamp.as_deref(),
            SystemTime::now(),
            path.freshness,
        )
        .is_ok()
        && path
            .handles
            .get(&printer)
            .is_some_and(|h| h.emergency_stop().is_ok());
    if sent {
        warn!("printer {printer}: emergency stop (sent at once)");
    }
    sent
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
}

/// What the link reports, after [`triage`]: deliveries delete outbox rows,
/// inbound messages are validated and handed to the farm (with their
/// PUBACK, which the farm sends once it has stored what it must).
pub async fn dispatch(mut events: mpsc::UnboundedReceiver<Triaged>, d: Dispatch) {
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
    while let Some(Triaged { event, estop_sent }) = events.recv().await {
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
                if let Some(input) = inbound(&d, msg, estop_sent, &mut announce) {
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
    estop_sent: bool,
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
        Ok(Inbound::Command { printer, command }) => Some(FarmInput::Command {
            printer,
            msg: command,
            retained,
            estop_sent,
            ack: Some(ack),
        }),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::link::{AckToken, InboundMessage};
    use crate::printer::Urgent;
    use std::sync::Arc;

    fn command(printer: &str, name: &str) -> LinkEvent {
        let now = crate::mqtt::payload::rfc3339(SystemTime::now());
        let payload = format!(r#"{{"command":"{name}","timestamp":"{now}"}}"#).into_bytes();
        LinkEvent::Inbound(InboundMessage {
            topic: format!("device/printer/{printer}/command"),
            size: payload.len(),
            payload,
            retain: false,
            ack: AckToken(None),
        })
    }

    /// r12 #5: the farm is not reading (a rescan, a slow store) and its
    /// queue is full; an earlier command waits for room. The e-stop behind
    /// it still reaches the printer task at once. (With one dispatcher
    /// doing both, as before, this waited for the farm.)
    #[tokio::test]
    async fn r12_5_an_emergency_stop_overtakes_a_farm_that_does_not_read() {
        let dir = crate::store::testdir::TestDir::new("dispatch-estop");
        let store = Store::open(dir.path()).unwrap();
        let topics = Topics::new("gw");
        let printers = vec!["p1".to_owned()];
        let (farm_tx, _farm_rx) = mpsc::channel(1);
        farm_tx.send(FarmInput::BrokerConnected).await.unwrap();
        let urgent = Arc::new(Urgent::default());
        let (cmd_tx, _cmd_rx) = mpsc::channel(1);
        let handle = PrinterHandle::new(cmd_tx, Arc::clone(&urgent));
        let (volatile, _volatile_rx) = mpsc::channel(1);
        let (events_tx, events_rx) = mpsc::channel(16);
        let (triaged_tx, triaged_rx) = mpsc::unbounded_channel();
        let path = EstopPath {
            topics: topics.clone(),
            printers: printers.clone(),
            handles: BTreeMap::from([("p1".to_owned(), handle)]),
            freshness: Freshness {
                max_age: Duration::from_secs(120),
                skew: Duration::from_secs(30),
            },
        };
        let d = Dispatch {
            store,
            topics,
            printers,
            farm: farm_tx,
            volatile,
            discovery: Vec::new(),
        };
        let triage = tokio::spawn(triage(events_rx, path, triaged_tx));
        let dispatch = tokio::spawn(dispatch(triaged_rx, d));
        events_tx.send(command("p1", "pause")).await.unwrap();
        events_tx.send(command("p1", "cancel")).await.unwrap();
        events_tx
            .send(command("p1", "emergency_stop"))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), urgent.requested())
            .await
            .expect("the e-stop waited behind the farm");
        assert!(urgent.take_estop());
        triage.abort();
        dispatch.abort();
    }
}
