//! Shared test harness: a cuttable TCP proxy, an observer MQTT client, link
//! settings and bounded waits. Only 127.0.0.1.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use printgate::mqtt::link::{self, LinkEvent, LinkHandle, LinkSettings, OutboxMessage};
use printgate::mqtt::topics::Topics;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

/// Every bounded wait in these tests gives up after this long.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = env_logger::builder().is_test(true).try_init();
}

/// Awaits `fut`, failing the test with `what` if it takes longer than DEADLINE.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

// ---------------------------------------------------------------- proxy

#[derive(Default)]
struct ProxyState {
    upstream: u16,
    cut: bool,
    conns: Vec<AbortHandle>,
}

/// A TCP proxy on 127.0.0.1 that can be cut (every connection dropped at
/// once, new ones refused) and restored, possibly to another upstream port.
pub struct Proxy {
    pub port: u16,
    state: Arc<Mutex<ProxyState>>,
    refused: watch::Receiver<u64>,
    accept: AbortHandle,
}

impl Proxy {
    pub async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(ProxyState {
            upstream,
            ..Default::default()
        }));
        let st = state.clone();
        let (refused_tx, refused) = watch::channel(0u64);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let mut s = st.lock().unwrap();
                if s.cut {
                    refused_tx.send_modify(|n| *n += 1);
                    continue; // dropped: closed at once
                }
                let upstream = s.upstream;
                let task = tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                s.conns.push(task.abort_handle());
            }
        })
        .abort_handle();
        Proxy {
            port,
            state,
            refused,
            accept,
        }
    }

    /// Drops every proxied connection abruptly and refuses new ones.
    pub fn cut(&self) {
        let mut s = self.state.lock().unwrap();
        s.cut = true;
        for c in s.conns.drain(..) {
            c.abort();
        }
    }

    pub fn restore(&self) {
        self.state.lock().unwrap().cut = false;
    }

    pub fn set_upstream(&self, port: u16) {
        self.state.lock().unwrap().upstream = port;
    }

    /// Waits until `n` more connection attempts were refused while cut.
    pub async fn wait_refused(&mut self, n: u64) {
        let target = *self.refused.borrow() + n;
        within(
            "refused reconnects",
            self.refused.wait_for(|r| *r >= target),
        )
        .await
        .unwrap();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

// ------------------------------------------------------------- observer

#[derive(Debug)]
pub struct Seen {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// A plain rumqttc client that records what it sees on its filters.
pub struct Observer {
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Seen>,
    poller: AbortHandle,
}

impl Observer {
    pub async fn connect(port: u16, id: &str, filters: &[&str]) -> Observer {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_max_packet_size(1 << 20, 1 << 20)
            .set_keep_alive(Duration::from_secs(30));
        Self::connect_with(o, filters).await
    }

    pub async fn connect_with(options: MqttOptions, filters: &[&str]) -> Observer {
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (tx, rx) = mpsc::unbounded_channel();
        let (subacks_tx, mut subacks) = mpsc::unbounded_channel();
        let poller = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(Seen {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        });
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subacks_tx.send(());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        log::warn!("observer: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
        .abort_handle();
        for f in filters {
            client.subscribe(*f, QoS::AtLeastOnce).await.unwrap();
            within("observer suback", subacks.recv()).await.unwrap();
        }
        Observer { client, rx, poller }
    }

    /// The next message seen, waiting at most DEADLINE.
    pub async fn next(&mut self, what: &str) -> Seen {
        within(what, self.rx.recv())
            .await
            .expect("observer poller ended")
    }

    /// The next message with no deadline, or `None` once the poller ended
    /// (for recorders that outlive any one wait).
    pub async fn recv(&mut self) -> Option<Seen> {
        self.rx.recv().await
    }

    /// Skips messages until one satisfies `pred`.
    pub async fn until(&mut self, what: &str, pred: impl Fn(&Seen) -> bool) -> Seen {
        within(what, async {
            loop {
                let s = self.rx.recv().await.expect("observer poller ended");
                if pred(&s) {
                    return s;
                }
            }
        })
        .await
    }

    pub async fn publish(&self, topic: &str, payload: &[u8], retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.to_vec())
            .await
            .unwrap();
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

// ----------------------------------------------------------------- link

pub fn settings(port: u16, gateway: &str, prefix: &str) -> LinkSettings {
    LinkSettings {
        host: "127.0.0.1".into(),
        port,
        client_id: format!("link-{gateway}"),
        username: None,
        password: None,
        tls: None,
        keep_alive: Duration::from_secs(5),
        topics: Topics::new(gateway).with_prefix(prefix),
        printers: vec!["p1".into(), "p2".into()],
        extra_subscriptions: vec![],
        birth: br#"{"status":"online"}"#.to_vec(),
        will: br#"{"status":"offline"}"#.to_vec(),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
    }
}

/// The daemon's side of a running link.
pub struct Daemon {
    pub outbox: mpsc::Sender<OutboxMessage>,
    pub events: mpsc::Receiver<LinkEvent>,
    pub shutdown: watch::Sender<bool>,
    pub handle: LinkHandle,
    /// Every `Delivered` seq seen so far, in order, whichever wait read it.
    pub delivered: Vec<u64>,
}

impl Daemon {
    pub fn start(settings: LinkSettings) -> Daemon {
        let (outbox, outbox_rx) = mpsc::channel(64);
        let (events_tx, events) = mpsc::channel(64);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let handle = link::spawn(settings, outbox_rx, events_tx, shutdown_rx);
        Daemon {
            outbox,
            events,
            shutdown,
            handle,
            delivered: Vec::new(),
        }
    }

    pub async fn next(&mut self, what: &str) -> LinkEvent {
        let e = within(what, self.events.recv()).await.expect("link ended");
        if let LinkEvent::Delivered { seq } = e {
            self.delivered.push(seq);
        }
        e
    }

    /// Skips events until one satisfies `pred`.
    pub async fn until(&mut self, what: &str, pred: impl Fn(&LinkEvent) -> bool) -> LinkEvent {
        within(what, async {
            loop {
                let e = self.events.recv().await.expect("link ended");
                if let LinkEvent::Delivered { seq } = e {
                    self.delivered.push(seq);
                }
                if pred(&e) {
                    return e;
                }
            }
        })
        .await
    }

    /// Reads events until `n` deliveries in total were seen; a rejection fails.
    pub async fn wait_delivered(&mut self, n: usize) {
        while self.delivered.len() < n {
            if let LinkEvent::Rejected { seq, reason } = self.next("delivered").await {
                panic!("rejected {seq}: {reason}");
            }
        }
    }

    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        within("link shutdown", self.handle.join()).await;
    }
}

pub fn outbox_msg(seq: u64, topic: &str) -> OutboxMessage {
    OutboxMessage {
        seq,
        topic: topic.to_owned(),
        payload: format!(r#"{{"seq":{seq}}}"#).into_bytes(),
        retain: false,
    }
}

/// The `seq` in a payload made by `outbox_msg`.
pub fn seq_of(payload: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
    v["seq"].as_u64().unwrap()
}

/// Small helpers on settings for tests.
pub trait LinkSettingsExt {
    fn port(self, port: u16) -> Self;
}

impl LinkSettingsExt for LinkSettings {
    fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
}
