//! The printer task's reports on their way to the farm. No report is ever
//! dropped: one lost `JobFinished`, `Offline` or `Fault` would leave the
//! printer stuck in the farm's eyes.
//!
//! The shared report channel is bounded, and a full channel must not block
//! the task (an emergency stop has to get through). So reports wait here,
//! in order, and go out as the channel has room (`try_flush` after every
//! wake-up, and `link.rs` waits for room while any wait). Only what can be
//! coalesced is: a newer temperature or progress report replaces an older
//! one queued since the last important report, so this queue holds at most
//! two of those between important ones. Important reports are few per job;
//! if they still pile up past [`HIGH_WATER`] (a farm that stopped reading),
//! the task stops reading its port and commands (`congested`) until they
//! drain, and memory stays bounded.

use super::{PrinterReport, ReportKind};
use log::debug;
use std::collections::VecDeque;
use tokio::sync::mpsc;

/// Queued reports above which the task applies back-pressure.
pub(crate) const HIGH_WATER: usize = 256;

pub(crate) struct Outbox {
    printer: String,
    tx: mpsc::Sender<PrinterReport>,
    queue: VecDeque<ReportKind>,
}

impl Outbox {
    pub(crate) fn new(printer: String, tx: mpsc::Sender<PrinterReport>) -> Self {
        Outbox {
            printer,
            tx,
            queue: VecDeque::new(),
        }
    }

    /// Queues a report (coalescing temperatures and progress) and sends
    /// what the channel takes now.
    pub(crate) fn push(&mut self, kind: ReportKind) {
        if coalescable(&kind) {
            let slot = self
                .queue
                .iter_mut()
                .rev()
                .take_while(|k| coalescable(k))
                .find(|k| same_kind(k, &kind));
            if let Some(slot) = slot {
                *slot = kind;
                self.try_flush();
                return;
            }
        }
        self.queue.push_back(kind);
        self.try_flush();
    }

    /// Sends queued reports while the channel has room, without waiting.
    pub(crate) fn try_flush(&mut self) {
        while let Some(kind) = self.queue.pop_front() {
            let report = PrinterReport {
                printer: self.printer.clone(),
                kind,
            };
            match self.tx.try_send(report) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(back)) => {
                    self.queue.push_front(back.kind);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    // Nobody reads reports any more (the gateway is
                    // stopping): there is no one to tell.
                    debug!("printer {}: report channel closed", self.printer);
                    self.queue.clear();
                    return;
                }
            }
        }
    }

    /// Waits until the channel has room for the oldest report, then sends
    /// it. Cancel-safe: the report leaves the queue only with a permit.
    pub(crate) async fn send_one(&mut self) {
        let Ok(permit) = self.tx.reserve().await else {
            self.queue.clear();
            return;
        };
        if let Some(kind) = self.queue.pop_front() {
            permit.send(PrinterReport {
                printer: self.printer.clone(),
                kind,
            });
        }
    }

    /// Sends everything, waiting for room (used when the task ends).
    pub(crate) async fn drain(&mut self) {
        while !self.queue.is_empty() {
            self.send_one().await;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Too much is waiting: stop producing until the farm catches up.
    pub(crate) fn congested(&self) -> bool {
        self.queue.len() >= HIGH_WATER
    }
}

fn coalescable(kind: &ReportKind) -> bool {
    matches!(kind, ReportKind::Temps(_) | ReportKind::Progress { .. })
}

fn same_kind(a: &ReportKind, b: &ReportKind) -> bool {
    match (a, b) {
        (ReportKind::Temps(_), ReportKind::Temps(_)) => true,
        (ReportKind::Progress { job_id: x, .. }, ReportKind::Progress { job_id: y, .. }) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Temps;

    fn temps(n: f32) -> ReportKind {
        ReportKind::Temps(Temps {
            nozzle: Some(n),
            ..Temps::default()
        })
    }

    #[tokio::test]
    async fn a_full_channel_keeps_reports_in_order_and_coalesces_only_temps() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut out = Outbox::new("p1".into(), tx);
        out.push(ReportKind::Stopped); // takes the only slot
        out.push(temps(1.0));
        out.push(temps(2.0)); // replaces 1.0
        out.push(ReportKind::Offline { reason: "x".into() });
        out.push(temps(3.0)); // after an important report: kept apart
        out.push(ReportKind::Rejected {
            reason: "y".into(),
            job_id: None,
        });
        let mut got = Vec::new();
        while got.len() < 5 {
            let r = rx.recv().await.unwrap();
            got.push(format!("{:?}", r.kind));
            out.try_flush();
            if out.is_empty() && got.len() < 5 {
                // Everything handed over; the rest is in the channel.
            }
        }
        assert!(got[0].starts_with("Stopped"));
        assert!(got[1].contains("2.0"), "{got:?}");
        assert!(got[2].starts_with("Offline"));
        assert!(got[3].contains("3.0"));
        assert!(got[4].starts_with("Rejected"));
        assert!(out.is_empty());
    }
}
