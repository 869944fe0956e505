//! One connection attempt to the broker: the rumqttc options built from
//! `LinkSettings`, a fresh client, and the task that polls its event loop.
//!
//! Owns rumqttc plumbing only. A `Conn` lives for one connection: on the
//! first error its poller ends and the link drops it with everything rumqttc
//! still had queued, so a stale request can never reach the next connection.
//! Never decides what to publish and never retries.

use super::{LinkSettings, MAX_INCOMING_PACKET, MAX_PACKET, WINDOW};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, QoS, TlsConfiguration,
    Transport,
};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// One connection attempt: its client and the events of its poller task.
pub(crate) struct Conn {
    pub(crate) client: AsyncClient,
    /// Acks of this connection's inbound messages, in arrival order.
    pub(crate) acks: super::acks::AckOrder,
    pub(crate) polled: mpsc::Receiver<Result<Event, ConnectionError>>,
    poller: JoinHandle<()>,
    /// Set at the ConnAck.
    pub(crate) connected: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

pub(crate) async fn next_polled(conn: &mut Option<Conn>) -> Option<Result<Event, ConnectionError>> {
    match conn {
        Some(c) => c.polled.recv().await,
        None => std::future::pending().await,
    }
}

/// Starts a connection attempt: a new client, and a task polling its event
/// loop until the first error, forwarding every event.
pub(crate) fn open(options: &MqttOptions) -> Conn {
    let (client, eventloop) = AsyncClient::new(options.clone(), WINDOW * 4);
    let (tx, polled) = mpsc::channel(256);
    let poller = tokio::spawn(poll(eventloop, tx));
    Conn {
        acks: super::acks::AckOrder::new(client.clone()),
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
pub(crate) fn sendable(topic: &str, payload_len: usize) -> Result<(), String> {
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

pub(crate) fn options(s: &LinkSettings, status_topic: &str) -> MqttOptions {
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
        .set_max_packet_size(MAX_INCOMING_PACKET, MAX_PACKET)
        .set_last_will(LastWill::new(
            status_topic,
            s.will.clone(),
            QoS::AtLeastOnce,
            true,
        ));
    o
}

/// `options` completed for one connection attempt: the TLS client config
/// (built by `tls.rs`, not by rumqttc) and the username and password as
/// they are now: the password source is read at every attempt, so a
/// rotated file or credential is used without a restart. `Err` says what
/// is wrong (never the password).
pub(crate) fn connect_options(
    options: &MqttOptions,
    s: &LinkSettings,
) -> Result<MqttOptions, String> {
    let mut o = options.clone();
    if let Some(tls) = &s.tls {
        let config = super::tls::client_config(tls)?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    }
    if let Some(user) = &s.username {
        let password = match &s.password {
            Some(secret) => secret
                .read()
                .map_err(|e| format!("no password for the broker: {e}"))?,
            None => String::new(),
        };
        o.set_credentials(user.clone(), password);
    }
    Ok(o)
}

/// An MQTT topic filter: non-empty, no NUL, `+` only as a whole level and
/// `#` only as the whole last level.
pub(crate) fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    levels.iter().enumerate().all(|(i, level)| match *level {
        "#" => i == last,
        "+" => true,
        other => !other.contains(['+', '#']),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_publish_limits() {
        for ok in ["a/b", "device/robot/+/progress", "#", "a/#", "+/+"] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "a/#/b", "a+/b", "a/b#", "x\0"] {
            assert!(!valid_filter(bad), "{bad}");
        }
        assert!(sendable("a/b", 10).is_ok());
        assert!(sendable("a/+", 10).is_err());
        assert!(sendable("", 10).is_err());
        assert!(sendable("a", MAX_PACKET).unwrap_err().contains("too large"));
    }
}
