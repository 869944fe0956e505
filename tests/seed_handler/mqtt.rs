//! A small blocking MQTT client for the farm fixtures, on rumqttc's sync
//! API: one connection thread hands every publish it receives to a callback
//! and subscribes again after each (re)connect; any thread may publish. Also
//! the [`Recorder`], which keeps every message under a filter with the
//! instant it arrived. Owns no farm logic; never publishes on its own.

use rumqttc::{Client, Connection, Event, MqttOptions, Packet, QoS};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a client may take to connect and have its filters acknowledged.
const SUBSCRIBE_LIMIT: Duration = Duration::from_secs(10);

/// One message as a client received it.
#[derive(Clone, Debug)]
pub struct Msg {
    pub at: Instant,
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Msg {
    /// The payload as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or(serde_json::Value::Null)
    }
}

/// A connected client and its connection thread.
pub struct Link {
    client: Client,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Link {
    /// Connects to 127.0.0.1:`port` as `id`, subscribes to `filters` (QoS 1)
    /// and returns once the broker acknowledged them all (panics after 10 s:
    /// a fixture without its subscriptions would only make a test hang).
    pub fn connect(
        port: u16,
        id: &str,
        filters: &[String],
        mut on_publish: impl FnMut(Msg) + Send + 'static,
    ) -> Link {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, connection) = Client::new(options, 1024);
        let stop = Arc::new(AtomicBool::new(false));
        let (subacked, acks) = mpsc::channel();
        let thread = {
            let (client, stop, filters) = (client.clone(), stop.clone(), filters.to_vec());
            std::thread::Builder::new()
                .name(format!("mqtt-{id}"))
                .spawn(move || {
                    drive(
                        connection,
                        &client,
                        &filters,
                        &stop,
                        &subacked,
                        &mut on_publish,
                    )
                })
                .unwrap_or_else(|e| panic!("{id}: cannot spawn its MQTT thread: {e}"))
        };
        let deadline = Instant::now() + SUBSCRIBE_LIMIT;
        for filter in filters {
            let left = deadline.saturating_duration_since(Instant::now());
            if acks.recv_timeout(left).is_err() {
                panic!("{id}: no SUBACK for {filter} from the broker on port {port} within {SUBSCRIBE_LIMIT:?}");
            }
        }
        Link {
            client,
            stop,
            thread: Some(thread),
        }
    }

    /// Publishes at QoS 1. Fails only when the connection thread has ended.
    pub fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) -> Result<(), String> {
        self.publisher().publish(topic, payload, retain)
    }

    /// A handle that publishes through this link from another thread.
    pub fn publisher(&self) -> Publisher {
        Publisher {
            client: self.client.clone(),
        }
    }
}

/// Publishes through a [`Link`] (which must outlive its use).
pub struct Publisher {
    client: Client,
}

impl Publisher {
    /// Publishes at QoS 1. Fails only when the connection thread has ended.
    /// Never call it from a message callback while holding a lock that the
    /// callback takes: the connection thread is the one that sends.
    pub fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) -> Result<(), String> {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .map_err(|e| format!("publish on {topic}: {e}"))
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.client.try_disconnect(); // the thread also stops on the flag
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The connection thread: polls until `stop`, re-subscribing after every
/// CONNACK (clean sessions forget subscriptions).
fn drive(
    mut connection: Connection,
    client: &Client,
    filters: &[String],
    stop: &AtomicBool,
    subacked: &mpsc::Sender<()>,
    on_publish: &mut impl FnMut(Msg),
) {
    while !stop.load(Ordering::SeqCst) {
        let event = match connection.recv_timeout(Duration::from_millis(100)) {
            Ok(event) => event,
            Err(rumqttc::RecvTimeoutError::Timeout) => continue,
            Err(rumqttc::RecvTimeoutError::Disconnected) => return,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                for f in filters {
                    // Queued for this same thread: never blocks.
                    if let Err(e) = client.try_subscribe(f.as_str(), QoS::AtLeastOnce) {
                        log::warn!("fixture client: cannot subscribe to {f}: {e}");
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                let _ = subacked.send(()); // nobody waits after the first connect
            }
            Ok(Event::Incoming(Packet::Publish(p))) => on_publish(Msg {
                at: Instant::now(),
                topic: p.topic.clone(),
                payload: p.payload.to_vec(),
                retain: p.retain,
            }),
            Ok(_) => {}
            Err(e) => {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                log::warn!("fixture client: {e}; reconnecting");
                // Back-off against a broker that refuses: not synchronisation.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Records every message under its filters, in arrival order.
pub struct Recorder {
    seen: Arc<Mutex<Vec<Msg>>>,
    _link: Link,
}

impl Recorder {
    pub fn start(port: u16, id: &str, filters: &[String]) -> Recorder {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let link = Link::connect(port, id, filters, move |m| lock(&sink).push(m));
        Recorder { seen, _link: link }
    }

    pub fn messages(&self) -> Vec<Msg> {
        lock(&self.seen).clone()
    }

    /// Messages on exactly `topic`.
    pub fn on(&self, topic: &str) -> Vec<Msg> {
        lock(&self.seen)
            .iter()
            .filter(|m| m.topic == topic)
            .cloned()
            .collect()
    }

    /// How many messages so far (for rates).
    pub fn count(&self) -> usize {
        lock(&self.seen).len()
    }
}

/// Locks a fixture mutex; a poisoned one means a fixture thread panicked,
/// and its data is still the best account of what happened.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
