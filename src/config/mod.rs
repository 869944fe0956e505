//! The configuration file: one TOML document, parsed into typed sections with
//! defaults for everything optional, then validated as a whole.
//!
//! Errors name the file, the line and the key path (`printer[2].baud`) and
//! say what was expected; [`check`] collects every problem at once for
//! `printgate check-config`. Nothing here opens ports, sockets or databases;
//! the only I/O is reading the config file and, on request, a password file.
//! See `printgate.example.toml` at the repository root for every key.

mod locate;
mod secret;
mod sections;
mod security;
mod validate;

pub use locate::KeyPath;
pub use secret::{credential_path, world_readable, Secret, SecretError, SecretString};
pub use sections::{
    GatewayConfig, JobsConfig, ModelsConfig, MqttConfig, PrinterConfig, QueueManagerConfig,
    RobotConfig, SerialSettings, TriggerConfig,
};
use sections::{PrinterSection, SerialSection};

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A configuration problem. Display: `FILE:LINE: key: message`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", invalid_text(path, *line, key, msg))]
    Invalid {
        path: PathBuf,
        /// 1-based; `None` when the key is not in the file (a missing section).
        line: Option<usize>,
        key: String,
        msg: String,
    },
}

fn invalid_text(path: &Path, line: Option<usize>, key: &str, msg: &str) -> String {
    let mut text = match line {
        Some(line) => format!("{}:{line}: ", path.display()),
        None if path.as_os_str().is_empty() => String::new(),
        None => format!("{}: ", path.display()),
    };
    if !key.is_empty() {
        text.push_str(key);
        text.push_str(": ");
    }
    text.push_str(msg);
    text
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from (for messages).
    pub path: PathBuf,
    pub gateway: GatewayConfig,
    /// The `[serial]` defaults (already applied to every printer).
    pub serial: SerialSettings,
    pub mqtt: Option<MqttConfig>,
    pub queue_manager: Option<QueueManagerConfig>,
    pub jobs: JobsConfig,
    pub triggers: Vec<TriggerConfig>,
    pub models: ModelsConfig,
    /// `[[robot]]`: empty means any robot may clear any printer.
    pub robots: Vec<RobotConfig>,
    printers: Vec<PrinterConfig>,
}

impl Config {
    /// Every printer, with `[serial]` defaults and its own overrides resolved.
    pub fn printers(&self) -> &[PrinterConfig] {
        &self.printers
    }

    /// Whether this gateway asks the queue manager for jobs itself.
    pub fn pulls(&self) -> bool {
        self.queue_manager.as_ref().is_some_and(|q| q.pull)
    }

    /// How jobs reach this gateway: `push-only` (the farm's job handler
    /// assigns over MQTT), `pull` (the gateway asks the queue manager, no
    /// MQTT), `push + pull` (both), or `local only` (CLI jobs only).
    pub fn mode(&self) -> &'static str {
        match (self.mqtt.is_some(), self.pulls()) {
            (true, false) => "push-only",
            (false, true) => "pull",
            (true, true) => "push + pull",
            (false, false) => "local only",
        }
    }

    /// Whether `device/printers` is published (see `MqttConfig`).
    pub fn publishes_printers_list(&self) -> bool {
        self.mqtt
            .as_ref()
            .is_some_and(|m| m.publish_printers_list.unwrap_or_else(|| self.pulls()))
    }

    /// Hosts an absolute `modelUrl` may point at.
    pub fn model_hosts(&self) -> Vec<String> {
        let mut hosts = self.models.allowed_hosts.clone();
        if let Some(q) = &self.queue_manager {
            hosts.extend(q.allowed_hosts.iter().cloned());
        }
        hosts
    }

    /// The one-line summary `printgate check-config` prints.
    pub fn summary(&self) -> String {
        let mqtt = self
            .mqtt
            .as_ref()
            .map_or("off".to_owned(), |m| format!("{}:{}", m.host, m.port));
        let qm = self
            .queue_manager
            .as_ref()
            .map_or("off".to_owned(), |q| q.url.clone());
        format!(
            "ok: {} printers, mode: {}, mqtt: {mqtt}, queue manager: {qm}",
            self.printers.len(),
            self.mode()
        )
    }

    /// What is allowed but weak (no TLS, readable secret files), one line
    /// each: `check-config` prints them, the daemon should log them at
    /// start-up. Reads file permissions, nothing else.
    pub fn warnings(&self) -> Vec<String> {
        security::warnings(self)
    }
}

/// The file as written, before defaults are resolved.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    gateway: GatewayConfig,
    #[serde(default)]
    serial: SerialSection,
    mqtt: Option<MqttConfig>,
    queue_manager: Option<QueueManagerConfig>,
    #[serde(default)]
    jobs: JobsConfig,
    #[serde(default)]
    printer: Vec<PrinterSection>,
    #[serde(default)]
    trigger: Vec<TriggerConfig>,
    #[serde(default)]
    models: ModelsConfig,
    #[serde(default)]
    robot: Vec<RobotConfig>,
}

/// Reads and validates the config file; the first problem is the error.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    check(path).map_err(first)
}

/// Parses and validates config text; `origin` names it in errors.
pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    parse_all(text, origin).map_err(first)
}

/// Reads and validates the config file, reporting every problem found.
pub fn check(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        vec![ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }]
    })?;
    parse_all(&text, path)
}

/// Keys whose values are secrets (never echoed in errors).
fn is_secret_key(key: &KeyPath) -> bool {
    matches!(key.0.last(), Some(locate::Seg::Key(k)) if k == "password" || k == "token")
}

fn first(mut errors: Vec<ConfigError>) -> ConfigError {
    if errors.is_empty() {
        // parse_all never returns an empty list; keep the type honest anyway.
        return ConfigError::Invalid {
            path: PathBuf::new(),
            line: None,
            key: String::new(),
            msg: "invalid config".into(),
        };
    }
    errors.swap_remove(0)
}

fn parse_all(text: &str, origin: &Path) -> Result<Config, Vec<ConfigError>> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let at = e.span().map(|s| s.start);
        let key = at.map(|at| locate::path_at(text, at)).unwrap_or_default();
        // serde's "invalid type: integer `1234`" would print a secret.
        let msg = if is_secret_key(&key) {
            "invalid value (not shown: it is a secret); expected a string".to_owned()
        } else {
            e.message().trim().to_owned()
        };
        vec![ConfigError::Invalid {
            path: origin.to_path_buf(),
            line: at.map(|at| locate::line_of(text, at)),
            key: key.to_string(),
            msg,
        }]
    })?;
    let serial = SerialSettings::default().with_section(&raw.serial);
    let problems = validate::validate(&raw, &serial);
    if !problems.is_empty() {
        return Err(problems
            .into_iter()
            .map(|(key, msg)| ConfigError::Invalid {
                path: origin.to_path_buf(),
                line: locate::line_for(text, &key),
                key: key.to_string(),
                msg,
            })
            .collect());
    }
    let printers = raw
        .printer
        .iter()
        .map(|p| PrinterConfig {
            id: p.id.clone(),
            port: p.port.clone(),
            filament: p.filament.clone(),
            serial: serial.clone().with_printer(p),
            require_thermal_protection: p.require_thermal_protection,
        })
        .collect();
    let mut mqtt = raw.mqtt;
    if let Some(m) = mqtt.as_mut().filter(|m| m.client_id.is_empty()) {
        m.client_id = format!("printgate-{}", raw.gateway.id);
    }
    Ok(Config {
        path: origin.to_path_buf(),
        gateway: raw.gateway,
        serial,
        mqtt,
        queue_manager: raw.queue_manager,
        jobs: raw.jobs,
        triggers: raw.trigger,
        models: raw.models,
        robots: raw.robot,
        printers,
    })
}

#[cfg(test)]
mod tests;
