//! The farm: the one place that decides which job runs where, when a plate
//! is clear, and what a command or a robot report means.
//!
//! - [`core`]: the decisions, sans-IO (events in, effects out), so that a
//!   deterministic simulation can drive them through every fault;
//! - [`driver`]: runs the core with the real store, printer tasks, MQTT link
//!   and queue manager;
//! - [`messages`]: the payloads it publishes;
//! - `sim` (tests): the deterministic simulation and its invariants.

pub mod core;
pub mod driver;
pub mod messages;
#[cfg(test)]
mod sim;

use crate::control;
use crate::mqtt::link::AckToken;
use crate::mqtt::payload::{Assignment, CommandMsg, RobotProgress};
use std::path::PathBuf;
use tokio::sync::oneshot;

pub use self::core::{CoreSettings, FarmCore, RobotRule, Snapshot, Trigger};
pub use driver::{Driver, Models, Parts, PrinterLink};

/// Everything that reaches the farm from outside the printer tasks: the
/// MQTT dispatcher and the control socket.
pub enum FarmInput {
    /// A validated push assignment; acknowledged once durably stored.
    Assignment {
        printer: String,
        assignment: Assignment,
        warnings: Vec<String>,
        ack: Option<AckToken>,
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
        ack: Option<AckToken>,
    },
    Trigger {
        topic: String,
        retained: bool,
    },
    /// An inbound message that failed validation: reported (rate-limited),
    /// acknowledged, nothing changes.
    Invalid {
        printer: Option<String>,
        kind: String,
        problem: String,
        ack: Option<AckToken>,
    },
    /// The broker link (re)connected: publish every printer's latest state.
    BrokerConnected,
    /// Another gateway (or program) published progress for one of our
    /// printer ids.
    PeerProgress {
        printer: String,
        gateway: Option<String>,
        claimed_at: Option<String>,
    },
    /// From the control socket; `upload` is the spooled file of `AddJob`.
    Control {
        req: control::Request,
        upload: Option<PathBuf>,
        reply: oneshot::Sender<control::Response>,
    },
}
