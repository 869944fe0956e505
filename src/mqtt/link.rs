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

use super::reason::describe;
use super::topics::Topics;
use super::window::Window;
use crate::backoff::{Backoff, ErrorStreak};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet,
    Publish, QoS, SubscribeFilter, SubscribeReasonCode, TlsConfiguration, Transport,
};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

/// Largest MQTT packet accepted in either direction.
pub const MAX_PACKET: usize = 256 * 1024;
/// Outbox messages taken but not yet acked, at most.
pub const WINDOW: usize = 64;
/// How long shutdown waits for the broker to ack the offline status.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub ca_pem: Vec<u8>,
    /// Client certificate chain and private key, both PEM, for mutual TLS.
    pub client_auth: Option<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, Clone)]
pub struct LinkSettings {
    pub host: String,
    pub port: u16,
    /// Also the broker's session key; empty means `printgate-<gateway id>`.
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
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
}

#[derive(Debug)]
pub struct InboundMessage {
    pub topic: String,
    pub payload: Vec<u8>,
    pub ack: AckToken,
}

/// Sends the PUBACK for one inbound message, when the daemon has stored it.
/// Dropping it unacked makes the broker redeliver after the next reconnect.
/// An ack after the connection was lost is dropped (the redelivered copy
/// carries its own token).
pub struct AckToken(Option<(AsyncClient, Publish)>);

impl AckToken {
    pub fn ack(self) {
        if let Some((client, publish)) = self.0 {
            if let Err(err) = client.try_ack(&publish) {
                log::debug!("mqtt: ack for {} not sent: {err}", publish.topic);
            }
        }
    }
}

impl std::fmt::Debug for AckToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pkid = self.0.as_ref().map(|(_, p)| p.pkid);
        f.debug_tuple("AckToken").field(&pkid).finish()
    }
}

enum Control {
    Volatile {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
}

pub struct LinkHandle {
    control: mpsc::UnboundedSender<Control>,
    task: JoinHandle<()>,
}

impl LinkHandle {
    /// QoS 0, never queued: dropped when offline (heartbeats, idle progress).
    pub fn publish_volatile(&self, topic: String, payload: Vec<u8>, retain: bool) {
        let _ = self.control.send(Control::Volatile {
            topic,
            payload,
            retain,
        });
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
    let link = Link::new(settings, outbox, events, shutdown, control_rx);
    LinkHandle {
        control,
        task: tokio::spawn(link.run()),
    }
}

/// What woke the link's loop.
enum Step {
    /// `true` when shutdown was signalled (or its sender dropped).
    Shutdown(bool),
    Polled(Option<Result<Event, ConnectionError>>),
    Retry,
    Outbox(Option<OutboxMessage>),
    Control(Control),
    Permit(Option<mpsc::OwnedPermit<LinkEvent>>),
}

/// One connection attempt: its client and the events of its poller task.
struct Conn {
    client: AsyncClient,
    polled: mpsc::Receiver<Result<Event, ConnectionError>>,
    poller: JoinHandle<()>,
    connected: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

struct Link {
    settings: LinkSettings,
    options: MqttOptions,
    status_topic: String,
    subscriptions: Vec<String>,
    outbox: mpsc::Receiver<OutboxMessage>,
    outbox_open: bool,
    events: mpsc::Sender<LinkEvent>,
    pending_events: VecDeque<LinkEvent>,
    shutdown: watch::Receiver<bool>,
    control: mpsc::UnboundedReceiver<Control>,
    window: Window,
    conn: Option<Conn>,
    retry_at: Option<Instant>,
    backoff: Backoff,
    streak: ErrorStreak,
    subscribed: bool,
}

impl Link {
    fn new(
        settings: LinkSettings,
        outbox: mpsc::Receiver<OutboxMessage>,
        events: mpsc::Sender<LinkEvent>,
        shutdown: watch::Receiver<bool>,
        control: mpsc::UnboundedReceiver<Control>,
    ) -> Self {
        let status_topic = settings.topics.gateway_status();
        let mut subscriptions = settings.topics.subscriptions(&settings.printers);
        subscriptions.extend(settings.extra_subscriptions.iter().cloned());
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Link {
            options: options(&settings, &status_topic),
            backoff: Backoff::new(settings.backoff_initial, settings.backoff_max, 0.2, seed),
            settings,
            status_topic,
            subscriptions,
            outbox,
            outbox_open: true,
            events,
            pending_events: VecDeque::new(),
            shutdown,
            control,
            window: Window::new(WINDOW),
            conn: None,
            retry_at: None,
            streak: ErrorStreak::default(),
            subscribed: false,
        }
    }

    async fn run(mut self) {
        loop {
            if *self.shutdown.borrow() {
                return self.stop().await;
            }
            if self.conn.is_none() && self.retry_at.is_none_or(|t| t <= Instant::now()) {
                self.retry_at = None;
                self.conn = Some(open(&self.options));
            }
            self.queue_outbox();
            let step = tokio::select! {
                changed = self.shutdown.changed() => Step::Shutdown(changed.is_err()),
                polled = next_polled(&mut self.conn) => Step::Polled(polled),
                _ = sleep_until_opt(self.retry_at) => Step::Retry,
                msg = self.outbox.recv(), if self.outbox_open && self.window.has_room() => Step::Outbox(msg),
                Some(control) = self.control.recv() => Step::Control(control),
                permit = self.events.clone().reserve_owned(), if !self.pending_events.is_empty() => Step::Permit(permit.ok()),
            };
            match step {
                Step::Shutdown(true) => return self.stop().await,
                Step::Shutdown(false) | Step::Retry => {}
                Step::Polled(polled) => self.on_polled(polled),
                Step::Outbox(Some(msg)) => self.take(msg),
                Step::Outbox(None) => self.outbox_open = false,
                Step::Control(Control::Volatile {
                    topic,
                    payload,
                    retain,
                }) => {
                    let conn = self.conn.as_ref().filter(|c| c.connected);
                    if let (Some(conn), Ok(())) = (conn, sendable(&topic, payload.len())) {
                        let _ = conn
                            .client
                            .try_publish(topic, QoS::AtMostOnce, retain, payload);
                    }
                }
                Step::Permit(Some(permit)) => {
                    if let Some(event) = self.pending_events.pop_front() {
                        permit.send(event);
                    }
                }
                // Nobody listens any more: drop what was meant for them.
                Step::Permit(None) => self.pending_events.clear(),
            }
        }
    }

    /// A message from the outbox: keep it, or reject it if it can never go.
    fn take(&mut self, msg: OutboxMessage) {
        match sendable(&msg.topic, msg.payload.len()) {
            Ok(()) => self.window.push(msg),
            Err(reason) => {
                log::error!(
                    "mqtt: outbox message {} on {}: {reason}; skipped",
                    msg.seq,
                    msg.topic
                );
                self.pending_events.push_back(LinkEvent::Rejected {
                    seq: msg.seq,
                    reason,
                });
            }
        }
    }

    /// Queues, in order, every unacked message not yet on this connection.
    fn queue_outbox(&mut self) {
        let Some(conn) = self.conn.as_ref().filter(|c| c.connected) else {
            return;
        };
        while let Some(m) = self.window.next_unqueued() {
            let r = conn.client.try_publish(
                m.topic.clone(),
                QoS::AtLeastOnce,
                m.retain,
                m.payload.clone(),
            );
            if r.is_err() {
                break; // request channel full: try again after the next event
            }
            self.window.mark_queued();
        }
    }

    fn on_polled(&mut self, polled: Option<Result<Event, ConnectionError>>) {
        match polled {
            Some(Ok(Event::Incoming(packet))) => self.on_packet(packet),
            Some(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => self.window.on_written(pkid),
            Some(Ok(Event::Outgoing(_))) => {}
            Some(Err(err)) => self.lost(describe(&err)),
            None => self.lost("link poller ended".to_owned()),
        }
    }

    fn on_packet(&mut self, packet: Packet) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        match packet {
            Packet::ConnAck(ack) => {
                conn.connected = true;
                self.backoff.reset();
                let failures = self.streak.succeeded();
                log::info!(
                    "mqtt: connected to {}:{} (session present: {}, after {failures} failures)",
                    self.settings.host,
                    self.settings.port,
                    ack.session_present
                );
                let birth = self.settings.birth.clone();
                if conn
                    .client
                    .try_publish(self.status_topic.clone(), QoS::AtLeastOnce, true, birth)
                    .is_ok()
                {
                    self.window.status_queued();
                }
                let mut awaiting_suback = false;
                if !ack.session_present || !self.subscribed {
                    let filters = self
                        .subscriptions
                        .iter()
                        .map(|t| SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
                    match conn.client.try_subscribe_many(filters) {
                        // `Connected` waits for the SubAck: then inbound works.
                        Ok(()) => {
                            awaiting_suback = true;
                            self.subscribed = false; // until the SubAck says so
                        }
                        Err(err) => log::error!("mqtt: cannot queue subscriptions: {err}"),
                    }
                }
                if !awaiting_suback {
                    self.pending_events.push_back(LinkEvent::Connected);
                }
            }
            Packet::PubAck(ack) => {
                if let Some(seq) = self.window.on_puback(ack.pkid) {
                    self.pending_events.push_back(LinkEvent::Delivered { seq });
                }
            }
            Packet::SubAck(ack) => {
                self.subscribed = true;
                self.pending_events.push_back(LinkEvent::Connected);
                for (code, topic) in ack.return_codes.iter().zip(&self.subscriptions) {
                    if matches!(code, SubscribeReasonCode::Failure) {
                        self.subscribed = false;
                        log::error!("mqtt: broker refused the subscription to {topic}");
                    }
                }
            }
            Packet::Publish(publish) => {
                let topic = publish.topic.clone();
                let payload = publish.payload.to_vec();
                let ack = match publish.qos {
                    QoS::AtMostOnce => AckToken(None),
                    _ => AckToken(Some((conn.client.clone(), publish))),
                };
                self.pending_events
                    .push_back(LinkEvent::Inbound(InboundMessage {
                        topic,
                        payload,
                        ack,
                    }));
            }
            _ => {}
        }
    }

    /// The connection failed: forget it, requeue the window, back off.
    fn lost(&mut self, reason: String) {
        let was_connected = self.conn.take().is_some_and(|c| c.connected);
        self.window.reset();
        let delay = self.backoff.next_delay();
        self.retry_at = Some(Instant::now() + delay);
        if self.streak.failed(&reason) {
            log::warn!(
                "mqtt: {}:{}: {reason}; retrying with back-off ({} unacked messages kept)",
                self.settings.host,
                self.settings.port,
                self.window.len()
            );
            self.pending_events
                .push_back(LinkEvent::Disconnected { reason });
        } else if was_connected {
            self.pending_events
                .push_back(LinkEvent::Disconnected { reason });
        }
    }

    /// Shutdown: publish the offline status, wait (bounded) for the broker's
    /// acks, disconnect, hand over the last events, end.
    async fn stop(mut self) {
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        if let Some(conn) = self.conn.as_ref().filter(|c| c.connected) {
            let will = self.settings.will.clone();
            if conn
                .client
                .try_publish(self.status_topic.clone(), QoS::AtLeastOnce, true, will)
                .is_ok()
            {
                self.window.status_queued();
            }
            while !self.window.all_acked() && self.conn.is_some() {
                tokio::select! {
                    polled = next_polled(&mut self.conn) => self.on_polled(polled),
                    _ = sleep_until(deadline) => break,
                }
            }
            if let Some(conn) = self.conn.as_mut() {
                let _ = conn.client.try_disconnect();
                loop {
                    tokio::select! {
                        polled = conn.polled.recv() => match polled {
                            Some(Ok(Event::Outgoing(Outgoing::Disconnect))) | Some(Err(_)) | None => break,
                            Some(Ok(_)) => {}
                        },
                        _ = sleep_until(deadline) => break,
                    }
                }
            }
        }
        self.conn = None;
        for event in self.pending_events.drain(..) {
            // Inbound messages left here were never acked: redelivered next time.
            if self.events.try_send(event).is_err() {
                break;
            }
        }
        log::info!("mqtt: link stopped");
    }
}

async fn next_polled(conn: &mut Option<Conn>) -> Option<Result<Event, ConnectionError>> {
    match conn {
        Some(c) => c.polled.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Starts a connection attempt: a new client, and a task polling its event
/// loop until the first error, forwarding every event.
fn open(options: &MqttOptions) -> Conn {
    let (client, eventloop) = AsyncClient::new(options.clone(), WINDOW * 4);
    let (tx, polled) = mpsc::channel(256);
    let poller = tokio::spawn(poll(eventloop, tx));
    Conn {
        client,
        polled,
        poller,
        connected: false,
    }
}

async fn poll(mut eventloop: EventLoop, tx: mpsc::Sender<Result<Event, ConnectionError>>) {
    loop {
        let polled = eventloop.poll().await;
        let failed = polled.is_err();
        if tx.send(polled).await.is_err() || failed {
            return;
        }
    }
}

/// Whether a publish can ever go out: a valid topic and a packet under the limit.
fn sendable(topic: &str, payload_len: usize) -> Result<(), String> {
    if topic.is_empty() || topic.contains(['+', '#', '\0']) {
        return Err("invalid topic".to_owned());
    }
    // fixed header (≤ 5) + topic length (2) + topic + packet id (2) + payload
    let size = 5 + 2 + topic.len() + 2 + payload_len;
    if size > MAX_PACKET {
        return Err(format!(
            "message too large: {size} bytes, limit {MAX_PACKET}"
        ));
    }
    Ok(())
}

fn options(s: &LinkSettings, status_topic: &str) -> MqttOptions {
    let client_id = if s.client_id.is_empty() {
        format!("printgate-{}", s.topics.gateway_id())
    } else {
        s.client_id.clone()
    };
    let mut o = MqttOptions::new(client_id, s.host.clone(), s.port);
    let keep_alive = if s.keep_alive.is_zero() {
        s.keep_alive
    } else {
        s.keep_alive.max(Duration::from_secs(1))
    };
    o.set_keep_alive(keep_alive)
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_last_will(LastWill::new(
            status_topic,
            s.will.clone(),
            QoS::AtLeastOnce,
            true,
        ));
    if let Some(user) = &s.username {
        o.set_credentials(user.clone(), s.password.clone().unwrap_or_default());
    }
    if let Some(tls) = &s.tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca: tls.ca_pem.clone(),
            alpn: None,
            client_auth: tls.client_auth.clone(),
        }));
    }
    o
}
