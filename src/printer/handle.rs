//! How the rest of the gateway talks to a printer task: a command channel,
//! and an urgent path for the emergency stop that no queued work can delay.
//!
//! The urgent path is an atomic flag plus a `Notify`: `emergency_stop()` is
//! synchronous, never blocks and never waits for channel room, and the
//! printer task checks it before anything else on every wake-up (`link.rs`
//! polls it first). `Notify::notify_one` stores a permit when the task is
//! not waiting, so a request made while the task is busy is never missed.

use super::PrinterCommand;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Notify};

/// The printer task has ended (gateway stopping, or a bug): nothing can
/// reach the printer through this handle any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrinterGone;

impl fmt::Display for PrinterGone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the printer task has stopped")
    }
}

impl std::error::Error for PrinterGone {}

/// Shared between a handle and its task.
#[derive(Debug, Default)]
pub(crate) struct Urgent {
    estop: AtomicBool,
    notify: Notify,
}

impl Urgent {
    /// Takes a pending emergency-stop request (at most once per request).
    pub(crate) fn take_estop(&self) -> bool {
        self.estop.swap(false, Ordering::AcqRel)
    }

    /// Resolves when something was requested (cancel-safe; a request made
    /// before the call is not missed: `notify_one` keeps a permit).
    pub(crate) async fn requested(&self) {
        self.notify.notified().await;
    }
}

/// A cloneable handle to one printer task.
#[derive(Debug, Clone)]
pub struct PrinterHandle {
    commands: mpsc::Sender<PrinterCommand>,
    urgent: Arc<Urgent>,
}

impl PrinterHandle {
    pub(crate) fn new(commands: mpsc::Sender<PrinterCommand>, urgent: Arc<Urgent>) -> Self {
        PrinterHandle { commands, urgent }
    }

    /// `M112` now, ahead of every queued command and job line: the task
    /// writes it on its next wake-up, which this call causes. Synchronous and
    /// never blocking, so it is safe to call from any context (the MQTT
    /// dispatcher calls it on arrival). While the port is offline the request
    /// is kept and `M112` goes out first thing on the next connection; the
    /// task reports `ReportKind::EmergencyStop { sent }` either way.
    /// Fails only when the task is gone.
    pub fn emergency_stop(&self) -> Result<(), PrinterGone> {
        if self.commands.is_closed() {
            return Err(PrinterGone);
        }
        self.urgent.estop.store(true, Ordering::Release);
        self.urgent.notify.notify_one();
        Ok(())
    }

    /// Queues a command, waiting for room.
    pub async fn send(&self, cmd: PrinterCommand) -> Result<(), PrinterGone> {
        self.commands.send(cmd).await.map_err(|_| PrinterGone)
    }

    /// Queues a command if there is room now.
    pub fn try_send(
        &self,
        cmd: PrinterCommand,
    ) -> Result<(), mpsc::error::TrySendError<PrinterCommand>> {
        self.commands.try_send(cmd)
    }

    /// The plain command channel, for code that holds a `Sender`.
    pub fn sender(&self) -> mpsc::Sender<PrinterCommand> {
        self.commands.clone()
    }

    /// Whether the task has ended.
    pub fn is_closed(&self) -> bool {
        self.commands.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn estop_is_kept_until_taken_and_wakes_the_task() {
        let (tx, rx) = mpsc::channel(1);
        let urgent = Arc::new(Urgent::default());
        let handle = PrinterHandle::new(tx, Arc::clone(&urgent));
        // Fill the command channel: the e-stop must not care.
        handle.try_send(PrinterCommand::Pause).unwrap();
        assert!(handle.try_send(PrinterCommand::Pause).is_err());
        handle.emergency_stop().unwrap();
        // Requested before anyone waited: the permit is kept.
        tokio::time::timeout(std::time::Duration::from_secs(5), urgent.requested())
            .await
            .unwrap();
        assert!(urgent.take_estop());
        assert!(!urgent.take_estop(), "taken once");
        drop(rx);
        assert_eq!(handle.emergency_stop(), Err(PrinterGone));
    }
}
