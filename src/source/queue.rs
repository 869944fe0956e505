//! `GET <base>/prioritary_job`: asking the queue manager for the next job.
//!
//! The queue manager hands a job out once and never again, so the parse is
//! strict only where it must be (`id`, `modelId`) and lenient elsewhere: a
//! job with an odd `priority` is better printed than lost. The caller must
//! persist the returned job before doing anything else with it.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::body::copy_body;
use super::{percent_encode, QueueClient, SourceError};

/// Largest job body accepted: a job is a few hundred bytes.
const MAX_JOB_BYTES: u64 = 64 * 1024;

/// A job as the queue manager sends it (seed 000's JSON, camelCase);
/// `Serialize` gives the same shape back, for storing it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueJob {
    pub id: String,
    pub model_id: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub assigned_printer_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_priority")]
    pub priority: i64,
    #[serde(default, deserialize_with = "lenient_string")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub submitted_at: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub updated_at: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub filament_type: Option<String>,
    /// Seconds.
    #[serde(default, deserialize_with = "lenient_number")]
    pub estimated_time: Option<i64>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub model_url: Option<String>,
    /// SHA-256 of the model (64 hex digits), verified before it is printed.
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub sha256: Option<String>,
    /// Slicer parameters, passed on untouched in the assignment.
    #[serde(default)]
    pub parameters: Option<Value>,
}

impl QueueJob {
    /// The model to download: the explicit `modelUrl`, else
    /// `models/<modelId>.gcode` relative to the queue manager (the farm's rule).
    pub fn model_url(&self) -> String {
        match self.model_url.as_deref().filter(|u| !u.is_empty()) {
            Some(url) => url.to_owned(),
            None => format!("models/{}.gcode", self.model_id),
        }
    }

    /// Parses a `200` body: `Ok(None)` for `null`, `Err(detail)` for anything
    /// that is not a job object with non-empty string `id` and `modelId`.
    pub fn from_body(body: &[u8]) -> Result<Option<QueueJob>, String> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| format!("not json ({e}), starts {:?}", excerpt(body)))?;
        let obj = match &value {
            Value::Null => return Ok(None),
            Value::Object(obj) => obj,
            _ => return Err(format!("not a json object, starts {:?}", excerpt(body))),
        };
        for field in ["id", "modelId"] {
            match obj.get(field) {
                Some(Value::String(s)) if !s.trim().is_empty() => {}
                _ => return Err(format!("no {field} string in job")),
            }
        }
        QueueJob::deserialize(value)
            .map(Some)
            .map_err(|e| format!("bad job: {e}"))
    }
}

impl QueueClient {
    /// Asks for the next job for `printer_id`. `Ok(None)` means no job
    /// (`204`, `404` or `200 null`). Any other status is [`SourceError::Http`];
    /// HTML, half a JSON object or a job without `id`/`modelId` is
    /// [`SourceError::BadBody`] (retryable, but that job is likely lost).
    pub fn fetch_job(&self, printer_id: &str) -> Result<Option<QueueJob>, SourceError> {
        let url = self.base.join(&format!(
            "prioritary_job?printerId={}",
            percent_encode(printer_id)
        ));
        let resp = self.get(&url, true)?;
        match resp.status().as_u16() {
            200 => {}
            204 | 404 => return Ok(None),
            status => return Err(SourceError::Http { status, url }),
        }
        let mut body = Vec::new();
        copy_body(resp, &url, MAX_JOB_BYTES, &mut body)?;
        QueueJob::from_body(&body).map_err(|detail| SourceError::BadBody { url, detail })
    }
}

/// The first 60 characters of a body, printable, for error messages.
fn excerpt(body: &[u8]) -> String {
    let head = body.get(..body.len().min(60)).unwrap_or(&[]);
    String::from_utf8_lossy(head)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn lenient_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse::<f64>().ok().map(|f| f as i64),
        _ => None,
    })
}

fn lenient_priority<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    lenient_number(d).map(Option::unwrap_or_default)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_JOB: &str = r#"{"id":"job-123","modelId":"model-456","assignedPrinterId":null,"priority":10,
        "status":"pending","submittedAt":"2025-06-15T08:30:00Z","updatedAt":"2025-06-15T08:30:00Z"}"#;

    #[test]
    fn seed_job_parses() {
        let job = QueueJob::from_body(SEED_JOB.as_bytes()).unwrap().unwrap();
        assert_eq!(job.id, "job-123");
        assert_eq!(job.model_id, "model-456");
        assert_eq!(job.assigned_printer_id, None);
        assert_eq!(job.priority, 10);
        assert_eq!(job.status.as_deref(), Some("pending"));
        assert_eq!(job.model_url(), "models/model-456.gcode");
    }

    #[test]
    fn a_serialized_job_parses_back_the_same() {
        let job = QueueJob::from_body(SEED_JOB.as_bytes()).unwrap().unwrap();
        let json = serde_json::to_vec(&job).unwrap();
        assert_eq!(QueueJob::from_body(&json).unwrap(), Some(job));
    }

    #[test]
    fn null_is_no_job_and_odd_fields_are_tolerated() {
        assert_eq!(QueueJob::from_body(b" null\n").unwrap(), None);
        let job = QueueJob::from_body(
            br#"{"id":"j","modelId":"m","priority":"high","estimatedTime":"3600","modelUrl":"models/x.gcode","extra":1}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(job.priority, 0);
        assert_eq!(job.estimated_time, Some(3600));
        assert_eq!(job.model_url(), "models/x.gcode");
    }

    #[test]
    fn non_jobs_are_refused_with_an_excerpt() {
        let html = QueueJob::from_body(b"<html><body>502 Bad Gateway</body></html>").unwrap_err();
        assert!(html.contains("<html>"), "{html}");
        for body in [
            &br#"{"id":"job-1","modelId":"#[..],
            br#"[]"#,
            br#"{"modelId":"m"}"#,
            br#"{"id":"","modelId":"m"}"#,
            br#"{"id":7,"modelId":"m"}"#,
            b"",
            b"\xff\xfe\x00",
        ] {
            assert!(QueueJob::from_body(body).is_err(), "{body:?}");
        }
    }
}
