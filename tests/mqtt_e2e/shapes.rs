//! The farm protocol's payload shapes (`farm-protocol.md`), checked field by
//! field with serde_json: types and allowed values, not just presence.

use super::mirror::Msg;
use serde_json::Value;

/// What kind of outgoing message a topic under `prefix` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Progress,
    Event,
    Printers,
    JobComplete,
    GatewayStatus,
    /// A printer's open prompt (retained), or an empty payload: none open.
    Prompt,
    /// Topics the test itself publishes on (assignment, command, robot).
    Inbound,
}

pub fn kind_of(prefix: &str, topic: &str) -> Option<Kind> {
    let rest = topic.strip_prefix(prefix)?;
    let levels: Vec<&str> = rest.split('/').collect();
    match levels.as_slice() {
        ["printer", p, "progress"] if !p.is_empty() => Some(Kind::Progress),
        ["printer", p, "event"] if !p.is_empty() => Some(Kind::Event),
        ["gateway", g, "event"] if !g.is_empty() => Some(Kind::Event),
        ["printers"] => Some(Kind::Printers),
        ["printer", _, "job_complete", _] => Some(Kind::JobComplete),
        ["gateway", _, "status"] => Some(Kind::GatewayStatus),
        ["printer", p, "prompt"] if !p.is_empty() => Some(Kind::Prompt),
        ["printer", _, "assignement" | "command"] | ["robot", _, "progress"] => Some(Kind::Inbound),
        _ => None,
    }
}

/// The seed's two words: a job handler knows no others.
const STATUSES: [&str; 2] = ["idle", "printing"];

/// printgate's `state`, the full truth.
const STATES: [&str; 9] = [
    "idle",
    "queued",
    "downloading",
    "starting",
    "printing",
    "paused",
    "awaiting_clear",
    "error",
    "offline",
];

/// Checks one message under `prefix`; returns its kind. Panics (naming the
/// message) on a topic the protocol does not have or a malformed payload.
pub fn check(prefix: &str, m: &Msg) -> Kind {
    let kind = kind_of(prefix, &m.topic).unwrap_or_else(|| panic!("unexpected topic {m:?}"));
    let problem = match kind {
        Kind::Progress => progress(&m.json),
        Kind::Event => event(&m.json),
        Kind::Printers => m
            .json
            .as_array()
            .filter(|a| a.iter().all(Value::is_string))
            .map(|_| ())
            .ok_or("not a list of printer ids".to_owned()),
        Kind::JobComplete => fields(
            &m.json,
            &[("printerId", Str), ("jobId", Str), ("outcome", Str)],
        )
        .and_then(|_| timestamp(&m.json)),
        Kind::GatewayStatus => gateway_status(&m.json),
        Kind::Prompt if m.payload.is_empty() => Ok(()),
        Kind::Prompt => fields(
            &m.json,
            &[("printerId", Str), ("text", Str), ("jobId", StrOrNull)],
        )
        .and_then(|_| {
            m.json["choices"]
                .as_array()
                .filter(|c| c.iter().all(Value::is_string))
                .map(|_| ())
                .ok_or("choices is not a list of strings".to_owned())
        })
        .and_then(|_| timestamp(&m.json)),
        Kind::Inbound => Ok(()),
    };
    // Events and progress name the printer of their topic (never "").
    let level = m
        .topic
        .strip_prefix(prefix)
        .and_then(|r| r.split('/').nth(1));
    let problem = problem.and_then(|_| match kind {
        Kind::Progress | Kind::Event if m.json["printerId"].as_str() != level => Err(format!(
            "printerId does not match the topic's printer {level:?}"
        )),
        _ => Ok(()),
    });
    if let Err(p) = problem {
        panic!("{}: {p}: {}", m.topic, String::from_utf8_lossy(&m.payload));
    }
    kind
}

#[derive(Clone, Copy)]
enum Type {
    Str,
    StrOrNull,
    U64,
    Num,
}
use Type::*;

fn fields(v: &Value, want: &[(&str, Type)]) -> Result<(), String> {
    if !v.is_object() {
        return Err("not a JSON object".into());
    }
    for (name, t) in want {
        let f = v.get(*name).ok_or(format!("no field {name}"))?;
        let ok = match t {
            Str => f.is_string(),
            StrOrNull => f.is_string() || f.is_null(),
            U64 => f.is_u64(),
            Num => f.is_number(),
        };
        if !ok {
            return Err(format!("field {name} has the wrong type: {f}"));
        }
    }
    Ok(())
}

fn optional(v: &Value, want: &[(&str, Type)]) -> Result<(), String> {
    let present: Vec<(&str, Type)> = want
        .iter()
        .copied()
        .filter(|(n, _)| v.get(*n).is_some())
        .collect();
    fields(v, &present)
}

/// RFC 3339 UTC with second precision, as the seed writes it.
pub fn timestamp(v: &Value) -> Result<(), String> {
    let t = v["timestamp"].as_str().ok_or("no timestamp string")?;
    let b = t.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.clone().all(|i| b[i].is_ascii_digit());
    let ok = b.len() == 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'Z';
    ok.then_some(())
        .ok_or(format!("timestamp {t:?} is not RFC 3339 UTC"))
}

fn progress(v: &Value) -> Result<(), String> {
    fields(
        v,
        &[
            ("printerId", Str),
            ("jobId", StrOrNull),
            ("status", Str),
            ("progress", U64),
        ],
    )?;
    optional(
        v,
        &[
            ("seq", U64),
            ("line", U64),
            ("lines", U64),
            ("nozzleTemp", Num),
            ("bedTemp", Num),
            ("etaSeconds", U64),
            ("state", Str),
            ("outcome", Str),
            ("gatewayId", Str),
            ("claimedAt", Str),
        ],
    )?;
    let status = v["status"].as_str().unwrap_or("");
    if !STATUSES.contains(&status) {
        return Err(format!(
            "status {status:?} is not one of the seed's {STATUSES:?}"
        ));
    }
    let state = v["state"].as_str().unwrap_or("");
    if !STATES.contains(&state) {
        return Err(format!("unknown state {state:?}"));
    }
    // The seed's rule: idle means "give me a job" (0) or "done, plate
    // waits" (100); an offline or faulted printer never says idle.
    match (status, state) {
        ("idle", "idle") if v["progress"] != 0 || !v["jobId"].is_null() => {
            return Err("idle with progress or a job".into())
        }
        ("idle", "awaiting_clear") if v["progress"] != 100 => {
            return Err("awaiting_clear without progress 100".into())
        }
        ("idle", "idle" | "awaiting_clear") | ("printing", _) => {}
        _ => return Err(format!("status {status} with state {state}")),
    }
    if v["progress"].as_u64().is_none_or(|p| p > 100) {
        return Err("progress out of 0..=100".into());
    }
    timestamp(v)
}

fn event(v: &Value) -> Result<(), String> {
    fields(v, &[("seq", U64), ("type", Str), ("printerId", Str)])?;
    optional(v, &[("jobId", Str), ("message", Str)])?;
    timestamp(v)
}

fn gateway_status(v: &Value) -> Result<(), String> {
    fields(v, &[("status", Str), ("version", Str)])?;
    if !matches!(v["status"].as_str(), Some("online" | "offline")) {
        return Err("status is neither online nor offline".into());
    }
    v["printers"]
        .as_array()
        .filter(|a| a.iter().all(Value::is_string))
        .ok_or("printers is not a list of ids")?;
    timestamp(v)
}
