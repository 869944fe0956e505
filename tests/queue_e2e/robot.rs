//! The MQTT side of a rig: an observer that records every message under the
//! rig's topic prefix with the instant it arrived, and the robot, which
//! answers each printer newly listed on `<prefix>printers` with `pick
//! completed` on `<prefix>robot/rob-1/progress` (as the farm's robots do).
//! Both are `support::Observer` clients, driven on their own runtime thread.

use crate::support::Observer;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A message the observer saw, and when.
#[derive(Clone, Debug)]
pub struct Msg {
    pub at: Instant,
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Msg {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or(Value::Null)
    }
}

pub struct Mqtt {
    seen: Arc<Mutex<Vec<Msg>>>,
    /// (when the robot read the list, printer it picked), in order.
    picks: Arc<Mutex<Vec<(Instant, String)>>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Mqtt {
    /// Connects the observer (and the robot if `robot`) to the broker on
    /// `port`, subscribed before the daemon publishes anything.
    pub fn start(port: u16, name: &str, prefix: &str, robot: bool) -> Mqtt {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let picks = Arc::new(Mutex::new(Vec::new()));
        rt.block_on(async {
            let filter = format!("{prefix}#");
            let observer = Observer::connect(port, &format!("obs-{name}"), &[&filter]).await;
            tokio::spawn(record(observer, seen.clone()));
            if robot {
                let filter = format!("{prefix}printers");
                let robot = Observer::connect(port, &format!("rob-{name}"), &[&filter]).await;
                tokio::spawn(robot_loop(robot, prefix.to_owned(), picks.clone()));
            }
        });
        Mqtt {
            seen,
            picks,
            rt: Some(rt),
        }
    }

    pub fn messages(&self) -> Vec<Msg> {
        self.seen.lock().unwrap().clone()
    }

    pub fn picks(&self) -> Vec<(Instant, String)> {
        self.picks.lock().unwrap().clone()
    }
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn record(mut observer: Observer, seen: Arc<Mutex<Vec<Msg>>>) {
    while let Some(s) = observer.recv().await {
        seen.lock().unwrap().push(Msg {
            at: Instant::now(),
            topic: s.topic,
            payload: s.payload,
        });
    }
}

/// Picks each printer that appears on the list (not those still on it).
async fn robot_loop(
    mut robot: Observer,
    prefix: String,
    picks: Arc<Mutex<Vec<(Instant, String)>>>,
) {
    let topic = format!("{prefix}robot/rob-1/progress");
    let mut listed: Vec<String> = Vec::new();
    while let Some(s) = robot.recv().await {
        let at = Instant::now();
        let now: Vec<String> = serde_json::from_slice(&s.payload).unwrap_or_default();
        let new: Vec<String> = now
            .iter()
            .filter(|p| !listed.contains(p))
            .cloned()
            .collect();
        listed = now;
        for printer in new {
            picks.lock().unwrap().push((at, printer.clone()));
            let msg = serde_json::json!({
                "robotId": "rob-1", "printerId": printer, "action": "pick",
                "status": "completed",
                "timestamp": printgate::mqtt::payload::rfc3339(std::time::SystemTime::now()),
            });
            robot
                .publish(&topic, msg.to_string().as_bytes(), false)
                .await;
        }
    }
}
