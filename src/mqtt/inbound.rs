//! Validation of everything printgate hears over MQTT: topic, size, UTF-8,
//! JSON, field types, known printers, non-empty ids, valid commands.
//!
//! Owns the rules and the error messages (`<topic>: <problem>`). Never
//! panics on input, never acts on a message and never touches the network:
//! it turns bytes into an [`Inbound`] or an [`InboundError`] the daemon can
//! log and answer with an event.

use super::payload::{Assignment, Command, CommandMsg, RobotProgress};
use super::topics::{InTopic, Topics};
use crate::jobspec::{self, MAX_ID_LEN};
use serde_json::{Map, Value};

/// Larger payloads are rejected before any parsing.
pub const MAX_INBOUND_BYTES: usize = 64 * 1024;
/// Longest accepted model URL.
const MAX_URL_LEN: usize = 2048;

/// A validated incoming message.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Assignment {
        printer: String,
        assignment: Assignment,
        /// Values that had to be clamped or ignored (logged, not rejected).
        warnings: Vec<String>,
    },
    RobotProgress {
        robot: String,
        progress: RobotProgress,
    },
    Command {
        printer: String,
        command: CommandMsg,
    },
    /// Home Assistant (re)started (`online`) or stopped (`offline`).
    HomeAssistantStatus { online: bool },
    /// A progress message on one of our printers' topics: ours heard back,
    /// or another gateway (or program) publishing for the same printer id.
    PeerProgress {
        printer: String,
        gateway: Option<String>,
        claimed_at: Option<String>,
    },
    /// A configured trigger topic; the payload is passed through unparsed.
    Trigger { index: usize, payload: Vec<u8> },
}

/// Why an incoming message was rejected; displays as `<topic>: <problem>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{topic}: {kind}")]
pub struct InboundError {
    pub topic: String,
    pub kind: InboundErrorKind,
}

/// The problem with an incoming message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundErrorKind {
    #[error("not a topic printgate listens to")]
    UnknownTopic,
    #[error("payload too large: {size} bytes, limit {max}")]
    TooLarge { size: usize, max: usize },
    #[error("payload is not valid utf-8")]
    NotUtf8,
    #[error("invalid json: {0}")]
    InvalidJson(String),
    #[error("expected a json object, got {got}")]
    NotAnObject { got: &'static str },
    #[error("missing field \"{field}\"")]
    MissingField { field: &'static str },
    #[error("field \"{field}\": expected {expected}, got {got}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
        got: &'static str,
    },
    #[error("field \"{field}\": must not be empty")]
    EmptyField { field: &'static str },
    #[error("field \"{field}\": {problem}")]
    InvalidValue {
        field: &'static str,
        problem: String,
    },
    /// Also normal farm traffic: robots report on printers of other gateways.
    #[error("unknown printer \"{printer}\"")]
    UnknownPrinter { printer: String },
    #[error("invalid command \"{command}\": expected pause, resume, cancel, clear_plate or emergency_stop")]
    InvalidCommand { command: String },
}

/// Validates one incoming message. `known_printers` are this gateway's
/// printer ids; a printer outside it is [`InboundErrorKind::UnknownPrinter`].
pub fn parse_inbound(
    topics: &Topics,
    topic: &str,
    payload: &[u8],
    known_printers: &[String],
) -> Result<Inbound, InboundError> {
    parse(topics, topic, payload, known_printers).map_err(|kind| InboundError {
        topic: topic.to_owned(),
        kind,
    })
}

type Kind = InboundErrorKind;

fn parse(topics: &Topics, topic: &str, payload: &[u8], known: &[String]) -> Result<Inbound, Kind> {
    let what = topics.classify(topic).ok_or(Kind::UnknownTopic)?;
    if payload.len() > MAX_INBOUND_BYTES {
        return Err(Kind::TooLarge {
            size: payload.len(),
            max: MAX_INBOUND_BYTES,
        });
    }
    let known_printer = |printer: &str| -> Result<(), Kind> {
        if known.iter().any(|p| p == printer) {
            Ok(())
        } else {
            Err(Kind::UnknownPrinter {
                printer: printer.to_owned(),
            })
        }
    };
    match what {
        InTopic::Trigger { index } => Ok(Inbound::Trigger {
            index,
            payload: payload.to_vec(),
        }),
        InTopic::HomeAssistantStatus => match text(payload)?.trim() {
            "online" => Ok(Inbound::HomeAssistantStatus { online: true }),
            "offline" => Ok(Inbound::HomeAssistantStatus { online: false }),
            other => Err(Kind::InvalidValue {
                field: "status",
                problem: format!("expected online or offline, got {:?}", clip(other)),
            }),
        },
        InTopic::Progress { printer } => {
            known_printer(&printer)?;
            let obj = object(payload)?;
            let f = Fields(&obj);
            Ok(Inbound::PeerProgress {
                printer,
                gateway: f.opt_str("gatewayId")?.map(str::to_owned),
                claimed_at: f.opt_str("claimedAt")?.map(str::to_owned),
            })
        }
        InTopic::Assignment { printer } => {
            known_printer(&printer)?;
            let obj = object(payload)?;
            let f = Fields(&obj);
            // Lenient where the seed is (no filament, float numbers): a
            // rejected push is a lost job, since the handler reads no events.
            let estimate = jobspec::estimated_seconds(obj.get("estimatedTime"));
            let priority = jobspec::priority(obj.get("priority"));
            let filament = jobspec::filament(obj.get("filamentType"));
            if let Some(f) = &filament {
                if f.chars().count() > MAX_ID_LEN {
                    return Err(Kind::InvalidValue {
                        field: "filamentType",
                        problem: format!("longer than {MAX_ID_LEN} characters"),
                    });
                }
            }
            let assignment = Assignment {
                job_id: id(&f, "jobId")?,
                model_url: non_empty(&f, "modelUrl", MAX_URL_LEN)?,
                filament_type: filament,
                estimated_time: estimate.value,
                priority: Some(priority.value),
                assigned_at: f.opt_str("assignedAt")?.map(str::to_owned),
                parameters: f.opt_object("parameters")?,
                sha256: f.opt_sha256("sha256")?,
            };
            let warnings = [estimate.warning, priority.warning]
                .into_iter()
                .flatten()
                .collect();
            Ok(Inbound::Assignment {
                printer,
                assignment,
                warnings,
            })
        }
        InTopic::Command { printer } => {
            known_printer(&printer)?;
            let obj = object(payload)?;
            let f = Fields(&obj);
            let name = f.req_str("command")?;
            let command = Command::from_name(name).ok_or_else(|| Kind::InvalidCommand {
                command: clip(name),
            })?;
            let job_id = match f.opt_str("jobId")? {
                Some(_) => Some(id(&f, "jobId")?),
                None => None,
            };
            let timestamp = f.opt_str("timestamp")?.map(str::to_owned);
            if let Some(ts) = &timestamp {
                if super::payload::parse_rfc3339(ts).is_none() {
                    return Err(Kind::InvalidValue {
                        field: "timestamp",
                        problem: format!("{:?} is not an RFC 3339 time", clip(ts)),
                    });
                }
            }
            let choice = f.opt_index("choice")?;
            if command == Command::PromptAnswer && choice.is_none() {
                return Err(Kind::MissingField { field: "choice" });
            }
            Ok(Inbound::Command {
                printer,
                command: CommandMsg {
                    command,
                    job_id,
                    timestamp,
                    choice,
                },
            })
        }
        InTopic::RobotProgress { robot } => {
            let obj = object(payload)?;
            let f = Fields(&obj);
            let robot_id = id(&f, "robotId")?;
            if robot_id != robot {
                return Err(Kind::InvalidValue {
                    field: "robotId",
                    problem: format!(
                        "{:?} does not match the topic's robot {:?}",
                        clip(&robot_id),
                        robot
                    ),
                });
            }
            let printer_id = non_empty(&f, "printerId", MAX_ID_LEN)?;
            known_printer(&printer_id)?;
            let progress = RobotProgress {
                robot_id,
                printer_id,
                action: non_empty(&f, "action", MAX_ID_LEN)?,
                status: non_empty(&f, "status", MAX_ID_LEN)?,
                timestamp: f.req_str("timestamp")?.to_owned(),
            };
            if super::payload::parse_rfc3339(&progress.timestamp).is_none() {
                return Err(Kind::InvalidValue {
                    field: "timestamp",
                    problem: format!("{:?} is not an RFC 3339 time", clip(&progress.timestamp)),
                });
            }
            Ok(Inbound::RobotProgress { robot, progress })
        }
    }
}

fn text(payload: &[u8]) -> Result<&str, Kind> {
    std::str::from_utf8(payload).map_err(|_| Kind::NotUtf8)
}

fn object(payload: &[u8]) -> Result<Map<String, Value>, Kind> {
    // serde_json limits nesting depth (128), so deep input cannot overflow the stack.
    let value: Value =
        serde_json::from_str(text(payload)?).map_err(|e| Kind::InvalidJson(e.to_string()))?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(Kind::NotAnObject {
            got: type_name(&other),
        }),
    }
}

/// A string field that must be present and non-empty, at most `max` chars.
fn non_empty(f: &Fields, field: &'static str, max: usize) -> Result<String, Kind> {
    let s = f.req_str(field)?;
    if s.trim().is_empty() {
        return Err(Kind::EmptyField { field });
    }
    if s.chars().count() > max {
        return Err(Kind::InvalidValue {
            field,
            problem: format!("longer than {max} characters"),
        });
    }
    Ok(s.to_owned())
}

/// An id, by the one rule of [`jobspec::check_id`] (shared with the queue
/// manager and CLI paths).
fn id(f: &Fields, field: &'static str) -> Result<String, Kind> {
    let s = f.req_str(field)?;
    match jobspec::check_id(s) {
        Ok(()) => Ok(s.to_owned()),
        Err(jobspec::IdError::Empty) => Err(Kind::EmptyField { field }),
        Err(e) => Err(Kind::InvalidValue {
            field,
            problem: e.to_string(),
        }),
    }
}

/// Typed access to a JSON object's fields. `null` counts as absent for
/// optional fields and as a wrong type for required ones.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn req_str(&self, field: &'static str) -> Result<&str, Kind> {
        match self.0.get(field) {
            None => Err(Kind::MissingField { field }),
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(wrong(field, "a string", other)),
        }
    }

    fn opt(&self, field: &'static str) -> Option<&Value> {
        self.0.get(field).filter(|v| !v.is_null())
    }

    fn opt_str(&self, field: &'static str) -> Result<Option<&str>, Kind> {
        match self.opt(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong(field, "a string", other)),
        }
    }

    /// A hex SHA-256 (64 hex digits, any case), returned lowercase.
    fn opt_sha256(&self, field: &'static str) -> Result<Option<String>, Kind> {
        match self.opt_str(field)? {
            None => Ok(None),
            Some(s) if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(Some(s.to_ascii_lowercase()))
            }
            Some(s) => Err(Kind::InvalidValue {
                field,
                problem: format!("{:?} is not 64 hex digits", clip(s)),
            }),
        }
    }

    /// A small non-negative integer (an index), e.g. `2` or `2.0`.
    fn opt_index(&self, field: &'static str) -> Result<Option<u32>, Kind> {
        match self.opt(field) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                        .map(|f| f as u64)
                })
                .and_then(|v| u32::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| Kind::InvalidValue {
                    field,
                    problem: format!("{n} is not an index (0, 1, 2, ...)"),
                }),
            Some(other) => Err(wrong(field, "a number", other)),
        }
    }

    fn opt_object(&self, field: &'static str) -> Result<Option<Value>, Kind> {
        match self.opt(field) {
            None => Ok(None),
            Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
            Some(other) => Err(wrong(field, "an object", other)),
        }
    }
}

fn wrong(field: &'static str, expected: &'static str, got: &Value) -> Kind {
    Kind::WrongType {
        field,
        expected,
        got: type_name(got),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Untrusted text quoted in an error message, cut to a readable length.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
#[path = "inbound_tests.rs"]
mod tests;
