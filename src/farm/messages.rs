//! Builds the messages the farm publishes: the farm's topic contract
//! (`crate::mqtt`) in one place. When MQTT is not configured every builder
//! returns `None` and nothing is queued.
//!
//! Never reads the clock: the farm core sets the time of the input it is
//! handling ([`Messages::set_time`]), so a simulation is reproducible.

use super::core::status::WireStatus;
use crate::mqtt::payload::{self, Event, Progress};
use crate::mqtt::topics::Topics;
use crate::printer::PausedBy;
use crate::protocol::Temps;
use crate::store::{OutboxItem, OutboxKind};
use std::time::{SystemTime, UNIX_EPOCH};

/// What a progress message says about one printer.
pub struct ProgressView<'a> {
    pub printer: &'a str,
    pub wire: WireStatus<'a>,
    pub lines: Option<(u64, u64)>,
    pub temps: Temps,
    /// Since when this gateway serves the printer id.
    pub claimed_at: SystemTime,
    /// While paused: by whom, and the printer's reason.
    pub paused_by: Option<(PausedBy, Option<&'a str>)>,
}

pub struct Messages {
    topics: Option<Topics>,
    timestamp: String,
}

impl Messages {
    pub fn new(topics: Option<Topics>) -> Self {
        Messages {
            topics,
            timestamp: payload::rfc3339(UNIX_EPOCH),
        }
    }

    /// The time stamped on what is built next.
    pub fn set_time(&mut self, wall: SystemTime) {
        self.timestamp = payload::rfc3339(wall);
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
        Some(item(
            topics.event(printer),
            self.event_payload(printer, kind, job, message),
            Some(printer),
        ))
    }

    /// `device/gateway/<gw>/event`: events that belong to no printer.
    pub fn gateway_event(
        &self,
        kind: &str,
        job: Option<&str>,
        message: Option<&str>,
    ) -> Option<OutboxItem> {
        let topics = self.topics.as_ref()?;
        let payload = self.event_payload(topics.gateway_id(), kind, job, message);
        Some(item(topics.gateway_event(), payload, None))
    }

    fn event_payload(
        &self,
        printer: &str,
        kind: &str,
        job: Option<&str>,
        message: Option<&str>,
    ) -> Vec<u8> {
        json(&Event {
            seq: 0,
            kind: kind.to_owned(),
            printer_id: printer.to_owned(),
            job_id: job.map(str::to_owned),
            message: message.map(str::to_owned),
            timestamp: self.timestamp.clone(),
        })
    }

    pub fn progress_payload(&self, v: &ProgressView<'_>) -> Vec<u8> {
        let gateway_id = self.topics.as_ref().map(|t| t.gateway_id().to_owned());
        json(&Progress {
            printer_id: v.printer.to_owned(),
            job_id: v.wire.job.map(str::to_owned),
            status: v.wire.status,
            progress: v.wire.progress,
            timestamp: self.timestamp.clone(),
            state: v.wire.state.to_owned(),
            outcome: v.wire.outcome.map(str::to_owned),
            gateway_id,
            claimed_at: Some(payload::rfc3339(v.claimed_at)),
            seq: None,
            line: v.lines.map(|l| l.0),
            lines: v.lines.map(|l| l.1),
            nozzle_temp: v.temps.nozzle.map(f64::from),
            bed_temp: v.temps.bed.map(f64::from),
            eta_seconds: None,
            paused_by: v.paused_by.map(|(by, _)| match by {
                PausedBy::Printer => "printer".to_owned(),
                PausedBy::Farm => "farm".to_owned(),
            }),
            pause_reason: v.paused_by.and_then(|(_, r)| r).map(str::to_owned),
        })
    }

    /// A state change's progress message: stored, so a handler never misses
    /// one (the periodic last values are published from memory instead).
    pub fn progress(&self, v: &ProgressView<'_>) -> Option<OutboxItem> {
        let topics = self.topics.as_ref()?;
        Some(item(
            topics.progress(v.printer),
            self.progress_payload(v),
            Some(v.printer),
        ))
    }

    /// `device/printer/<id>/prompt`, retained: the open prompt, or (`None`)
    /// an empty retained message that clears it.
    pub fn prompt(
        &self,
        printer: &str,
        job: Option<&str>,
        prompt: Option<(&str, &[String])>,
    ) -> Option<OutboxItem> {
        let topics = self.topics.as_ref()?;
        let payload = match prompt {
            Some((text, choices)) => json(&payload::PromptMsg {
                printer_id: printer.to_owned(),
                job_id: job.map(str::to_owned),
                text: text.to_owned(),
                choices: choices.to_vec(),
                timestamp: self.timestamp.clone(),
            }),
            None => Vec::new(),
        };
        let mut it = item(topics.prompt(printer), payload, Some(printer));
        it.retain = true;
        Some(it)
    }

    /// `device/printers`: printers whose plate waits for a robot.
    pub fn awaiting_list(&self, printers: &[String]) -> Option<OutboxItem> {
        let topics = self.topics.as_ref()?;
        Some(item(topics.printers(), json(&printers), None))
    }

    /// The completion topic other services chain on, for every outcome.
    pub fn job_complete(&self, printer: &str, job: &str, outcome: &str) -> Option<OutboxItem> {
        let topics = self.topics.as_ref()?;
        let body = serde_json::json!({
            "printerId": printer, "jobId": job, "outcome": outcome,
            "timestamp": self.timestamp,
        });
        Some(item(
            topics.job_complete(printer, job),
            json(&body),
            Some(printer),
        ))
    }

    /// A trigger macro's completion on its configured topic.
    pub fn trigger_complete(
        &self,
        topic: &str,
        printer: &str,
        trigger: &str,
        outcome: &str,
    ) -> Option<OutboxItem> {
        self.topics.as_ref()?;
        let body = serde_json::json!({
            "printerId": printer, "trigger": trigger, "outcome": outcome,
            "timestamp": self.timestamp,
        });
        Some(item(topic.to_owned(), json(&body), Some(printer)))
    }

    /// Pull mode: the assignment we took from the queue manager, published so
    /// the farm sees who prints what.
    pub fn assignment(&self, printer: &str, a: &payload::Assignment) -> Option<OutboxItem> {
        let topics = self.topics.as_ref()?;
        Some(item(topics.assignment(printer), json(a), Some(printer)))
    }
}

fn item(topic: String, payload: Vec<u8>, printer: Option<&str>) -> OutboxItem {
    OutboxItem {
        topic,
        payload,
        retain: false,
        kind: OutboxKind::Event,
        printer_id: printer.map(str::to_owned),
    }
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}
