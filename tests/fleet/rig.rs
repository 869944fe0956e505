//! A farm of several gateways on one broker, built from real parts: one
//! `printgate sim` process per printer (each with its own `--received`
//! log), one `printgate run` per gateway (own data folder, own MQTT client
//! id, push-only: `[queue_manager] pull = false`, the URL only for models),
//! the queue manager of `queue_e2e/qm.rs`, and the seed's job handler,
//! robots and a recorder of `device/#` from `tests/seed_handler/`. The
//! broker is a real Mosquitto (`mosquitto.rs`) or the embedded rumqttd.
//! Owns building, starting, waiting and stopping; verdicts are in
//! `checks.rs`, figures in `figures.rs`.

use crate::e2e_support::{executed_moves, jobs_json, start_daemon, write_job, Proc, TestDir};
use crate::mosquitto::{Mosquitto, SysLog};
use crate::parts::{start_sims, write_gateway, Gateway};
use crate::procs::Sampler;
use crate::qm::{QmJob, QueueManager};
use crate::seed_handler::mqtt::Recorder;
use crate::seed_handler::robot::{Clear, RobotSettings, Robots};
use crate::seed_handler::{JobHandler, Records, Settings, Witness};
use crate::tally::Tally;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Bound of each start-up step (processes up, printers heard).
pub const STEP: Duration = Duration::from_secs(120);

/// What the farm is made of and how fast it prints.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Gateway id → its printer ids (an id may appear under two gateways:
    /// the duplicate-claim scenario; the first one listed owns it).
    pub layout: Vec<(String, Vec<String>)>,
    /// Moves per model (each its own line in the simulator's log).
    pub moves: usize,
    /// `printgate sim --motion-time-scale`.
    pub motion_scale: f64,
    pub robots: usize,
    pub pick: Duration,
    /// `[mqtt] progress_interval_s` and `idle_announce_s` of every gateway.
    pub progress_interval_s: u64,
    pub heartbeat_s: u64,
    /// The handler's discovery phase (30 s in the seed).
    pub discovery: Duration,
}

impl Plan {
    /// `gateways` × `printers`: `gw-01` holds `printer-001`…
    pub fn grid(gateways: usize, printers: usize) -> Vec<(String, Vec<String>)> {
        (0..gateways)
            .map(|g| {
                let ids = (0..printers)
                    .map(|p| format!("printer-{:03}", g * printers + p + 1))
                    .collect();
                (format!("gw-{:02}", g + 1), ids)
            })
            .collect()
    }

    /// Printer ids, each once, in layout order.
    pub fn printers(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (_, ids) in &self.layout {
            for id in ids {
                if seen.insert(id.clone()) {
                    out.push(id.clone());
                }
            }
        }
        out
    }
}

pub enum Broker {
    Mosquitto(Mosquitto),
    Embedded,
}

/// What the handler and robots recorded, once stopped.
pub struct FarmRecords {
    pub records: Records,
    pub clears: Vec<Clear>,
    pub robot_errors: Vec<String>,
}

/// What a run left: the fixtures' records, every gateway's jobs (`jobs
/// --json`, by gateway) and what each simulator executed ((gateway,
/// printer) → moves in order).
pub struct Ended {
    pub farm: FarmRecords,
    pub gateway_jobs: BTreeMap<String, Vec<Value>>,
    pub executed: BTreeMap<(String, String), Vec<String>>,
}

/// Field order is drop order: the farm's clients, the daemons, the
/// simulators, the queue manager, the broker, then the directory.
pub struct Fleet {
    pub handler: Option<JobHandler>,
    pub robots: Option<Robots>,
    pub recorder: Recorder,
    pub sys: Option<SysLog>,
    pub sampler: Sampler,
    pub gateways: Vec<Gateway>,
    /// (gateway, printer) → its simulator.
    sims: BTreeMap<(String, String), Proc>,
    pub qm: QueueManager,
    /// The owners' simulators' logs, by printer id (what the handler sees).
    pub tally: Arc<Tally>,
    /// (gateway, printer) → its simulator's log.
    pub sim_logs: BTreeMap<(String, String), PathBuf>,
    /// Job id → the moves of its model (jobs without a model are absent).
    pub models: BTreeMap<String, Vec<String>>,
    /// Jobs whose model the queue manager does not have.
    pub missing: BTreeSet<String>,
    /// Printer id → the gateway that owns it.
    pub owner: BTreeMap<String, String>,
    /// Jobs prepared but not yet given to the queue manager.
    held: BTreeMap<String, (QmJob, Option<Vec<u8>>)>,
    pub plan: Plan,
    pub port: u16,
    /// Kept for its drop (a Mosquitto is killed then).
    _broker: Broker,
    next_job: usize,
    pub dir: TestDir,
}

impl Fleet {
    /// Broker, queue manager, simulators (all started), gateway configs
    /// (none started), the recorder and the samplers.
    pub fn new(name: &str, plan: Plan, mosquitto: bool) -> Fleet {
        let dir = TestDir::new(&format!("fleet-{name}"));
        let (broker, port) = if mosquitto {
            let m = Mosquitto::start(dir.path());
            let port = m.port;
            (Broker::Mosquitto(m), port)
        } else {
            let port = printgate::broker::free_port().unwrap();
            printgate::broker::start_embedded(port).unwrap();
            (Broker::Embedded, port)
        };
        let sampler = Sampler::start();
        sampler.watch("test process", std::process::id());
        if let Broker::Mosquitto(m) = &broker {
            sampler.watch("mosquitto", m.pid());
        }
        let sys = mosquitto.then(|| SysLog::start(port));
        let recorder = Recorder::start(port, "fleet-recorder", &["device/#".to_owned()]);
        let qm = QueueManager::start();
        let mut owner = BTreeMap::new();
        for (gw, ids) in &plan.layout {
            for id in ids {
                owner.entry(id.clone()).or_insert_with(|| gw.clone());
            }
        }
        let (sims, sim_logs) = start_sims(&dir, &plan);
        let logs = owner
            .iter()
            .map(|(p, gw)| (p.clone(), sim_logs[&(gw.clone(), p.clone())].clone()))
            .collect();
        for ((gw, p), sim) in &sims {
            sampler.watch(&format!("sim {gw}/{p}"), sim.0.id());
        }
        let gateways = plan
            .layout
            .iter()
            .map(|(gw, ids)| write_gateway(&dir, gw, ids, &sims, port, &qm.url(), &plan))
            .collect();
        Fleet {
            handler: None,
            robots: None,
            recorder,
            sys,
            sampler,
            gateways,
            sims,
            qm,
            tally: Arc::new(Tally {
                logs,
                tags: BTreeMap::new(),
            }),
            sim_logs,
            models: BTreeMap::new(),
            missing: BTreeSet::new(),
            owner,
            held: BTreeMap::new(),
            plan,
            port,
            _broker: broker,
            next_job: 0,
            dir,
        }
    }

    /// Prepares `count` jobs; every `missing_every`-th (counting from the
    /// first job ever prepared) has no model. Models are tagged
    /// (`write_job`) so each simulator's log names the job of every move,
    /// and their tags are known to the witnesses from the start: prepare
    /// every job before [`Fleet::start_farm`]. Returns the new job ids.
    pub fn prepare_jobs(&mut self, count: usize, missing_every: Option<usize>) -> Vec<String> {
        assert!(
            self.handler.is_none(),
            "prepare jobs before the farm starts"
        );
        let mut tags = self.tally.tags.clone();
        let mut ids = Vec::new();
        let models = self.dir.path().join("models");
        std::fs::create_dir_all(&models).unwrap();
        for _ in 0..count {
            let n = self.next_job;
            self.next_job += 1;
            let id = format!("job-{:04}", n + 1);
            // Priorities vary; the queue manager hands the highest out first.
            let qm_job = QmJob::new(&id, (n % 5) as i64);
            if missing_every.is_some_and(|every| every > 0 && n % every == every - 1) {
                self.missing.insert(id.clone());
                self.held.insert(id.clone(), (qm_job, None));
            } else {
                let tag = 101 + n as u32;
                let path = models.join(format!("{id}.gcode"));
                self.models
                    .insert(id.clone(), write_job(&path, tag, self.plan.moves));
                tags.insert(tag.to_string(), id.clone());
                self.held
                    .insert(id.clone(), (qm_job, Some(std::fs::read(&path).unwrap())));
            }
            ids.push(id);
        }
        self.tally = Arc::new(Tally {
            logs: self.tally.logs.clone(),
            tags,
        });
        ids
    }

    /// Gives prepared jobs to the queue manager, in order.
    pub fn release_jobs(&mut self, ids: &[String]) {
        for id in ids {
            let (job, model) = self
                .held
                .remove(id)
                .expect("job not prepared, or released twice");
            self.qm.add(job, model);
        }
    }

    pub fn gateway(&self, id: &str) -> &Gateway {
        self.gateways
            .iter()
            .find(|g| g.id == id)
            .expect("no such gateway")
    }

    /// Starts `printgate run` for gateway `id` (returns at once).
    pub fn start_gateway(&mut self, id: &str) {
        let i = self
            .gateways
            .iter()
            .position(|g| g.id == id)
            .expect("no such gateway");
        let g = &mut self.gateways[i];
        assert!(g.proc.is_none(), "{id} is already running");
        let proc = start_daemon(&g.config, &g.log);
        self.sampler.watch(&format!("gateway {id}"), proc.0.id());
        g.proc = Some(proc);
    }

    /// Starts every gateway, then waits until each announced itself online
    /// and every printer has been heard on its progress topic.
    pub fn start_all_gateways(&mut self) {
        let ids: Vec<String> = self.gateways.iter().map(|g| g.id.clone()).collect();
        for id in &ids {
            self.start_gateway(id);
        }
        let printers = self.plan.printers();
        self.wait_or_tell("every gateway online, every printer heard", STEP, || {
            let heard: BTreeSet<String> = self
                .recorder
                .messages()
                .iter()
                .filter_map(|m| {
                    let p = m
                        .topic
                        .strip_prefix("device/printer/")?
                        .strip_suffix("/progress")?;
                    Some(p.to_owned())
                })
                .collect();
            printers.iter().all(|p| heard.contains(p)) && ids.iter().all(|g| self.gateway_online(g))
        });
    }

    /// Whether gateway `id`'s retained status says `online`.
    pub fn gateway_online(&self, id: &str) -> bool {
        let topic = format!("device/gateway/{id}/status");
        self.recorder
            .on(&topic)
            .last()
            .is_some_and(|m| m.json()["status"] == "online")
    }

    /// SIGTERM to every running gateway, then waits for each to exit.
    pub fn stop_all_gateways(&mut self) {
        for g in &self.gateways {
            if let Some(p) = &g.proc {
                p.signal("TERM");
            }
        }
        for g in &mut self.gateways {
            if let Some(p) = g.proc.take() {
                p.stop();
            }
        }
    }

    /// What a printer has executed, per job (read from its owner's log).
    pub fn witness(&self) -> Witness {
        let tally = self.tally.clone();
        Arc::new(move |printer: &str| tally.snapshot(printer))
    }

    /// Robots, then the handler; waits for the end of its discovery phase.
    pub fn start_farm(&mut self) {
        let mut r = RobotSettings::new(self.port, self.plan.robots);
        r.pick_time = self.plan.pick;
        r.witness = Some(self.witness());
        self.robots = Some(Robots::start(r));
        let mut h = Settings::new(self.port, &self.qm.url());
        h.discovery = self.plan.discovery;
        h.witness = Some(self.witness());
        self.handler = Some(JobHandler::start(h));
        let limit = self.plan.discovery + STEP;
        self.wait_or_tell("the handler's discovery phase", limit, || {
            self.handler().discovered()
        });
    }

    /// Stops the handler (its main loop joined: no request in flight) and
    /// the robots, and returns what they recorded.
    pub fn stop_farm(&mut self) -> FarmRecords {
        let handler = self.handler.take().expect("the farm is not started");
        let robots = self.robots.take().expect("the farm is not started");
        let (clears, robot_errors) = (robots.clears(), robots.errors());
        let records = handler.stop();
        drop(robots);
        FarmRecords {
            records,
            clears,
            robot_errors,
        }
    }

    pub fn handler(&self) -> &JobHandler {
        self.handler.as_ref().expect("the farm is not started")
    }

    /// Stops every simulator (SIGTERM: each writes out its log) and returns
    /// what each executed: (gateway, printer) → moves in order.
    pub fn stop_sims(&mut self) -> BTreeMap<(String, String), Vec<String>> {
        for sim in self.sims.values() {
            sim.signal("TERM");
        }
        let sims = std::mem::take(&mut self.sims);
        for (_, sim) in sims {
            sim.stop();
        }
        self.sim_logs
            .iter()
            .map(|(k, log)| (k.clone(), executed_moves(log)))
            .collect()
    }

    /// The end of a run: stops the handler and robots, reads every
    /// gateway's jobs, stops the gateways, then the simulators (whose logs
    /// are then complete).
    pub fn wind_down(&mut self) -> Ended {
        let farm = self.stop_farm();
        let gateway_jobs = self.gateway_jobs();
        self.stop_all_gateways();
        Ended {
            farm,
            gateway_jobs,
            executed: self.stop_sims(),
        }
    }

    /// Every gateway's `printgate jobs --json`, by gateway.
    pub fn gateway_jobs(&self) -> BTreeMap<String, Vec<Value>> {
        self.gateways
            .iter()
            .map(|g| (g.id.clone(), jobs_json(&g.config)))
            .collect()
    }

    /// `printgate status` of gateway `id`: (printer, state) pairs.
    pub fn printer_states(&self, id: &str) -> BTreeMap<String, String> {
        crate::e2e_support::printer_states(&self.gateway(id).config)
            .into_iter()
            .collect()
    }
}
