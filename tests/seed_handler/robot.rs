//! Cleaning robots as seed 000 describes them: they listen on
//! `<prefix>printers` and, for each printer newly on the list, one robot
//! picks the part (takes `pick_time`) and reports `{"robotId","printerId",
//! "action":"pick","status":"completed","timestamp"}` on
//! `<prefix>robot/<robot-id>/progress`, with a fresh RFC 3339 timestamp,
//! not retained. One listener hands newly listed printers to whichever
//! robot is free, so robots sharing the list never clear a plate twice for
//! one listing. Each clear is recorded with a [`Witness`] snapshot.

use super::mqtt::{lock, Link, Msg};
use super::{Snapshot, Witness};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

#[derive(Clone)]
pub struct RobotSettings {
    pub broker_port: u16,
    /// Client ids are `<name>-listener` and `<name>-rob-<n>`.
    pub name: String,
    pub prefix: String,
    pub robots: usize,
    /// How long one pick takes (the robot's work, not a synchronisation).
    pub pick_time: Duration,
    pub witness: Option<Witness>,
}

impl RobotSettings {
    pub fn new(broker_port: u16, robots: usize) -> RobotSettings {
        RobotSettings {
            broker_port,
            name: "robots".into(),
            prefix: "device/".into(),
            robots,
            pick_time: Duration::from_millis(100),
            witness: None,
        }
    }
}

/// One plate cleared.
#[derive(Clone, Debug)]
pub struct Clear {
    /// Just before the report was published.
    pub at: Instant,
    pub robot: String,
    pub printer: String,
    pub timestamp: String,
    /// The printer's [`Snapshot`] just before the report was published.
    pub witness: Snapshot,
}

#[derive(Default)]
struct Log {
    clears: Vec<Clear>,
    /// Lists heard on `<prefix>printers`: (when, list).
    lists: Vec<(Instant, Vec<String>)>,
    errors: Vec<String>,
}

/// The robots; stopped when dropped.
pub struct Robots {
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    _listener: Link,
}

impl Robots {
    pub fn start(settings: RobotSettings) -> Robots {
        let log = Arc::new(Mutex::new(Log::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<String>();
        let rx = Arc::new(Mutex::new(rx));
        let workers = (1..=settings.robots.max(1))
            .map(|n| {
                let (settings, log, stop, rx) =
                    (settings.clone(), log.clone(), stop.clone(), rx.clone());
                std::thread::Builder::new()
                    .name(format!("{}-rob-{n}", settings.name))
                    .spawn(move || work(n, &settings, &log, &stop, &rx))
                    .unwrap_or_else(|e| panic!("robots: cannot spawn robot {n}: {e}"))
            })
            .collect();
        let listener = {
            let log = log.clone();
            let mut listed: Vec<String> = Vec::new();
            let on_list = move |m: Msg| {
                let now: Vec<String> = match serde_json::from_slice(&m.payload) {
                    Ok(list) => list,
                    Err(e) => {
                        let text = String::from_utf8_lossy(&m.payload).into_owned();
                        lock(&log).errors.push(format!("bad list {text:?}: {e}"));
                        return;
                    }
                };
                for printer in now.iter().filter(|p| !listed.contains(p)) {
                    // The workers live as long as the listener.
                    let _ = tx.send(printer.clone());
                }
                lock(&log).lists.push((m.at, now.clone()));
                listed = now;
            };
            let filters = [format!("{}printers", settings.prefix)];
            let id = format!("{}-listener", settings.name);
            Link::connect(settings.broker_port, &id, &filters, on_list)
        };
        Robots {
            log,
            stop,
            workers,
            _listener: listener,
        }
    }

    /// Every clear so far, in order.
    pub fn clears(&self) -> Vec<Clear> {
        lock(&self.log).clears.clone()
    }

    /// Every list heard so far.
    pub fn lists(&self) -> Vec<(Instant, Vec<String>)> {
        lock(&self.log).lists.clone()
    }

    pub fn errors(&self) -> Vec<String> {
        lock(&self.log).errors.clone()
    }
}

impl Drop for Robots {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Robot `n`: takes the next listed printer, picks, reports.
fn work(
    n: usize,
    settings: &RobotSettings,
    log: &Mutex<Log>,
    stop: &AtomicBool,
    jobs: &Mutex<mpsc::Receiver<String>>,
) {
    let robot = format!("rob-{n}");
    let link = Link::connect(
        settings.broker_port,
        &format!("{}-{robot}", settings.name),
        &[],
        |_| {},
    );
    let topic = format!("{}robot/{robot}/progress", settings.prefix);
    while !stop.load(Ordering::SeqCst) {
        let next = lock(jobs).recv_timeout(Duration::from_millis(100));
        let printer = match next {
            Ok(p) => p,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        std::thread::sleep(settings.pick_time);
        let witness = settings
            .witness
            .as_ref()
            .map(|w| w(&printer))
            .unwrap_or_default();
        let timestamp = printgate::mqtt::payload::rfc3339(SystemTime::now());
        let report = json!({
            "robotId": robot, "printerId": printer, "action": "pick",
            "status": "completed", "timestamp": timestamp,
        });
        let at = Instant::now();
        let sent = link.publish(&topic, report.to_string().into_bytes(), false);
        let mut log = lock(log);
        match sent {
            Ok(()) => log.clears.push(Clear {
                at,
                robot: robot.clone(),
                printer,
                timestamp,
                witness,
            }),
            Err(e) => log.errors.push(format!("{robot}: {e}")),
        }
    }
}
