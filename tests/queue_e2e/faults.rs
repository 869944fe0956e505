//! What a queue manager does wrong, against the real daemon: 500s, HTML and
//! half a JSON object on `/prioritary_job`; a stalled model body, one cut
//! short of its `Content-Length`, a 2 GB `Content-Length`, `modelUrl`s that
//! climb out of `models/` (plain and percent-encoded), a missing model; and
//! the queue manager going away (connections refused) mid-print.
//!
//! Each fault must give a clear line in the daemon's log and an event, the
//! job retried or failed as it should, and never a print of a partial model.
//! No robot here: plates are cleared once by the operator, so a printer
//! that prints after a failed download took its next job without a robot.

use crate::e2e_support::wait_until;
use crate::qm::{model_path, QmJob};
use crate::rig::{Options, Rig, LIMIT, PRINTERS};
use crate::server::{End, Reply};
use std::collections::BTreeMap;

const HTML: &str = "<html><body><h1>502 Bad Gateway</h1></body></html>";
const HALF_JSON: &str = r#"{"id":"job-half","modelId":"model-ha"#;

#[test]
fn server_faults_retry_or_fail_cleanly_and_never_print_a_partial_model() {
    let mut rig = Rig::new(
        "faults",
        Options {
            robot: false,
            ..Options::default()
        },
    );
    let max_retries = rig.options.max_retries as usize;
    // Polls first meet two 500s, an HTML page and half a JSON object.
    rig.qm.poll_fault(Reply::new(500, "internal error"), 2);
    let html = Reply::new(200, HTML).header("Content-Type", "text/html");
    rig.qm.poll_fault(html, 1);
    rig.qm.poll_fault(Reply::new(200, HALF_JSON), 1);
    // Broken downloads, most urgent first, then models that do arrive.
    let cut = rig.add(QmJob::new("f-cut", 90), 2000);
    let body = rig.body(&cut);
    let short = Reply::new(200, body.clone()).end(End::CloseAfter(body.len() / 2));
    rig.qm.model_fault(&cut, short, 10);
    let huge = rig.add(QmJob::new("f-huge", 80), 300);
    let two_gb = Reply::new(200, "G28\n").content_length(Some(2 << 30));
    rig.qm.model_fault(&huge, two_gb, 10);
    let dots = rig.add(QmJob::new("f-dots", 70).model_url("../../etc/passwd"), 300);
    let encoded = QmJob::new("f-enc", 60).model_url("models/%2e%2e/%2e%2e/etc/passwd");
    let encoded = rig.add(encoded, 300);
    let missing = QmJob::new("f-404", 50);
    rig.qm.add(missing.clone(), None);
    let stall = rig.add(QmJob::new("s-stall", 40), 1500);
    let body = rig.body(&stall);
    let stalled = Reply::new(200, body.clone()).end(End::StallAfter(body.len() / 2));
    rig.qm.model_fault(&stall, stalled, 1);
    let good = [
        rig.add(QmJob::new("g-a", 30), 1000),
        rig.add(QmJob::new("g-b", 20), 1000),
    ];

    rig.start();
    rig.wait_connected();
    rig.clear_waiting();
    let failed = [&cut, &huge, &dots, &encoded, &missing];
    wait_until("every job handed out settled", LIMIT, || {
        let jobs = rig.jobs();
        jobs.len() == 8
            && jobs
                .values()
                .all(|j| j["state"] == "completed" || j["state"] == "failed")
    });
    let jobs = rig.jobs();
    let state = |j: &QmJob| jobs[&j.id]["state"].as_str().unwrap_or("").to_owned();
    let reason = |j: &QmJob| jobs[&j.id]["reason"].as_str().unwrap_or("").to_owned();

    // The polls: logged, announced, and polling went on to hand out all 8.
    let log = rig.daemon_log();
    for text in ["http status 500", "not json", "<html>", "EOF while parsing"] {
        assert!(log.contains(text), "no log line with {text:?}:\n{log}");
        rig.wait_event("queue_error", None, text);
    }
    assert_eq!(rig.qm.handed().len(), 8);
    let gaps: Vec<String> = rig
        .qm
        .gaps_after_faults()
        .iter()
        .map(|(p, d)| format!("{p} {:.1} s", d.as_secs_f64()))
        .collect();
    assert_eq!(gaps.len(), 4, "polling stopped after a fault: {gaps:?}");
    eprintln!(
        "queue e2e, next poll after a poll fault (back-off): {}",
        gaps.join(", ")
    );

    // The downloads.
    let expect: [(&QmJob, &str, usize); 5] = [
        (&cut, "body cut off after", max_retries + 1),
        (&huge, "larger than the", 1),
        (&dots, "unsafe model url", 0),
        (&encoded, "unsafe model url", 0),
        (&missing, "http status 404", 1),
    ];
    for (job, text, requests) in expect {
        assert_eq!(state(job), "failed", "{}", job.id);
        assert!(reason(job).contains(text), "{}: {}", job.id, reason(job));
        let line = format!("job {}: download failed for good:", job.id);
        assert!(log.contains(&line), "no {line:?} in the log:\n{log}");
        rig.wait_event("job_failed", Some(&job.id), text);
        if job.model_url.is_none() {
            assert_eq!(rig.qm.count(&model_path(job)), requests, "{}", job.id);
        }
        let spool = rig.dir.path().join("data/spool");
        assert!(!spool.join(format!("{}.gcode", job.id)).exists());
        assert!(!spool.join(format!(".{}.part", job.id)).exists());
    }
    assert!(log.contains("retrying (up to 2 times)"), "{log}");
    let retries = rig
        .events()
        .iter()
        .filter(|(_, e)| e["type"] == "download_retry" && e["jobId"] == cut.id.as_str())
        .count();
    assert_eq!(retries, max_retries, "one download_retry event per retry");
    // Unsafe URLs were never requested: only polls and known models were.
    for r in rig.qm.requests() {
        let p = r.path();
        assert!(
            p == "/prioritary_job" || (p.starts_with("/models/model-") && !p.contains('%')),
            "unexpected request {}",
            r.line
        );
    }
    // The stalled body timed out, was fetched again and printed whole.
    assert_eq!(state(&stall), "completed");
    assert_eq!(rig.qm.count(&model_path(&stall)), 2);
    assert!(log.contains("read timed out"), "{log}");
    rig.wait_event("download_retry", Some(&stall.id), "read timed out");
    rig.printed_whole(&stall.id);
    for job in &good {
        assert_eq!(state(job), "completed", "{}", job.id);
        rig.printed_whole(&job.id);
    }
    // Never a partial model: failed jobs printed nothing at all.
    for job in failed {
        assert!(rig.executed(&job.id).is_empty(), "{} printed", job.id);
    }
    // One clear per printer (the operator's), yet every printer whose
    // download failed went on to print: no robot was needed.
    let cleared = rig
        .events()
        .iter()
        .filter(|(_, e)| e["type"] == "plate_cleared")
        .count();
    assert_eq!(cleared, PRINTERS.len());
    let mut by_printer: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for h in rig.qm.handed() {
        by_printer.entry(h.printer).or_default().push(h.job);
    }
    let moved_on = by_printer
        .values()
        .filter(|jobs| {
            let first_ok = jobs.iter().position(|j| rig.job_state(j) == "completed");
            first_ok.is_some_and(|i| i > 0)
        })
        .count();
    assert!(
        moved_on > 0,
        "no printer printed after a failure: {by_printer:?}"
    );
    eprintln!(
        "queue e2e, faults: 4 poll faults, 5 downloads failed for good, 1 stall retried; {moved_on} printer(s) printed after a failed download without a robot; {} polls",
        rig.qm.count("/prioritary_job")
    );
    refused_while_printing(&mut rig);
}

/// The queue manager goes away while a printer prints: the print finishes,
/// the refused polls are logged and announced, and pulling resumes when
/// the queue manager is back.
fn refused_while_printing(rig: &mut Rig) {
    let long = rig.add(QmJob::new("g-long", 10), 4000);
    let after = rig.add(QmJob::new("g-after", 5), 500);
    let states = rig.printer_states();
    assert!(states.values().all(|s| s == "awaiting_clear"), "{states:?}");
    crate::e2e_support::cli(&["clear", "p1", "--config", rig.cfg()]);
    rig.wait_job(&long.id, "printing");
    rig.qm.down();
    crate::e2e_support::cli(&["clear", "p2", "--config", rig.cfg()]);
    rig.wait_event("queue_error", None, "connection refused");
    assert!(rig.daemon_log().contains("connection refused"));
    rig.wait_job(&long.id, "completed");
    assert_eq!(rig.printed_whole(&long.id), "p1");
    assert_eq!(
        rig.job_state(&after.id),
        "",
        "pulled while the queue manager was down"
    );
    rig.qm.up();
    rig.wait_job(&after.id, "completed");
    assert_eq!(rig.printed_whole(&after.id), "p2");
    rig.check_no_repeats();
    rig.stop();
    eprintln!("queue e2e, queue manager down mid-print: the print finished, polls resumed once it was back");
}

/// Issue 12, defect 15: SIGTERM while a model download stalls (a slow
/// read with a 30 s time-out, retries with back-off) ends the daemon within
/// systemd's budget (printgate promises 10 s of `TimeoutStopSec=30`), and
/// the next start removes the partial file and downloads again.
#[test]
fn r12_15_stop_during_a_stalled_download_is_prompt_and_leaves_nothing() {
    let mut rig = Rig::new(
        "stopdl",
        Options {
            read_timeout_s: 30,
            max_retries: 5,
            ..Options::default()
        },
    );
    let job = rig.add(QmJob::new("stall", 1), 800);
    let body = rig.body(&job);
    let held = Reply::new(200, body.clone()).end(End::StallAfter(body.len() / 2));
    rig.qm.model_fault(&job, held, 1);
    rig.start();
    rig.wait_connected();
    rig.clear_waiting();
    wait_until("the model half sent", LIMIT, || {
        rig.qm.count(&model_path(&job)) == 1 && rig.job_state(&job.id) == "downloading"
    });
    let asked = std::time::Instant::now();
    rig.stop();
    let took = asked.elapsed();
    eprintln!(
        "stop during a stalled download: {:.2} s",
        took.as_secs_f64()
    );
    // The contract with systemd (TimeoutStopSec=30), not a speed figure.
    assert!(
        took <= std::time::Duration::from_secs(10),
        "stop took {took:?}"
    );
    // The partial file is gone; the next start downloads again.
    let spool = rig.dir().join("data").join("spool");
    let parts = crate::e2e_support::partial_files(&spool);
    assert!(parts.is_empty(), "left behind: {parts:?}");
    rig.start();
    rig.clear_waiting();
    rig.wait_job(&job.id, "completed");
    rig.check_no_repeats();
}
