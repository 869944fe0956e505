//! The farm around one printgate daemon in pull mode: three `printgate sim`
//! printers, the test's queue manager (`qm.rs`), the embedded broker (one
//! per test binary; each rig has its own topic prefix and client ids) with
//! the observer and the robot (`robot.rs`), the daemon's config, and the
//! oracle: the simulators' logs against the moves of each model.

use super::qm::{QmJob, QueueManager};
use super::robot::{Mqtt, Msg};
use crate::e2e_support::*;
use printgate::broker::{free_port, start_embedded};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const PRINTERS: [&str; 3] = ["p1", "p2", "p3"];
/// Every bounded wait of these tests.
pub const LIMIT: Duration = Duration::from_secs(40);

fn broker() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let port = free_port().unwrap();
        start_embedded(port).unwrap();
        port
    })
}

pub struct Options {
    /// The topic prefix; by default the rig's name and `/`.
    pub prefix: Option<&'static str>,
    pub poll_interval_s: u64,
    pub read_timeout_s: u64,
    pub max_retries: u32,
    pub robot: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            prefix: None,
            poll_interval_s: 1,
            read_timeout_s: 1,
            max_retries: 2,
            robot: true,
        }
    }
}

pub struct Rig {
    pub dir: TestDir,
    pub qm: QueueManager,
    pub prefix: String,
    pub config: PathBuf,
    pub daemon_log: PathBuf,
    pub options: Options,
    logs: Vec<PathBuf>,
    _sims: Vec<Proc>,
    daemon: Option<Proc>,
    pub mqtt: Mqtt,
    moves: HashMap<String, Vec<String>>,
    next_tag: u32,
}

impl Rig {
    /// Everything but the daemon. `name` (letters) names the client ids and
    /// by default the topic prefix.
    pub fn new(name: &str, options: Options) -> Rig {
        let port = broker();
        let dir = TestDir::new(&format!("queue-{name}"));
        let printers: Vec<(&str, PathBuf)> = PRINTERS
            .iter()
            .map(|p| (*p, dir.path().join(format!("tty-{p}"))))
            .collect();
        let logs: Vec<PathBuf> = PRINTERS
            .iter()
            .map(|p| dir.path().join(format!("{p}.log")))
            .collect();
        let sims = printers
            .iter()
            .zip(&logs)
            .map(|((_, link), log)| {
                let log = log.to_str().unwrap();
                start_sim(link, &["--baud", "250000", "--received", log])
            })
            .collect();
        let qm = QueueManager::start();
        let prefix = options.prefix.map_or(format!("{name}/"), str::to_owned);
        let mqtt_keys = format!("topic_prefix = \"{prefix}\"\nclient_id = \"printgate-{name}\"\n");
        let tail = format!(
            "[queue_manager]\nurl = \"{}\"\npoll_interval_s = {}\nread_timeout_s = {}\nconnect_timeout_s = 2\nmax_retries = {}\n",
            qm.url(),
            options.poll_interval_s,
            options.read_timeout_s,
            options.max_retries
        );
        let extras = ConfigExtras {
            mqtt_port: Some(port),
            mqtt_keys: &mqtt_keys,
            tail: &tail,
            ..ConfigExtras::default()
        };
        let config = gateway_config_with(dir.path(), &printers, &extras);
        let mqtt = Mqtt::start(port, name, &prefix, options.robot);
        Rig {
            daemon_log: dir.path().join("daemon.log"),
            dir,
            qm,
            prefix,
            config,
            options,
            logs,
            _sims: sims,
            daemon: None,
            mqtt,
            moves: HashMap::new(),
            next_tag: 100,
        }
    }

    /// The rig's folder (the daemon's data folder is `data/` in it).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn cfg(&self) -> &str {
        self.config.to_str().unwrap()
    }

    /// A G-code model of `moves` unique moves for `job` (remembered for the
    /// exactly-once checks).
    fn model(&mut self, job: &QmJob, moves: usize) -> Vec<u8> {
        let path = self.dir.path().join(format!("{}.src.gcode", job.id));
        self.next_tag += 1;
        let lines = write_job(&path, self.next_tag, moves);
        self.moves.insert(job.id.clone(), lines);
        std::fs::read(&path).unwrap()
    }

    /// The model made for `job` by [`Rig::model`] or [`Rig::add`].
    pub fn body(&self, job: &QmJob) -> Vec<u8> {
        std::fs::read(self.dir.path().join(format!("{}.src.gcode", job.id))).unwrap()
    }

    /// Puts `job` with a model of `moves` moves in the queue manager's list.
    pub fn add(&mut self, job: QmJob, moves: usize) -> QmJob {
        let model = self.model(&job, moves);
        self.qm.add(job.clone(), Some(model));
        job
    }

    pub fn start(&mut self) {
        assert!(self.daemon.is_none());
        self.daemon = Some(start_daemon(&self.config, &self.daemon_log));
        wait_until("daemon running", LIMIT, || {
            cli(&["status", "--config", self.cfg()])
                .stdout
                .ends_with(b"daemon: running\n")
        });
    }

    pub fn kill9(&mut self) {
        self.daemon.take().unwrap().kill9();
    }

    pub fn stop(&mut self) {
        let status = self.daemon.take().unwrap().stop();
        assert!(status.success(), "orderly stop: {status}");
    }

    /// `printgate jobs --json`, by job id.
    pub fn jobs(&self) -> BTreeMap<String, Value> {
        jobs_json(&self.config)
            .into_iter()
            .map(|j| (j["id"].as_str().unwrap_or("").to_owned(), j))
            .collect()
    }

    pub fn job_state(&self, id: &str) -> String {
        self.jobs()
            .get(id)
            .and_then(|j| j["state"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    pub fn wait_job(&self, id: &str, state: &str) {
        wait_until(&format!("job {id} {state}"), LIMIT, || {
            self.job_state(id) == state
        });
    }

    pub fn printer_states(&self) -> BTreeMap<String, String> {
        printer_states(&self.config).into_iter().collect()
    }

    /// Waits until every printer is connected: waiting for a clear plate,
    /// or already cleared by the robot (which acts on `device/printers`).
    pub fn wait_connected(&self) {
        wait_until("printers connected", LIMIT, || {
            let states = self.printer_states();
            PRINTERS.iter().all(|p| {
                states
                    .get(*p)
                    .is_some_and(|s| s == "awaiting_clear" || s == "idle")
            })
        });
    }

    /// The operator confirms every plate that waits for it.
    pub fn clear_waiting(&self) {
        for (printer, state) in self.printer_states() {
            if state == "awaiting_clear" {
                let _ = cli(&["clear", &printer, "--config", self.cfg()]);
            }
        }
    }

    /// `printgate job show <id>` (the job and its history).
    pub fn job_show(&self, id: &str) -> String {
        let out = cli(&["job", "show", id, "--config", self.cfg()]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(&self.daemon_log).unwrap_or_default()
    }

    pub fn messages(&self) -> Vec<Msg> {
        self.mqtt.messages()
    }

    /// Events (`<prefix>printer/<id>/event` payloads), in arrival order.
    pub fn events(&self) -> Vec<(Instant, Value)> {
        self.messages()
            .into_iter()
            .filter(|m| m.topic.ends_with("/event"))
            .map(|m| (m.at, m.json()))
            .collect()
    }

    /// Waits for an event of `kind` (about `job`, if given) whose message
    /// contains `text`.
    pub fn wait_event(&self, kind: &str, job: Option<&str>, text: &str) -> Value {
        let mut found = None;
        wait_until(
            &format!("event {kind} {job:?} with {text:?}"),
            LIMIT,
            || {
                found = self.events().into_iter().map(|(_, e)| e).find(|e| {
                    e["type"] == kind
                        && job.is_none_or(|j| e["jobId"] == j)
                        && e["message"].as_str().unwrap_or("").contains(text)
                });
                found.is_some()
            },
        );
        found.unwrap()
    }

    /// Moves of `job` each printer executed (printer, moves in order).
    pub fn executed(&self, job: &str) -> Vec<(String, Vec<String>)> {
        let Some(want) = self.moves.get(job) else {
            return Vec::new(); // no model, nothing to print
        };
        let tag = want[0]
            .split(" E")
            .nth(1)
            .unwrap()
            .split('.')
            .next()
            .unwrap();
        let tag = format!(" E{tag}.");
        PRINTERS
            .iter()
            .zip(&self.logs)
            .map(|(p, log)| {
                let got = executed_moves(log)
                    .into_iter()
                    .filter(|l| l.contains(&tag))
                    .collect();
                (p.to_string(), got)
            })
            .filter(|(_, got): &(String, Vec<String>)| !got.is_empty())
            .collect()
    }

    /// Waits until `job` was printed whole, once, on one printer; returns it.
    pub fn printed_whole(&self, job: &str) -> String {
        let want = self.moves[job].clone();
        wait_until(&format!("job {job} in the simulator log"), LIMIT, || {
            self.executed(job)
                .iter()
                .map(|(_, m)| m.len())
                .sum::<usize>()
                >= want.len()
        });
        let got = self.executed(job);
        assert_eq!(got.len(), 1, "job {job} printed on several printers");
        assert_eq!(got[0].1, want, "job {job}: not exactly its moves, once");
        got[0].0.clone()
    }

    /// No line executed twice anywhere, and every job's executed moves are
    /// a prefix of its model (nothing out of order, nothing foreign).
    pub fn check_no_repeats(&self) {
        let mut seen = std::collections::HashSet::new();
        for log in &self.logs {
            for line in executed_moves(log) {
                assert!(seen.insert(line.clone()), "{line} executed twice");
            }
        }
        for (job, want) in &self.moves {
            for (printer, got) in self.executed(job) {
                assert_eq!(
                    got[..],
                    want[..got.len()],
                    "job {job} on {printer} is not a prefix of its model"
                );
            }
        }
    }

    /// Moves of the model of `job`.
    pub fn moves(&self, job: &str) -> usize {
        self.moves[job].len()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            daemon.stop();
        }
    }
}
