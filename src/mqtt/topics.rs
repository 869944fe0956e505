//! The farm's topic contract: every MQTT topic printgate publishes or
//! subscribes to is built here, and every incoming topic is classified here.
//!
//! Owns topic spelling only (`assignement` included, as the farm's
//! job_handler spells it). Never parses payloads and never touches the network.

/// Where Home Assistant announces itself (`<discovery_prefix>/status`).
pub const DEFAULT_DISCOVERY_PREFIX: &str = "homeassistant";

/// Builds the farm's topics for one gateway.
///
/// ```
/// use printgate::mqtt::topics::Topics;
/// let t = Topics::new("gw1");
/// assert_eq!(t.assignment("p1"), "device/printer/p1/assignement");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
    gateway_id: String,
    discovery_prefix: String,
    triggers: Vec<String>,
}

/// What an incoming topic is, after [`Topics::classify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InTopic {
    /// `<prefix>printer/<printer>/assignement`
    Assignment { printer: String },
    /// `<prefix>robot/<robot>/progress`
    RobotProgress { robot: String },
    /// `<prefix>printer/<printer>/command`
    Command { printer: String },
    /// `<prefix>printer/<printer>/progress`: our own printers' progress,
    /// heard back to spot another gateway publishing for the same id.
    Progress { printer: String },
    /// `<discovery_prefix>/status`
    HomeAssistantStatus,
    /// One of the configured trigger topics, by its index in the list.
    Trigger { index: usize },
}

impl Topics {
    /// Topics under the default prefix `device/` for gateway `gateway_id`.
    pub fn new(gateway_id: &str) -> Self {
        Topics {
            prefix: "device/".to_owned(),
            gateway_id: gateway_id.to_owned(),
            discovery_prefix: DEFAULT_DISCOVERY_PREFIX.to_owned(),
            triggers: Vec::new(),
        }
    }

    /// Replaces the topic prefix. A missing trailing `/` is added; an empty
    /// prefix puts the farm's topics at the root (`printer/<id>/...`).
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = if prefix.is_empty() || prefix.ends_with('/') {
            prefix.to_owned()
        } else {
            format!("{prefix}/")
        };
        self
    }

    /// Replaces Home Assistant's discovery prefix (default `homeassistant`).
    pub fn with_discovery_prefix(mut self, discovery_prefix: &str) -> Self {
        self.discovery_prefix = discovery_prefix.trim_end_matches('/').to_owned();
        self
    }

    /// Sets the extra trigger topics; [`InTopic::Trigger`] carries the index.
    pub fn with_triggers(mut self, triggers: Vec<String>) -> Self {
        self.triggers = triggers;
        self
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn gateway_id(&self) -> &str {
        &self.gateway_id
    }

    pub fn discovery_prefix(&self) -> &str {
        &self.discovery_prefix
    }

    pub fn triggers(&self) -> &[String] {
        &self.triggers
    }

    /// `<prefix>printer/<id>/progress` (out).
    pub fn progress(&self, printer: &str) -> String {
        self.printer_topic(printer, "progress")
    }

    /// `<prefix>printer/<id>/prompt` (out, retained): the question a
    /// printer asks a person while one is open; empty when none is.
    pub fn prompt(&self, printer: &str) -> String {
        self.printer_topic(printer, "prompt")
    }

    /// `<prefix>printer/<id>/event` (out).
    pub fn event(&self, printer: &str) -> String {
        self.printer_topic(printer, "event")
    }

    /// `<prefix>printer/<id>/assignement` (in for push, out for pull).
    pub fn assignment(&self, printer: &str) -> String {
        self.printer_topic(printer, "assignement")
    }

    /// `<prefix>printer/<id>/command` (in).
    pub fn command(&self, printer: &str) -> String {
        self.printer_topic(printer, "command")
    }

    /// `<prefix>printers`: printers whose plate awaits a robot (out).
    pub fn printers(&self) -> String {
        format!("{}printers", self.prefix)
    }

    /// `<prefix>gateway/<gw>/status`: birth and Last Will (out, retained).
    pub fn gateway_status(&self) -> String {
        format!("{}gateway/{}/status", self.prefix, self.gateway_id)
    }

    /// `<prefix>gateway/<gw>/event`: events that belong to no printer (out).
    pub fn gateway_event(&self) -> String {
        format!("{}gateway/{}/event", self.prefix, self.gateway_id)
    }

    /// `<prefix>robot/+/progress`: subscription filter for robot reports.
    pub fn robot_progress_filter(&self) -> String {
        format!("{}robot/+/progress", self.prefix)
    }

    /// `<prefix>printer/<id>/job_complete/<jobId>`: one topic per finished job,
    /// so that other services can chain on it.
    pub fn job_complete(&self, printer: &str, job: &str) -> String {
        format!("{}printer/{printer}/job_complete/{job}", self.prefix)
    }

    /// `<discovery_prefix>/status`: Home Assistant's birth (`online`).
    pub fn home_assistant_status(&self) -> String {
        format!("{}/status", self.discovery_prefix)
    }

    /// Every filter the link subscribes to for these printers, in a stable
    /// order: each printer's assignment, command and progress (progress to
    /// notice another gateway claiming the same id), robot progress, Home
    /// Assistant's status, then the trigger topics.
    pub fn subscriptions(&self, printers: &[String]) -> Vec<String> {
        let mut out = Vec::with_capacity(printers.len() * 3 + 2 + self.triggers.len());
        for p in printers {
            out.push(self.assignment(p));
            out.push(self.command(p));
            out.push(self.progress(p));
        }
        out.push(self.robot_progress_filter());
        out.push(self.home_assistant_status());
        out.extend(self.triggers.iter().cloned());
        out
    }

    /// What an incoming topic is, or `None` if it is none of ours. The
    /// printer or robot id is one non-empty topic level; it is not checked
    /// against the configured printers here (see `inbound`).
    pub fn classify(&self, topic: &str) -> Option<InTopic> {
        if let Some(index) = self.triggers.iter().position(|f| filter_matches(f, topic)) {
            return Some(InTopic::Trigger { index });
        }
        if topic == self.home_assistant_status() {
            return Some(InTopic::HomeAssistantStatus);
        }
        let rest = topic.strip_prefix(self.prefix.as_str())?;
        let mut levels = rest.split('/');
        let (kind, id, leaf) = (levels.next()?, levels.next()?, levels.next()?);
        if levels.next().is_some() || id.is_empty() {
            return None;
        }
        let id = id.to_owned();
        match (kind, leaf) {
            ("printer", "assignement") => Some(InTopic::Assignment { printer: id }),
            ("printer", "command") => Some(InTopic::Command { printer: id }),
            ("printer", "progress") => Some(InTopic::Progress { printer: id }),
            ("robot", "progress") => Some(InTopic::RobotProgress { robot: id }),
            _ => None,
        }
    }

    fn printer_topic(&self, printer: &str, leaf: &str) -> String {
        format!("{}printer/{printer}/{leaf}", self.prefix)
    }
}

/// Whether `topic` matches the MQTT filter `filter` (`+` one level, `#` the
/// rest, including none). Topics starting with `$` only match filters that
/// name them.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && !filter.starts_with('$') {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_seed_spelling() {
        let t = Topics::new("gw1");
        assert_eq!(t.progress("p1"), "device/printer/p1/progress");
        assert_eq!(t.event("p1"), "device/printer/p1/event");
        assert_eq!(t.assignment("p1"), "device/printer/p1/assignement");
        assert_eq!(t.command("p1"), "device/printer/p1/command");
        assert_eq!(t.printers(), "device/printers");
        assert_eq!(t.gateway_status(), "device/gateway/gw1/status");
        assert_eq!(t.gateway_event(), "device/gateway/gw1/event");
        assert_eq!(t.robot_progress_filter(), "device/robot/+/progress");
        assert_eq!(
            t.job_complete("p1", "j9"),
            "device/printer/p1/job_complete/j9"
        );
        assert_eq!(t.home_assistant_status(), "homeassistant/status");
    }

    #[test]
    fn prefix_gets_a_trailing_slash() {
        let t = Topics::new("gw").with_prefix("farm/a");
        assert_eq!(t.printers(), "farm/a/printers");
        let t = Topics::new("gw").with_prefix("");
        assert_eq!(t.assignment("p"), "printer/p/assignement");
        assert_eq!(
            t.classify("printer/p/command"),
            Some(InTopic::Command {
                printer: "p".into()
            })
        );
    }

    #[test]
    fn classifies_incoming_topics() {
        let t = Topics::new("gw").with_triggers(vec!["farm/purge".into()]);
        let c = |s: &str| t.classify(s);
        assert_eq!(
            c("device/printer/p1/assignement"),
            Some(InTopic::Assignment {
                printer: "p1".into()
            })
        );
        assert_eq!(
            c("device/robot/r7/progress"),
            Some(InTopic::RobotProgress { robot: "r7".into() })
        );
        assert_eq!(
            c("homeassistant/status"),
            Some(InTopic::HomeAssistantStatus)
        );
        assert_eq!(c("farm/purge"), Some(InTopic::Trigger { index: 0 }));
        for other in [
            "device/printer/p1/assignment",
            "device/printer//command",
            "device/printer/p1/command/x",
            "device/printer/p1",
            "device/printers",
            "other/printer/p1/command",
            "",
        ] {
            assert_eq!(c(other), None, "{other}");
        }
    }

    #[test]
    fn trigger_filters_match_like_mqtt() {
        let t = Topics::new("gw").with_triggers(vec!["farm/+/purge".into(), "macro/#".into()]);
        assert_eq!(
            t.classify("farm/p1/purge"),
            Some(InTopic::Trigger { index: 0 })
        );
        assert_eq!(t.classify("macro"), Some(InTopic::Trigger { index: 1 }));
        assert_eq!(t.classify("macro/a/b"), Some(InTopic::Trigger { index: 1 }));
        assert_eq!(t.classify("farm/p1/x/purge"), None);
        assert!(!filter_matches("#", "$SYS/broker"));
        assert!(filter_matches("a/+", "a/"));
        assert!(!filter_matches("a/b", "a"));
    }

    #[test]
    fn subscriptions_cover_every_inbound_kind() {
        let t = Topics::new("gw").with_triggers(vec!["x/y".into()]);
        let subs = t.subscriptions(&["a".into(), "b".into()]);
        assert_eq!(
            subs,
            vec![
                "device/printer/a/assignement",
                "device/printer/a/command",
                "device/printer/a/progress",
                "device/printer/b/assignement",
                "device/printer/b/command",
                "device/printer/b/progress",
                "device/robot/+/progress",
                "homeassistant/status",
                "x/y",
            ]
        );
    }
}
