//! What a simulated run is asked to do (the plan and its fault rates) and
//! what it reports back (the outcome, or the failure with its trace).

use crate::farm::core::CoreSettings;
use crate::rng::Xorshift64;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// How often each kind of fault is injected (per step, or per message).
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    pub store_fail: f64,
    pub store_slow: f64,
    pub unplug: f64,
    pub reset: f64,
    pub silent: f64,
    pub crash: f64,
    pub duplicate: f64,
    pub retained: f64,
    pub stale: f64,
    pub qm_error: f64,
    pub download_error: f64,
    pub bad_file: f64,
    pub missing_model: f64,
    pub cancel: f64,
    pub estop: f64,
    pub pause: f64,
    pub operator_clear: f64,
    /// The printer pauses itself (filament runout) and asks a person;
    /// drawn from a stream of its own, so 0 replays older seeds exactly.
    pub runout: f64,
    /// Two boards swap ports (CH340s without serial numbers re-enumerate
    /// in another order): the port answers as another firmware until an
    /// operator accepts it. Its own stream too.
    pub swap: f64,
}

impl Faults {
    pub const NONE: Faults = Faults {
        store_fail: 0.0,
        store_slow: 0.0,
        unplug: 0.0,
        reset: 0.0,
        silent: 0.0,
        crash: 0.0,
        duplicate: 0.0,
        retained: 0.0,
        stale: 0.0,
        qm_error: 0.0,
        download_error: 0.0,
        bad_file: 0.0,
        missing_model: 0.0,
        cancel: 0.0,
        estop: 0.0,
        pause: 0.0,
        operator_clear: 0.0,
        runout: 0.0,
        swap: 0.0,
    };

    /// Every kind at once, at rates that still let jobs finish.
    pub const ALL: Faults = Faults {
        store_fail: 0.03,
        store_slow: 0.2,
        unplug: 0.01,
        reset: 0.005,
        silent: 0.01,
        crash: 0.004,
        duplicate: 0.1,
        retained: 0.05,
        stale: 0.05,
        qm_error: 0.2,
        download_error: 0.15,
        bad_file: 0.05,
        missing_model: 0.05,
        cancel: 0.01,
        estop: 0.003,
        pause: 0.01,
        operator_clear: 0.005,
        runout: 0.005,
        swap: 0.002,
    };
}

/// One simulated run's shape.
#[derive(Debug, Clone)]
pub struct Plan {
    pub printers: usize,
    pub steps: usize,
    /// Steps without faults at the end, in which every job must end.
    pub quiesce: usize,
    pub pull: bool,
    pub robot_rules: bool,
    pub faults: Faults,
}

impl Plan {
    pub fn standard(seed: u64) -> Plan {
        // The seed also picks the shape, so every shape gets covered.
        let mut r = Xorshift64::seeded(seed ^ 0x5151);
        Plan {
            printers: 1 + r.index(3),
            steps: 300 + r.index(300),
            quiesce: 500,
            pull: r.chance(0.5),
            robot_rules: r.chance(0.3),
            faults: Faults::ALL,
        }
    }
}

/// What a run saw, for the test's summary.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub jobs_completed: usize,
    pub jobs_ended: usize,
    pub crashes: usize,
    pub faults: BTreeMap<&'static str, u64>,
}

/// A failed run: the seed, what broke, and the last steps before it.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    pub violation: String,
    pub trace: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "seed {} failed: {}", self.seed, self.violation)?;
        writeln!(
            f,
            "replay with: SEED={} cargo test --lib farm::sim",
            self.seed
        )?;
        writeln!(f, "last steps:")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

pub(super) fn settings(plan: &Plan) -> CoreSettings {
    let mut s = CoreSettings::for_tests("gw-sim");
    s.pull = plan.pull;
    s.publish_printers_list = plan.pull;
    s.spool_dir = PathBuf::from("/spool");
    s.max_job = Duration::from_secs(3600);
    if plan.robot_rules {
        s.robots = Some(vec![crate::farm::core::RobotRule {
            id: "rob-1".into(),
            printers: (0..plan.printers).map(|i| format!("p{i}")).collect(),
        }]);
    }
    s
}
