//! The broker link: one tokio task that keeps a connection to the broker,
//! publishes outbox messages in `seq` order with QoS 1, reports each as
//! delivered only after the broker's PUBACK, and hands inbound messages to
//! the daemon with a token that sends their PUBACK when the daemon says so.
//!
//! Owns the connection, its back-off and the set of sent-but-unacked
//! messages (`window`). Never touches SQLite: the store stays the source of
//! truth, the link only says which `seq` the broker has.
//!
//! Each connection gets a fresh rumqttc client and event loop, polled by its
//! own small task that is never cancelled and never blocked by us. When it
//! fails, both are dropped, with everything rumqttc still had queued; the
//! link republishes its unacked messages, in order, on the next connection
//! (rumqttc would drop them on a new session anyway: crate-pitfalls §1).
//! Sessions are persistent (`clean_session=false`), so the broker keeps our
//! subscriptions and redelivers inbound messages we never acked.
//!
//! For the daemon:
//! - feed `outbox` from the store in `seq` order (the link keeps arrival
//!   order); delete a row on [`LinkEvent::Delivered`], mark it dead on
//!   [`LinkEvent::Rejected`]; after a restart, feed the remaining rows again
//!   (the broker may then see a message twice, never lose one);
//! - on [`LinkEvent::Inbound`], validate with `inbound::parse_inbound`, store,
//!   then [`AckToken::ack`]; a rejected message should be acked too (after
//!   its event is stored), or the broker redelivers it at every reconnect;
//! - on [`LinkEvent::Connected`], (re)publish discovery configs if wanted;
//! - events are buffered inside the link (bounded: `pending.rs`), so a slow
//!   reader stalls the MQTT connection only when the buffer is full of QoS 1
//!   messages, and the link never waits on `outbox` to send events;
//! - on [`LinkEvent::Discarded`], report the count of QoS 0 messages dropped
//!   under load.

mod acks;
mod conn;
mod pending;
mod reason;
mod task;
mod tls;
mod window;

use super::topics::Topics;
use crate::config::Secret;
pub use pending::{MAX_QUEUED_BYTES, MAX_QUEUED_INBOUND};
use rumqttc::Publish;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Largest MQTT packet the link sends; larger outbox messages are rejected.
pub const MAX_PACKET: usize = 256 * 1024;
/// Largest packet rumqttc may read: the MQTT maximum (remaining length
/// 268,435,455), so rumqttc never refuses one. A packet over its limit makes
/// rumqttc fail the connection before the message can be acked
/// (rumqttc-0.25.1 `src/mqttbytes/mod.rs` `check()`), and the broker then
/// redelivers it at every reconnect, forever. The link applies its own
/// limit instead ([`MAX_INBOUND_PAYLOAD`]): it acks and drops. rumqttc
/// reserves a packet's announced size while reading it, so the farm's
/// broker should cap message sizes (README, Security).
pub const MAX_INCOMING_PACKET: usize = 268_435_455;
/// Largest inbound payload handed to the daemon (the inbound parser's
/// limit). A bigger message is acked, dropped and reported as
/// [`LinkEvent::Discarded`]: it is never redelivered and never queued.
pub const MAX_INBOUND_PAYLOAD: usize = 64 * 1024;
/// Outbox messages taken but not yet acked, at most.
pub const WINDOW: usize = 64;
/// How long shutdown waits for the broker to ack the offline status.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct TlsSettings {
    pub ca_pem: Vec<u8>,
    /// Client certificate chain and private key, both PEM, for mutual TLS.
    pub client_auth: Option<(Vec<u8>, Vec<u8>)>,
}

#[derive(Clone)]
pub struct LinkSettings {
    pub host: String,
    pub port: u16,
    /// Also the broker's session key; empty means `printgate-<gateway id>`.
    pub client_id: String,
    pub username: Option<String>,
    /// Read at every connection attempt (a rotated file is picked up).
    pub password: Option<Secret>,
    pub tls: Option<TlsSettings>,
    /// At least 1 s (rumqttc refuses less), or zero for none.
    pub keep_alive: Duration,
    pub topics: Topics,
    pub printers: Vec<String>,
    pub extra_subscriptions: Vec<String>,
    /// Retained on the gateway status topic at every connect.
    pub birth: Vec<u8>,
    /// Retained Last Will, and published on clean shutdown.
    pub will: Vec<u8>,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

/// Never prints the private key.
impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field("client_auth", &self.client_auth.is_some())
            .finish()
    }
}

/// Never prints the password.
impl std::fmt::Debug for LinkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("tls", &self.tls)
            .field("keep_alive", &self.keep_alive)
            .field("topics", &self.topics)
            .field("printers", &self.printers)
            .field("extra_subscriptions", &self.extra_subscriptions)
            .field("backoff", &(self.backoff_initial, self.backoff_max))
            .finish_non_exhaustive()
    }
}

impl LinkSettings {
    /// Settings with the daemon's defaults: plain TCP, no credentials,
    /// keep-alive 30 s, back-off 1 s doubling to 60 s, client id
    /// `printgate-<gateway id>`; birth and will must still be filled in.
    pub fn new(host: &str, port: u16, topics: Topics, printers: Vec<String>) -> Self {
        LinkSettings {
            host: host.to_owned(),
            port,
            client_id: String::new(),
            username: None,
            password: None,
            tls: None,
            keep_alive: Duration::from_secs(30),
            topics,
            printers,
            extra_subscriptions: Vec::new(),
            birth: Vec::new(),
            will: Vec::new(),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// One outbox row to publish (QoS 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub seq: u64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

#[derive(Debug)]
pub enum LinkEvent {
    /// Connected, and subscribed: inbound messages can arrive from now on.
    Connected,
    /// The connection failed or was lost; reported once per failure streak.
    Disconnected {
        reason: String,
    },
    /// The broker acked this outbox message: its row may be deleted.
    Delivered {
        seq: u64,
    },
    /// This outbox message can never be sent (too large, invalid topic). It
    /// was skipped; the daemon should mark the row dead rather than resend it.
    Rejected {
        seq: u64,
        reason: String,
    },
    Inbound(InboundMessage),
    /// QoS 0 inbound messages the link dropped because its queue was full
    /// (the daemon is not keeping up). Consecutive drops are counted in one
    /// event.
    Discarded {
        reason: String,
        count: u64,
    },
}

#[derive(Debug)]
pub struct InboundMessage {
    pub topic: String,
    /// At most [`MAX_INBOUND_PAYLOAD`] + 1 bytes (see there).
    pub payload: Vec<u8>,
    /// The broker's retain flag: a stored old message, not a fresh one. The
    /// farm never acts on retained robot reports or commands.
    pub retain: bool,
    /// The payload's size as the broker sent it (above `payload.len()`
    /// when the link cut an oversized one).
    pub size: usize,
    pub ack: AckToken,
}

/// Sends the PUBACK for one inbound message, when the daemon has stored it
/// (after every earlier message's, as MQTT requires: see `acks`). Dropping
/// it unacked makes the broker redeliver after the next reconnect. An ack
/// after the connection was lost is dropped (the redelivered copy carries
/// its own token).
pub struct AckToken(pub(crate) Option<(acks::AckOrder, u64, Publish)>);

impl AckToken {
    /// A token for a QoS 1 message, in line behind the earlier ones.
    pub(crate) fn queued(order: &acks::AckOrder, publish: Publish) -> Self {
        AckToken(Some((order.clone(), order.enqueue(), publish)))
    }

    pub fn ack(mut self) {
        if let Some((order, seq, publish)) = self.0.take() {
            order.ack(seq, publish);
        }
    }
}

impl Drop for AckToken {
    fn drop(&mut self) {
        if let Some((order, seq, _)) = self.0.take() {
            order.abandon(seq);
        }
    }
}

impl std::fmt::Debug for AckToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pkid = self.0.as_ref().map(|(_, _, p)| p.pkid);
        f.debug_tuple("AckToken").field(&pkid).finish()
    }
}

pub(crate) enum Control {
    Volatile {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
    Status {
        birth: Vec<u8>,
        will: Vec<u8>,
    },
}

pub struct LinkHandle {
    control: mpsc::UnboundedSender<Control>,
    task: JoinHandle<()>,
}

impl LinkHandle {
    /// QoS 0, never queued: dropped when offline (heartbeats, idle progress).
    pub fn publish_volatile(&self, topic: String, payload: Vec<u8>, retain: bool) {
        // A heartbeat is a last value: once the link task has ended
        // (shutdown) there is nobody to publish it, and the next one
        // supersedes it anyway.
        if self
            .control
            .send(Control::Volatile {
                topic,
                payload,
                retain,
            })
            .is_err()
        {
            log::debug!("mqtt: link stopped; volatile publish dropped");
        }
    }

    /// Replaces the birth and Last Will payloads (e.g. a fresh timestamp or
    /// printer list). The birth is used from the next connect; the broker
    /// holds the will given at connect time, so a new will applies from the
    /// next connect too, and at shutdown at once.
    pub fn set_status(&self, birth: Vec<u8>, will: Vec<u8>) {
        // The link task has ended (shutdown): its last will was already
        // published or handed to the broker; nothing is left to update.
        if self.control.send(Control::Status { birth, will }).is_err() {
            log::debug!("mqtt: link stopped; status update dropped");
        }
    }

    /// Waits for the link to finish after shutdown was signalled.
    pub async fn join(self) {
        if let Err(err) = self.task.await {
            log::error!("mqtt link task failed: {err}");
        }
    }
}

/// Starts the link task. It runs until `shutdown` turns true (or its sender
/// is dropped): then it publishes `will` as the retained status, disconnects
/// and ends.
pub fn spawn(
    settings: LinkSettings,
    outbox: mpsc::Receiver<OutboxMessage>,
    events: mpsc::Sender<LinkEvent>,
    shutdown: watch::Receiver<bool>,
) -> LinkHandle {
    let (control, control_rx) = mpsc::unbounded_channel();
    let link = task::Link::new(settings, outbox, events, shutdown, control_rx);
    LinkHandle {
        control,
        task: tokio::spawn(link.run()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_debug_hides_secrets() {
        let mut s = LinkSettings::new("broker", 8883, Topics::new("gw"), vec![]);
        s.password = Some("hunter2".into());
        s.tls = Some(TlsSettings {
            ca_pem: b"CA".to_vec(),
            client_auth: Some((b"CERT".to_vec(), b"PRIVATE KEY".to_vec())),
        });
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("PRIVATE"),
            "{shown}"
        );
        assert!(shown.contains("broker") && shown.contains("***"), "{shown}");
        s.password = Some(Secret::File("/run/pw".into()));
        assert!(format!("{s:?}").contains("/run/pw"));
    }
}
