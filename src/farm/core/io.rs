//! What goes into the core ([`Input`]) and what comes out ([`Effect`]).

use super::{AckId, OpId, PersistError, ReplyId};
use crate::control::Response;
use crate::mqtt::payload::{Assignment, CommandMsg, RobotProgress};
use crate::printer::job_file::Summary;
use crate::printer::{PrinterCommand, PrinterReport};
use crate::source::{Downloaded, QueueJob};
use crate::store::{Applied, Batch};
use std::path::PathBuf;
use std::time::SystemTime;

/// A control-socket request as the core sees it.
#[derive(Debug, Clone)]
pub enum ControlRequest {
    Status,
    Ping,
    AddJob {
        printer: String,
        priority: i64,
        id: Option<String>,
        /// The uploaded file, spooled under a temporary name.
        upload: PathBuf,
    },
    CancelJob {
        job: String,
    },
    /// `printgate printer accept`: the port's new identity is the printer's.
    AcceptIdentity {
        printer: String,
    },
    Printer {
        printer: String,
        msg: CommandMsg,
    },
}

/// Everything that reaches the core.
#[derive(Debug)]
pub enum Input {
    Report(PrinterReport),
    /// A push assignment, validated. Acknowledged once durable.
    Assignment {
        printer: String,
        assignment: Assignment,
        warnings: Vec<String>,
        ack: Option<AckId>,
    },
    Robot {
        progress: RobotProgress,
        retained: bool,
    },
    Command {
        printer: String,
        msg: CommandMsg,
        retained: bool,
        /// The dispatcher already sent `M112` out of band.
        estop_sent: bool,
        ack: Option<AckId>,
    },
    Trigger {
        topic: String,
        retained: bool,
    },
    /// An inbound message that failed validation.
    Invalid {
        printer: Option<String>,
        /// Rate-limit key (the topic kind).
        kind: String,
        problem: String,
        ack: Option<AckId>,
    },
    Control {
        req: ControlRequest,
        reply: ReplyId,
    },
    Pulled {
        printer: String,
        result: Result<Option<QueueJob>, String>,
    },
    DownloadRetry {
        job: String,
        reason: String,
    },
    Downloaded {
        job: String,
        result: Result<Downloaded, String>,
    },
    Scanned {
        job: String,
        result: Result<Summary, String>,
    },
    /// A local upload was moved to its spool name (or could not be).
    Spooled {
        job: String,
        result: Result<(), String>,
    },
    Persisted {
        op: OpId,
        result: Result<Applied, PersistError>,
    },
    /// The broker link (re)connected: last values are published again
    /// (events wait in the outbox and follow in order on their own).
    BrokerConnected,
    /// Progress for one of our printer ids from someone else.
    PeerProgress {
        printer: String,
        gateway: Option<String>,
        claimed_at: Option<SystemTime>,
    },
    /// The printer task's command channel is closed.
    PrinterGone {
        printer: String,
    },
    Tick,
    /// Stop taking jobs; printers are told to stop safely.
    Shutdown,
}

/// Everything the core asks the outside world to do.
#[derive(Debug)]
pub enum Effect {
    /// Apply in one transaction; answer with [`Input::Persisted`].
    Persist {
        op: OpId,
        batch: Batch,
    },
    /// Deliver to the printer task, reliably and in order (an
    /// `EmergencyStop` on the task's out-of-band path).
    Printer {
        printer: String,
        cmd: PrinterCommand,
    },
    /// Send the PUBACK of a stored (or rejected) message.
    Ack(AckId),
    Reply {
        id: ReplyId,
        response: Response,
    },
    /// Publish now, not stored: a last value (heartbeats, progress) or an
    /// event that could not be stored.
    Publish {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
    /// Ask the queue manager for a job; answer with [`Input::Pulled`].
    Pull {
        printer: String,
    },
    /// Fetch a model to the spool file `name` (`<name>.gcode`, the job's
    /// own: a stale one from an earlier attempt of the same job may be
    /// replaced, nothing else); answer with [`Input::Downloaded`] (retries
    /// are the driver's, announced with [`Input::DownloadRetry`]).
    Download {
        job: String,
        url: String,
        name: String,
        sha256: Option<String>,
    },
    AbortDownload {
        job: String,
    },
    /// Check a G-code file; answer with [`Input::Scanned`].
    Scan {
        job: String,
        path: PathBuf,
    },
    /// Move a local upload to its spool name without replacing anything;
    /// answer with [`Input::Spooled`].
    Spool {
        job: String,
        from: PathBuf,
        to: PathBuf,
    },
    RemoveFile {
        path: PathBuf,
    },
    /// A one-line state for systemd (`STATUS=`).
    Status(String),
}
