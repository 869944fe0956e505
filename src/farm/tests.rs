//! Farm behaviours that need no printer: what the farm writes to the outbox.

use super::*;
use crate::lifecycle::JobState;
use crate::mqtt::topics::Topics;
use crate::store::{AddOutcome, JobSource, NewJob, PrinterSeed};

use crate::bench::TempDir;

async fn store_with_p1(dir: &TempDir) -> Store {
    let store = Store::open(dir.path()).unwrap();
    let seed = PrinterSeed {
        id: "p1".into(),
        port: "/dev/null".into(),
        filament: None,
    };
    store.sync_printers(&[seed]).await.unwrap();
    store
}

fn farm(store: Store) -> Farm {
    let (commands, _) = mpsc::channel(1);
    let (inputs_tx, _) = mpsc::channel(1);
    let mut slot = Slot::new("p1".into(), None, commands, PrinterState::Idle, true);
    slot.connected = true;
    let settings = FarmSettings {
        spool_dir: store.data_dir().join("spool"),
        idle_announce: Duration::from_secs(10),
        poll_interval: Duration::from_secs(5),
        timeout_factor: 3.0,
        max_job: Duration::from_secs(3600),
        retention: Duration::from_secs(3600),
        max_download_retries: 1,
        triggers: Vec::new(),
    };
    let msgs = Messages::new(Some(Topics::new("gw")));
    let notify = Arc::new(Notify::new());
    Farm::new(
        settings,
        store,
        msgs,
        vec![slot],
        None,
        notify,
        None,
        inputs_tx,
    )
}

/// A job on no slot yet (queued → downloading) is announced on its own
/// printer's event topic, not on `device/printer//event`.
#[tokio::test]
async fn a_job_between_printers_is_announced_on_its_printers_topic() {
    let dir = TempDir::new("farm-transition").unwrap();
    let store = store_with_p1(&dir).await;
    let job = NewJob {
        id: "job-1".into(),
        printer_id: Some("p1".into()),
        source: JobSource::Queue,
        model_url: Some("models/m.gcode".into()),
        gcode_path: None,
        filament: None,
        priority: 0,
        estimated_s: None,
        params: None,
    };
    let added = store.add_job(job, None).await.unwrap();
    assert!(matches!(added, AddOutcome::Inserted { .. }));
    let farm = farm(store.clone());
    assert!(farm.transition("job-1", JobState::Downloading, None).await);
    let rows = store.outbox_after(0, 10).await.unwrap();
    let topics: Vec<&str> = rows.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(topics, ["device/printer/p1/event"]);
    let event: serde_json::Value = serde_json::from_slice(&rows[0].payload).unwrap();
    assert_eq!(event["printerId"], "p1");
    assert_eq!(event["type"], "job_downloading");
    drop(farm);
    store.close().await.unwrap();
}

/// After a robot clears the plate the printer is idle at 0 %: the farm's
/// job handler reads "idle at 100 %" as a print that just finished.
#[tokio::test]
async fn a_cleared_plate_is_announced_idle_at_zero_percent() {
    let dir = TempDir::new("farm-clear").unwrap();
    let store = store_with_p1(&dir).await;
    let mut farm = farm(store.clone());
    farm.set_printer(
        "p1",
        PrinterState::AwaitingClear,
        Some(false),
        None,
        "awaiting_clear",
        None,
    )
    .await;
    if let Some(slot) = farm.slots.get_mut("p1") {
        (slot.percent, slot.lines) = (100.0, Some((10, 10)));
    }
    farm.plate_cleared("p1", "robot rob-1").await.unwrap();
    let rows = store.outbox_after(0, 20).await.unwrap();
    let last = rows
        .iter()
        .rev()
        .find(|r| r.topic == "device/printer/p1/progress")
        .unwrap();
    let progress: serde_json::Value = serde_json::from_slice(&last.payload).unwrap();
    assert_eq!(progress["status"], "idle");
    assert_eq!(progress["progress"], 0);
    assert!(progress.get("line").is_none(), "{progress}");
    drop(farm);
    store.close().await.unwrap();
}

#[test]
fn failing_polls_back_off_from_the_interval_and_report_once_per_streak() {
    let mut e = super::PullErrors::default();
    let interval = Duration::from_secs(2);
    let (first, report) = e.failed(interval, "http status 500", 1);
    assert!(report);
    let (second, again) = e.failed(interval, "http status 500", 1);
    assert!(!again, "the same error twice is one streak");
    assert!(first >= interval.mul_f64(0.8) && first <= interval.mul_f64(1.2));
    assert!(second >= interval.mul_f64(1.6) && second <= interval.mul_f64(2.4));
    assert!(
        e.failed(interval, "connection refused", 1).1,
        "a new error is reported"
    );
    assert_eq!(e.succeeded(), 3);
    let (after, report) = e.failed(interval, "connection refused", 1);
    assert!(
        report && after <= interval.mul_f64(1.2),
        "a new streak starts over"
    );
}
