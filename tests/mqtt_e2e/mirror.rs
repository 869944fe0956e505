//! The farm's view of the broker: an observer client (from `tests/support`)
//! whose messages a background task appends to a shared log, so that a
//! synchronous test can wait on conditions over everything seen so far. It
//! also publishes what the farm's job_handler and robots would (QoS 1).

use super::rig::wait_for;
use super::support::Observer;
use rumqttc::{AsyncClient, QoS};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use tokio::runtime::{Handle, Runtime};
use tokio::task::AbortHandle;

/// One message as the observer saw it; `json` is `Null` when the payload is
/// not JSON.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub json: Value,
}

impl Msg {
    /// The outbox sequence number written into JSON objects, if any.
    pub fn seq(&self) -> Option<u64> {
        self.json.get("seq").and_then(Value::as_u64)
    }
}

pub struct Mirror {
    log: Arc<Mutex<Vec<Msg>>>,
    client: AsyncClient,
    handle: Handle,
    /// The recorder; aborting it drops the observer and its connection.
    recorder: AbortHandle,
}

impl Mirror {
    /// Connects directly to the broker (never through the proxy) and
    /// subscribes to `filters` before returning.
    pub fn connect(rt: &Runtime, broker: u16, id: &str, filters: &[&str]) -> Mirror {
        let mut observer = rt.block_on(Observer::connect(broker, id, filters));
        let client = observer.client.clone();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let recorder = rt.spawn(async move {
            while let Some(seen) = observer.recv().await {
                let json = serde_json::from_slice(&seen.payload).unwrap_or(Value::Null);
                sink.lock().unwrap().push(Msg {
                    topic: seen.topic,
                    payload: seen.payload,
                    retain: seen.retain,
                    json,
                });
            }
        });
        Mirror {
            log,
            client,
            handle: rt.handle().clone(),
            recorder: recorder.abort_handle(),
        }
    }

    /// Publishes with QoS 1, not retained (returns once the client queued it).
    pub fn publish(&self, topic: &str, payload: &[u8]) {
        self.handle
            .block_on(
                self.client
                    .publish(topic, QoS::AtLeastOnce, false, payload.to_vec()),
            )
            .unwrap();
    }

    /// Publishes with QoS 1 and the retain flag: the broker keeps it and
    /// replays it to every later subscriber.
    pub fn publish_retained(&self, topic: &str, payload: &[u8]) {
        self.handle
            .block_on(
                self.client
                    .publish(topic, QoS::AtLeastOnce, true, payload.to_vec()),
            )
            .unwrap();
    }

    /// How many messages were seen so far (a mark for later waits).
    pub fn len(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Everything seen from index `from` on.
    pub fn since(&self, from: usize) -> Vec<Msg> {
        let log = self.log.lock().unwrap();
        log.get(from..).unwrap_or_default().to_vec()
    }

    /// Waits (bounded) until `f`, applied to the messages seen from index
    /// `from` on, returns `Some`.
    pub fn wait<T>(&self, what: &str, from: usize, mut f: impl FnMut(&[Msg]) -> Option<T>) -> T {
        wait_for(what, || {
            let log = self.log.lock().unwrap();
            f(log.get(from..).unwrap_or_default())
        })
    }

    /// Waits for the first message from `from` on that satisfies `pred`;
    /// returns its index in the log and the message.
    pub fn wait_msg(&self, what: &str, from: usize, pred: impl Fn(&Msg) -> bool) -> (usize, Msg) {
        self.wait(what, from, |m| {
            m.iter().position(&pred).map(|i| (from + i, m[i].clone()))
        })
    }

    /// Waits for an event of `kind` on `topic` from index `from` on.
    pub fn wait_event(&self, topic: &str, kind: &str, from: usize) -> (usize, Msg) {
        self.wait_msg(&format!("event {kind} on {topic}"), from, |m| {
            m.topic == topic && m.json["type"] == kind
        })
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.recorder.abort();
    }
}
