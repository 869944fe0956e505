//! Builds the outbox items the farm writes with each state change: the
//! farm's topic contract (`crate::mqtt`) in one place. When MQTT is not
//! configured every builder returns `None` and nothing is queued.

use crate::lifecycle::PrinterState;
use crate::mqtt::payload::{self, Event, PrinterStatus, Progress};
use crate::mqtt::topics::Topics;
use crate::protocol::Temps;
use crate::store::{OutboxItem, OutboxKind};
use std::time::SystemTime;

/// What a progress message says about one printer.
pub struct ProgressView<'a> {
    pub printer: &'a str,
    pub job: Option<&'a str>,
    pub state: PrinterState,
    pub percent: f64,
    pub lines: Option<(u64, u64)>,
    pub temps: Temps,
    pub eta_seconds: Option<u64>,
}

pub struct Messages {
    topics: Option<Topics>,
}

pub fn status_of(state: PrinterState) -> PrinterStatus {
    match state {
        PrinterState::Offline => PrinterStatus::Offline,
        PrinterState::Idle => PrinterStatus::Idle,
        PrinterState::Printing => PrinterStatus::Printing,
        PrinterState::Paused => PrinterStatus::Paused,
        PrinterState::AwaitingClear => PrinterStatus::AwaitingClear,
        PrinterState::Error => PrinterStatus::Error,
    }
}

fn now() -> String {
    payload::rfc3339(SystemTime::now())
}

impl Messages {
    pub fn new(topics: Option<Topics>) -> Self {
        Messages { topics }
    }

    pub fn topics(&self) -> Option<&Topics> {
        self.topics.as_ref()
    }

    /// `device/printer/<id>/event`. The `seq` is filled in from the outbox
    /// row when it is published (the store assigns it in the same transaction).
    pub fn event(
        &self,
        printer: &str,
        kind: &str,
        job: Option<&str>,
        message: Option<&str>,
    ) -> Option<OutboxItem> {
        let topics = self.topics.as_ref()?;
        let event = Event {
            seq: 0,
            kind: kind.to_owned(),
            printer_id: printer.to_owned(),
            job_id: job.map(str::to_owned),
            message: message.map(str::to_owned),
            timestamp: now(),
        };
        Some(item(
            topics.event(printer),
            json(&event),
            OutboxKind::Event,
            Some(printer),
        ))
    }

    pub fn progress_payload(&self, v: &ProgressView<'_>) -> Vec<u8> {
        let progress = Progress {
            printer_id: v.printer.to_owned(),
            job_id: v.job.map(str::to_owned),
            status: status_of(v.state),
            progress: v.percent.clamp(0.0, 100.0) as u8,
            timestamp: now(),
            seq: None,
            line: v.lines.map(|l| l.0),
            lines: v.lines.map(|l| l.1),
            nozzle_temp: v.temps.nozzle.map(f64::from),
            bed_temp: v.temps.bed.map(f64::from),
            eta_seconds: v.eta_seconds,
        };
        json(&progress)
    }

    /// `device/printer/<id>/progress`, coalescable while the broker is away.
    pub fn progress(&self, v: &ProgressView<'_>) -> Option<OutboxItem> {
        let topics = self.topics.as_ref()?;
        Some(item(
            topics.progress(v.printer),
            self.progress_payload(v),
            OutboxKind::Progress,
            Some(v.printer),
        ))
    }

    /// `device/printers`: printers whose plate waits for a robot.
    pub fn awaiting_list(&self, printers: &[String]) -> Option<OutboxItem> {
        let topics = self.topics.as_ref()?;
        Some(item(
            topics.printers(),
            json(&printers),
            OutboxKind::Event,
            None,
        ))
    }

    /// The completion topic other services chain on.
    pub fn job_complete(&self, printer: &str, job: &str, outcome: &str) -> Option<OutboxItem> {
        let topics = self.topics.as_ref()?;
        let body = serde_json::json!({
            "printerId": printer, "jobId": job, "outcome": outcome, "timestamp": now(),
        });
        Some(item(
            topics.job_complete(printer, job),
            json(&body),
            OutboxKind::Event,
            Some(printer),
        ))
    }

    /// Pull mode: the assignment we took from the queue manager, published so
    /// the farm sees who prints what.
    pub fn assignment(&self, printer: &str, a: &payload::Assignment) -> Option<OutboxItem> {
        let topics = self.topics.as_ref()?;
        Some(item(
            topics.assignment(printer),
            json(a),
            OutboxKind::Event,
            Some(printer),
        ))
    }
}

fn item(topic: String, payload: Vec<u8>, kind: OutboxKind, printer: Option<&str>) -> OutboxItem {
    OutboxItem {
        topic,
        payload,
        retain: false,
        kind,
        printer_id: printer.map(str::to_owned),
    }
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}
