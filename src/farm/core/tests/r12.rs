//! Issue 12: the defects found by reading, each one a regression test.

use super::*;

/// #1: a printer that drops while its job's file is checked is not left
/// blocked with a job stuck in `printing`.
#[test]
fn r12_1_a_printer_dropping_during_the_file_check_is_not_blocked() {
    let mut h = H::new();
    h.ready("p1");
    h.assign("p1", "j1", 1);
    let (_, dest) = h.last_download().unwrap();
    h.downloaded("j1", dest);
    h.report(
        "p1",
        ReportKind::Offline {
            reason: "unplugged".into(),
        },
    );
    h.scanned("j1");
    assert!(!h.started("p1", "j1"), "started on an offline printer");
    assert_eq!(h.held("p1"), None);
    assert!(h
        .core
        .jobs()
        .any(|j| j.id == "j1" && j.state == JobState::Ready));
    // Back: the same job starts (nothing was printed, the plate is clear).
    h.connect("p1");
    h.scanned("j1");
    assert!(h.started("p1", "j1"));
}

/// #1 (the other half): a start the printer refuses puts the job back.
#[test]
fn r12_1_a_refused_start_requeues_the_job() {
    let mut h = H::new();
    h.ready("p1");
    h.print("p1", "j0");
    h.finish("p1", "j0", JobOutcome::Completed, 10);
    h.command("p1", Command::ClearPlate, None);
    h.assign("p1", "j1", 1);
    let (_, dest) = h.last_download().unwrap();
    h.downloaded("j1", dest);
    h.scanned("j1");
    assert!(h.started("p1", "j1"));
    h.report(
        "p1",
        ReportKind::Rejected {
            reason: "printer is offline".into(),
            job_id: Some("j1".into()),
        },
    );
    // Back to ready, the printer idle, and the job is scheduled again.
    assert!(h
        .core
        .jobs()
        .any(|j| j.id == "j1" && j.state == JobState::Ready));
    assert_eq!(h.state("p1"), PrinterState::Idle);
    assert_eq!(h.held("p1"), Some(("j1".into(), Phase::Scanning)));
}

/// #3: no estimate, however absurd, panics or disarms the time limit.
/// Job `j1` on `p1`, stating `estimated_time = secs`: assigned, fetched,
/// checked (and so started).
fn start_with_estimate(h: &mut H, secs: u64) {
    let mut a = assignment("j1");
    a.estimated_time = Some(secs);
    h.feed(Input::Assignment {
        printer: "p1".into(),
        assignment: a,
        warnings: Vec::new(),
        ack: None,
    });
    let (_, dest) = h.last_download().unwrap();
    h.downloaded("j1", dest);
    h.scanned("j1");
}

#[test]
fn r12_3_absurd_estimates_never_panic() {
    let mut h = H::with(|s| s.timeout_factor = 100.0);
    h.ready("p1");
    start_with_estimate(&mut h, u64::MAX);
    assert!(h.started("p1", "j1"));
    let deadline = h
        .core
        .printers()
        .find(|p| p.id == "p1")
        .and_then(|p| p.held.as_ref())
        .and_then(|h| h.deadline);
    assert!(deadline.is_some());
}

/// #9: no acknowledgement without a durable row; the insert is retried.
#[test]
fn r12_9_no_ack_before_the_job_is_stored() {
    let mut h = H::new();
    h.ready("p1");
    h.store_down = true;
    h.assign("p1", "j1", 7);
    assert!(h.acks().is_empty(), "acked while the store fails");
    assert!(h
        .out
        .iter()
        .any(|e| matches!(e, Effect::Status(s) if s.contains("store failing"))));
    h.tick(1);
    assert!(h.acks().is_empty());
    h.store_down = false;
    h.tick(2);
    assert_eq!(h.acks(), [7]);
    // And it prints.
    assert!(h.last_download().is_some());
}

/// #11: the time-limit cancel is sent again while the job has not ended.
#[test]
fn r12_11_the_time_limit_keeps_cancelling_until_the_job_ends() {
    let mut h = H::new();
    h.ready("p1");
    start_with_estimate(&mut h, 1);
    h.take();
    let cancels = |h: &mut H| {
        h.take()
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Effect::Printer {
                        cmd: PrinterCommand::Cancel,
                        ..
                    }
                )
            })
            .count()
    };
    h.tick(4);
    assert_eq!(cancels(&mut h), 1);
    h.tick(10);
    assert_eq!(cancels(&mut h), 0, "re-sent too soon");
    h.tick(25);
    assert_eq!(cancels(&mut h), 1, "the lost cancel was not re-sent");
    assert_eq!(h.events("job_timeout").len(), 1);
}

/// #13: the plate flag goes down in the very write that says printing.
#[test]
fn r12_13_the_printing_write_clears_the_plate_flag() {
    let mut h = H::new();
    h.ready("p1");
    h.print("p1", "j1");
    let printing = h.applied.iter().flat_map(|b| b.writes.iter()).find(|w| {
        matches!(
            w,
            Write::Printer {
                state: PrinterState::Printing,
                ..
            }
        )
    });
    assert!(
        matches!(
            printing,
            Some(Write::Printer {
                plate_clear: Some(false),
                ..
            })
        ),
        "{printing:?}"
    );
}

/// A start refused because the connection changed (the task counts its
/// losses) is decided again on the new connection, never run behind the
/// farm's back.
#[test]
fn r12_a_start_from_before_a_printer_loss_is_settled_by_the_task() {
    let mut h = H::new();
    h.ready("p1");
    h.assign("p1", "j1", 1);
    let (_, dest) = h.last_download().unwrap();
    h.downloaded("j1", dest);
    h.scanned("j1");
    let session = h.out.iter().find_map(|e| match e {
        Effect::Printer {
            cmd: PrinterCommand::StartJob { session, .. },
            ..
        } => Some(*session),
        _ => None,
    });
    assert_eq!(session, Some(0));
    h.report(
        "p1",
        ReportKind::Fault {
            reason: "reset".into(),
        },
    );
    // The start is still in flight: not ended by the core on its own.
    assert_eq!(h.held("p1").map(|(j, _)| j), Some("j1".into()));
    h.connect("p1");
    h.report(
        "p1",
        ReportKind::Rejected {
            reason: "the connection changed".into(),
            job_id: Some("j1".into()),
        },
    );
    assert_eq!(h.held("p1"), None);
    // After a fault the plate is asked for again, then the job restarts.
    assert_eq!(h.state("p1"), PrinterState::AwaitingClear);
    h.take();
    h.command("p1", Command::ClearPlate, None);
    h.scanned("j1");
    let again = h.take().into_iter().find_map(|e| match e {
        Effect::Printer {
            cmd: PrinterCommand::StartJob { session, .. },
            ..
        } => Some(session),
        _ => None,
    });
    assert_eq!(again, Some(1));
}
