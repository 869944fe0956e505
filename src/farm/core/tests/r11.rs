//! Issue 11: the seed's vocabulary, push-only mode, commands naming their job.

use super::*;

#[test]
fn r11_the_handler_sees_busy_while_a_job_downloads_and_idle_100_when_it_ends() {
    let mut h = H::new();
    h.ready("p1");
    assert_eq!(
        wire(&h.last_progress("p1")),
        ("idle".into(), 0, Value::Null, "idle".into())
    );
    h.assign("p1", "j1", 1);
    // Downloading: busy, with the job (a handler must not assign again).
    assert_eq!(
        wire(&h.last_progress("p1")),
        ("printing".into(), 0, "j1".into(), "downloading".into())
    );
    h.tick(10);
    let beat = h
        .messages()
        .into_iter()
        .rev()
        .find(|(t, _)| t.ends_with("p1/progress"));
    assert_eq!(
        beat.map(|(_, v)| v["status"].clone()),
        Some("printing".into())
    );
    let (_, dest) = h.last_download().unwrap();
    h.downloaded("j1", dest);
    h.scanned("j1");
    h.report(
        "p1",
        ReportKind::JobStarted {
            job_id: "j1".into(),
        },
    );
    h.finish("p1", "j1", JobOutcome::Completed, 10);
    // The seed's completion signal, repeated until the plate is clear.
    let done = h.last_progress("p1");
    assert_eq!(
        wire(&done),
        ("idle".into(), 100, "j1".into(), "awaiting_clear".into())
    );
    assert_eq!(done["outcome"], "completed");
    assert_eq!(done["gatewayId"], "gw");
    h.tick(11);
    let beat = h
        .messages()
        .into_iter()
        .rev()
        .find(|(t, _)| t.ends_with("p1/progress"));
    let beat = beat.map(|(_, v)| wire(&v));
    assert_eq!(
        beat,
        Some(("idle".into(), 100, "j1".into(), "awaiting_clear".into()))
    );
    // job_complete for every outcome.
    let topics: Vec<String> = h.messages().into_iter().map(|(t, _)| t).collect();
    assert!(topics.contains(&"device/printer/p1/job_complete/j1".to_owned()));
    // The robot clears: idle, 0, no job.
    h.feed(Input::Robot {
        progress: robot("p1", "rob-1", h.wall()),
        retained: false,
    });
    assert_eq!(
        wire(&h.last_progress("p1")),
        ("idle".into(), 0, Value::Null, "idle".into())
    );
}

#[test]
fn r11_a_failed_download_leaves_the_plate_clear_and_the_printer_idle() {
    let mut h = H::new();
    h.ready("p1");
    h.assign("p1", "j1", 1);
    h.feed(Input::Downloaded {
        job: "j1".into(),
        result: Err("http 404".into()),
    });
    assert_eq!(
        wire(&h.last_progress("p1")),
        ("idle".into(), 0, Value::Null, "idle".into())
    );
    let complete: Vec<(String, Value)> = h
        .messages()
        .into_iter()
        .filter(|(t, _)| t.ends_with("job_complete/j1"))
        .collect();
    assert_eq!(complete.len(), 1);
    assert_eq!(complete[0].1["outcome"], "failed");
    assert_eq!(h.state("p1"), PrinterState::Idle);
}

#[test]
fn r11_cancel_naming_another_printers_job_is_rejected() {
    let mut h = H::new();
    h.ready("p1");
    h.ready("p2");
    h.print("p1", "j1");
    h.assign("p2", "j2", 2);
    h.take();
    // On p1's topic, naming p2's job: refused, nothing cancelled.
    h.command("p1", Command::Cancel, Some("j2"));
    let rejected = h.events("command_rejected");
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0]["message"]
        .as_str()
        .unwrap()
        .contains("not printing"));
    assert!(h
        .take()
        .iter()
        .all(|e| !matches!(e, Effect::Printer { .. })));
    assert!(h.core.jobs().any(|j| j.id == "j2" && j.stop.is_none()));
    // Naming p1's own job: cancelled on the printer.
    h.command("p1", Command::Cancel, Some("j1"));
    assert!(h.take().iter().any(|e| matches!(
        e,
        Effect::Printer { printer, cmd: PrinterCommand::Cancel } if printer == "p1"
    )));
    // Without a job id: whatever p2 holds (its download) is cancelled.
    h.command("p2", Command::Cancel, None);
    assert!(h
        .take()
        .iter()
        .any(|e| matches!(e, Effect::AbortDownload { job } if job == "j2")));
}

#[test]
fn r11_device_printers_only_when_this_gateway_owns_it() {
    for owns in [false, true] {
        let mut h = H::with(|s| s.publish_printers_list = owns);
        h.connect("p1");
        let lists = h
            .messages()
            .iter()
            .filter(|(t, _)| t == "device/printers")
            .count();
        assert_eq!(lists > 0, owns, "publish_printers_list = {owns}");
    }
}

#[test]
fn r11_gateway_events_go_to_the_gateways_own_topic() {
    let mut h = H::new();
    h.feed(Input::Invalid {
        printer: None,
        kind: "robot".into(),
        problem: "device/robot/x/progress: invalid json".into(),
        ack: Some(5),
    });
    let topics: Vec<String> = h.messages().into_iter().map(|(t, _)| t).collect();
    assert!(
        topics.contains(&"device/gateway/gw/event".to_owned()),
        "{topics:?}"
    );
    assert!(!topics.iter().any(|t| t.contains("printer/gateway")));
    assert_eq!(h.acks(), [5]);
}
