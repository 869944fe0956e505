//! The farm around printgate as seed 000 describes it, for end-to-end
//! tests: the job handler ([`JobHandler`], written from the seed's text
//! alone), cleaning robots ([`robot::Robots`]) and an MQTT recorder
//! ([`mqtt::Recorder`]). Blocking code on threads (rumqttc's sync client,
//! ureq), sized for hundreds of printers on one broker. It knows nothing of
//! printgate: only the seed's topics and payloads. Tests read what it did
//! from [`Records`] and [`robot::Clear`]s; a [`Witness`] lets a test note
//! what a printer had executed at the moment of each assignment and clear.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

mod handler;
pub mod mqtt;
pub mod robot;
pub mod seat;
#[cfg(test)]
mod seat_tests;

use mqtt::{lock, Link};
use seat::{Change, Seat};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a printer has executed so far, per job id (e.g. moves counted in a
/// simulator's log). Taken just before each assignment and each clear.
pub type Snapshot = BTreeMap<String, usize>;
/// Takes a [`Snapshot`] of one printer (by id).
pub type Witness = Arc<dyn Fn(&str) -> Snapshot + Send + Sync>;
/// Edits an assignment (`&mut`) built for a job (the queue manager's JSON).
pub type Shape = Arc<dyn Fn(&Value, &mut Value) + Send + Sync>;

/// The handler's settings; [`Settings::new`] gives the seed's.
#[derive(Clone)]
pub struct Settings {
    pub broker_port: u16,
    pub client_id: String,
    /// Topic prefix: `device/` in the seed.
    pub prefix: String,
    /// The queue manager's base URL (`http://127.0.0.1:port`).
    pub queue_manager: String,
    /// How long the discovery phase listens (30 s in the seed).
    pub discovery: Duration,
    /// The main loop's "waits briefly before the next iteration".
    pub pause: Duration,
    /// `filamentType` of every assignment (`None`: left out; the seed's Job
    /// has no filament).
    pub filament_type: Option<String>,
    pub shape: Option<Shape>,
    pub witness: Option<Witness>,
}

impl Settings {
    pub fn new(broker_port: u16, queue_manager: &str) -> Settings {
        Settings {
            broker_port,
            client_id: "job-handler".into(),
            prefix: "device/".into(),
            queue_manager: queue_manager.trim_end_matches('/').to_owned(),
            discovery: Duration::from_secs(30),
            pause: Duration::from_millis(200),
            filament_type: Some("PLA".into()),
            shape: None,
            witness: None,
        }
    }
}

/// One assignment the handler published.
#[derive(Clone, Debug)]
pub struct Assignment {
    pub at: Instant,
    pub printer: String,
    pub job: String,
    pub payload: Value,
    /// The printer's [`Snapshot`] just before it was published.
    pub witness: Snapshot,
}

/// One progress message the handler heard.
#[derive(Clone, Debug)]
pub struct Heard {
    pub at: Instant,
    pub printer: String,
    pub status: String,
    pub progress: f64,
    pub job: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// `GET /prioritary_job` requests, and their answers.
    pub polls: u64,
    pub jobs: u64,
    pub empty: u64,
    pub http_errors: u64,
    /// Messages published (assignments and lists).
    pub published: u64,
}

/// Everything the handler heard and did, in order.
#[derive(Clone, Debug)]
pub struct Records {
    pub started: Instant,
    pub discovery_end: Option<Instant>,
    /// Printers heard during the discovery phase.
    pub discovered: BTreeSet<String>,
    pub assignments: Vec<Assignment>,
    pub progress: Vec<Heard>,
    /// Every seat change: (when, printer, change).
    pub changes: Vec<(Instant, String, Change)>,
    /// `idle` + 100 accepted as the end of a print: (when, printer, job).
    pub completions: Vec<(Instant, String, Option<String>)>,
    /// `idle` below 100 after `printing`: (when, printer, job).
    pub ended_before_plate: Vec<(Instant, String, Option<String>)>,
    /// Robot clears acted on: (when, printer).
    pub clears: Vec<(Instant, String)>,
    /// Messages set aside: (when, printer, what and why).
    pub ignored: Vec<(Instant, String, String)>,
    /// Lists published on `<prefix>printers`.
    pub lists: Vec<(Instant, Vec<String>)>,
    /// Robot messages heard: (when, robot, printer, payload).
    pub robot: Vec<(Instant, String, String, Value)>,
    pub counters: Counters,
    /// Malformed input, failed publishes and HTTP errors.
    pub errors: Vec<String>,
}

impl Default for Records {
    fn default() -> Self {
        Records {
            started: Instant::now(),
            discovery_end: None,
            discovered: BTreeSet::new(),
            assignments: Vec::new(),
            progress: Vec::new(),
            changes: Vec::new(),
            completions: Vec::new(),
            ended_before_plate: Vec::new(),
            clears: Vec::new(),
            ignored: Vec::new(),
            lists: Vec::new(),
            robot: Vec::new(),
            counters: Counters::default(),
            errors: Vec::new(),
        }
    }
}

impl Records {
    /// Assignments to `printer`, in order.
    pub fn assignments_of(&self, printer: &str) -> Vec<&Assignment> {
        self.assignments
            .iter()
            .filter(|a| a.printer == printer)
            .collect()
    }

    /// The last progress message heard from `printer`.
    pub fn last_heard(&self, printer: &str) -> Option<&Heard> {
        self.progress.iter().rev().find(|h| h.printer == printer)
    }

    /// Whether `idle` + 100 was accepted for `job` on `printer`.
    pub fn completed(&self, printer: &str, job: &str) -> bool {
        self.completions
            .iter()
            .any(|(_, p, j)| p == printer && j.as_deref() == Some(job))
    }
}

/// A running job handler; stopped when dropped.
pub struct JobHandler {
    shared: Arc<handler::Shared>,
    main: Option<JoinHandle<()>>,
    _link: Link,
}

impl JobHandler {
    /// Connects, subscribes and starts the discovery phase; returns at once.
    pub fn start(settings: Settings) -> JobHandler {
        let (shared, link, main) = handler::start(settings);
        JobHandler {
            shared,
            main: Some(main),
            _link: link,
        }
    }

    /// A copy of the records so far.
    pub fn records(&self) -> Records {
        lock(&self.shared.inner).records.clone()
    }

    /// Reads the records in place (no copy: for frequent polls of a big
    /// farm). `f` runs under the handler's lock: keep it short.
    pub fn with_records<T>(&self, f: impl FnOnce(&Records) -> T) -> T {
        f(&lock(&self.shared.inner).records)
    }

    /// Stops the main loop (no request left in flight) and returns the
    /// final records.
    pub fn stop(mut self) -> Records {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        if let Some(main) = self.main.take() {
            let _ = main.join();
        }
        self.records()
    }

    /// Where the handler believes each printer is.
    pub fn seats(&self) -> BTreeMap<String, Seat> {
        lock(&self.shared.inner).seats.all()
    }

    /// Whether the discovery phase is over.
    pub fn discovered(&self) -> bool {
        lock(&self.shared.inner).records.discovery_end.is_some()
    }

    /// The assignment this handler builds for a queue-manager job.
    pub fn assignment_for(job: &Value, settings: &Settings) -> Value {
        handler::assignment(job, settings)
    }
}

impl Drop for JobHandler {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        if let Some(main) = self.main.take() {
            let _ = main.join();
        }
    }
}
