//! The typed sections of the config file and their defaults. The serial
//! keys are listed once (in `serial_settings!`) and expand into the resolved
//! settings, the `[serial]` section and the `[[printer]]` section.
//!
//! Pure data; validation is in `validate.rs`, parsing in `mod.rs`.

use super::secret::{one_source, Secret, SecretError, SecretString};
use super::ConfigError;
use serde::Deserialize;
use std::path::PathBuf;

/// Defines the serial settings once: the resolved struct with defaults, the
/// all-optional `[serial]` section, and the `[[printer]]` section that may
/// override any of them. One list, so a new key cannot be forgotten in one
/// of the three places.
macro_rules! serial_settings {
    ($($(#[$doc:meta])* $name:ident: $ty:ty = $default:expr,)*) => {
        /// Serial settings for one printer: `[serial]` defaults with the
        /// printer's own overrides applied.
        #[derive(Debug, Clone, PartialEq)]
        pub struct SerialSettings { $($(#[$doc])* pub $name: $ty,)* }

        impl Default for SerialSettings {
            fn default() -> Self { SerialSettings { $($name: $default,)* } }
        }

        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct SerialSection { $(#[serde(default)] $name: Option<$ty>,)* }

        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct PrinterSection {
            pub(super) id: String,
            pub(super) port: String,
            #[serde(default)]
            pub(super) filament: Option<String>,
            #[serde(default)]
            pub(super) require_thermal_protection: bool,
            $(#[serde(default)] pub(super) $name: Option<$ty>,)*
        }

        impl SerialSettings {
            pub(super) fn with_section(mut self, s: &SerialSection) -> Self {
                $(if let Some(v) = &s.$name { self.$name = v.clone(); })*
                self
            }
            pub(super) fn with_printer(mut self, p: &PrinterSection) -> Self {
                $(if let Some(v) = &p.$name { self.$name = v.clone(); })*
                self
            }
        }

        impl PrinterSection {
            /// Whether this printer sets `key` itself (for error locations).
            pub(super) fn overrides(&self, key: &str) -> bool {
                $(if key == stringify!($name) { return self.$name.is_some(); })*
                false
            }
        }
    };
}

serial_settings! {
    /// Line speed; Marlin's default is 250000.
    baud: u32 = 250_000,
    /// The printer's serial RX buffer in bytes (stock Marlin: 128).
    rx_buffer: u32 = 128,
    /// Unacknowledged lines allowed in flight (Marlin's BUFSIZE).
    max_lines_in_flight: u32 = 4,
    /// Wait for each `ok` before sending the next line.
    ping_pong: bool = false,
    /// How long to wait for `start` after opening the port.
    boot_timeout_ms: u64 = 3000,
    /// No `ok` for this long: assume it was lost and recover.
    ack_timeout_ms: u64 = 10_000,
    /// Time-out for slow commands (G28, G29, M109, M190, M400, ...).
    long_command_timeout_s: u64 = 1200,
    /// Cap of the back-off between attempts to reopen an unplugged port.
    reopen_max_s: u64 = 30,
    /// Sent after the last line of every job; its `ok` marks the job
    /// complete (the last move's `ok` comes when it is planned, not done).
    /// Empty for firmwares without `M400`: completion at the last `ok`.
    end_sync: String = "M400".to_owned(),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Goes into MQTT topics: `[A-Za-z0-9_-]+`.
    pub id: String,
    /// Holds `printgate.db` and the `spool/` folder.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Members of this group (besides root and the daemon's own user) may
    /// use the control socket (`printgate job add`, `pause`, `clear`...).
    #[serde(default)]
    pub operator_group: Option<String>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/printgate")
}

/// One printer, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterConfig {
    pub id: String,
    pub port: String,
    /// Loaded filament; assignments for another type are rejected.
    pub filament: Option<String>,
    pub serial: SerialSettings,
    /// No job while the firmware reports `Cap:THERMAL_PROTECTION:0`.
    pub require_thermal_protection: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    /// Empty in the file means `printgate-<gateway id>`; always set after parsing.
    pub client_id: String,
    pub username: Option<String>,
    /// At most one of `password`, `password_file`, `password_env`,
    /// `password_credential` (read at every connect).
    pub password: Option<SecretString>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    /// A systemd credential name (`LoadCredential=` in the unit).
    pub password_credential: Option<String>,
    /// Accept sending the username and password without TLS (`ca_file`)
    /// to a broker that is not on this machine.
    pub allow_plaintext_credentials: bool,
    /// Enables TLS with this CA bundle (PEM).
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub keep_alive_s: u64,
    pub topic_prefix: String,
    pub progress_interval_s: u64,
    /// Idle printers are re-announced this often (the farm's job_handler
    /// discovers printers within a 30 s window).
    pub idle_announce_s: u64,
    pub homeassistant: bool,
    pub discovery_prefix: String,
    /// Publish `device/printers` (robots act on it). Default: only when this
    /// gateway pulls jobs itself; with a job handler (push) the handler owns it.
    pub publish_printers_list: Option<bool>,
    /// Robot reports and commands with an older `timestamp` are not acted on.
    pub max_message_age_s: u64,
    /// Tolerated clock difference with the robots and the job handler.
    pub clock_skew_s: u64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: String::new(),
            username: None,
            password: None,
            password_file: None,
            password_env: None,
            password_credential: None,
            allow_plaintext_credentials: false,
            ca_file: None,
            client_cert: None,
            client_key: None,
            keep_alive_s: 30,
            topic_prefix: "device/".into(),
            progress_interval_s: 10,
            idle_announce_s: 10,
            homeassistant: true,
            discovery_prefix: "homeassistant".into(),
            publish_printers_list: None,
            max_message_age_s: 120,
            clock_skew_s: 30,
        }
    }
}

impl MqttConfig {
    /// Where the password comes from (`None`: no password). Validation
    /// guarantees at most one source.
    pub fn password_source(&self) -> Option<Secret> {
        one_source(
            self.password.as_ref(),
            self.password_file.as_ref(),
            self.password_env.as_ref(),
            self.password_credential.as_ref(),
        )
        .ok()
        .flatten()
    }

    /// Whether a username or any password source is configured.
    pub fn has_credentials(&self) -> bool {
        self.username.is_some()
            || self.password.is_some()
            || self.password_file.is_some()
            || self.password_env.is_some()
            || self.password_credential.is_some()
    }

    /// Reads the password from its source. Call it when connecting (not at
    /// parse time) so a rotated password file is re-read.
    pub fn password(&self) -> Result<Option<String>, ConfigError> {
        read_secret(self.password_source(), "mqtt.password")
    }
}

/// Reads `source`; errors name `key` (never the value).
fn read_secret(source: Option<Secret>, key: &str) -> Result<Option<String>, ConfigError> {
    source
        .map(|s| s.read())
        .transpose()
        .map_err(|e: SecretError| ConfigError::Invalid {
            path: PathBuf::new(),
            line: None,
            key: key.to_owned(),
            msg: e.to_string(),
        })
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueManagerConfig {
    /// Base URL, `http://` or `https://`.
    pub url: String,
    /// Ask `/prioritary_job` for work (pull mode). `false`: the URL only
    /// resolves and serves pushed models (the farm's job handler assigns).
    pub pull: bool,
    pub poll_interval_s: u64,
    /// Bearer token (one of `token`, `token_file`, `token_credential`); or
    /// `username` + a password (`password`, `password_file`,
    /// `password_credential`) for basic auth. Files and credentials are
    /// re-read for every request.
    pub token: Option<SecretString>,
    pub token_file: Option<PathBuf>,
    pub token_credential: Option<String>,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub password_file: Option<PathBuf>,
    pub password_credential: Option<String>,
    /// Accept sending credentials over `http://` to a host that is not
    /// this machine.
    pub allow_plaintext_credentials: bool,
    /// Refuse to print a model without a SHA-256 from the job (or the
    /// queue manager's `X-Checksum-Sha256` header).
    pub require_model_checksum: bool,
    pub ca_file: Option<PathBuf>,
    /// Hosts an absolute `modelUrl` may point at (besides the base URL's).
    pub allowed_hosts: Vec<String>,
    pub max_model_bytes: u64,
    pub connect_timeout_s: u64,
    pub read_timeout_s: u64,
    pub max_retries: u32,
}

impl Default for QueueManagerConfig {
    fn default() -> Self {
        QueueManagerConfig {
            url: "http://127.0.0.1:8080".into(),
            pull: true,
            poll_interval_s: 5,
            token: None,
            token_file: None,
            token_credential: None,
            username: None,
            password: None,
            password_file: None,
            password_credential: None,
            allow_plaintext_credentials: false,
            require_model_checksum: false,
            ca_file: None,
            allowed_hosts: Vec::new(),
            max_model_bytes: 256 * 1024 * 1024,
            connect_timeout_s: 10,
            read_timeout_s: 30,
            max_retries: 5,
        }
    }
}

impl QueueManagerConfig {
    /// Where the bearer token comes from, if any.
    pub fn token_source(&self) -> Option<Secret> {
        one_source(
            self.token.as_ref(),
            self.token_file.as_ref(),
            None,
            self.token_credential.as_ref(),
        )
        .ok()
        .flatten()
    }

    /// Where the basic-auth password comes from, if any.
    pub fn password_source(&self) -> Option<Secret> {
        one_source(
            self.password.as_ref(),
            self.password_file.as_ref(),
            None,
            self.password_credential.as_ref(),
        )
        .ok()
        .flatten()
    }

    /// Whether any credential is configured (for the plaintext check).
    pub fn has_credentials(&self) -> bool {
        self.username.is_some()
            || self.token.is_some()
            || self.token_file.is_some()
            || self.token_credential.is_some()
            || self.password.is_some()
            || self.password_file.is_some()
            || self.password_credential.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// A job times out after its estimated time × this factor.
    pub timeout_factor: f64,
    /// Hard cap for jobs without (or with absurd) estimates.
    pub max_job_hours: u64,
    /// Finished jobs are kept this long, then purged.
    pub retention_hours: u64,
    /// A printing job's progress (its last line) is saved this often, and
    /// at every state change. Progress is published from memory; this is
    /// only what a crash leaves behind, and each save is an SD-card write.
    pub progress_persist_s: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            timeout_factor: 3.0,
            max_job_hours: 72,
            retention_hours: 168,
            progress_persist_s: 300,
        }
    }
}

/// An MQTT topic that runs a G-code macro on an idle printer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    pub topic: String,
    pub printer: String,
    /// Lines separated by `\n`.
    pub gcode: String,
    /// Where the macro's completion is published (to chain triggers).
    #[serde(default)]
    pub complete_topic: Option<String>,
}

/// Where pushed models may come from without a queue manager.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// Hosts (`name` or `name:port`) an absolute `modelUrl` may point at.
    pub allowed_hosts: Vec<String>,
}

/// A robot and the printers whose plates it may clear.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobotConfig {
    pub id: String,
    pub printers: Vec<String>,
}
