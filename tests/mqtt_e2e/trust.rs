//! Issue 13's holes at the gateway level, against a real broker: orders
//! replayed by the broker (retained, or queued while the gateway was away)
//! and stale or bogus plate clears must never act.

use super::broker;
use super::e2e_support::printer_states;
use super::mirror::Mirror;
use super::rig::{Rig, Spec};
use printgate::mqtt::payload::rfc3339;
use std::time::{Duration, SystemTime};

fn robot_at(robot: &str, printer: &str, at: SystemTime) -> String {
    format!(
        r#"{{"robotId":"{robot}","printerId":"{printer}","action":"pick","status":"completed","timestamp":"{}"}}"#,
        rfc3339(at)
    )
}

fn state(rig: &Rig, printer: &str) -> String {
    printer_states(&rig.config)
        .into_iter()
        .find(|(p, _)| p == printer)
        .map(|(_, s)| s)
        .unwrap_or_default()
}

/// A retained `pick completed` and a retained `emergency_stop`, waiting on
/// the broker before the gateway starts, reach it at subscribe with the
/// retain flag: neither acts. A stale `pick completed` does not clear; a
/// fresh one does.
#[test]
fn r13_replayed_and_stale_orders_never_act() {
    let (prefix, gw) = ("trust/", "gw-trust");
    // Left on the broker before the gateway exists (another run, an
    // attacker, a misconfigured robot).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let early = Mirror::connect(&rt, broker(), "obs-trust-early", &["trust/#"]);
    let now = SystemTime::now();
    early.publish_retained(
        "trust/robot/rob-9/progress",
        robot_at("rob-9", "p1", now).as_bytes(),
    );
    early.publish_retained(
        "trust/printer/p1/command",
        br#"{"command":"emergency_stop"}"#,
    );
    // A later subscriber gets both, flagged retained: the broker has them.
    let check = Mirror::connect(&rt, broker(), "obs-trust-check", &["trust/#"]);
    check.wait_msg("the retained pick stored", 0, |m| {
        m.retain && m.topic.ends_with("rob-9/progress")
    });
    check.wait_msg("the retained e-stop stored", 0, |m| {
        m.retain && m.topic.ends_with("p1/command")
    });
    drop((early, check));

    let rig = Rig::start(
        broker(),
        Spec {
            name: "trust",
            prefix,
            gateway: gw,
            discovery: "ha-trust",
            printers: &["p1"],
            sim_args: &[],
            queue_manager: None,
            triggers: &[],
        },
    );
    let m = &rig.mirror;
    let printer_events = format!("{prefix}printer/p1/event");
    // Both replays are refused, with the reason.
    let (_, robot) = m.wait_msg("the retained pick refused", 0, |x| {
        x.topic.ends_with("/event")
            && x.json["type"] == "input_rejected"
            && x.json["message"]
                .as_str()
                .is_some_and(|t| t.contains("retained"))
    });
    assert!(
        robot.json["message"].as_str().unwrap().contains("rob-9"),
        "{robot:?}"
    );
    let (_, estop) = m.wait_msg("the retained e-stop refused", 0, |x| {
        x.topic == printer_events && x.json["type"] == "command_rejected"
    });
    assert!(
        estop.json["message"].as_str().unwrap().contains("retained"),
        "{estop:?}"
    );
    // The plate still waits, and the printer never halted.
    assert_eq!(state(&rig, "p1"), "awaiting_clear");
    assert!(
        !m.since(0)
            .iter()
            .any(|x| x.topic == printer_events && x.json["type"] == "error"),
        "the printer was halted"
    );

    // A report an hour old (queued somewhere, replayed): refused.
    let mark = m.len();
    let stale = robot_at("rob-1", "p1", SystemTime::now() - Duration::from_secs(3600));
    m.publish(&format!("{prefix}robot/rob-1/progress"), stale.as_bytes());
    // Reported as such, or counted in the rate limiter's summary when the
    // retained one opened the window a moment ago.
    let (_, refused) = m.wait_msg("the stale pick refused", mark, |x| {
        x.topic.ends_with("/event") && x.json["type"] == "input_rejected"
    });
    let text = refused.json["message"].as_str().unwrap();
    assert!(
        text.contains("old") || text.contains("more robot"),
        "{text}"
    );
    assert_eq!(state(&rig, "p1"), "awaiting_clear");

    // A fresh one clears.
    let mark = m.len();
    let fresh = robot_at("rob-1", "p1", SystemTime::now());
    m.publish(&format!("{prefix}robot/rob-1/progress"), fresh.as_bytes());
    m.wait_event(&printer_events, "plate_cleared", mark);
    assert_eq!(state(&rig, "p1"), "idle");

    // An e-stop queued by the broker while the gateway was away, stamped
    // when it was sent an hour ago: dropped at reconnect.
    rig.proxy.cut();
    let old = rfc3339(SystemTime::now() - Duration::from_secs(3600));
    let mark = m.len();
    m.publish(
        &format!("{prefix}printer/p1/command"),
        format!(r#"{{"command":"emergency_stop","timestamp":"{old}"}}"#).as_bytes(),
    );
    rig.proxy.restore();
    let (_, dropped) = m.wait_msg("the queued e-stop dropped", mark, |x| {
        x.topic == printer_events && x.json["type"] == "command_rejected"
    });
    assert!(
        dropped.json["message"].as_str().unwrap().contains("old"),
        "{dropped:?}"
    );
    assert_eq!(state(&rig, "p1"), "idle");
    eprintln!("trust: retained pick and e-stop, stale pick and queued stale e-stop: none acted");
}

/// Resident memory of a process, from /proc (KiB).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// 10,000 invalid messages: every one acknowledged (none redelivered), a
/// handful of events (one per kind and window, then a count), memory bounded.
#[test]
fn r13_a_flood_of_invalid_messages_costs_few_writes_and_bounded_memory() {
    let (prefix, gw) = ("flood/", "gw-flood");
    let rig = Rig::start(
        broker(),
        Spec {
            name: "flood",
            prefix,
            gateway: gw,
            discovery: "ha-flood",
            printers: &["p1"],
            sim_args: &[],
            queue_manager: None,
            triggers: &[],
        },
    );
    let m = &rig.mirror;
    let pid = rig.daemon_pid().unwrap();
    let rss_before = rss_kib(pid);
    let (_, seq_before) = super::rig::outbox(&rig.data);
    let topics = [
        format!("{prefix}printer/p1/assignement"),
        format!("{prefix}printer/p1/command"),
        format!("{prefix}robot/rob-1/progress"),
    ];
    let flood = 10_000usize;
    let mark = m.len();
    let started = std::time::Instant::now();
    for i in 0..flood {
        m.publish(&topics[i % topics.len()], b"{not json");
    }
    // Every rejection accounted for: the first of each kind, then counts.
    let counted = |msgs: &[super::mirror::Msg]| -> usize {
        msgs.iter()
            .filter(|x| x.topic.ends_with("/event") && x.json["type"] == "input_rejected")
            .filter_map(|x| x.json["message"].as_str())
            .map(|t| match t.split_once(" more ") {
                Some((n, _)) => n.parse::<usize>().unwrap_or(0),
                None => 1,
            })
            .sum()
    };
    m.wait("all 10,000 rejections accounted for", mark, |msgs| {
        (counted(msgs) >= flood).then_some(())
    });
    let elapsed = started.elapsed().as_secs_f64();
    let events = m
        .since(mark)
        .iter()
        .filter(|x| x.topic.ends_with("/event") && x.json["type"] == "input_rejected")
        .count();
    let (_, seq_after) = super::rig::outbox(&rig.data);
    let writes = seq_after - seq_before;
    let rss_after = rss_kib(pid);
    eprintln!(
        "flood: {flood} invalid messages in {elapsed:.1} s → {events} events, {writes} store \
         writes ({:.2}/s); RSS {rss_before} → {rss_after} KiB",
        writes as f64 / elapsed
    );
    assert_eq!(
        counted(&m.since(mark)),
        flood,
        "each rejection counted once"
    );
    assert!(
        writes as f64 <= elapsed.ceil(),
        "{writes} store writes in {elapsed:.1} s"
    );
    assert!(
        rss_after < rss_before + 16 * 1024,
        "memory grew from {rss_before} to {rss_after} KiB"
    );
}

/// `job add --id` of a job that exists never touches that job's file; an
/// empty id is refused. (Ids the old sanitiser mapped to one file name are
/// in the SHA-256 test below: local ids are plain, MQTT ids may have dots.)
#[test]
fn r13_local_jobs_cannot_replace_each_others_files() {
    let rig = Rig::start(
        broker(),
        Spec {
            name: "spool",
            prefix: "spool/",
            gateway: "gw-spool",
            discovery: "ha-spool",
            printers: &["p1"],
            sim_args: &[],
            queue_manager: None,
            triggers: &[],
        },
    );
    // The plate is not confirmed clear: jobs stay queued, files in place.
    let spool = rig.data.join("spool");
    rig.add_job("p1", "job-x", 1, 40);
    let file_of = |id: &str| spool.join(format!("{}.gcode", printgate::source::spool_name(id)));
    let file_x = file_of("job-x");
    let original = std::fs::read(&file_x).unwrap();
    let (again, _) = super::e2e_support::add_job(rig.dir(), &rig.config, "p1", "job-x", 2, 80);
    assert!(!again.status.success(), "a second job-x was accepted");
    let err = String::from_utf8_lossy(&again.stdout).into_owned()
        + &String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(
        std::fs::read(&file_x).unwrap(),
        original,
        "job-x's file was replaced"
    );

    let (empty, _) = super::e2e_support::add_job(rig.dir(), &rig.config, "p1", "", 5, 10);
    assert!(!empty.status.success(), "an empty id was accepted");
    assert!(!spool.join(".gcode").exists());
    // No upload left behind by the refusals.
    let parts = super::e2e_support::partial_files(&spool);
    assert!(parts.is_empty(), "left behind: {parts:?}");
}

/// A model whose SHA-256 differs from the assignment's `sha256` is never
/// printed (the download fails for good, the plate stays clear); the same
/// model with the right hash prints.
#[test]
fn r13_a_model_with_the_wrong_sha256_is_never_printed() {
    use super::server::{Reply, Server};
    use std::sync::Arc;
    let models = super::e2e_support::TestDir::new("trust-sha-models");
    let model = models.path().join("m.gcode");
    let moves = super::e2e_support::write_job(&model, 9, 30);
    let body = std::fs::read(&model).unwrap();
    let right = printgate::source::checksum::hex(&printgate::source::checksum::sha256(&body));
    let served = body.clone();
    let qm = Server::start_routed(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(move |r: &super::server::Request| {
            if r.line.starts_with("GET /models/") {
                Reply::new(200, served.clone())
            } else {
                Reply::new(204, "")
            }
        }),
    );
    let rig = Rig::start(
        broker(),
        Spec {
            name: "sha",
            prefix: "sha/",
            gateway: "gw-sha",
            discovery: "ha-sha",
            printers: &["p1"],
            sim_args: &[],
            queue_manager: Some(qm.url()),
            triggers: &[],
        },
    );
    let m = &rig.mirror;
    let events = "sha/printer/p1/event";
    rig.cli(&["clear", "p1"]);
    let wrong = "0".repeat(64);
    let mark = m.len();
    m.publish(
        "sha/printer/p1/assignement",
        format!(r#"{{"jobId":"bad","modelUrl":"models/m.gcode","sha256":"{wrong}"}}"#).as_bytes(),
    );
    let (_, failed) = m.wait_event(events, "job_failed", mark);
    assert_eq!(failed.json["jobId"], "bad");
    let why = failed.json["message"].as_str().unwrap();
    assert!(
        why.contains("sha256") || why.contains("SHA-256") || why.contains("checksum"),
        "{why}"
    );
    assert!(
        super::e2e_support::executed_moves(&rig.sim_log("p1")).is_empty(),
        "a line of the mismatching model was printed"
    );
    // Nothing reached the printer: the plate is still clear, the next runs.
    let mark = m.len();
    m.publish(
        "sha/printer/p1/assignement",
        format!(r#"{{"jobId":"good","modelUrl":"models/m.gcode","sha256":"{right}"}}"#).as_bytes(),
    );
    let (_, done) = m.wait_event(events, "job_completed", mark);
    assert_eq!(done.json["jobId"], "good");
    super::rig::wait_for("the simulator's log", || {
        (super::e2e_support::executed_moves(&rig.sim_log("p1")).len() >= moves.len()).then_some(())
    });
    assert_eq!(
        super::e2e_support::executed_moves(&rig.sim_log("p1")),
        moves
    );

    // Two ids the old file-name sanitiser mapped to one name
    // (`job.42` and `job_42-7302453c`) download to two files.
    let spool = rig.data.join("spool");
    let file_of = |id: &str| spool.join(format!("{}.gcode", printgate::source::spool_name(id)));
    for id in ["job.42", "job_42-7302453c"] {
        rig.cli(&["clear", "p1"]);
        let mark = m.len();
        m.publish(
            "sha/printer/p1/assignement",
            format!(r#"{{"jobId":"{id}","modelUrl":"models/m.gcode"}}"#).as_bytes(),
        );
        let (_, done) = m.wait_event(events, "job_completed", mark);
        assert_eq!(done.json["jobId"], id);
    }
    assert_ne!(file_of("job.42"), file_of("job_42-7302453c"));
    assert!(file_of("job.42").exists() && file_of("job_42-7302453c").exists());
}
