//! The parts `bench estop` runs: the embedded broker, two simulated printers
//! in this process (so the simulator's "M112 read" instant and the publish
//! instant come from the same clock), a real `printgate run` daemon as a
//! child process, an MQTT client that publishes the operator's commands,
//! and the load that keeps the farm busy (100 MB uploads scanned and
//! cancelled on the second printer, and a disk writer that fsyncs under the
//! store).
//!
//! Measures nothing itself; `estop.rs` decides when and what.

use super::farm::{wait_for, Kid};
use crate::control::{self, LivePrinter, Request, Response};
use crate::sim::{SimConfig, SimHandle};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The printer that gets the emergency stops.
pub const STOPPED: &str = "pe";
/// The printer whose big files keep the farm busy.
pub const LOADED: &str = "pb";
const GATEWAY: &str = "estop";

/// Field order is drop order: the daemon before the simulators it talks to.
pub struct Rig {
    _daemon: Kid,
    pub sims: Vec<(String, SimHandle)>,
    mqtt: Publisher,
    pub data: PathBuf,
    pub dir: PathBuf,
    log: PathBuf,
}

impl Rig {
    /// Broker, simulators, daemon; returns once the daemon's MQTT link is
    /// up (its retained `online`) and both printers are connected.
    pub fn start(exe: &Path, dir: &Path) -> anyhow::Result<Rig> {
        let port = crate::broker::free_port()?;
        crate::broker::start_embedded(port)?;
        let mut sims = Vec::new();
        let mut text = format!(
            "[gateway]\nid = \"{GATEWAY}\"\ndata_dir = \"{}\"\n\
             [serial]\nbaud = 250000\nboot_timeout_ms = 1500\nreopen_max_s = 1\n\
             [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nkeep_alive_s = 5\nprogress_interval_s = 1\n",
            dir.join("data").display()
        );
        for id in [STOPPED, LOADED] {
            let link = dir.join(format!("tty-{id}"));
            text.push_str(&format!(
                "[[printer]]\nid = \"{id}\"\nport = \"{}\"\nfilament = \"PLA\"\n",
                link.display()
            ));
        }
        let config = dir.join("printgate.toml");
        std::fs::write(&config, text)?;
        let topics = crate::mqtt::topics::Topics::new(GATEWAY);
        let mqtt = Publisher::connect(port, &topics.gateway_status())?;
        let log = dir.join("daemon.log");
        let daemon = Kid(Command::new(exe)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?);
        // The simulators after the daemon: their pty masters are not
        // close-on-exec, and a daemon that inherited one would never see
        // that board unplugged (the power cycle below relies on it).
        for id in [STOPPED, LOADED] {
            let link = dir.join(format!("tty-{id}"));
            sims.push((id.to_owned(), crate::sim::spawn(&link, sim_config())?));
        }
        let rig = Rig {
            _daemon: daemon,
            sims,
            mqtt,
            data: dir.join("data"),
            dir: dir.to_path_buf(),
            log,
        };
        rig.wait("the daemon's MQTT link (retained online)", 30, || {
            rig.mqtt.online.load(Ordering::Acquire)
        })?;
        rig.wait("both printers connected", 30, || {
            [STOPPED, LOADED]
                .iter()
                .all(|id| rig.printer(id).is_some_and(|p| p.connected))
        })?;
        Ok(rig)
    }

    /// A bounded wait whose error carries the daemon's last log lines.
    pub fn wait(&self, what: &str, secs: u64, cond: impl FnMut() -> bool) -> anyhow::Result<()> {
        wait_for(what, Duration::from_secs(secs), cond).map_err(|e| {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            anyhow::anyhow!("{e}; the daemon's log ends:\n{}", tail.join("\n"))
        })
    }

    pub fn ask(&self, req: &Request, file: Option<&Path>) -> anyhow::Result<Response> {
        Ok(control::request(&self.data, req, file)?)
    }

    /// The daemon's live view of one printer.
    pub fn printer(&self, id: &str) -> Option<LivePrinter> {
        self.ask(&Request::Status, None)
            .ok()?
            .printers?
            .into_iter()
            .find(|p| p.id == id)
    }

    pub fn sim(&self, id: &str) -> anyhow::Result<&SimHandle> {
        self.sims
            .iter()
            .find(|(p, _)| p == id)
            .map(|(_, s)| s)
            .ok_or_else(|| anyhow::anyhow!("bench estop: no simulator for {id}"))
    }

    /// What a person does after `M112`: switches the printer off and on.
    /// The halted board is deaf until a reset, and the gateway does not
    /// reset it (it keeps probing); a new simulator on the same link is a
    /// fresh board, and the lost port makes the gateway reopen it.
    pub fn power_cycle(&mut self, id: &str) -> anyhow::Result<()> {
        let Some(at) = self.sims.iter().position(|(p, _)| p == id) else {
            anyhow::bail!("bench estop: no simulator for {id}");
        };
        let (_, old) = self.sims.swap_remove(at);
        old.stop();
        let link = self.dir.join(format!("tty-{id}"));
        let fresh = crate::sim::spawn(&link, sim_config())?;
        self.sims.push((id.to_owned(), fresh));
        Ok(())
    }

    /// Publishes a fresh `emergency_stop` for `printer` (QoS 1, not
    /// retained); returns the instant just before the publish.
    pub fn publish_estop(&self, printer: &str) -> anyhow::Result<Instant> {
        let topic = crate::mqtt::topics::Topics::new(GATEWAY).command(printer);
        let stamp = crate::mqtt::payload::rfc3339(std::time::SystemTime::now());
        let payload = format!(r#"{{"command":"emergency_stop","timestamp":"{stamp}"}}"#);
        let t0 = Instant::now();
        self.mqtt.publish(&topic, payload.into_bytes())?;
        Ok(t0)
    }
}

/// A stock Marlin at 250000 baud, instant heating and motion.
fn sim_config() -> SimConfig {
    SimConfig {
        baud: 250_000,
        ..SimConfig::default()
    }
}

/// The operator's MQTT client, polled on its own small runtime.
struct Publisher {
    rt: tokio::runtime::Runtime,
    client: rumqttc::AsyncClient,
    online: Arc<AtomicBool>,
}

impl Publisher {
    fn connect(port: u16, status_topic: &str) -> anyhow::Result<Publisher> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let mut opts = rumqttc::MqttOptions::new("estop-operator", "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut events) = rumqttc::AsyncClient::new(opts, 64);
        let online = Arc::new(AtomicBool::new(false));
        let seen = online.clone();
        let status = status_topic.to_owned();
        // Ends with the runtime (dropped with the rig).
        rt.spawn(async move {
            loop {
                match events.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))
                        if p.topic == status =>
                    {
                        let up = String::from_utf8_lossy(&p.payload).contains("online");
                        seen.store(up, Ordering::Release);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        rt.block_on(client.subscribe(status_topic, rumqttc::QoS::AtLeastOnce))?;
        Ok(Publisher { rt, client, online })
    }

    fn publish(&self, topic: &str, payload: Vec<u8>) -> anyhow::Result<()> {
        let publish = self
            .client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload);
        Ok(self.rt.block_on(publish)?)
    }
}

/// What the load did while it ran.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct LoadTally {
    /// Big files uploaded, checked (scanned) by the farm and cancelled.
    pub big_jobs: u64,
    /// Bytes the disk writer wrote and fsynced beside the store.
    pub fsync_bytes: u64,
    pub fsyncs: u64,
    /// Upload or cancel answers that were not `ok` (with the last reason).
    pub refused: u64,
    pub last_refusal: Option<String>,
}

/// The farm kept busy until dropped (or [`Load::stop`]).
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    big_jobs: Arc<AtomicU64>,
    fsync_bytes: Arc<AtomicU64>,
    fsyncs: Arc<AtomicU64>,
    refusals: Arc<std::sync::Mutex<(u64, Option<String>)>>,
}

impl Load {
    /// Starts both load threads against the rig's daemon.
    pub fn start(rig: &Rig, big: &Path) -> anyhow::Result<Load> {
        let mut load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            big_jobs: Arc::new(AtomicU64::new(0)),
            fsync_bytes: Arc::new(AtomicU64::new(0)),
            fsyncs: Arc::new(AtomicU64::new(0)),
            refusals: Arc::default(),
        };
        let (data, big) = (rig.data.clone(), big.to_path_buf());
        let (stop, count, refusals) = (
            load.stop.clone(),
            load.big_jobs.clone(),
            load.refusals.clone(),
        );
        let uploads = std::thread::Builder::new()
            .name("estop-uploads".into())
            .spawn(move || churn_big_jobs(&data, &big, &stop, &count, &refusals))?;
        let hog = rig.dir.join("fsync-hog.bin");
        let (stop, bytes, syncs) = (
            load.stop.clone(),
            load.fsync_bytes.clone(),
            load.fsyncs.clone(),
        );
        let disk = std::thread::Builder::new()
            .name("estop-fsync".into())
            .spawn(move || {
                if let Err(e) = fsync_hog(&hog, &stop, &bytes, &syncs) {
                    log::warn!("bench estop: disk writer stopped: {e}");
                }
            })?;
        load.threads = vec![uploads, disk];
        Ok(load)
    }

    /// Big jobs through so far.
    pub fn big_jobs(&self) -> u64 {
        self.big_jobs.load(Ordering::Acquire)
    }

    pub fn stop(mut self) -> LoadTally {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let (refused, last_refusal) = self.refusals.lock().map(|r| r.clone()).unwrap_or_default();
        LoadTally {
            big_jobs: self.big_jobs.load(Ordering::Acquire),
            fsync_bytes: self.fsync_bytes.load(Ordering::Acquire),
            fsyncs: self.fsyncs.load(Ordering::Acquire),
            refused,
            last_refusal,
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Uploads the big file as a job for the loaded printer (whose plate is
/// never cleared: the job waits), which the farm copies and scans, then
/// cancels it and deletes the spool copy (the farm keeps cancelled files
/// until retention; the bench must not fill the disk).
fn churn_big_jobs(
    data: &Path,
    big: &Path,
    stop: &AtomicBool,
    count: &AtomicU64,
    refusals: &std::sync::Mutex<(u64, Option<String>)>,
) {
    let Ok(size) = std::fs::metadata(big).map(|m| m.len()) else {
        return;
    };
    let refuse = |why: String| {
        if let Ok(mut r) = refusals.lock() {
            r.0 += 1;
            r.1 = Some(why);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for k in 0..100_000u64 {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let id = format!("big-{k}");
        let add = Request::AddJob {
            printer: LOADED.to_owned(),
            priority: 0,
            id: Some(id.clone()),
            size,
        };
        match control::request(data, &add, Some(big)) {
            Ok(r) if r.ok => {}
            Ok(r) => {
                refuse(r.message);
                continue;
            }
            Err(e) => {
                refuse(e.to_string());
                continue;
            }
        }
        let spool = crate::store::StoreReader::open(data)
            .ok()
            .and_then(|r| r.get_job(&id).ok().flatten())
            .and_then(|j| j.gcode_path);
        match control::request(data, &Request::CancelJob { job: id }, None) {
            Ok(r) if r.ok => {}
            Ok(r) => refuse(r.message),
            Err(e) => refuse(e.to_string()),
        }
        if let Some(path) = spool {
            let _ = std::fs::remove_file(path);
        }
        count.fetch_add(1, Ordering::AcqRel);
    }
}

/// Writes 16 MiB and fsyncs it, over and over on the store's file system:
/// every SQLite commit then waits behind a journal full of someone else's
/// data (a slow SD card, without a knob in the store).
fn fsync_hog(
    path: &Path,
    stop: &AtomicBool,
    bytes: &AtomicU64,
    syncs: &AtomicU64,
) -> std::io::Result<()> {
    let chunk = vec![0x5au8; 1 << 20];
    let mut f = std::fs::File::create(path)?;
    for _ in 0..1_000_000u64 {
        if stop.load(Ordering::Acquire) {
            break;
        }
        f.rewind()?;
        for _ in 0..16 {
            f.write_all(&chunk)?;
        }
        f.sync_all()?;
        bytes.fetch_add(16 << 20, Ordering::AcqRel);
        syncs.fetch_add(1, Ordering::AcqRel);
    }
    drop(f);
    std::fs::remove_file(path)
}
