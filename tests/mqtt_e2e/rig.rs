//! One gateway under test: `printgate sim` printers, the daemon as a real
//! process connected to the test broker through a cuttable proxy, and a
//! recorder ([`Mirror`]) subscribed directly to the broker. Each test gets
//! its own topic prefix and gateway id, so tests share the broker safely.

use super::e2e_support::*;
use super::mirror::Mirror;
use super::support::Proxy;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;
use std::time::Duration;
use tokio::runtime::Runtime;

/// Every bounded wait of these tests gives up after this long.
pub const LIMIT: Duration = Duration::from_secs(40);

/// What one test's gateway looks like.
pub struct Spec<'a> {
    /// Directory tag, observer client id.
    pub name: &'a str,
    /// Topic prefix (`device/` for the seed's own topics).
    pub prefix: &'a str,
    pub gateway: &'a str,
    pub discovery: &'a str,
    pub printers: &'a [&'a str],
    /// Extra `printgate sim` arguments for every printer.
    pub sim_args: &'a [&'a str],
    /// `[queue_manager] url`, when assignments need a model download.
    pub queue_manager: Option<String>,
    /// `[[trigger]]` tables: (topic, printer, gcode).
    pub triggers: &'a [(&'a str, &'a str, &'a str)],
}

/// Field order is drop order: processes first, the directory last.
pub struct Rig {
    daemon: Mutex<Option<Proc>>,
    _sims: Vec<Proc>,
    pub proxy: Proxy,
    pub mirror: Mirror,
    pub rt: Runtime,
    pub config: PathBuf,
    pub daemon_log: PathBuf,
    pub data: PathBuf,
    pub prefix: String,
    pub gateway: String,
    pub printers: Vec<String>,
    dir: TestDir,
}

impl Rig {
    /// Starts everything and waits until the gateway said `online` and every
    /// printer reported its `online` event.
    pub fn start(broker: u16, spec: Spec<'_>) -> Rig {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = TestDir::new(&format!("mqtt-e2e-{}", spec.name));
        let proxy = rt.block_on(Proxy::start(broker));
        let filters = [format!("{}#", spec.prefix), format!("{}/#", spec.discovery)];
        let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
        let mirror = Mirror::connect(&rt, broker, &format!("obs-{}", spec.name), &filters);
        let mut sims = Vec::new();
        let mut links = Vec::new();
        for p in spec.printers {
            let link = dir.path().join(format!("tty-{p}"));
            let log = dir.path().join(format!("{p}.received"));
            let mut args = vec!["--received", log.to_str().unwrap()];
            args.extend_from_slice(spec.sim_args);
            sims.push(start_sim(&link, &args));
            links.push((*p, link));
        }
        let config = write_config(dir.path(), &links, proxy.port, &spec);
        let daemon_log = dir.path().join("daemon.log");
        let rig = Rig {
            daemon: Mutex::new(Some(start_daemon(&config, &daemon_log))),
            _sims: sims,
            proxy,
            mirror,
            rt,
            config,
            daemon_log,
            data: dir.path().join("data"),
            prefix: spec.prefix.to_owned(),
            gateway: spec.gateway.to_owned(),
            printers: spec.printers.iter().map(|p| p.to_string()).collect(),
            dir,
        };
        rig.wait_online(0);
        rig
    }

    /// Waits, from mirror index `from`, for the birth and one `online`
    /// event per printer.
    pub fn wait_online(&self, from: usize) {
        let status = self.topic(&format!("gateway/{}/status", self.gateway));
        self.mirror.wait("the gateway's birth", from, |m| {
            m.iter()
                .any(|m| m.topic == status && m.json["status"] == "online")
                .then_some(())
        });
        for p in &self.printers {
            let topic = self.topic(&format!("printer/{p}/event"));
            self.mirror.wait(&format!("printer {p} online"), from, |m| {
                m.iter()
                    .any(|m| m.topic == topic && m.json["type"] == "online")
                    .then_some(())
            });
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `<prefix><rest>`.
    pub fn topic(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    pub fn sim_log(&self, printer: &str) -> PathBuf {
        self.dir.path().join(format!("{printer}.received"))
    }

    /// The operator CLI against this gateway.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--config", self.config.to_str().unwrap()]);
        let out = cli(&all);
        assert!(
            out.status.success(),
            "printgate {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Queues `moves` tagged moves on `printer` with `printgate job add`.
    pub fn add_job(&self, printer: &str, id: &str, tag: u32, moves: usize) -> Vec<String> {
        let (out, expected) = add_job(self.dir.path(), &self.config, printer, id, tag, moves);
        assert!(
            out.status.success(),
            "printgate job add {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        expected
    }

    pub fn jobs(&self) -> Vec<serde_json::Value> {
        jobs_json(&self.config)
    }

    pub fn job_state(&self, id: &str) -> Option<String> {
        self.jobs()
            .iter()
            .find(|j| j["id"] == id)
            .and_then(|j| j["state"].as_str().map(str::to_owned))
    }

    /// The daemon's process id, while it runs.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.lock().unwrap().as_ref().map(|d| d.0.id())
    }

    /// `kill -9`: the broker fires the Last Will, the outbox stays on disk.
    pub fn kill9(&self) {
        if let Some(d) = self.daemon.lock().unwrap().take() {
            d.kill9();
        }
    }

    pub fn restart(&self) {
        let mut daemon = self.daemon.lock().unwrap();
        assert!(daemon.is_none(), "the daemon is still running");
        *daemon = Some(start_daemon(&self.config, &self.daemon_log));
    }

    /// The daemon's log so far (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.daemon_log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("daemon log of {} (end):\n{}", self.gateway, self.log_tail());
        }
    }
}

/// `gateway_config` with this test's gateway id, prefixes and queue manager.
fn write_config(dir: &Path, links: &[(&str, PathBuf)], port: u16, spec: &Spec<'_>) -> PathBuf {
    let mqtt_keys = format!(
        "topic_prefix = \"{}\"\ndiscovery_prefix = \"{}\"\n",
        spec.prefix, spec.discovery
    );
    let mut tail = String::new();
    if let Some(url) = &spec.queue_manager {
        // One poll when a plate is cleared, then none for an hour: the
        // scripted server answers requests in order.
        tail.push_str(&format!(
            "[queue_manager]\nurl = \"{url}\"\npoll_interval_s = 3600\n"
        ));
    }
    for (topic, printer, gcode) in spec.triggers {
        let gcode = gcode.replace('\n', "\\n");
        tail.push_str(&format!(
            "[[trigger]]\ntopic = \"{topic}\"\nprinter = \"{printer}\"\ngcode = \"{gcode}\"\n"
        ));
    }
    let extras = ConfigExtras {
        gateway: spec.gateway,
        mqtt_port: Some(port),
        mqtt_keys: &mqtt_keys,
        tail: &tail,
    };
    gateway_config_with(dir, links, &extras)
}

/// `wait_until` that hands back what the condition found; LIMIT at most.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let mut found = None;
    wait_until(what, LIMIT, || {
        found = f();
        found.is_some()
    });
    found.unwrap()
}

/// Outbox rows still on disk, oldest first, read-only (the daemon may run).
#[derive(Debug, Clone)]
pub struct Row {
    pub seq: u64,
    pub topic: String,
    pub payload: Vec<u8>,
}

pub fn outbox(data: &Path) -> (Vec<Row>, u64) {
    use rusqlite::{Connection, OpenFlags};
    let conn =
        Connection::open_with_flags(data.join("printgate.db"), OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare("SELECT seq, topic, payload FROM outbox ORDER BY seq")
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok(Row {
                seq: r.get::<_, i64>(0)? as u64,
                topic: r.get(1)?,
                payload: r.get(2)?,
            })
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let last: i64 = conn
        .query_row("SELECT value FROM meta WHERE key = 'last_seq'", [], |r| {
            r.get(0)
        })
        .unwrap();
    (rows, last as u64)
}
