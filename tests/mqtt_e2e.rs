//! The MQTT mirror end to end, at the gateway level: `printgate run` as a
//! real process, `printgate sim` printers on pseudo-terminals, an embedded
//! rumqttd in this process (one for the whole binary: it cannot be
//! stopped), the daemon connected through a cuttable proxy, and a farm-side
//! observer subscribed to `<prefix>#` and `<discovery>/#`.
//!
//! This file: the seed's cycle message by message with the Last Will, and
//! Home Assistant discovery. `mqtt_e2e/outage.rs`: broker outage and
//! gateway restart (seq accounting in `mqtt_e2e/accounting.rs`).
//! `mqtt_e2e/inputs.rs`: commands and malformed input. Every test prints its
//! figures on stderr (`--nocapture`).
#![cfg(feature = "embedded-broker")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "mqtt_e2e/accounting.rs"]
mod accounting;
mod e2e_support;
#[path = "mqtt_e2e/inputs.rs"]
mod inputs;
#[path = "mqtt_e2e/mirror.rs"]
mod mirror;
#[path = "mqtt_e2e/outage.rs"]
mod outage;
#[path = "mqtt_e2e/prompts.rs"]
mod prompts;
#[path = "mqtt_e2e/rig.rs"]
mod rig;
#[path = "source_http/server.rs"]
mod server;
#[path = "mqtt_e2e/shapes.rs"]
mod shapes;
mod support;
#[path = "mqtt_e2e/trust.rs"]
mod trust;

use e2e_support::{executed_moves, write_job, TestDir};
use mirror::{Mirror, Msg};
use printgate::broker::{free_port, start_embedded};
use rig::{wait_for, Rig, Spec};
use server::{Reply, Server};
use shapes::Kind;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The broker of this test binary.
pub fn broker() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        support::init();
        let port = free_port().unwrap();
        start_embedded(port).unwrap();
        port
    })
}

/// The seed's assignment, field for field.
const SEED_ASSIGNMENT: &str = r#"{"jobId":"job-123","modelUrl":"models/model-456.gcode","filamentType":"PLA","estimatedTime":3600,"priority":10,"assignedAt":"2025-06-15T08:30:00Z","parameters":{"layerHeight":0.2,"infill":20,"nozzleTemp":210,"bedTemp":60}}"#;

/// The seed's robot report for `printer`, stamped now (older reports are
/// not acted on).
pub fn robot_pick(robot: &str, printer: &str) -> String {
    let now = printgate::mqtt::payload::rfc3339(std::time::SystemTime::now());
    format!(
        r#"{{"robotId":"{robot}","printerId":"{printer}","action":"pick","status":"completed","timestamp":"{now}"}}"#
    )
}

/// Checks every message under the rig's prefix; counts them by kind.
pub fn check_all(rig: &Rig, msgs: &[Msg]) -> BTreeMap<Kind, usize> {
    let mut counts = BTreeMap::new();
    for m in msgs.iter().filter(|m| m.topic.starts_with(&rig.prefix)) {
        *counts.entry(shapes::check(&rig.prefix, m)).or_default() += 1;
    }
    counts
}

/// G-code commands of a file as the printer receives them: comments and
/// blank lines dropped.
pub fn commands_of(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split(';').next().unwrap_or("").trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// What the printer executed apart from the host's own handshake,
/// temperature and job-end commands (`M110 N0`, `M115`, `M155`, `M105`, and
/// the `M400` that ends every job).
pub fn job_lines(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            !["M105", "M110", "M115", "M155", "M400"]
                .iter()
                .any(|h| l.starts_with(h))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn seed_cycle_message_by_message() {
    let models = TestDir::new("mqtt-e2e-models");
    let model = models.path().join("model-456.gcode");
    let moves = write_job(&model, 7, 1500);
    let qm = Server::start(vec![
        Reply::new(204, ""),
        Reply::new(200, std::fs::read(&model).unwrap()),
    ]);
    let rig = Rig::start(
        broker(),
        Spec {
            name: "cycle",
            prefix: "device/",
            gateway: "gw-test",
            discovery: "homeassistant",
            printers: &["p1"],
            sim_args: &["--baud", "115200"],
            queue_manager: Some(qm.url()),
            triggers: &[],
        },
    );
    let m = &rig.mirror;
    let (progress, event) = ("device/printer/p1/progress", "device/printer/p1/event");
    let status = "device/gateway/gw-test/status";

    // Birth: retained, so a client connecting now still gets it.
    let late = Mirror::connect(&rig.rt, broker(), "obs-cycle-late", &[status]);
    let (_, birth) = late.wait_msg("retained birth", 0, |m| m.retain);
    assert_eq!(birth.json["status"], "online");
    assert_eq!(birth.json["printers"], serde_json::json!(["p1"]));
    drop(late);

    // A new printer's plate is not known to be clear: the seed's "plate
    // waits" signal (idle + 100), never a plain idle.
    let (_, waiting) = m.wait_msg("awaiting_clear progress", 0, |m| {
        m.topic == progress && m.json["state"] == "awaiting_clear"
    });
    assert_eq!(waiting.json["status"], "idle");
    assert_eq!(waiting.json["progress"], 100);
    assert!(!m
        .since(0)
        .iter()
        .any(|m| m.topic == progress && m.json["state"] == "idle"));
    let mark = m.len();
    rig.cli(&["clear", "p1"]);
    m.wait_event(event, "plate_cleared", mark);
    let (_, idle) = m.wait_msg("the idle state change", mark, |m| {
        m.topic == progress && m.json["state"] == "idle" && m.seq().is_some()
    });
    assert_eq!(
        (idle.json["status"].as_str(), idle.json["progress"].as_u64()),
        (Some("idle"), Some(0))
    );
    assert_eq!(idle.json["printerId"], "p1");
    // Announced idle, repeatedly (the job_handler discovers printers so).
    m.wait("two idle announcements", mark, |msgs| {
        let idle = msgs
            .iter()
            .filter(|m| m.topic == progress && m.json["status"] == "idle")
            .filter(|m| m.json["jobId"].is_null() && m.json["progress"] == 0)
            .count();
        (idle >= 2).then_some(())
    });
    // The idle printer asked the queue manager once (it answered 204).
    wait_for("the poll at plate clear", || {
        (qm.requests().len() == 1).then_some(())
    });

    let mark = m.len();
    m.publish("device/printer/p1/assignement", SEED_ASSIGNMENT.as_bytes());
    let (done_at, _) = m.wait_msg("job-123 completed", mark, |m| {
        m.topic == event && m.json["type"] == "job_completed" && m.json["jobId"] == "job-123"
    });
    let (_, list) = m.wait_msg("device/printers with p1", done_at, |m| {
        m.topic == "device/printers"
    });
    assert_eq!(list.json, serde_json::json!(["p1"]));
    m.wait_msg("the completion topic", mark, |m| {
        m.topic == "device/printer/p1/job_complete/job-123"
    });
    let requests: Vec<String> = qm.requests().into_iter().map(|r| r.line).collect();
    assert_eq!(
        requests,
        [
            "GET /prioritary_job?printerId=p1 HTTP/1.1",
            "GET /models/model-456.gcode HTTP/1.1"
        ]
    );

    // Events of the job, in order; progress 0 → 100, never backwards.
    let cycle = m.since(mark);
    let kinds: Vec<&str> = cycle
        .iter()
        .filter(|m| m.topic == event && m.json["jobId"] == "job-123")
        .filter_map(|m| m.json["type"].as_str())
        .collect();
    let wanted = [
        "job_accepted",
        "job_downloading",
        "job_ready",
        "job_printing",
        "job_completed",
    ];
    let order: Vec<&str> = kinds
        .iter()
        .copied()
        .filter(|k| wanted.contains(k))
        .collect();
    assert_eq!(order, wanted, "all job events: {kinds:?}");
    let values: Vec<u64> = cycle
        .iter()
        .filter(|m| m.topic == progress && m.json["jobId"] == "job-123")
        .map(|m| m.json["progress"].as_u64().unwrap())
        .collect();
    assert!(
        values.windows(2).all(|w| w[0] <= w[1]),
        "progress went backwards: {values:?}"
    );
    assert_eq!(values.first(), Some(&0), "{values:?}");
    assert_eq!(values.last(), Some(&100), "{values:?}");
    assert!(values.iter().any(|v| (1..100).contains(v)), "{values:?}");

    // The robot clears the plate: idle again, announced, list emptied.
    let mark = m.len();
    m.publish(
        "device/robot/rob-1/progress",
        robot_pick("rob-1", "p1").as_bytes(),
    );
    let (_, cleared) = m.wait_event(event, "plate_cleared", mark);
    assert!(cleared.json["message"].as_str().unwrap().contains("rob-1"));
    m.wait_msg("empty device/printers", mark, |m| {
        m.topic == "device/printers" && m.json == serde_json::json!([])
    });
    m.wait("idle announced again", mark, |msgs| {
        msgs.iter()
            .filter(|m| m.topic == progress && m.json["state"] == "idle")
            .nth(1)
            .map(|_| ())
    });

    // The printer received every line of the model exactly once.
    let log = rig.sim_log("p1");
    wait_for("the simulator's log", || {
        (executed_moves(&log).len() >= moves.len()).then_some(())
    });
    assert_eq!(executed_moves(&log), moves);
    assert_eq!(job_lines(&log), commands_of(&model));

    // The same assignment again is ignored; PETG on a PLA printer is refused.
    let mark = m.len();
    m.publish("device/printer/p1/assignement", SEED_ASSIGNMENT.as_bytes());
    let petg = SEED_ASSIGNMENT
        .replace("job-123", "job-petg")
        .replace("PLA", "PETG");
    m.publish("device/printer/p1/assignement", petg.as_bytes());
    let (_, rejected) = m.wait_event(event, "assignment_rejected", mark);
    assert_eq!(rejected.json["jobId"], "job-petg");
    assert!(rejected.json["message"].as_str().unwrap().contains("PETG"));
    let after = m.since(mark);
    assert!(
        !after
            .iter()
            .any(|m| m.topic == event && m.json["type"] != "assignment_rejected"),
        "the duplicate or the PETG job changed something: {after:?}"
    );
    let jobs = rig.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["state"], "completed");
    assert_eq!(executed_moves(&log), moves, "printed twice");
    assert_eq!(qm.requests().len(), 2, "downloaded again");

    // Every payload has the protocol's shape.
    let counts = check_all(&rig, &m.since(0));

    // Last Will: kill -9, the broker says offline (retained).
    let mark = m.len();
    rig.kill9();
    let (_, will) = m.wait_msg("the Last Will", mark, |m| m.topic == status);
    assert_eq!(will.json["status"], "offline");
    let late = Mirror::connect(&rig.rt, broker(), "obs-cycle-late2", &[status]);
    let (_, retained) = late.wait_msg("retained will", 0, |m| m.retain);
    assert_eq!(retained.json["status"], "offline");
    eprintln!(
        "mqtt mirror, seed cycle: {} messages checked {counts:?}; progress values {values:?}; \
         {} moves printed once; queue manager requests {}; duplicate ignored, PETG rejected; \
         will: offline after kill -9",
        counts.values().sum::<usize>(),
        moves.len(),
        qm.requests().len()
    );
}

#[test]
fn home_assistant_discovery_is_retained_and_reannounced() {
    let rig = Rig::start(
        broker(),
        Spec {
            name: "ha",
            prefix: "ha/",
            gateway: "gw-ha",
            discovery: "homeassistant",
            printers: &["p1", "p2"],
            sim_args: &[],
            queue_manager: None,
            triggers: &[],
        },
    );
    let m = &rig.mirror;
    let ours = |m: &Msg| m.topic.starts_with("homeassistant/sensor/printgate_gw-ha_");
    let objects = ["status", "progress", "nozzle_temp", "bed_temp"];
    let expected: Vec<String> = ["p1", "p2"]
        .iter()
        .flat_map(|p| {
            objects
                .iter()
                .map(move |o| format!("homeassistant/sensor/printgate_gw-ha_{p}/{o}/config"))
        })
        .collect();
    let topics_of = |msgs: &[Msg]| -> Vec<String> {
        let mut t: Vec<String> = msgs
            .iter()
            .filter(|m| ours(m))
            .map(|m| m.topic.clone())
            .collect();
        t.sort();
        t
    };
    let mut sorted = expected.clone();
    sorted.sort();

    // Retained: a client subscribing now gets all eight with the retain flag.
    let late = Mirror::connect(&rig.rt, broker(), "obs-ha-late", &["homeassistant/#"]);
    let retained = late.wait("eight retained configs", 0, |msgs| {
        let r: Vec<Msg> = msgs
            .iter()
            .filter(|m| ours(m) && m.retain)
            .cloned()
            .collect();
        (r.len() >= 8).then_some(r)
    });
    assert_eq!(topics_of(&retained), sorted);
    for c in &retained {
        let v = &c.json;
        let printer = if c.topic.contains("_p1/") { "p1" } else { "p2" };
        assert_eq!(v["state_topic"], format!("ha/printer/{printer}/progress"));
        assert_eq!(v["availability_topic"], "ha/gateway/gw-ha/status");
        assert!(v["name"].is_string() && v["unique_id"].is_string(), "{v}");
        assert!(v["value_template"]
            .as_str()
            .unwrap()
            .starts_with("{{ value_json."));
        assert_eq!(
            v["device"]["identifiers"][0],
            format!("printgate_gw-ha_{printer}")
        );
    }
    // What the templates read is in the progress messages.
    let (_, p) = m.wait_msg("progress with temperatures", 0, |m| {
        m.topic == "ha/printer/p1/progress" && m.json.get("nozzleTemp").is_some()
    });
    for c in retained.iter().filter(|c| c.topic.contains("_p1/")) {
        let field = c.json["value_template"]
            .as_str()
            .unwrap()
            .trim_start_matches("{{ value_json.")
            .trim_end_matches(" }}")
            .to_owned();
        assert!(p.json.get(&field).is_some(), "{field} not in {}", p.json);
    }

    // Home Assistant restarts: everything is announced again, but a flood
    // of `online` costs one republish a minute, not one each.
    let mark = m.len();
    m.publish("homeassistant/status", b"online");
    let again = m.wait("eight configs again", mark, |msgs| {
        let t = topics_of(msgs);
        (t.len() >= 8).then_some(t)
    });
    assert_eq!(again, sorted);
    let mark = m.len();
    for _ in 0..20 {
        m.publish("homeassistant/status", b"online");
    }
    // A marker published after the flood: once it is back, so would be
    // anything the flood caused.
    m.publish("ha/printer/p1/command", br#"{"command":"pause"}"#);
    m.wait_msg("the marker's answer", mark, |m| {
        m.topic == "ha/printer/p1/event" && m.json["type"] == "command_rejected"
    });
    assert!(
        topics_of(&m.since(mark)).is_empty(),
        "a flood of online republished discovery"
    );
    let counts = check_all(&rig, &m.since(0));
    eprintln!(
        "mqtt mirror, home assistant: {} retained configs for 2 printers, {} re-announced on \
         homeassistant/status=online; {} gateway messages checked {counts:?}",
        retained.len(),
        again.len(),
        counts.values().sum::<usize>()
    );
}
