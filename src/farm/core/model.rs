//! The farm core's picture of the world: each configured printer and each
//! open (not yet terminal) job, as the core last decided them. Plain data;
//! the rules that change it live in the sibling modules.

use crate::lifecycle::{JobState, PrinterState};
use crate::printer::PausedBy;
use crate::protocol::Temps;
use crate::store::JobSource;
use std::time::{Instant, SystemTime};

/// What happens with the job a printer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Its model is being fetched.
    Downloading,
    /// Its file is being checked (on a blocking thread) before the start.
    Scanning,
    /// `printing` is being written; the printer is told only once it is durable.
    Starting,
    /// The printer task has (or will get) the job.
    Printing,
    Paused,
}

impl Phase {
    /// The `state` word published for a printer holding a job in this phase.
    pub fn state_word(self) -> &'static str {
        match self {
            Phase::Downloading => "downloading",
            Phase::Scanning | Phase::Starting => "starting",
            Phase::Printing => "printing",
            Phase::Paused => "paused",
        }
    }

    /// The printer task has the job (lines may have gone to the printer).
    pub fn on_printer(self) -> bool {
        matches!(self, Phase::Printing | Phase::Paused)
    }
}

/// The job that occupies a printer right now.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub job: String,
    pub phase: Phase,
    /// The printer task said `JobStarted` for it.
    pub started: bool,
    /// When the time limit cancels it (set when streaming starts).
    pub deadline: Option<Instant>,
    /// When a time-limit cancel was last sent (re-sent until the job ends).
    pub cancel_sent: Option<Instant>,
    /// The printer's loss count when the start was decided.
    pub session: u64,
}

impl Held {
    pub fn new(job: &str, phase: Phase) -> Held {
        Held {
            job: job.to_owned(),
            phase,
            started: false,
            deadline: None,
            cancel_sent: None,
            session: 0,
        }
    }
}

/// A print that ended and whose plate waits for the robot: the seed's
/// completion signal (`idle`, 100, this job) is repeated until it is clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub job: Option<String>,
    pub outcome: Option<&'static str>,
}

/// Failing polls of one printer: back-off and log-once state.
#[derive(Debug, Default)]
pub struct PullState {
    pub in_flight: bool,
    pub next: Option<Instant>,
    pub backoff: Option<crate::backoff::Backoff>,
    pub streak: crate::backoff::ErrorStreak,
}

/// One configured printer as the core sees it.
#[derive(Debug)]
pub struct Printer {
    pub id: String,
    pub filament: Option<String>,
    /// The stored lifecycle state (mirrors the printers table).
    pub state: PrinterState,
    pub plate_clear: bool,
    /// The printer task reported a finished handshake and no loss since.
    pub connected: bool,
    pub held: Option<Held>,
    /// Set while `state` is `awaiting_clear`: what is on the plate.
    pub finished: Option<Finished>,
    /// When the plate started waiting (robot reports older than this are
    /// about an earlier print).
    pub awaiting_since: Option<SystemTime>,
    pub temps: Temps,
    pub percent: f64,
    pub lines: Option<(u64, u64)>,
    /// Last periodic progress publication.
    pub last_publish: Option<Instant>,
    /// Last (non-durable) progress write to the store.
    pub last_persist: Option<Instant>,
    pub pull: PullState,
    /// `Offline`/`Fault` reports seen from its task (sent with each start).
    pub losses: u64,
    /// Since when this gateway serves the id (`claimedAt`).
    pub claimed_at: SystemTime,
    /// Another gateway claiming the same id, while it is heard.
    pub rival: Option<super::claims::Rival>,
    /// A new claim listening for another claimant before it speaks.
    pub listening: super::claims::Listening,
    /// A robot's clear heard while listening (the robot's id): applied
    /// once the claim serves the id, dropped if another claimant keeps it.
    pub held_clear: Option<String>,
    /// Assignments pushed while the claim listens (acknowledged, kept in
    /// memory): taken in order when listening ends with the id ours,
    /// refused if another claimant keeps it.
    pub held_assignments: Vec<(crate::mqtt::payload::Assignment, Vec<String>)>,
    /// Who paused the held job, and the printer's reason.
    pub paused_by: Option<(PausedBy, Option<String>)>,
    /// The printer's open prompt: its text and buttons.
    pub prompt: Option<(String, Vec<String>)>,
    /// The serial link's protocol counters, summed over finished jobs.
    pub link: crate::control::LinkCounters,
    /// Its port's firmware identity and whether it holds the printer.
    pub identity: super::identity::IdentityState,
    /// The configured port (from its store row), for operators' messages.
    pub port: Option<String>,
}

impl Printer {
    pub fn new(id: &str, filament: Option<String>, state: PrinterState, plate: bool) -> Printer {
        Printer {
            id: id.to_owned(),
            filament,
            state,
            plate_clear: plate,
            connected: false,
            held: None,
            finished: None,
            awaiting_since: None,
            temps: Temps::default(),
            percent: 0.0,
            lines: None,
            last_publish: None,
            last_persist: None,
            pull: PullState::default(),
            losses: 0,
            claimed_at: SystemTime::UNIX_EPOCH,
            rival: None,
            listening: super::claims::Listening::No,
            held_clear: None,
            held_assignments: Vec::new(),
            paused_by: None,
            prompt: None,
            link: crate::control::LinkCounters::default(),
            identity: super::identity::IdentityState::default(),
            port: None,
        }
    }

    /// A start was sent and the task has not answered it yet (started,
    /// refused or ended): the task decides that job's fate.
    pub fn start_in_flight(&self) -> bool {
        self.held
            .as_ref()
            .is_some_and(|h| h.phase.on_printer() && !h.started)
    }

    /// The phase of the held job, if any.
    pub fn phase(&self) -> Option<Phase> {
        self.held.as_ref().map(|h| h.phase)
    }

    /// The held job's id, if any.
    pub fn held_job(&self) -> Option<&str> {
        self.held.as_ref().map(|h| h.job.as_str())
    }
}

/// Why a job that has not ended yet must not start any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    Cancel(String),
    EmergencyStop,
}

/// An open job: accepted (durably, or with its insert still being retried)
/// and not yet terminal. Terminal jobs leave the core's memory; the store
/// keeps them for history and for de-duplication.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub printer: Option<String>,
    pub source: JobSource,
    pub model_url: Option<String>,
    pub gcode_path: Option<String>,
    pub filament: Option<String>,
    pub priority: i64,
    pub estimated_s: Option<u64>,
    pub sha256: Option<String>,
    pub params: Option<serde_json::Value>,
    pub state: JobState,
    /// Arrival order (FIFO within a priority).
    pub order: u64,
    /// The insert is durable. Until then the job is never started.
    pub stored: bool,
    /// Its file is still being moved into the spool (local jobs).
    pub file_pending: bool,
    /// Cancelled or e-stopped: never starts, whatever the store says yet.
    pub stop: Option<Stop>,
    /// The answer to a cancel heard before the job's insert was durable:
    /// given with the durable cancel (an answer before it would be a
    /// promise a crash could break).
    pub stop_answer: Option<(Option<super::ReplyId>, Option<crate::store::OutboxItem>)>,
}

impl Job {
    /// May be picked by the scheduler.
    pub fn startable(&self) -> bool {
        self.stored
            && !self.file_pending
            && self.stop.is_none()
            && matches!(self.state, JobState::Queued | JobState::Ready)
    }

    /// Could run on a printer loaded with `filament`.
    pub fn fits(&self, printer: &str, filament: Option<&str>) -> bool {
        match &self.printer {
            Some(p) => p == printer,
            None => match (&self.filament, filament) {
                (Some(want), Some(have)) => want == have,
                (Some(_), None) => false,
                (None, _) => true,
            },
        }
    }
}

/// The spool file of a job's G-code: one-to-one with the job id (the job
/// source's [`crate::source::spool_name`]: a readable prefix and 128 bits of
/// the id's SHA-256), so two jobs never share (or delete) one file.
pub fn spool_file_name(job: &str) -> String {
    format!("{}.gcode", crate::source::spool_name(job))
}
