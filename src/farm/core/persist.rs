//! What the core's writes are made of: the batch builder, the messages
//! that describe a printer (its progress view), the store-failure state
//! shown to operators, and the rate limit on events about rejected input.

use super::model::Printer;
use super::status::wire_status;
use super::writes::After;
use super::{Effect, FarmCore};
use crate::farm::messages::ProgressView;
use crate::lifecycle::JobState;
use crate::store::{OutboxItem, Write};
use log::{error, info, warn};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A batch under construction.
#[derive(Default)]
pub(super) struct Tx {
    pub writes: Vec<Write>,
    pub outbox: Vec<OutboxItem>,
}

impl Tx {
    pub fn write(&mut self, w: Write) -> &mut Self {
        self.writes.push(w);
        self
    }
    pub fn out(&mut self, item: Option<OutboxItem>) -> &mut Self {
        self.outbox.extend(item);
        self
    }
    pub fn job(&mut self, id: &str, to: JobState, reason: Option<&str>) -> &mut Self {
        self.write(Write::Job {
            id: id.to_owned(),
            to,
            reason: reason.map(str::to_owned),
        })
    }
}

/// One event per kind of rejected input per window, with a count of the
/// rest: a flood of bad messages costs at most one store write a window.
#[derive(Debug, Default)]
pub(super) struct RateLimiter {
    windows: BTreeMap<String, (Instant, u64)>,
}

/// The window of [`RateLimiter`].
const REJECT_WINDOW: Duration = Duration::from_secs(10);

impl RateLimiter {
    /// `true` when this one should be reported (the first of a window).
    fn allow(&mut self, key: &str, now: Instant) -> bool {
        if let Some((start, count)) = self.windows.get_mut(key) {
            if now.saturating_duration_since(*start) < REJECT_WINDOW {
                *count += 1;
                return false;
            }
        }
        if self.windows.len() > 256 {
            // Bounded whatever the keys: forget the oldest windows.
            self.windows.clear();
        }
        self.windows.insert(key.to_owned(), (now, 0));
        true
    }

    /// Windows that ended with suppressed reports: (key, count).
    fn expired(&mut self, now: Instant) -> Vec<(String, u64)> {
        let done: Vec<String> = self
            .windows
            .iter()
            .filter(|(_, (start, _))| now.saturating_duration_since(*start) >= REJECT_WINDOW)
            .map(|(k, _)| k.clone())
            .collect();
        done.into_iter()
            .filter_map(|k| self.windows.remove(&k).map(|(_, n)| (k, n)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

impl FarmCore {
    /// An event with no state change (stored, so it is never missed).
    pub(super) fn announce(&mut self, item: Option<OutboxItem>) {
        if item.is_some() {
            let mut tx = Tx::default();
            tx.out(item);
            self.commit(tx, After::Nothing);
        }
    }

    pub(super) fn store_ok(&mut self) {
        if let Some(reason) = self.store_fault.take() {
            info!("store: writes succeed again (after: {reason})");
            self.push(Effect::Status("running".into()));
            let item = self
                .msgs
                .gateway_event("store_recovered", None, Some(&reason));
            self.announce(item);
        }
    }

    /// A write failed (disk full, read-only card, I/O error): say so where an
    /// operator looks (log, systemd status, an event published without the
    /// store), once per streak.
    pub(super) fn store_failed(&mut self, reason: &str) {
        if self.store_fault.as_deref() == Some(reason) {
            return;
        }
        error!("store: write failed: {reason}");
        self.store_fault = Some(reason.to_owned());
        self.push(Effect::Status(format!(
            "store failing: {reason}; no new jobs are acknowledged"
        )));
        if let Some(item) = self.msgs.gateway_event("store_error", None, Some(reason)) {
            self.push(Effect::Publish {
                topic: item.topic,
                payload: item.payload,
                retain: false,
            });
        }
    }

    /// The progress message of `printer` as it stands now (none while
    /// another gateway holds the printer id: see `claims`).
    pub(super) fn progress_item(&self, printer: &str) -> Option<OutboxItem> {
        let p = self.printers.get(printer)?;
        if self.yields(printer) {
            return None;
        }
        self.msgs.progress(&self.view(p))
    }

    pub(super) fn view<'a>(&'a self, p: &'a Printer) -> ProgressView<'a> {
        ProgressView {
            printer: &p.id,
            wire: wire_status(p, self.queued_for(&p.id)),
            lines: p.lines,
            temps: p.temps,
            claimed_at: p.claimed_at,
            paused_by: p
                .paused_by
                .as_ref()
                .filter(|_| p.phase() == Some(super::model::Phase::Paused))
                .map(|(by, why)| (*by, why.as_deref())),
        }
    }

    /// The first open job waiting for `printer` (not held by it).
    pub(super) fn queued_for(&self, printer: &str) -> Option<&str> {
        self.jobs
            .values()
            .filter(|j| j.printer.as_deref() == Some(printer) && j.stop.is_none())
            .find(|j| !j.state.is_active())
            .map(|j| j.id.as_str())
    }

    /// Reports a rejected input: one event per kind and window.
    pub(super) fn reject_input(&mut self, printer: Option<&str>, kind: &str, problem: &str) {
        if !self.limiter.allow(kind, self.now) {
            return;
        }
        warn!("rejected input: {problem}");
        let item = match printer {
            Some(p) => self.msgs.event(p, "input_rejected", None, Some(problem)),
            None => self
                .msgs
                .gateway_event("input_rejected", None, Some(problem)),
        };
        self.announce(item);
    }

    pub(super) fn limiter_flush(&mut self) {
        for (kind, count) in self.limiter.expired(self.now) {
            let text = format!("{count} more {kind} message(s) rejected in the last window");
            warn!("{text}");
            let item = self.msgs.gateway_event("input_rejected", None, Some(&text));
            self.announce(item);
        }
    }
}

/// The event type announcing a job's move to `to` (`job_printing`, …).
pub(super) fn event_kind(to: JobState) -> String {
    format!("job_{}", to.as_str())
}
