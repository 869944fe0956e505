//! One farm in push mode, as seed 000 runs it: its own embedded broker
//! (each test has one, so both use the seed's `device/` topics), a queue
//! manager (`queue_e2e/qm.rs`) with the plan's jobs, two `printgate sim`
//! printers, `printgate run` with `[queue_manager] pull = false` and the
//! default heartbeat, the seed job handler and robots
//! (`tests/seed_handler/`), and a recorder of everything on `device/#`.
//! Owns setting up, starting, killing and waiting; the verdicts are in
//! `checks.rs`.

use crate::e2e_support::*;
use crate::qm::{QmJob, QueueManager};
use crate::seed_handler::mqtt::Recorder;
use crate::seed_handler::robot::{RobotSettings, Robots};
use crate::seed_handler::seat::Seat;
use crate::seed_handler::{JobHandler, Settings, Shape, Witness};
use crate::tally::Tally;
use printgate::broker::{free_port, start_embedded};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const PRINTERS: [&str; 2] = ["printer-1", "printer-2"];
/// Bound of each wait for one step (a daemon start, printers connecting).
pub const STEP: Duration = Duration::from_secs(40);
/// Bound of the whole farm cycle, discovery included.
pub const CYCLE: Duration = Duration::from_secs(180);

/// How the handler shapes one job's assignment (lenient parsing cases).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Twist {
    /// The seed's example: `filamentType: "PLA"`, integers.
    Seed,
    /// No `filamentType` (the seed's Job has none).
    NoFilament,
    /// `estimatedTime` as a float.
    FloatTime,
    /// `priority` as a float.
    FloatPriority,
}

/// One job of the queue manager's list.
pub struct PlanJob {
    pub id: &'static str,
    pub priority: i64,
    /// Moves of its model; `None`: the model is missing (404).
    pub moves: Option<usize>,
    pub twist: Twist,
}

/// Field order is drop order: the farm's clients, the daemon, the
/// simulators, then the directory.
pub struct Rig {
    pub handler: Option<JobHandler>,
    pub robots: Option<Robots>,
    pub recorder: Recorder,
    daemon: Option<Proc>,
    _sims: Vec<Proc>,
    pub qm: QueueManager,
    pub tally: Arc<Tally>,
    /// Job id → the moves of its model (jobs without a model are absent).
    pub models: BTreeMap<String, Vec<String>>,
    pub twists: BTreeMap<String, Twist>,
    pub port: u16,
    pub config: PathBuf,
    pub daemon_log: PathBuf,
    _dir: TestDir,
}

impl Rig {
    /// Broker, queue manager, simulators, config and recorder; no daemon.
    pub fn new(name: &str, plan: &[PlanJob]) -> Rig {
        let port = free_port().unwrap();
        start_embedded(port).unwrap();
        let dir = TestDir::new(&format!("push-{name}"));
        let qm = QueueManager::start();
        let (mut models, mut tags, mut twists) =
            (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        for (n, job) in plan.iter().enumerate() {
            let qm_job = QmJob::new(job.id, job.priority);
            let body = job.moves.map(|moves| {
                let tag = 101 + n as u32;
                let path = dir.path().join(format!("{}.src.gcode", job.id));
                models.insert(job.id.to_owned(), write_job(&path, tag, moves));
                tags.insert(tag.to_string(), job.id.to_owned());
                std::fs::read(&path).unwrap()
            });
            qm.add(qm_job, body);
            twists.insert(job.id.to_owned(), job.twist);
        }
        let mut sims = Vec::new();
        let mut links = Vec::new();
        let mut logs = BTreeMap::new();
        for p in PRINTERS {
            let link = dir.path().join(format!("tty-{p}"));
            let log = dir.path().join(format!("{p}.log"));
            sims.push(start_sim(
                &link,
                &["--baud", "250000", "--received", log.to_str().unwrap()],
            ));
            links.push((p, link));
            logs.insert(p.to_owned(), log);
        }
        // Push-only: the URL only resolves and fetches pushed models. The
        // heartbeat (`idle_announce_s`) is left at its default.
        let tail = format!(
            "[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nkeep_alive_s = 5\nprogress_interval_s = 1\n\
             [queue_manager]\nurl = \"{}\"\npull = false\nconnect_timeout_s = 2\nread_timeout_s = 5\nmax_retries = 1\n",
            qm.url()
        );
        let extras = ConfigExtras {
            gateway: "gw-push",
            tail: &tail,
            ..ConfigExtras::default()
        };
        let config = gateway_config_with(dir.path(), &links, &extras);
        let recorder = Recorder::start(port, "recorder", &["device/#".to_owned()]);
        Rig {
            handler: None,
            robots: None,
            recorder,
            daemon: None,
            _sims: sims,
            qm,
            tally: Arc::new(Tally { logs, tags }),
            models,
            twists,
            port,
            config,
            daemon_log: dir.path().join("daemon.log"),
            _dir: dir,
        }
    }

    pub fn cfg(&self) -> &str {
        self.config.to_str().unwrap()
    }

    /// `printgate run`, until `printgate status` says it runs; fails at once
    /// (with its log) if it exits.
    pub fn start_gateway(&mut self) {
        assert!(self.daemon.is_none(), "the gateway is already running");
        let mut daemon = start_daemon(&self.config, &self.daemon_log);
        wait_until("printgate run up", STEP, || {
            if let Ok(Some(status)) = daemon.0.try_wait() {
                panic!(
                    "printgate run exited at start ({status}):\n{}",
                    self.log_tail(20)
                );
            }
            cli(&["status", "--config", self.cfg()])
                .stdout
                .ends_with(b"daemon: running\n")
        });
        self.daemon = Some(daemon);
    }

    /// SIGKILL: the gateway gets no chance to say anything.
    pub fn kill9(&mut self) {
        self.daemon.take().expect("no gateway to kill").kill9();
    }

    /// `Some(status)` once the gateway process has exited.
    pub fn gateway_exited(&mut self) -> Option<String> {
        let daemon = self.daemon.as_mut()?;
        match daemon.0.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    /// The operator's first confirmation: every printer connected, each
    /// plate that waits for one confirmed clear (once, before the farm).
    pub fn confirm_plates(&self) {
        let states =
            || -> BTreeMap<String, String> { printer_states(&self.config).into_iter().collect() };
        let connected = |s: &String| s == "awaiting_clear" || s == "idle";
        self.wait_or_tell("printers connected", STEP, || {
            let states = states();
            PRINTERS
                .iter()
                .all(|p| states.get(*p).is_some_and(connected))
        });
        for (printer, state) in states() {
            if state == "awaiting_clear" {
                let out = cli(&["clear", &printer, "--config", self.cfg()]);
                assert!(out.status.success(), "clear {printer}: {out:?}");
            }
        }
        self.wait_or_tell("plates confirmed", STEP, || {
            let states = states();
            PRINTERS.iter().all(|p| {
                states
                    .get(*p)
                    .is_some_and(|s| s != "awaiting_clear" && s != "offline")
            })
        });
    }

    /// What a printer has executed, per job, for the handler and robots.
    pub fn witness(&self) -> Witness {
        let tally = self.tally.clone();
        Arc::new(move |printer: &str| tally.snapshot(printer))
    }

    /// The plan's twists as the handler's assignment hook.
    fn shape(&self) -> Shape {
        let twists = self.twists.clone();
        Arc::new(move |job, a| {
            let id = job["id"].as_str().unwrap_or("");
            match twists.get(id).copied().unwrap_or(Twist::Seed) {
                Twist::Seed => {}
                Twist::NoFilament => {
                    if let Some(a) = a.as_object_mut() {
                        a.remove("filamentType");
                    }
                }
                Twist::FloatTime => a["estimatedTime"] = json!(1234.5),
                Twist::FloatPriority => {
                    a["priority"] = json!(job["priority"].as_f64().unwrap_or(0.0) + 0.5)
                }
            }
        })
    }

    /// Robots, then the handler (30 s discovery); waits for its end.
    pub fn start_farm(&mut self, robots: usize) {
        let mut r = RobotSettings::new(self.port, robots);
        r.witness = Some(self.witness());
        self.robots = Some(Robots::start(r));
        let mut h = Settings::new(self.port, &self.qm.url());
        h.witness = Some(self.witness());
        h.shape = Some(self.shape());
        let discovery = h.discovery;
        let handler = JobHandler::start(h);
        self.handler = Some(handler);
        self.wait_or_tell("the handler's discovery phase", discovery + STEP, || {
            self.handler().discovered()
        });
    }

    pub fn handler(&self) -> &JobHandler {
        self.handler.as_ref().expect("the farm is not started")
    }

    pub fn robots(&self) -> &Robots {
        self.robots.as_ref().expect("the farm is not started")
    }

    /// Waits until the queue manager's list is empty, the handler assigned
    /// every job it fetched, has seen each end (printed, and its plate
    /// cleared; or ended before the plate), holds every printer available
    /// and has published its empty list. `Err` says why it stopped waiting
    /// (the bound, or the gateway exited).
    pub fn wait_settled(&mut self, until: Instant) -> Result<(), String> {
        loop {
            if let Some(status) = self.gateway_exited() {
                return Err(format!("printgate run exited ({status})"));
            }
            if self.settled() {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(format!(
                    "not settled within {CYCLE:?}: handler seats {:?}, {} jobs still queued",
                    self.handler().seats(),
                    self.qm.pending()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn settled(&self) -> bool {
        let seats = self.handler().seats();
        let handed = self.qm.handed().len();
        self.handler().with_records(|records| {
            // Every job out of the queue manager is in the handler's hands
            // (it may have fetched one and not yet assigned it).
            self.qm.pending() == 0
                && handed == records.assignments.len()
                && seats.len() == PRINTERS.len()
                && seats.values().all(|s| *s == Seat::Available)
                && records.lists.last().is_some_and(|(_, l)| l.is_empty())
                && records.assignments.iter().all(|a| {
                    let ended_early = records
                        .ended_before_plate
                        .iter()
                        .any(|(_, p, j)| *p == a.printer && j.as_deref() == Some(a.job.as_str()));
                    ended_early || records.completed(&a.printer, &a.job)
                })
        })
    }

    /// A printer part-way through its job (it said `printing` for it with
    /// progress above 0 and at most 50), while every printer prints: no
    /// assignment, completion or robot clear is on its way. (The
    /// simulators' logs cannot tell: they are flushed when a board idles.)
    pub fn mid_print(&self) -> Option<(String, String)> {
        let handler = self.handler();
        let seats = handler.seats();
        if seats.len() < PRINTERS.len()
            || !seats.values().all(|s| matches!(s, Seat::Printing(Some(_))))
        {
            return None;
        }
        handler.with_records(|r| {
            seats.iter().find_map(|(printer, seat)| {
                let Seat::Printing(Some(job)) = seat else {
                    return None;
                };
                let last = r.last_heard(printer)?;
                let part_way = last.status == "printing"
                    && last.job.as_ref() == Some(job)
                    && last.progress > 0.0
                    && last.progress <= 50.0;
                part_way.then(|| (printer.clone(), job.clone()))
            })
        })
    }

    /// `printgate jobs --json`, by job id.
    pub fn gateway_jobs(&self) -> BTreeMap<String, serde_json::Value> {
        jobs_json(&self.config)
            .into_iter()
            .map(|j| (j["id"].as_str().unwrap_or("").to_owned(), j))
            .collect()
    }

    /// The farm's story so far (the daemon's log before the farm starts).
    pub fn tell(&self) -> String {
        match (&self.handler, &self.robots) {
            (Some(h), Some(r)) => {
                crate::story::story(self, &h.records(), &r.clears(), &self.gateway_jobs())
            }
            _ => format!("daemon log (last lines):\n{}", self.log_tail(25)),
        }
    }

    /// [`wait_until`], failing with the farm's story.
    pub fn wait_or_tell(&self, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !cond() {
            if Instant::now() > deadline {
                panic!(
                    "timed out after {limit:?} waiting for {what}\n\n{}",
                    self.tell()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(&self.daemon_log).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}
