//! The farm's queue manager, played by the test on 127.0.0.1 (built on the
//! routed mode of `source_http/server.rs`). It hands out jobs from its list
//! in priority order (higher first, FIFO within a priority), each exactly
//! once: `GET /prioritary_job?printerId=<id>` answers `200` with the seed's
//! job JSON, or `204` when the list is empty. It serves
//! `GET /models/<modelId>.gcode`, and `404` for a model it does not have.
//! Faults are scripted per path: poll faults are served (before any job, and
//! consuming none) until used up; a model's faults are served in order on
//! its first requests, then the model itself. It records every request, can
//! go down (connections refused) and come back on the same port.

use super::server::{Handler, Reply, Request, Server};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One job in the queue manager's list.
#[derive(Clone, Debug)]
pub struct QmJob {
    pub id: String,
    pub model_id: String,
    pub priority: i64,
    /// Sent as `modelUrl` when set (else printgate derives it from `modelId`).
    pub model_url: Option<String>,
}

impl QmJob {
    pub fn new(id: &str, priority: i64) -> QmJob {
        QmJob {
            id: id.to_owned(),
            model_id: format!("model-{id}"),
            priority,
            model_url: None,
        }
    }
    pub fn model_url(mut self, url: &str) -> QmJob {
        self.model_url = Some(url.to_owned());
        self
    }
    /// The seed's job JSON.
    fn json(&self) -> String {
        let mut job = serde_json::json!({
            "id": self.id, "modelId": self.model_id, "assignedPrinterId": null,
            "priority": self.priority, "status": "pending",
            "submittedAt": "2025-06-15T08:30:00Z", "updatedAt": "2025-06-15T08:30:00Z",
        });
        if let Some(url) = &self.model_url {
            job["modelUrl"] = url.clone().into();
        }
        job.to_string()
    }
}

/// A job handed out: to whom and when.
#[derive(Clone, Debug)]
pub struct Handed {
    pub job: String,
    pub printer: String,
    pub priority: i64,
}

#[derive(Default)]
struct Model {
    body: Vec<u8>,
    faults: VecDeque<Reply>,
}

#[derive(Default)]
struct State {
    pending: Vec<QmJob>,
    handed: Vec<Handed>,
    poll_faults: VecDeque<Reply>,
    /// (printer, when) of each poll answered with a fault.
    faulted: Vec<(String, Instant)>,
    models: HashMap<String, Model>,
}

impl State {
    fn answer(&mut self, req: &Request) -> Reply {
        let path = req.path();
        if path == "/prioritary_job" {
            let printer = req.query("printerId").unwrap_or("").to_owned();
            if let Some(fault) = self.poll_faults.pop_front() {
                self.faulted.push((printer, req.at));
                return fault;
            }
            let Some(best) = self.pending.iter().map(|j| j.priority).max() else {
                return Reply::new(204, "");
            };
            // The first (oldest) of the most urgent jobs.
            let i = self
                .pending
                .iter()
                .position(|j| j.priority == best)
                .unwrap();
            let job = self.pending.remove(i);
            self.handed.push(Handed {
                job: job.id.clone(),
                printer,
                priority: job.priority,
            });
            return Reply::new(200, job.json()).header("Content-Type", "application/json");
        }
        let model = path
            .strip_prefix("/models/")
            .and_then(|m| m.strip_suffix(".gcode"))
            .and_then(|m| self.models.get_mut(m));
        match model {
            Some(m) => m
                .faults
                .pop_front()
                .unwrap_or_else(|| Reply::new(200, m.body.clone())),
            None => Reply::new(404, "no such model"),
        }
    }
}

pub struct QueueManager {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    server: Option<Server>,
    /// Requests seen by the servers of earlier "lives" (before `down`).
    earlier: Vec<Request>,
}

impl QueueManager {
    pub fn start() -> QueueManager {
        let state = Arc::new(Mutex::new(State::default()));
        let server = Server::start_routed("127.0.0.1:0".parse().unwrap(), handler(&state));
        QueueManager {
            state,
            addr: server.addr,
            server: Some(server),
            earlier: Vec::new(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a job to the list, with its model (`None`: no model, so a 404).
    pub fn add(&self, job: QmJob, model: Option<Vec<u8>>) {
        let mut s = self.state.lock().unwrap();
        if let Some(body) = model {
            s.models.entry(job.model_id.clone()).or_default().body = body;
        }
        s.pending.push(job);
    }

    /// The next `n` polls get `reply` instead of a job.
    pub fn poll_fault(&self, reply: Reply, n: usize) {
        let mut s = self.state.lock().unwrap();
        s.poll_faults.extend(std::iter::repeat_n(reply, n));
    }

    /// The next `n` requests for `job`'s model get `reply`.
    pub fn model_fault(&self, job: &QmJob, reply: Reply, n: usize) {
        let mut s = self.state.lock().unwrap();
        let model = s.models.entry(job.model_id.clone()).or_default();
        model.faults.extend(std::iter::repeat_n(reply, n));
    }

    pub fn handed(&self) -> Vec<Handed> {
        self.state.lock().unwrap().handed.clone()
    }

    pub fn pending(&self) -> usize {
        self.state.lock().unwrap().pending.len()
    }

    pub fn requests(&self) -> Vec<Request> {
        let mut all = self.earlier.clone();
        all.extend(self.server.iter().flat_map(Server::requests));
        all
    }

    /// Requests for `path` (without the query) so far.
    pub fn count(&self, path: &str) -> usize {
        self.requests().iter().filter(|r| r.path() == path).count()
    }

    /// Polls received between `from` and `to`.
    pub fn polls_between(&self, from: Instant, to: Instant) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path() == "/prioritary_job" && r.at > from && r.at < to)
            .count()
    }

    /// For each poll answered with a fault: the printer and the time until
    /// its next poll (the daemon's back-off), if there was one.
    pub fn gaps_after_faults(&self) -> Vec<(String, Duration)> {
        let faulted = self.state.lock().unwrap().faulted.clone();
        let polls: Vec<Request> = self.requests();
        faulted
            .into_iter()
            .filter_map(|(printer, at)| {
                let next = polls.iter().find(|r| {
                    r.path() == "/prioritary_job"
                        && r.at > at
                        && r.query("printerId") == Some(printer.as_str())
                })?;
                Some((printer, next.at - at))
            })
            .collect()
    }

    /// Goes down: the port is closed and connections are refused.
    pub fn down(&mut self) {
        if let Some(server) = self.server.take() {
            self.earlier.extend(server.requests());
        }
    }

    /// Comes back on the same port, with the same list.
    pub fn up(&mut self) {
        if self.server.is_none() {
            self.server = Some(Server::start_routed(self.addr, handler(&self.state)));
        }
    }
}

fn handler(state: &Arc<Mutex<State>>) -> Handler {
    let state = state.clone();
    Arc::new(move |req: &Request| state.lock().unwrap().answer(req))
}

/// The model path the queue manager serves for `job`.
pub fn model_path(job: &QmJob) -> String {
    format!("/models/{}.gcode", job.model_id)
}
