//! What a job hand-out says, from any source (an MQTT assignment, a queue
//! manager's job, the CLI), read with one set of rules: ids are validated
//! the same way everywhere, numbers are lenient (integer, float or numeric
//! string) and clamped instead of rejected, and durations derived from them
//! use checked arithmetic. A job that is handed out once must not be lost
//! to an odd `priority`, and no number from outside may panic the gateway.
//!
//! Pure functions: no I/O, no clock.

use serde_json::Value;
use std::time::Duration;

/// Longest accepted job id; ids end up in topics and file names.
pub const MAX_ID_LEN: usize = 128;
/// Longest estimate taken at face value (30 days); longer ones are clamped.
pub const MAX_ESTIMATE_S: u64 = 30 * 24 * 3600;
/// Priorities beyond ± this are clamped (they only order jobs).
pub const MAX_PRIORITY: i64 = 1_000_000_000;

/// Why an id is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("longer than {MAX_ID_LEN} characters")]
    TooLong,
    #[error("character {0:?} is not allowed in an id (no '/', '+', '#', control characters or surrounding spaces)")]
    BadChar(char),
}

/// The one id rule (job, printer and robot ids from any source): non-empty,
/// at most [`MAX_ID_LEN`] characters, nothing that breaks an MQTT topic level
/// (`/`, `+`, `#`) and no control characters or leading/trailing spaces
/// (they would make log lines and file names lie).
pub fn check_id(id: &str) -> Result<(), IdError> {
    if id.trim().is_empty() {
        return Err(IdError::Empty);
    }
    if id.chars().count() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    if let Some(c) = id
        .chars()
        .find(|c| matches!(c, '/' | '+' | '#') || c.is_control())
    {
        return Err(IdError::BadChar(c));
    }
    if id.trim() != id {
        return Err(IdError::BadChar(' '));
    }
    Ok(())
}

/// A number as the farm's services send it: a JSON number, or a string
/// holding one (`"3600"`, `"inf"`). `None` for anything else.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
}

/// A value read leniently, with a warning when it had to be changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Lenient<T> {
    pub value: T,
    pub warning: Option<String>,
}

impl<T> Lenient<T> {
    fn ok(value: T) -> Self {
        Lenient {
            value,
            warning: None,
        }
    }
    fn warn(value: T, warning: String) -> Self {
        Lenient {
            value,
            warning: Some(warning),
        }
    }
}

/// `estimatedTime` in seconds: rounded; above 30 days clamped to 30 days;
/// negative, NaN, infinite or not a number means "no estimate". Absent or
/// `null` is no estimate without a warning.
pub fn estimated_seconds(v: Option<&Value>) -> Lenient<Option<u64>> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Lenient::ok(None);
    };
    match number(v) {
        Some(s) if s.is_finite() && s >= 0.0 => {
            let rounded = s.round();
            if rounded > MAX_ESTIMATE_S as f64 {
                Lenient::warn(
                    Some(MAX_ESTIMATE_S),
                    format!("estimatedTime {s} s is over 30 days; using 30 days"),
                )
            } else {
                // In range 0..=MAX_ESTIMATE_S, so the cast is exact.
                Lenient::ok(Some(rounded as u64))
            }
        }
        _ => Lenient::warn(
            None,
            format!(
                "estimatedTime {} is not a usable duration; ignored",
                clip(v)
            ),
        ),
    }
}

/// `priority`: rounded, clamped to ±[`MAX_PRIORITY`]; not a number means 0.
pub fn priority(v: Option<&Value>) -> Lenient<i64> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Lenient::ok(0);
    };
    match number(v) {
        Some(p) if p.is_finite() => {
            let max = MAX_PRIORITY as f64;
            let clamped = p.round().clamp(-max, max);
            // Clamped into ±1e9, so the cast is exact.
            let value = clamped as i64;
            if clamped == p.round() {
                Lenient::ok(value)
            } else {
                Lenient::warn(value, format!("priority {p} clamped to {value}"))
            }
        }
        _ => Lenient::warn(0, format!("priority {} is not a number; using 0", clip(v))),
    }
}

/// `filamentType`: missing, `null` or blank means "not stated" (no check).
pub fn filament(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    }
}

/// A job's time limit: its estimate × `factor` (at least ×1), capped by
/// `max`; `max` alone without an estimate. Never panics, whatever the inputs.
pub fn time_limit(estimated_s: Option<u64>, factor: f64, max: Duration) -> Duration {
    let Some(est) = estimated_s.filter(|s| *s > 0) else {
        return max;
    };
    let factor = if factor.is_finite() {
        factor.max(1.0)
    } else {
        1.0
    };
    let secs = est as f64 * factor;
    match Duration::try_from_secs_f64(secs) {
        Ok(d) => d.min(max),
        Err(_) => max,
    }
}

fn clip(v: &Value) -> String {
    let s = v.to_string();
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_follow_one_rule() {
        assert_eq!(check_id("job-123"), Ok(()));
        assert_eq!(check_id("job.42"), Ok(()));
        assert_eq!(check_id(""), Err(IdError::Empty));
        assert_eq!(check_id("a/b"), Err(IdError::BadChar('/')));
        assert_eq!(check_id("a+b"), Err(IdError::BadChar('+')));
        assert_eq!(check_id("a#"), Err(IdError::BadChar('#')));
        assert_eq!(check_id("a\nb"), Err(IdError::BadChar('\n')));
        assert_eq!(check_id(" a"), Err(IdError::BadChar(' ')));
        assert_eq!(check_id(&"x".repeat(129)), Err(IdError::TooLong));
        assert_eq!(check_id(&"é".repeat(128)), Ok(()));
    }

    #[test]
    fn estimates_accept_floats_and_clamp_absurd_values() {
        let e = |v: Value| estimated_seconds(Some(&v));
        assert_eq!(e(json!(3600)).value, Some(3600));
        assert_eq!(e(json!(3599.6)).value, Some(3600));
        assert_eq!(e(json!("3600")).value, Some(3600));
        assert_eq!(e(json!(1e19)).value, Some(MAX_ESTIMATE_S));
        assert!(e(json!(1e19)).warning.is_some());
        assert_eq!(e(json!(-5)).value, None);
        assert!(e(json!(-5)).warning.is_some());
        assert_eq!(e(json!("inf")).value, None);
        assert_eq!(e(json!("NaN")).value, None);
        assert_eq!(e(json!("soon")).value, None);
        assert_eq!(e(json!(u64::MAX)).value, Some(MAX_ESTIMATE_S));
        assert_eq!(estimated_seconds(None), Lenient::ok(None));
        assert_eq!(estimated_seconds(Some(&Value::Null)), Lenient::ok(None));
    }

    #[test]
    fn priorities_round_and_clamp() {
        let p = |v: Value| priority(Some(&v));
        assert_eq!(p(json!(10)).value, 10);
        assert_eq!(p(json!(9.6)).value, 10);
        assert_eq!(p(json!(-3)).value, -3);
        assert_eq!(p(json!(1e300)).value, MAX_PRIORITY);
        assert!(p(json!(1e300)).warning.is_some());
        assert_eq!(p(json!("high")).value, 0);
        assert_eq!(p(json!(i64::MIN)).value, -MAX_PRIORITY);
        assert_eq!(priority(None).value, 0);
    }

    #[test]
    fn filament_missing_null_or_blank_is_not_stated() {
        assert_eq!(filament(None), None);
        assert_eq!(filament(Some(&Value::Null)), None);
        assert_eq!(filament(Some(&json!(""))), None);
        assert_eq!(filament(Some(&json!("  "))), None);
        assert_eq!(filament(Some(&json!(7))), None);
        assert_eq!(filament(Some(&json!("PLA"))), Some("PLA".into()));
    }

    #[test]
    fn time_limits_never_panic() {
        let max = Duration::from_secs(72 * 3600);
        assert_eq!(time_limit(None, 3.0, max), max);
        assert_eq!(time_limit(Some(0), 3.0, max), max);
        assert_eq!(
            time_limit(Some(3600), 3.0, max),
            Duration::from_secs(3 * 3600)
        );
        assert_eq!(time_limit(Some(3600), 0.5, max), Duration::from_secs(3600));
        for est in [u64::MAX, MAX_ESTIMATE_S, 1 << 60] {
            for factor in [f64::MAX, f64::INFINITY, f64::NAN, -1.0, 1e300, 3.0] {
                let d = time_limit(Some(est), factor, max);
                assert!(d <= max, "{est} {factor}");
            }
        }
    }
}
