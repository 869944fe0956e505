//! Jobs, printers, recovery, retention and the reader through the public
//! API, on a real SQLite file in a temp dir.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use printgate::lifecycle::{JobState, PrinterState};
use printgate::store::{AddOutcome, Store, StoreError, StoreReader};
use std::time::Duration;

#[test]
fn job_is_accepted_once_with_its_event() {
    let dir = TestDir::new("accept");
    let store = open_with_printers(&dir);
    let first = store.add_job(
        job("j1", None, Some("PLA"), 5),
        Some(event("p1", "accepted")),
    );
    assert_eq!(
        first.blocking().unwrap(),
        AddOutcome::Inserted { seq: Some(1) }
    );
    let again = store.add_job(job("j1", None, Some("PETG"), 9), Some(event("p1", "again")));
    assert_eq!(again.blocking().unwrap(), AddOutcome::Duplicate);
    assert_eq!(
        store.outbox_len().blocking().unwrap(),
        1,
        "duplicate wrote no event"
    );

    let got = store.get_job("j1").blocking().unwrap().unwrap();
    assert_eq!((got.state, got.priority), (JobState::Queued, 5));
    assert_eq!(got.filament.as_deref(), Some("PLA"));
    assert_eq!(got.params, Some(serde_json::json!({"infill": 20})));
    let json = serde_json::to_value(&got).unwrap();
    assert_eq!(json["printerId"], serde_json::Value::Null);
    assert_eq!(json["state"], "queued");
}

#[test]
fn job_for_unknown_printer_is_refused() {
    let dir = TestDir::new("unknown-printer");
    let store = open_with_printers(&dir);
    let err = store
        .add_job(job("j1", Some("nope"), None, 0), None)
        .blocking()
        .unwrap_err();
    assert!(
        matches!(err, StoreError::UnknownPrinter(ref p) if p == "nope"),
        "{err}"
    );
}

#[test]
fn transitions_follow_the_table_and_leave_history() {
    let dir = TestDir::new("transitions");
    let store = open_with_printers(&dir);
    start(&store, "j1", "p1");
    let err = store
        .transition_job("j1", JobState::Queued, None, None)
        .blocking()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "job j1: illegal transition printing -> queued"
    );
    let seq = store
        .transition_job(
            "j1",
            JobState::Completed,
            Some("all lines acked"),
            Some(event("p1", "done")),
        )
        .blocking()
        .unwrap();
    assert_eq!(seq, Some(1));
    let err = store
        .transition_job("j1", JobState::Printing, None, None)
        .blocking()
        .unwrap_err();
    assert!(matches!(err, StoreError::IllegalTransition { .. }));
    let err = store
        .transition_job("zz", JobState::Ready, None, None)
        .blocking()
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownJob(_)));

    let j = store.get_job("j1").blocking().unwrap().unwrap();
    assert_eq!(j.state, JobState::Completed);
    assert_eq!(j.reason.as_deref(), Some("all lines acked"));
    assert!(j.started_at.is_some() && j.finished_at.is_some());
    assert_eq!((j.bytes_total, j.lines_total), (Some(100), Some(10)));
    let steps: Vec<_> = store
        .job_history("j1")
        .blocking()
        .unwrap()
        .into_iter()
        .map(|e| (e.from_state, e.to_state))
        .collect();
    use JobState::*;
    assert_eq!(
        steps,
        [
            (None, Queued),
            (Some(Queued), Ready),
            (Some(Ready), Printing),
            (Some(Printing), Completed)
        ]
    );
}

#[test]
fn plate_must_be_confirmed_to_leave_awaiting_clear() {
    let dir = TestDir::new("plate");
    let store = open_with_printers(&dir);
    start(&store, "j1", "p1");
    let set = |state, plate| {
        store
            .set_printer_state("p1", state, plate, None, None)
            .blocking()
    };
    set(PrinterState::AwaitingClear, Some(true)).unwrap();
    let p1 = store.list_printers().blocking().unwrap().remove(0);
    assert!(
        !p1.plate_clear,
        "entering awaiting_clear forgets any clear plate"
    );
    assert!(matches!(
        set(PrinterState::Idle, None),
        Err(StoreError::PlateNotClear { .. })
    ));
    assert!(matches!(
        set(PrinterState::Printing, Some(true)),
        Err(StoreError::IllegalPrinterTransition { .. })
    ));
    set(PrinterState::Idle, Some(true)).unwrap();
    let p1 = store.list_printers().blocking().unwrap().remove(0);
    assert_eq!((p1.state, p1.plate_clear), (PrinterState::Idle, true));
    assert_eq!(p1.current_job.as_deref(), Some("j1"), "kept unless cleared");
}

#[test]
fn printers_dropped_from_config_are_kept_offline() {
    let dir = TestDir::new("sync");
    let store = open_with_printers(&dir);
    store
        .set_printer_state("p2", PrinterState::Idle, None, None, None)
        .blocking()
        .unwrap();
    store
        .sync_printers(&[seed("p1", "PETG")])
        .blocking()
        .unwrap();
    let printers = store.list_printers().blocking().unwrap();
    assert_eq!(printers.len(), 2);
    assert_eq!(printers[0].filament.as_deref(), Some("PETG"));
    assert_eq!(printers[1].state, PrinterState::Offline);
}

#[test]
fn recovery_interrupts_prints_and_restarts_downloads() {
    let dir = TestDir::new("recover");
    {
        let store = open_with_printers(&dir);
        start(&store, "printing", "p1");
        store
            .add_job(job("dl", None, None, 0), None)
            .blocking()
            .unwrap();
        store
            .transition_job("dl", JobState::Downloading, None, None)
            .blocking()
            .unwrap();
        store
            .set_printer_state("p2", PrinterState::Idle, Some(true), None, None)
            .blocking()
            .unwrap();
        // No close: the process "dies" here.
    }
    let store = Store::open(dir.path()).unwrap();
    recover(&store);

    let j = store.get_job("printing").blocking().unwrap().unwrap();
    assert_eq!(j.state, JobState::Interrupted);
    assert_eq!(
        store.get_job("dl").blocking().unwrap().unwrap().state,
        JobState::Queued
    );
    let printers = store.list_printers().blocking().unwrap();
    assert_eq!(
        (printers[0].state, printers[0].plate_clear),
        (PrinterState::AwaitingClear, false)
    );
    assert_eq!(printers[1].state, PrinterState::Offline);
    let rows = store.outbox_after(0, 10).blocking().unwrap();
    let kinds: Vec<String> = rows
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.payload).unwrap())
        .map(|v| format!("{} {}", v["jobId"].as_str().unwrap_or(""), v["type"]))
        .collect();
    assert_eq!(
        kinds,
        ["printing \"job_interrupted\"", "dl \"job_queued\""],
        "the recovery announces each move"
    );
    // A second start finds nothing left to recover.
    recover(&store);
    assert_eq!(
        store.outbox_after(0, 10).blocking().unwrap().len(),
        2,
        "idempotent"
    );
}

#[test]
fn next_job_is_most_urgent_then_oldest_and_matches_filament() {
    let dir = TestDir::new("next");
    let store = open_with_printers(&dir);
    for (id, printer, filament, prio) in [
        ("low", None, Some("PLA"), 1),
        ("petg", None, Some("PETG"), 50),
        ("other-printer", Some("p2"), None, 99),
        ("high-a", None, Some("PLA"), 10),
        ("high-b", Some("p1"), None, 10),
        ("any", None, None, 10),
    ] {
        store
            .add_job(job(id, printer, filament, prio), None)
            .blocking()
            .unwrap();
    }
    let mut order = Vec::new();
    while let Some(j) = store.next_job_for("p1", Some("PLA")).blocking().unwrap() {
        store
            .transition_job(&j.id, JobState::Cancelled, None, None)
            .blocking()
            .unwrap();
        order.push(j.id);
    }
    assert_eq!(order, ["high-a", "high-b", "any", "low"]);
}

#[test]
fn record_progress_updates_the_job_and_queues_nothing() {
    let dir = TestDir::new("progress");
    let store = open_with_printers(&dir);
    start(&store, "j1", "p1");
    store.record_progress("j1", 5, 50.0).blocking().unwrap();
    let j = store.get_job("j1").blocking().unwrap().unwrap();
    assert_eq!((j.lines_done, j.progress), (5, 50.0));
    assert_eq!(store.outbox_len().blocking().unwrap(), 0, "a last value");
    store.record_progress("j1", 6, f64::NAN).blocking().unwrap();
    let j = store.get_job("j1").blocking().unwrap().unwrap();
    assert_eq!(j.progress, 0.0, "NaN from a broken estimate is stored as 0");
    let err = store
        .set_printer_state(
            "p1",
            PrinterState::Printing,
            None,
            Some(Some("ghost")),
            None,
        )
        .blocking()
        .unwrap_err();
    assert!(
        matches!(err, StoreError::UnknownJob(ref j) if j == "ghost"),
        "{err}"
    );
    let err = store
        .record_progress("nope", 1, 1.0)
        .blocking()
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownJob(_)));
}

#[test]
fn retention_purges_only_old_finished_jobs() {
    let dir = TestDir::new("purge");
    let store = open_with_printers(&dir);
    start(&store, "done", "p1");
    store
        .transition_job("done", JobState::Completed, None, None)
        .blocking()
        .unwrap();
    store
        .add_job(job("waiting", None, None, 0), None)
        .blocking()
        .unwrap();
    let kept = store
        .purge_finished(Duration::from_secs(3600))
        .blocking()
        .unwrap();
    assert!(kept.is_empty());
    let purged = store.purge_finished(Duration::ZERO).blocking().unwrap();
    assert_eq!(purged.len(), 1);
    assert_eq!(purged[0].gcode_path.as_deref(), Some("/spool/x.gcode"));
    assert!(store.job_history("done").blocking().unwrap().is_empty());
    let printers = store.list_printers().blocking().unwrap();
    assert_eq!(
        printers[0].current_job, None,
        "purged job unlinked from its printer"
    );
    assert_eq!(store.list_jobs(10).blocking().unwrap().len(), 1);
}

#[test]
fn reader_sees_committed_rows_while_the_writer_runs() {
    let dir = TestDir::new("reader");
    let store = open_with_printers(&dir);
    store
        .add_job(job("j1", Some("p1"), None, 0), None)
        .blocking()
        .unwrap();
    let reader = StoreReader::open(dir.path()).unwrap();
    assert_eq!(reader.list_jobs(10).unwrap()[0].id, "j1");
    assert_eq!(reader.list_printers().unwrap().len(), 2);
    assert_eq!(reader.job_history("j1").unwrap().len(), 1);
    assert_eq!(reader.outbox_len().unwrap(), 0);
    store
        .add_job(job("j2", None, None, 0), None)
        .blocking()
        .unwrap();
    assert!(reader.get_job("j2").unwrap().is_some());
}

#[tokio::test]
async fn async_callers_await_the_same_operations() {
    let dir = TestDir::new("async");
    let store = Store::open(dir.path()).unwrap();
    store.sync_printers(&[seed("p1", "PLA")]).await.unwrap();
    let outcome = store.add_job(job("j1", None, None, 0), None).await.unwrap();
    assert!(matches!(outcome, AddOutcome::Inserted { seq: None }));
    let other = store.clone();
    assert_eq!(other.list_jobs(5).await.unwrap().len(), 1);
    store.close().await.unwrap();
    assert!(matches!(other.outbox_len().await, Err(StoreError::Closed)));
}

#[test]
fn a_batch_commits_together_with_one_fsync_or_not_at_all() {
    use printgate::store::{Applied, Batch, Write};
    let dir = TestDir::new("batch");
    let store = open_with_printers(&dir);
    start(&store, "j1", "p1");
    let before = store.io_stats();
    let finish = Batch {
        writes: vec![
            Write::JobProgress {
                id: "j1".into(),
                lines_done: 99,
                percent: 100.0,
            },
            Write::Job {
                id: "j1".into(),
                to: JobState::Completed,
                reason: None,
            },
            Write::Printer {
                id: "p1".into(),
                state: PrinterState::AwaitingClear,
                plate_clear: None,
                current_job: Some(None),
            },
        ],
        outbox: vec![
            event("p1", "job_completed"),
            event("p1", "awaiting_clear"),
            event("p1", "job_complete topic"),
        ],
        durable: true,
    };
    assert_eq!(store.apply(finish).blocking().unwrap(), Applied::Done);
    let after = store.io_stats();
    assert_eq!(after.commits_durable - before.commits_durable, 1);
    assert_eq!(after.syncs - before.syncs, 1);
    let j = store.get_job("j1").blocking().unwrap().unwrap();
    assert_eq!((j.state, j.lines_done), (JobState::Completed, 99));
    assert_eq!(store.outbox_len().blocking().unwrap(), 3);
    // All or nothing: an illegal move rolls back the outbox row with it.
    let bad = Batch {
        writes: vec![Write::Job {
            id: "j1".into(),
            to: JobState::Printing,
            reason: None,
        }],
        outbox: vec![event("p1", "lost")],
        durable: true,
    };
    let err = store.apply(bad).blocking().unwrap_err();
    assert!(matches!(err, StoreError::IllegalTransition { .. }), "{err}");
    assert_eq!(
        store.outbox_len().blocking().unwrap(),
        3,
        "nothing of it stayed"
    );
    // A last value, written without fsync.
    let before = store.io_stats();
    let progress = Batch {
        writes: vec![Write::JobProgress {
            id: "j1".into(),
            lines_done: 100,
            percent: 100.0,
        }],
        outbox: Vec::new(),
        durable: false,
    };
    store.apply(progress).blocking().unwrap();
    assert_eq!(store.io_stats().syncs, before.syncs);
}
