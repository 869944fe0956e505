//! What the core is configured with, and what it starts from.

use crate::store::{IdentityRow, Job as JobRow, PrinterRow};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

/// A configured MQTT trigger: a topic that runs a macro on an idle printer.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub topic: String,
    pub printer: String,
    pub gcode: String,
    /// Where the macro's completion is announced (seed 004's chaining).
    pub complete_topic: Option<String>,
}

/// A robot and the printers whose plates it may clear (`[[robot]]`).
#[derive(Debug, Clone)]
pub struct RobotRule {
    pub id: String,
    pub printers: Vec<String>,
}

/// The farm's settings, already checked by the config layer.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    pub gateway_id: String,
    pub spool_dir: PathBuf,
    /// Every connected printer says where it stands at least this often.
    pub idle_announce: Duration,
    /// A printing printer publishes its progress this often.
    pub progress_interval: Duration,
    /// A printing job's progress is written to the store at most this often.
    pub progress_persist: Duration,
    /// Pull mode: ask the queue manager for work for free printers.
    pub pull: bool,
    pub poll_interval: Duration,
    /// Models can be fetched (a queue manager or allowed hosts are set).
    pub downloads: bool,
    /// Publish `device/printers` (pull mode: no job handler owns it).
    pub publish_printers_list: bool,
    pub timeout_factor: f64,
    pub max_job: Duration,
    pub retention: Duration,
    pub triggers: Vec<Trigger>,
    /// `None`: any robot may clear any printer.
    pub robots: Option<Vec<RobotRule>>,
    /// Robot reports and commands older than this are not acted on.
    pub max_message_age: Duration,
    /// Tolerated clock difference between the gateway and other services.
    pub clock_skew: Duration,
    /// Seeds back-off jitter (gateway id, clock): gateways do not retry in lockstep.
    pub jitter_seed: u64,
    /// A printer id claimed at this start stays silent and refuses
    /// assignments this long after the first broker connection, listening
    /// for another claimant (see `claims`). Zero: no listening.
    pub claim_listen: Duration,
    /// Printers (`require_thermal_protection = true`) that take no job
    /// while their firmware reports `Cap:THERMAL_PROTECTION:0`.
    pub require_thermal_protection: BTreeSet<String>,
}

impl CoreSettings {
    /// Defaults for tests and the simulation.
    pub fn for_tests(gateway_id: &str) -> CoreSettings {
        CoreSettings {
            gateway_id: gateway_id.to_owned(),
            spool_dir: PathBuf::from("/spool"),
            idle_announce: Duration::from_secs(10),
            progress_interval: Duration::from_secs(10),
            progress_persist: Duration::from_secs(300),
            pull: false,
            poll_interval: Duration::from_secs(5),
            downloads: true,
            publish_printers_list: false,
            timeout_factor: 3.0,
            max_job: Duration::from_secs(72 * 3600),
            retention: Duration::from_secs(168 * 3600),
            triggers: Vec::new(),
            robots: None,
            max_message_age: Duration::from_secs(120),
            clock_skew: Duration::from_secs(30),
            jitter_seed: 1,
            claim_listen: Duration::ZERO,
            require_thermal_protection: BTreeSet::new(),
        }
    }
}

/// What the store held at start: every configured printer's row (or none
/// for a printer never seen) and every job that had not ended.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub printers: Vec<(String, Option<String>, Option<PrinterRow>)>,
    pub jobs: Vec<JobRow>,
    /// The printers' stored firmware identities.
    pub identities: Vec<IdentityRow>,
}
