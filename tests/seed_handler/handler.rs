//! The job handler of seed 000, as its text describes it: a discovery
//! phase (listen for `idle` printers), then a loop that, while a printer is
//! available, asks the queue manager for `GET /prioritary_job`, publishes
//! the seed's assignment on `<prefix>printer/<id>/assignement` (QoS 1) and
//! marks the printer busy; it follows `<prefix>printer/+/progress` and
//! `<prefix>robot/+/progress` ([`super::seat`] holds the rules) and
//! broadcasts the printers awaiting cleaning on `<prefix>printers`. It reads
//! `status`, `progress`, `printerId` and `jobId` only, never events.
//! Everything it hears and does is kept in [`Records`] for the tests.

use super::mqtt::{lock, Link, Msg, Publisher};
use super::seat::{Change, Seats, Why};
use super::{Records, Settings};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// The handler's state, shared by its MQTT thread and its main loop.
pub(super) struct Inner {
    pub seats: Seats,
    pub records: Records,
    /// The `<prefix>printers` list last published.
    published: Option<Vec<String>>,
}

pub(super) struct Shared {
    pub inner: Mutex<Inner>,
    /// Rung on every change a waiting main loop may care about.
    pub wake: Condvar,
    pub stop: AtomicBool,
}

pub(super) fn start(settings: Settings) -> (Arc<Shared>, Link, JoinHandle<()>) {
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            seats: Seats::new(),
            records: Records {
                started: Instant::now(),
                ..Records::default()
            },
            published: None,
        }),
        wake: Condvar::new(),
        stop: AtomicBool::new(false),
    });
    let prefix = settings.prefix.clone();
    let filters = [
        format!("{prefix}printer/+/progress"),
        format!("{prefix}robot/+/progress"),
    ];
    let intake = {
        let shared = shared.clone();
        move |m: Msg| on_message(&shared, &prefix, &m)
    };
    let link = Link::connect(settings.broker_port, &settings.client_id, &filters, intake);
    let main = {
        let shared = shared.clone();
        let link = link.publisher();
        std::thread::Builder::new()
            .name(format!("{}-main", settings.client_id))
            .spawn(move || main_loop(&shared, &link, &settings))
            .unwrap_or_else(|e| panic!("job handler: cannot spawn its main loop: {e}"))
    };
    (shared, link, main)
}

/// The MQTT side: progress and robot messages move seats (never publishes:
/// the main loop does, outside the lock).
fn on_message(shared: &Shared, prefix: &str, m: &Msg) {
    let rest = m.topic.strip_prefix(prefix).unwrap_or("");
    let mut inner = lock(&shared.inner);
    let inner = &mut *inner;
    let body = m.json();
    if let Some(topic_printer) = rest
        .strip_prefix("printer/")
        .and_then(|r| r.strip_suffix("/progress"))
    {
        let printer = body["printerId"].as_str().unwrap_or("");
        if printer != topic_printer {
            let problem = format!("{}: printerId {printer:?} in {body}", m.topic);
            inner.records.errors.push(problem);
            return;
        }
        let status = body["status"].as_str().unwrap_or("").to_owned();
        let progress = body["progress"].as_f64().unwrap_or(0.0);
        let job = body["jobId"].as_str().map(str::to_owned);
        inner
            .records
            .heard(m.at, printer, &status, progress, job.clone());
        let result = inner
            .seats
            .on_progress(printer, &status, progress, job.as_deref());
        inner.records.result(
            m.at,
            printer,
            result,
            &format!("{status} {progress} {job:?}"),
        );
    } else if let Some(robot) = rest
        .strip_prefix("robot/")
        .and_then(|r| r.strip_suffix("/progress"))
    {
        let printer = body["printerId"].as_str().unwrap_or("").to_owned();
        let acted = body["action"] == "pick" && body["status"] == "completed";
        inner
            .records
            .robot
            .push((m.at, robot.to_owned(), printer.clone(), body.clone()));
        if acted {
            let result = inner.seats.on_robot(&printer).map(Some);
            inner
                .records
                .result(m.at, &printer, result, &format!("robot {robot}"));
        }
    } else {
        inner
            .records
            .errors
            .push(format!("unexpected topic {}", m.topic));
    }
    shared.wake.notify_all();
}

/// Discovery, then the assignment loop, until stopped.
fn main_loop(shared: &Shared, link: &Publisher, settings: &Settings) {
    let end = Instant::now() + settings.discovery;
    if !wait(shared, end, false) {
        return;
    }
    {
        let mut inner = lock(&shared.inner);
        inner.seats.discovering = false;
        inner.records.discovery_end = Some(Instant::now());
        inner.records.discovered = inner.seats.all().into_keys().collect();
    }
    let agent = agent();
    let mut held: Option<Value> = None;
    while !shared.stop.load(Ordering::SeqCst) {
        let (list, free) = {
            let mut inner = lock(&shared.inner);
            let now = inner.seats.awaiting_cleaning();
            let list = (inner.published.as_ref() != Some(&now)).then_some(now);
            if let Some(l) = &list {
                inner.published = Some(l.clone());
            }
            (list, inner.seats.any_available())
        };
        if let Some(list) = list {
            let topic = format!("{}printers", settings.prefix);
            let sent = link.publish(&topic, json!(list).to_string().into_bytes(), false);
            lock(&shared.inner)
                .records
                .sent(sent, |r| r.lists.push((Instant::now(), list)));
        }
        if !free {
            // Until a printer becomes available (or the seed's brief pause).
            wait(shared, Instant::now() + settings.pause, true);
            continue;
        }
        if held.is_none() {
            held = request_job(&agent, shared, settings);
            if held.is_none() {
                // No job: the whole pause, whatever the printers say.
                wait(shared, Instant::now() + settings.pause, false);
                continue;
            }
        }
        if let Some(job) = held.take() {
            held = assign(shared, link, settings, job);
        }
    }
}

/// Waits until `until`, or (with `early`, once discovery is over) until
/// something changes; false once the handler is stopping.
fn wait(shared: &Shared, until: Instant, early: bool) -> bool {
    let mut inner = lock(&shared.inner);
    while !shared.stop.load(Ordering::SeqCst) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        let (guard, timeout) = shared
            .wake
            .wait_timeout(inner, left)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner = guard;
        if early && !timeout.timed_out() && !inner.seats.discovering {
            return true;
        }
    }
    false
}

fn agent() -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build();
    ureq::Agent::new_with_config(config)
}

/// `GET <qm>/prioritary_job`: the job, or `None` (no job, or an error,
/// which is recorded).
fn request_job(agent: &ureq::Agent, shared: &Shared, settings: &Settings) -> Option<Value> {
    let url = format!("{}/prioritary_job", settings.queue_manager);
    let answer = fetch_job(agent, &url);
    let mut inner = lock(&shared.inner);
    let records = &mut inner.records;
    records.counters.polls += 1;
    match answer {
        Ok(Some(job)) => {
            records.counters.jobs += 1;
            Some(job)
        }
        Ok(None) => {
            records.counters.empty += 1;
            None
        }
        Err(e) => {
            records.counters.http_errors += 1;
            records.errors.push(format!("GET {url}: {e}"));
            None
        }
    }
}

/// The seed's "no job" is `204`, `404` or a `null` body.
fn fetch_job(agent: &ureq::Agent, url: &str) -> Result<Option<Value>, String> {
    let mut response = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    match status {
        200 => match serde_json::from_str::<Value>(&body) {
            Ok(Value::Null) => Ok(None),
            Ok(job) if job["id"].is_string() && job["modelId"].is_string() => Ok(Some(job)),
            _ => Err(format!("not a job: {body:?}")),
        },
        204 | 404 => Ok(None),
        _ => Err(format!("status {status}: {body:?}")),
    }
}

/// The seed's assignment for `job`, as this handler shapes it.
pub fn assignment(job: &Value, settings: &Settings) -> Value {
    let mut a = json!({
        "jobId": job["id"],
        "modelUrl": format!("models/{}.gcode", job["modelId"].as_str().unwrap_or("")),
        "estimatedTime": 3600,
        "priority": job["priority"],
        "assignedAt": printgate::mqtt::payload::rfc3339(SystemTime::now()),
        "parameters": {"layerHeight": 0.2, "infill": 20, "nozzleTemp": 210, "bedTemp": 60},
    });
    if let Some(f) = &settings.filament_type {
        a["filamentType"] = f.as_str().into();
    }
    if let Some(shape) = &settings.shape {
        shape(job, &mut a);
    }
    a
}

/// Publishes `job` to the longest-available printer; gives the job back if
/// no printer is available any more (it is kept for the next one).
fn assign(shared: &Shared, link: &Publisher, settings: &Settings, job: Value) -> Option<Value> {
    let id = job["id"].as_str().unwrap_or("").to_owned();
    let (printer, change) = {
        let mut inner = lock(&shared.inner);
        let Some((printer, change)) = inner.seats.assign_next(&id) else {
            return Some(job);
        };
        (printer, change)
    };
    let witness = settings
        .witness
        .as_ref()
        .map(|w| w(&printer))
        .unwrap_or_default();
    let payload = assignment(&job, settings);
    let topic = format!("{}printer/{printer}/assignement", settings.prefix);
    let sent = link.publish(&topic, payload.to_string().into_bytes(), false);
    let at = Instant::now();
    let mut inner = lock(&shared.inner);
    inner.records.changes.push((at, printer.clone(), change));
    let record = super::Assignment {
        at,
        printer,
        job: id,
        payload,
        witness,
    };
    inner.records.sent(sent, |r| r.assignments.push(record));
    None
}

impl super::Records {
    fn heard(
        &mut self,
        at: Instant,
        printer: &str,
        status: &str,
        progress: f64,
        job: Option<String>,
    ) {
        self.progress.push(super::Heard {
            at,
            printer: printer.to_owned(),
            status: status.to_owned(),
            progress,
            job,
        });
    }

    /// Keeps the outcome of a message: a change (and what it means) or the
    /// reason it was set aside.
    fn result(
        &mut self,
        at: Instant,
        printer: &str,
        result: Result<Option<Change>, String>,
        what: &str,
    ) {
        match result {
            Ok(Some(change)) => {
                match &change.why {
                    Why::Completed(job) => {
                        self.completions.push((at, printer.to_owned(), job.clone()))
                    }
                    Why::EndedBeforePlate(job) => {
                        self.ended_before_plate
                            .push((at, printer.to_owned(), job.clone()))
                    }
                    Why::Cleared => self.clears.push((at, printer.to_owned())),
                    _ => {}
                }
                self.changes.push((at, printer.to_owned(), change));
            }
            Ok(None) => {}
            Err(reason) => self
                .ignored
                .push((at, printer.to_owned(), format!("{what}: {reason}"))),
        }
    }

    fn sent(&mut self, sent: Result<(), String>, then: impl FnOnce(&mut Self)) {
        self.counters.published += 1;
        match sent {
            Ok(()) => then(self),
            Err(e) => self.errors.push(e),
        }
    }
}
