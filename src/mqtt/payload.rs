//! The JSON payloads of the farm's topics, field for field as the farm's
//! job_handler writes them (camelCase), and an RFC 3339 UTC formatter.
//!
//! Owns the wire shapes only. Never validates untrusted input (that is
//! `inbound`'s job: these types are what a validated payload becomes) and
//! never reads the clock itself: callers pass the `SystemTime`.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// A job pushed to a printer on `<prefix>printer/<id>/assignement` (or
/// pulled from the queue manager and published there). Read leniently with
/// [`crate::jobspec`]'s rules: `filamentType` may be absent (not stated),
/// numbers may be floats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    pub job_id: String,
    pub model_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filament_type: Option<String>,
    /// Seconds, rounded and clamped to 30 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
    /// Hex SHA-256 of the model, checked before the download is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A printer's `status` in the seed's words, the only two a seed-only job
/// handler understands: `idle` (give me a job now; or, with `progress: 100`
/// and a `jobId`, "done, the plate waits for the robot") and `printing`
/// (holds a job in any form, or cannot take one). The full truth is in
/// [`Progress::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrinterStatus {
    Idle,
    Printing,
}

/// `<prefix>printer/<id>/progress`. `jobId` is always present (null when
/// idle); printgate's extra fields are left out when unknown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub printer_id: String,
    #[serde(default)]
    pub job_id: Option<String>,
    pub status: PrinterStatus,
    /// 0–100.
    pub progress: u8,
    pub timestamp: String,
    /// What the printer really does: `idle`, `queued`, `downloading`,
    /// `starting`, `printing`, `paused`, `awaiting_clear`, `error`, `offline`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// How the job named by `jobId` ended, while its plate waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The gateway serving this printer id, and since when (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nozzle_temp: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bed_temp: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
    /// While paused: `"printer"` (runout, `M600`, a prompt) or `"farm"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_by: Option<String>,
    /// While paused by the printer: its reason ("filament runout 0").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_reason: Option<String>,
}

/// `<prefix>robot/<robot>/progress`: a robot's report about a printer's plate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RobotProgress {
    pub robot_id: String,
    pub printer_id: String,
    pub action: String,
    pub status: String,
    pub timestamp: String,
}

impl RobotProgress {
    /// True when the robot reports the plate as cleared (`completed`).
    pub fn is_completed(&self) -> bool {
        self.status == "completed"
    }
}

/// The operator commands accepted on `<prefix>printer/<id>/command`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Pause,
    Resume,
    Cancel,
    ClearPlate,
    EmergencyStop,
    /// Answers the printer's open prompt with `choice` (→ `M876 S<n>`).
    PromptAnswer,
}

impl Command {
    /// All commands with their wire names, for parsing and error messages.
    pub const ALL: [(&'static str, Command); 6] = [
        ("pause", Command::Pause),
        ("resume", Command::Resume),
        ("cancel", Command::Cancel),
        ("clear_plate", Command::ClearPlate),
        ("emergency_stop", Command::EmergencyStop),
        ("prompt_answer", Command::PromptAnswer),
    ];

    /// The command for a wire name, if it is one.
    pub fn from_name(name: &str) -> Option<Command> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
    }
}

/// `<prefix>printer/<id>/command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandMsg {
    pub command: Command,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// When the sender issued it (RFC 3339); a stale `cancel` or
    /// `emergency_stop` (queued by the broker while the gateway was away) is
    /// dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// `prompt_answer`: the index of the chosen button in the prompt's
    /// `choices`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice: Option<u32>,
}

/// `<prefix>printer/<id>/prompt` (retained) while the printer waits for a
/// person: answer with the `prompt_answer` command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptMsg {
    pub printer_id: String,
    #[serde(default)]
    pub job_id: Option<String>,
    pub text: String,
    /// Buttons, by index; empty: the printer only informs (answer not
    /// expected, or given at the printer).
    pub choices: Vec<String>,
    pub timestamp: String,
}

/// `<prefix>printer/<id>/event`: every state change, error and rejected input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub seq: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub printer_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub timestamp: String,
}

/// Whether the gateway is connected (birth) or gone (Last Will, shutdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    Online,
    Offline,
}

/// `<prefix>gateway/<gw>/status` (retained).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    pub status: Availability,
    pub version: String,
    pub printers: Vec<String>,
    pub timestamp: String,
}

impl GatewayStatus {
    /// The JSON bytes, ready to publish (birth or will).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising a struct of strings cannot fail; fall back to an
        // empty object rather than panic if serde ever says otherwise.
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }
}

/// `time` as RFC 3339 UTC with second precision: `2025-06-15T08:30:00Z`.
/// Times before 1970 are written as the epoch.
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses an RFC 3339 timestamp (`2025-06-15T08:30:00Z`, fractional
/// seconds and `+hh:mm` offsets allowed) to a `SystemTime`. `None` for
/// anything else, or for times before 1970.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let digits = |from: usize, len: usize| -> Option<u64> {
        let part = b.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let sep = |at: usize, c: &[u8]| b.get(at).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (y, mo, d) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (h, mi, sec) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = b.get(19..)?;
    if rest.first() == Some(&b'.') {
        let n = rest
            .iter()
            .skip(1)
            .take_while(|c| c.is_ascii_digit())
            .count();
        if n == 0 {
            return None;
        }
        rest = rest.get(1 + n..)?;
    }
    let offset: i64 = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let num = |a: &u8, b: &u8| -> Option<i64> {
                (a.is_ascii_digit() && b.is_ascii_digit())
                    .then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))
            };
            let secs = num(h1, h2)? * 3600 + num(m1, m2)? * 60;
            if *sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d)?;
    let local = days.checked_mul(86_400)? + h * 3600 + mi * 60 + sec;
    let utc = i64::try_from(local).ok()?.checked_sub(offset)?;
    Some(UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(utc).ok()?))
}

/// (year, month, day) to days since 1970-01-01; the inverse of
/// [`civil_from_days`]. `None` before 1970 or for a day past the month's end.
fn days_from_civil(y: u64, m: u64, d: u64) -> Option<u64> {
    let leap = (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let len = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if d > len {
        return None;
    }
    let y = if m <= 2 { y.checked_sub(1)? } else { y };
    let era = y / 400;
    let yoe = y % 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
/// Howard Hinnant's `civil_from_days`, on unsigned days (we never go before
/// 1970): shift to eras of 400 years starting 0000-03-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z / 146_097;
    let doe = z % 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> String {
        rfc3339(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(1_749_976_200), "2025-06-15T08:30:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(951_868_800), "2000-03-01T00:00:00Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00Z");
        assert_eq!(at(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn rfc3339_parses_what_it_formats_and_common_variants() {
        for secs in [
            0u64,
            1_749_976_200,
            951_782_400,
            4_107_542_400,
            253_402_300_799,
        ] {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t), "{secs}");
        }
        let base = UNIX_EPOCH + Duration::from_secs(1_749_976_200);
        assert_eq!(parse_rfc3339("2025-06-15T08:30:00.123Z"), Some(base));
        assert_eq!(parse_rfc3339("2025-06-15T10:30:00+02:00"), Some(base));
        assert_eq!(parse_rfc3339("2025-06-15T06:30:00-02:00"), Some(base));
        for bad in [
            "",
            "2025-06-15",
            "2025-06-15T08:30:00",
            "2025-13-15T08:30:00Z",
            "2025-02-30T08:30:00Z",
            "1969-12-31T23:59:59Z",
            "2025-06-15T08:30:00.Z",
            "2025-06-15T08:30:00+0200",
            "２025-06-15T08:30:00Z",
            "2025-06-15T08:30:00Zjunk",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn civil_from_days_walks_every_day_in_order() {
        // 1970..2400 day by day: the date always advances by exactly one day.
        let mut prev = civil_from_days(0);
        assert_eq!(prev, (1970, 1, 1));
        for days in 1..157_000 {
            let cur = civil_from_days(days);
            let (py, pm, pd) = prev;
            let next_day = cur == (py, pm, pd + 1);
            let next_month = cur == (py, pm + 1, 1) && pm < 12;
            let next_year = cur == (py + 1, 1, 1) && (pm, pd) == (12, 31);
            assert!(next_day || next_month || next_year, "{prev:?} -> {cur:?}");
            if next_month {
                let leap = (py % 4 == 0 && py % 100 != 0) || py % 400 == 0;
                let len = [
                    31,
                    if leap { 29 } else { 28 },
                    31,
                    30,
                    31,
                    30,
                    31,
                    31,
                    30,
                    31,
                    30,
                    31,
                ];
                assert_eq!(pd, len[(pm - 1) as usize], "{py}-{pm} has {pd} days");
            }
            prev = cur;
        }
    }

    #[test]
    fn assignment_round_trips_the_seed_example() {
        let seed = r#"{"jobId":"job-123","modelUrl":"models/model-456.gcode","filamentType":"PLA",
            "estimatedTime":3600,"priority":10,"assignedAt":"2025-06-15T08:30:00Z",
            "parameters":{"layerHeight":0.2,"infill":20,"nozzleTemp":210,"bedTemp":60}}"#;
        let a: Assignment = serde_json::from_str(seed).unwrap();
        assert_eq!(a.job_id, "job-123");
        assert_eq!(a.filament_type.as_deref(), Some("PLA"));
        assert_eq!(a.estimated_time, Some(3600));
        let back: serde_json::Value = serde_json::to_value(&a).unwrap();
        let orig: serde_json::Value = serde_json::from_str(seed).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn progress_matches_the_seed_shape() {
        let p = Progress {
            printer_id: "printer-1".into(),
            job_id: None,
            status: PrinterStatus::Idle,
            progress: 100,
            timestamp: at(1_749_976_320),
            state: "awaiting_clear".into(),
            outcome: None,
            gateway_id: None,
            claimed_at: None,
            seq: Some(7),
            line: None,
            lines: None,
            nozzle_temp: Some(209.5),
            bed_temp: None,
            eta_seconds: None,
            paused_by: None,
            pause_reason: None,
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"printerId":"printer-1","jobId":null,"status":"idle",
                "progress":100,"timestamp":"2025-06-15T08:32:00Z","state":"awaiting_clear",
                "seq":7,"nozzleTemp":209.5})
        );
    }

    #[test]
    fn event_command_and_status_field_names() {
        let e = Event {
            seq: 3,
            kind: "rejected".into(),
            printer_id: "p".into(),
            job_id: Some("j".into()),
            message: None,
            timestamp: at(0),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "rejected");
        assert_eq!(v["printerId"], "p");
        assert!(v.get("message").is_none());
        let c: CommandMsg = serde_json::from_str(r#"{"command":"clear_plate"}"#).unwrap();
        assert_eq!(c.command, Command::ClearPlate);
        assert_eq!(
            Command::from_name("emergency_stop"),
            Some(Command::EmergencyStop)
        );
        assert_eq!(Command::from_name("Pause"), None);
        let s = GatewayStatus {
            status: Availability::Offline,
            version: "0.1.0".into(),
            printers: vec!["a".into()],
            timestamp: at(0),
        };
        let v: serde_json::Value = serde_json::from_slice(&s.to_bytes()).unwrap();
        assert_eq!(v["status"], "offline");
        assert_eq!(v["printers"][0], "a");
    }
}
