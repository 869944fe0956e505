//! Tables of malformed payloads per subscribed topic kind, and a seeded
//! random-bytes property test: `parse_inbound` never panics.

use super::*;
use crate::rng::Xorshift64 as Rng;

const ASSIGN: &str = "device/printer/p1/assignement";
const COMMAND: &str = "device/printer/p1/command";
const ROBOT: &str = "device/robot/r1/progress";
const SEED_ASSIGNMENT: &str = r#"{"jobId":"job-123","modelUrl":"models/model-456.gcode","filamentType":"PLA","estimatedTime":3600,"priority":10,"assignedAt":"2025-06-15T08:30:00Z","parameters":{"layerHeight":0.2,"infill":20,"nozzleTemp":210,"bedTemp":60}}"#;
const SEED_ROBOT: &str = r#"{"robotId":"r1","printerId":"p1","action":"pick","status":"completed","timestamp":"2025-06-15T08:32:10Z"}"#;

fn topics() -> Topics {
    Topics::new("gw").with_triggers(vec!["farm/purge".into()])
}

fn known() -> Vec<String> {
    vec!["p1".into(), "p2".into()]
}

fn parse(topic: &str, payload: &[u8]) -> Result<Inbound, InboundError> {
    parse_inbound(&topics(), topic, payload, &known())
}

/// A short name for an error kind and its field, for the tables.
fn tag(kind: &InboundErrorKind) -> String {
    use InboundErrorKind as K;
    match kind {
        K::UnknownTopic => "unknown_topic".into(),
        K::TooLarge { .. } => "too_large".into(),
        K::NotUtf8 => "not_utf8".into(),
        K::InvalidJson(_) => "json".into(),
        K::NotAnObject { .. } => "not_object".into(),
        K::MissingField { field } => format!("missing:{field}"),
        K::WrongType { field, .. } => format!("type:{field}"),
        K::EmptyField { field } => format!("empty:{field}"),
        K::InvalidValue { field, .. } => format!("value:{field}"),
        K::UnknownPrinter { .. } => "unknown_printer".into(),
        K::InvalidCommand { .. } => "command".into(),
    }
}

/// The seed assignment with `field` replaced by `value` (raw JSON), or
/// removed when `value` is `None`.
fn assignment_with(field: &str, value: Option<&str>) -> Vec<u8> {
    let mut v: serde_json::Map<String, Value> = serde_json::from_str(SEED_ASSIGNMENT).unwrap();
    match value {
        Some(raw) => v.insert(field.into(), serde_json::from_str(raw).unwrap()),
        None => v.remove(field),
    };
    serde_json::to_vec(&v).unwrap()
}

fn robot_with(field: &str, value: Option<&str>) -> Vec<u8> {
    let mut v: serde_json::Map<String, Value> = serde_json::from_str(SEED_ROBOT).unwrap();
    match value {
        Some(raw) => v.insert(field.into(), serde_json::from_str(raw).unwrap()),
        None => v.remove(field),
    };
    serde_json::to_vec(&v).unwrap()
}

fn too_large() -> Vec<u8> {
    vec![b' '; MAX_INBOUND_BYTES + 1]
}

fn nested(depth: usize) -> Vec<u8> {
    let mut s = "[".repeat(depth);
    s.push_str(&"]".repeat(depth));
    s.into_bytes()
}

/// Payloads that are broken whatever the topic.
fn common_cases() -> Vec<(Vec<u8>, &'static str)> {
    vec![
        (b"".to_vec(), "json"),
        (b"not json".to_vec(), "json"),
        (b"{\"a\":1".to_vec(), "json"),
        (b"{} trailing".to_vec(), "json"),
        (b"{\"a\":NaN}".to_vec(), "json"),
        (nested(200), "json"),
        (b"[1,2]".to_vec(), "not_object"),
        (b"null".to_vec(), "not_object"),
        (b"\"text\"".to_vec(), "not_object"),
        (b"42".to_vec(), "not_object"),
        (b"\xff\xfe{}".to_vec(), "not_utf8"),
        (too_large(), "too_large"),
    ]
}

fn check(topic: &str, cases: Vec<(Vec<u8>, &'static str)>, min: usize) {
    assert!(cases.len() >= min, "only {} cases for {topic}", cases.len());
    for (payload, want) in cases {
        let shown = String::from_utf8_lossy(&payload[..payload.len().min(80)]).into_owned();
        match parse(topic, &payload) {
            Ok(ok) => panic!("{topic}: {shown} was accepted as {ok:?}, want {want}"),
            Err(err) => {
                assert_eq!(tag(&err.kind), want, "{topic}: {shown} gave {err}");
                assert!(err.to_string().starts_with(&format!("{topic}: ")), "{err}");
            }
        }
    }
}

#[test]
fn malformed_assignments_are_rejected_by_kind() {
    let a = assignment_with;
    let mut cases = common_cases();
    cases.extend([
        (b"{}".to_vec(), "missing:jobId"),
        (a("jobId", None), "missing:jobId"),
        (a("jobId", Some("\"\"")), "empty:jobId"),
        (a("jobId", Some("\"   \"")), "empty:jobId"),
        (a("jobId", Some("123")), "type:jobId"),
        (a("jobId", Some("null")), "type:jobId"),
        (a("jobId", Some("\"a/b\"")), "value:jobId"),
        (a("jobId", Some("\"a+b\"")), "value:jobId"),
        (a("jobId", Some("\"a\\nb\"")), "value:jobId"),
        (
            a("jobId", Some(&format!("\"{}\"", "j".repeat(200)))),
            "value:jobId",
        ),
        (a("modelUrl", None), "missing:modelUrl"),
        (a("modelUrl", Some("\"\"")), "empty:modelUrl"),
        (a("modelUrl", Some("[]")), "type:modelUrl"),
        (
            a("filamentType", Some(&format!("\"{}\"", "f".repeat(200)))),
            "value:filamentType",
        ),
        (a("sha256", Some("\"abc\"")), "value:sha256"),
        (a("sha256", Some("5")), "type:sha256"),
        (a("assignedAt", Some("5")), "type:assignedAt"),
        (a("parameters", Some("[]")), "type:parameters"),
        (a("parameters", Some("\"x\"")), "type:parameters"),
    ]);
    check(ASSIGN, cases, 20);
    let err = parse("device/printer/p9/assignement", SEED_ASSIGNMENT.as_bytes()).unwrap_err();
    assert_eq!(tag(&err.kind), "unknown_printer");
}

#[test]
fn malformed_commands_are_rejected_by_kind() {
    let c = |s: &str| s.as_bytes().to_vec();
    let mut cases = common_cases();
    cases.extend([
        (c("{}"), "missing:command"),
        (c(r#"{"Command":"pause"}"#), "missing:command"),
        (c(r#"{"command":1}"#), "type:command"),
        (c(r#"{"command":null}"#), "type:command"),
        (c(r#"{"command":["pause"]}"#), "type:command"),
        (c(r#"{"command":{"x":1}}"#), "type:command"),
        (c(r#"{"command":""}"#), "command"),
        (c(r#"{"command":"PAUSE"}"#), "command"),
        (c(r#"{"command":"pause "}"#), "command"),
        (c(r#"{"command":"reboot"}"#), "command"),
        (c(r#"{"command":"cancel","jobId":5}"#), "type:jobId"),
        (c(r#"{"command":"cancel","jobId":true}"#), "type:jobId"),
        (c(r#"{"command":"cancel","jobId":""}"#), "empty:jobId"),
        (c(r#"{"command":"cancel","jobId":"a#"}"#), "value:jobId"),
        (
            c(r#"{"command":"cancel","timestamp":"yesterday"}"#),
            "value:timestamp",
        ),
        (c(r#"{"command":"cancel","timestamp":7}"#), "type:timestamp"),
    ]);
    check(COMMAND, cases, 20);
    let err = parse("device/printer/p9/command", br#"{"command":"pause"}"#).unwrap_err();
    assert_eq!(tag(&err.kind), "unknown_printer");
}

#[test]
fn malformed_robot_reports_are_rejected_by_kind() {
    let r = robot_with;
    let mut cases = common_cases();
    cases.extend([
        (b"{}".to_vec(), "missing:robotId"),
        (r("robotId", None), "missing:robotId"),
        (r("robotId", Some("1")), "type:robotId"),
        (r("robotId", Some("\"\"")), "empty:robotId"),
        (r("robotId", Some("\"r2\"")), "value:robotId"),
        (r("printerId", None), "missing:printerId"),
        (r("printerId", Some("7")), "type:printerId"),
        (r("printerId", Some("\"\"")), "empty:printerId"),
        (r("printerId", Some("\"p9\"")), "unknown_printer"),
        (r("action", None), "missing:action"),
        (r("action", Some("1")), "type:action"),
        (r("action", Some("\"\"")), "empty:action"),
        (r("status", None), "missing:status"),
        (r("status", Some("null")), "type:status"),
        (r("status", Some("\"\"")), "empty:status"),
        (r("timestamp", None), "missing:timestamp"),
        (r("timestamp", Some("123")), "type:timestamp"),
        (r("timestamp", Some("\"soon\"")), "value:timestamp"),
        (r("robotId", Some("\"r/1\"")), "value:robotId"),
    ]);
    check(ROBOT, cases, 20);
}

#[test]
fn the_error_names_the_topic_field_and_types() {
    let err = parse(ASSIGN, &assignment_with("modelUrl", Some("3600"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"device/printer/p1/assignement: field "modelUrl": expected a string, got number"#
    );
}

/// The seed's Job has no filament and a handler may send floats: such an
/// assignment is taken (a rejected push is a lost job), absurd values are
/// clamped with a warning, never a panic.
#[test]
fn r11_assignments_are_read_leniently() {
    let get = |payload: Vec<u8>| match parse(ASSIGN, &payload).unwrap() {
        Inbound::Assignment {
            assignment,
            warnings,
            ..
        } => (assignment, warnings),
        other => panic!("{other:?}"),
    };
    let a = assignment_with;
    let (x, w) = get(a("filamentType", None));
    assert_eq!((x.filament_type, w.len()), (None, 0));
    assert_eq!(get(a("filamentType", Some("null"))).0.filament_type, None);
    assert_eq!(get(a("filamentType", Some("\"\""))).0.filament_type, None);
    assert_eq!(
        get(a("estimatedTime", Some("3599.6"))).0.estimated_time,
        Some(3600)
    );
    assert_eq!(
        get(a("estimatedTime", Some("\"3600\""))).0.estimated_time,
        Some(3600)
    );
    assert_eq!(get(a("priority", Some("9.7"))).0.priority, Some(10));
    let (x, w) = get(a("estimatedTime", Some("1e19")));
    assert_eq!(x.estimated_time, Some(crate::jobspec::MAX_ESTIMATE_S));
    assert_eq!(w.len(), 1, "{w:?}");
    for absurd in ["-5", "\"inf\"", "\"NaN\"", "\"later\""] {
        let (x, w) = get(a("estimatedTime", Some(absurd)));
        assert_eq!((x.estimated_time, w.len()), (None, 1), "{absurd}");
    }
    let sha = "AB".repeat(32);
    let (x, _) = get(a("sha256", Some(&format!("\"{sha}\""))));
    assert_eq!(x.sha256, Some("ab".repeat(32)));
}

#[test]
fn valid_messages_parse() {
    match parse(ASSIGN, SEED_ASSIGNMENT.as_bytes()).unwrap() {
        Inbound::Assignment {
            printer,
            assignment,
            ..
        } => {
            assert_eq!(printer, "p1");
            assert_eq!(assignment.job_id, "job-123");
            assert_eq!(assignment.priority, Some(10));
            assert!(assignment.parameters.is_some());
        }
        other => panic!("{other:?}"),
    }
    // Optional fields may be absent or null; unknown fields are ignored.
    let min =
        br#"{"jobId":"j","modelUrl":"m.gcode","filamentType":"PETG","priority":null,"extra":1}"#;
    assert!(matches!(parse(ASSIGN, min), Ok(Inbound::Assignment { .. })));
    let cmd = parse(COMMAND, br#"{"command":"emergency_stop","jobId":"j1"}"#).unwrap();
    assert_eq!(
        cmd,
        Inbound::Command {
            printer: "p1".into(),
            command: CommandMsg {
                command: Command::EmergencyStop,
                job_id: Some("j1".into()),
                timestamp: None,
                choice: None,
            }
        }
    );
    match parse(ROBOT, SEED_ROBOT.as_bytes()).unwrap() {
        Inbound::RobotProgress { robot, progress } => {
            assert_eq!(robot, "r1");
            assert!(progress.is_completed());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        parse("homeassistant/status", b"online").unwrap(),
        Inbound::HomeAssistantStatus { online: true }
    );
    assert_eq!(
        tag(&parse("homeassistant/status", b"maybe").unwrap_err().kind),
        "value:status"
    );
    assert_eq!(
        parse("farm/purge", b"\x00anything").unwrap(),
        Inbound::Trigger {
            index: 0,
            payload: b"\x00anything".to_vec()
        }
    );
    assert_eq!(
        tag(&parse("device/printers", b"[]").unwrap_err().kind),
        "unknown_topic"
    );
}

#[test]
fn random_bytes_never_panic() {
    let topics_list = [
        ASSIGN,
        COMMAND,
        ROBOT,
        "homeassistant/status",
        "farm/purge",
        "x/y",
    ];
    let templates = [
        SEED_ASSIGNMENT.as_bytes(),
        SEED_ROBOT.as_bytes(),
        br#"{"command":"cancel","jobId":"j"}"#,
    ];
    let mut rng = Rng::from_state(0x5eed_1234_abcd_0001);
    let mut accepted = 0;
    for case in 0..10_000 {
        let topic = topics_list[rng.index(topics_list.len())];
        let payload: Vec<u8> = if rng.index(2) == 0 {
            (0..rng.index(300)).map(|_| rng.next_u64() as u8).collect()
        } else {
            // Mutate a valid payload: flip, insert or cut a few bytes.
            let mut p = templates[rng.index(templates.len())].to_vec();
            for _ in 0..=rng.index(4) {
                let at = rng.index(p.len() + 1);
                match rng.index(3) {
                    0 if at < p.len() => p[at] = rng.next_u64() as u8,
                    1 => {
                        let alphabet = b"{}[]\",:0-e\\\xc3";
                        p.insert(at, alphabet[rng.index(alphabet.len())]);
                    }
                    _ => p.truncate(at),
                }
            }
            p
        };
        match parse(topic, &payload) {
            Ok(_) => accepted += 1,
            Err(e) => assert!(e.to_string().starts_with(topic), "case {case}: {e}"),
        }
    }
    // Triggers accept anything, so some cases must pass; most must not.
    assert!(accepted > 0 && accepted < 10_000, "accepted {accepted}");
}
