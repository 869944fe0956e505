//! The link task itself: one loop reacting to the poller's events, the
//! outbox, volatile publishes, the daemon's readiness for events, back-off
//! timers and shutdown. Owns the window and the current connection.

use super::conn::{connect_options, next_polled, open, options, sendable, valid_filter, Conn};
use super::pending::Pending;
use super::reason::describe;
use super::window::Window;
use super::{AckToken, Control, InboundMessage, LinkEvent, LinkSettings, OutboxMessage};
use super::{MAX_INBOUND_PAYLOAD, SHUTDOWN_GRACE, WINDOW};
use crate::backoff::{Backoff, ErrorStreak};
use rumqttc::{
    ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, SubscribeFilter,
    SubscribeReasonCode,
};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};

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

pub(crate) struct Link {
    settings: LinkSettings,
    options: MqttOptions,
    status_topic: String,
    subscriptions: Vec<String>,
    outbox: mpsc::Receiver<OutboxMessage>,
    outbox_open: bool,
    events: mpsc::Sender<LinkEvent>,
    pending_events: Pending,
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
    pub(crate) fn new(
        settings: LinkSettings,
        outbox: mpsc::Receiver<OutboxMessage>,
        events: mpsc::Sender<LinkEvent>,
        shutdown: watch::Receiver<bool>,
        control: mpsc::UnboundedReceiver<Control>,
    ) -> Self {
        let status_topic = settings.topics.gateway_status();
        let mut subscriptions = settings.topics.subscriptions(&settings.printers);
        subscriptions.extend(settings.extra_subscriptions.iter().cloned());
        // One bad filter would make the broker (or rumqttc) refuse them all.
        subscriptions.retain(|f| {
            let ok = valid_filter(f);
            if !ok {
                log::error!("mqtt: not subscribing to {f:?}: invalid topic filter");
            }
            ok
        });
        // The status topic names the gateway; the client id may be set apart.
        let seed = crate::backoff::jitter_seed(&[&status_topic, &settings.client_id]);
        Link {
            options: options(&settings, &status_topic),
            backoff: Backoff::new(settings.backoff_initial, settings.backoff_max, 0.2, seed),
            settings,
            status_topic,
            subscriptions,
            outbox,
            outbox_open: true,
            events,
            pending_events: Pending::default(),
            shutdown,
            control,
            window: Window::new(WINDOW),
            conn: None,
            retry_at: None,
            streak: ErrorStreak::default(),
            subscribed: false,
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            if *self.shutdown.borrow() {
                return self.stop().await;
            }
            if self.conn.is_none() && self.retry_at.is_none_or(|t| t <= Instant::now()) {
                self.retry_at = None;
                match connect_options(&self.options, &self.settings) {
                    Ok(options) => self.conn = Some(open(&options)),
                    Err(reason) => self.lost(reason),
                }
            }
            self.queue_outbox();
            let step = tokio::select! {
                changed = self.shutdown.changed() => Step::Shutdown(changed.is_err()),
                // Full of QoS 1 messages the daemon has not taken: read
                // nothing more (back-pressure) until it takes some.
                polled = next_polled(&mut self.conn), if !self.pending_events.is_full() => Step::Polled(polled),
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
                        // QoS 0 by contract: dropped when rumqttc's queue is full.
                        if let Err(e) =
                            conn.client
                                .try_publish(topic, QoS::AtMostOnce, retain, payload)
                        {
                            log::debug!("mqtt: volatile publish dropped: {e}");
                        }
                    }
                }
                Step::Control(Control::Status { birth, will }) => {
                    self.options.set_last_will(LastWill::new(
                        self.status_topic.clone(),
                        will.clone(),
                        QoS::AtLeastOnce,
                        true,
                    ));
                    self.settings.birth = birth;
                    self.settings.will = will;
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
                self.pending_events.push(LinkEvent::Rejected {
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
                    self.pending_events.push(LinkEvent::Connected);
                }
            }
            Packet::PubAck(ack) => {
                if let Some(seq) = self.window.on_puback(ack.pkid) {
                    self.pending_events.push(LinkEvent::Delivered { seq });
                }
            }
            Packet::SubAck(ack) => {
                self.subscribed = true;
                self.pending_events.push(LinkEvent::Connected);
                for (code, topic) in ack.return_codes.iter().zip(&self.subscriptions) {
                    if matches!(code, SubscribeReasonCode::Failure) {
                        self.subscribed = false;
                        log::error!("mqtt: broker refused the subscription to {topic}");
                    }
                }
            }
            Packet::Publish(publish) => {
                let topic = publish.topic.clone();
                let retain = publish.retain;
                let size = publish.payload.len();
                // An oversized payload is cut: the parser still sees that it
                // is too large, and the queue never holds it whole.
                let keep = size.min(MAX_INBOUND_PAYLOAD + 1);
                let payload = publish.payload.get(..keep).unwrap_or_default().to_vec();
                if size > keep {
                    log::warn!(
                        "mqtt: {size}-byte message on {:?}, over the {MAX_INBOUND_PAYLOAD}-byte limit",
                        publish.topic
                    );
                }
                let ack = match publish.qos {
                    QoS::AtMostOnce => AckToken(None),
                    _ => AckToken::queued(&conn.acks, publish),
                };
                self.pending_events.push_inbound(InboundMessage {
                    topic,
                    payload,
                    retain,
                    size,
                    ack,
                });
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
            self.pending_events.push(LinkEvent::Disconnected { reason });
        } else if was_connected {
            self.pending_events.push(LinkEvent::Disconnected { reason });
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
        // Hand over what is left (Delivered above all, so the store does not
        // resend those rows), waiting no longer than the grace period.
        // Inbound messages that do not make it were never acked: the broker
        // redelivers them next time.
        let handover = Instant::now() + SHUTDOWN_GRACE;
        for event in self.pending_events.drain() {
            match tokio::time::timeout_at(handover, self.events.send(event)).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        log::info!("mqtt: link stopped");
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}
