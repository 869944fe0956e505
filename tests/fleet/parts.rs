//! The fleet's processes and files: one `printgate sim` per (gateway,
//! printer), each with its own `--received` log, and each gateway's
//! config (push-only, own data folder and MQTT client id). Starts
//! processes and writes files; never waits on the farm.

use crate::e2e_support::{Proc, TestDir, BIN};
use crate::rig::{Plan, STEP};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One gateway: its config, log and process.
pub struct Gateway {
    pub id: String,
    pub printers: Vec<String>,
    pub config: PathBuf,
    pub log: PathBuf,
    pub proc: Option<Proc>,
}

/// One simulator per (gateway, printer), all spawned before any is waited
/// for (a simulator probes for its host every 10 ms until one opens it).
#[allow(clippy::type_complexity)]
pub fn start_sims(
    dir: &TestDir,
    plan: &Plan,
) -> (
    BTreeMap<(String, String), Proc>,
    BTreeMap<(String, String), PathBuf>,
) {
    let mut sims = BTreeMap::new();
    let mut logs = BTreeMap::new();
    for (gw, ids) in &plan.layout {
        let sub = dir.path().join(gw);
        std::fs::create_dir_all(&sub).unwrap();
        for p in ids {
            let link = sub.join(format!("tty-{p}"));
            let log = sub.join(format!("{p}.received"));
            let child = Command::new(BIN)
                .arg("sim")
                .arg("--link")
                .arg(&link)
                .args(["--baud", "250000", "--motion-time-scale"])
                .arg(plan.motion_scale.to_string())
                .arg("--received")
                .arg(&log)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            sims.insert((gw.clone(), p.clone()), Proc(child));
            logs.insert((gw.clone(), p.clone()), log);
        }
    }
    let deadline = Instant::now() + STEP;
    for (gw, ids) in &plan.layout {
        for p in ids {
            let link = dir.path().join(gw).join(format!("tty-{p}"));
            while std::fs::symlink_metadata(&link).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "no simulator link {link:?} within {STEP:?}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    (sims, logs)
}

/// A push-only gateway's config: its own data folder and client id
/// (`printgate-<id>`), `pull = false` with the queue manager's URL for
/// models, no Home Assistant discovery, generous serial time-outs (a
/// loaded machine delays the simulators).
pub fn write_gateway(
    dir: &TestDir,
    id: &str,
    printers: &[String],
    sims: &BTreeMap<(String, String), Proc>,
    port: u16,
    qm: &str,
    plan: &Plan,
) -> Gateway {
    let sub = dir.path().join(id);
    let mut text = format!(
        "[gateway]\nid = \"{id}\"\ndata_dir = \"{}\"\n\
         [serial]\nbaud = 250000\nboot_timeout_ms = 5000\nack_timeout_ms = 20000\nreopen_max_s = 2\n\
         [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nkeep_alive_s = 30\n\
         progress_interval_s = {}\nidle_announce_s = {}\nhomeassistant = false\n\
         [queue_manager]\nurl = \"{qm}\"\npull = false\nconnect_timeout_s = 5\nread_timeout_s = 20\nmax_retries = 1\n",
        sub.join("data").display(),
        plan.progress_interval_s,
        plan.heartbeat_s,
    );
    for p in printers {
        assert!(sims.contains_key(&(id.to_owned(), p.clone())));
        text.push_str(&format!(
            "[[printer]]\nid = \"{p}\"\nport = \"{}\"\nfilament = \"PLA\"\n",
            sub.join(format!("tty-{p}")).display()
        ));
    }
    let config = sub.join("printgate.toml");
    std::fs::write(&config, text).unwrap();
    Gateway {
        id: id.to_owned(),
        printers: printers.to_vec(),
        config,
        log: sub.join("daemon.log"),
        proc: None,
    }
}
