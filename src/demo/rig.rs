//! Sets up the demo's farm in this process, 127.0.0.1 only: the queue
//! manager with its sample jobs, the embedded MQTT broker on a free port,
//! one simulated Marlin printer per configured printer, and the gateway's
//! config pointing at all of them.

use super::queue_manager::QueueManager;
use super::DemoArgs;
use crate::config::Config;
use crate::sim::{SimConfig, SimHandle};
use anyhow::Context;
use std::path::{Path, PathBuf};

/// The gateway id, in MQTT topics (`device/gateway/demo/status`).
pub const GATEWAY_ID: &str = "demo";
/// A real Marlin's USB serial speed: the simulators pace the wire to it.
const BAUD: u32 = 250_000;
/// Moves take 2 % of their real time; heating 5 % (a 75 s heat-up is ~4 s).
const MOTION_TIME_SCALE: f64 = 0.02;
const HEAT_TIME_SCALE: f64 = 0.05;
/// A taken port is retried this many times (another process won the race).
const BROKER_ATTEMPTS: usize = 5;

/// Everything the gateway talks to, running.
pub struct Rig {
    pub qm: QueueManager,
    pub broker_port: u16,
    /// (printer id, its simulator), in config order.
    pub sims: Vec<(String, SimHandle)>,
    pub data_dir: PathBuf,
    pub config: Config,
}

impl Rig {
    pub fn start(dir: &Path, args: &DemoArgs) -> anyhow::Result<Rig> {
        let models = dir.join("models");
        std::fs::create_dir_all(&models)
            .with_context(|| format!("cannot create {}", models.display()))?;
        let qm = QueueManager::start(&models, usize::from(args.jobs), args.forever)
            .context("cannot start the demo queue manager")?;
        let broker_port = start_broker()?;
        let mut sims = Vec::new();
        for n in 1..=args.printers {
            let id = format!("printer-{n}");
            let cfg = SimConfig {
                baud: BAUD,
                corrupt: args.fault_rate,
                drop_ok: args.fault_rate / 4.0,
                motion_time_scale: MOTION_TIME_SCALE,
                heat_time_scale: HEAT_TIME_SCALE,
                seed: u64::from(n),
                ..SimConfig::default()
            };
            let sim = crate::sim::spawn(&dir.join(format!("tty-{id}")), cfg)
                .with_context(|| format!("cannot start the simulator of {id}"))?;
            sims.push((id, sim));
        }
        let data_dir = dir.join("data");
        let text = config_text(&data_dir, broker_port, &qm.url(), &sims);
        let config = crate::config::parse(&text, Path::new("<demo config>"))
            .context("the demo's generated config is invalid (a bug)")?;
        Ok(Rig {
            qm,
            broker_port,
            sims,
            data_dir,
            config,
        })
    }
}

fn start_broker() -> anyhow::Result<u16> {
    let mut last = None;
    for _ in 0..BROKER_ATTEMPTS {
        let port = crate::broker::free_port().context("no free port on 127.0.0.1")?;
        match crate::broker::start_embedded(port) {
            Ok(()) => return Ok(port),
            Err(e @ crate::broker::BrokerError::PortInUse { .. }) => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.map_or_else(|| anyhow::anyhow!("no broker port"), Into::into))
}

/// A TOML string (quoted and escaped).
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The gateway's config: short time-outs and intervals, so that the demo
/// moves at the simulators' sped-up pace; everything else is the default.
fn config_text(
    data_dir: &Path,
    broker_port: u16,
    qm_url: &str,
    sims: &[(String, SimHandle)],
) -> String {
    let mut text = format!(
        "[gateway]\nid = \"{GATEWAY_ID}\"\ndata_dir = {}\n\n\
         [serial]\nbaud = {BAUD}\nboot_timeout_ms = 3000\nack_timeout_ms = 500\nreopen_max_s = 1\n\n\
         [mqtt]\nhost = \"127.0.0.1\"\nport = {broker_port}\nclient_id = \"printgate-demo\"\n\
         keep_alive_s = 5\nprogress_interval_s = 1\nidle_announce_s = 1\n\n\
         [queue_manager]\nurl = {}\npoll_interval_s = 1\nconnect_timeout_s = 2\n\
         read_timeout_s = 5\nmax_retries = 3\n",
        toml_str(&data_dir.to_string_lossy()),
        toml_str(qm_url),
    );
    for (id, sim) in sims {
        text.push_str(&format!(
            "\n[[printer]]\nid = \"{id}\"\nport = {}\nfilament = \"PLA\"\n",
            toml_str(&sim.link().to_string_lossy())
        ));
    }
    text
}
