//! A real Mosquitto for the fleet: a child process on a free 127.0.0.1
//! port, with a generated configuration (anonymous clients, no
//! persistence, `$SYS` every second), killed when dropped; and a `$SYS`
//! listener that keeps the broker's own counters over time. Owns nothing of
//! the farm.

use crate::seed_handler::mqtt::{lock, Link, Msg};
use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long Mosquitto may take to listen.
const START_LIMIT: Duration = Duration::from_secs(10);

/// Whether a `mosquitto` binary can be run.
pub fn installed() -> bool {
    Command::new("mosquitto")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

pub struct Mosquitto {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Mosquitto {
    /// Starts Mosquitto with its configuration and log in `dir`.
    pub fn start(dir: &Path) -> Mosquitto {
        let port = printgate::broker::free_port().unwrap();
        let conf = dir.join("mosquitto.conf");
        // `max_queued_messages` above the default 1000: a slow subscriber
        // (the recorder, the $SYS listener) must not lose the farm's story.
        let body = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             sys_interval 1\nmax_queued_messages 100000\nmax_inflight_messages 100\n\
             log_dest stderr\nlog_type error\nlog_type warning\n"
        );
        std::fs::write(&conf, body).unwrap();
        let log = dir.join("mosquitto.log");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run mosquitto: {e}"));
        let mut m = Mosquitto { child, port, log };
        let deadline = Instant::now() + START_LIMIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = m.child.try_wait() {
                panic!("mosquitto exited ({status}): {}", m.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port} within {START_LIMIT:?}: {}",
                m.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `$SYS` value as it arrived.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    pub value: f64,
}

/// Every numeric `$SYS/broker/...` value over time, by topic.
pub struct SysLog {
    series: Arc<Mutex<BTreeMap<String, Vec<Sample>>>>,
    /// `$SYS` messages this listener received (the broker counts them as sent).
    received: Arc<Mutex<u64>>,
    _link: Link,
}

impl SysLog {
    pub fn start(port: u16) -> SysLog {
        let series: Arc<Mutex<BTreeMap<String, Vec<Sample>>>> = Arc::default();
        let received: Arc<Mutex<u64>> = Arc::default();
        let (s, r) = (series.clone(), received.clone());
        let on = move |m: Msg| {
            *lock(&r) += 1;
            let text = String::from_utf8_lossy(&m.payload);
            // Counters are plain numbers; some values carry units ("12 seconds").
            let first = text.split_whitespace().next().unwrap_or("");
            if let Ok(value) = first.parse::<f64>() {
                lock(&s)
                    .entry(m.topic.clone())
                    .or_default()
                    .push(Sample { at: m.at, value });
            }
        };
        let link = Link::connect(port, "fleet-sys", &["$SYS/#".to_owned()], on);
        SysLog {
            series,
            received,
            _link: link,
        }
    }

    /// The samples of `$SYS/broker/<name>`.
    pub fn series(&self, name: &str) -> Vec<Sample> {
        lock(&self.series)
            .get(&format!("$SYS/broker/{name}"))
            .cloned()
            .unwrap_or_default()
    }

    /// The last value of `$SYS/broker/<name>` at or before `at`.
    pub fn at(&self, name: &str, at: Instant) -> Option<f64> {
        self.series(name)
            .iter()
            .take_while(|s| s.at <= at)
            .last()
            .map(|s| s.value)
    }

    /// The largest value of `$SYS/broker/<name>` seen.
    pub fn max(&self, name: &str) -> Option<f64> {
        self.series(name).iter().map(|s| s.value).reduce(f64::max)
    }

    pub fn received(&self) -> u64 {
        *lock(&self.received)
    }

    /// The average rate of counter `name` between two instants (per second).
    pub fn rate(&self, name: &str, from: Instant, to: Instant) -> Option<f64> {
        let (a, b) = (self.at(name, from)?, self.at(name, to)?);
        let secs = to.saturating_duration_since(from).as_secs_f64();
        (secs > 0.0).then(|| (b - a) / secs)
    }

    /// The largest rate of counter `name` over any `window` between two
    /// instants (per second), from consecutive samples.
    pub fn peak_rate(
        &self,
        name: &str,
        from: Instant,
        to: Instant,
        window: Duration,
    ) -> Option<f64> {
        let s: Vec<Sample> = self
            .series(name)
            .into_iter()
            .filter(|s| s.at >= from && s.at <= to)
            .collect();
        let mut best: Option<f64> = None;
        for (i, a) in s.iter().enumerate() {
            let Some(b) = s[i..].iter().find(|b| b.at >= a.at + window) else {
                break;
            };
            let rate = (b.value - a.value) / (b.at - a.at).as_secs_f64();
            best = Some(best.map_or(rate, |x: f64| x.max(rate)));
        }
        best
    }
}
