//! Helpers shared by the store's integration tests: a temp dir, config
//! seeds, jobs and outbox items, and a job walked up to `printing`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

#[path = "../../src/store/testdir.rs"]
mod testdir;

pub use testdir::TestDir;

use printgate::lifecycle::{JobState, PrinterState};
use printgate::store::{JobSource, NewJob, OutboxItem, OutboxKind, PrinterSeed, Store};

pub fn seed(id: &str, filament: &str) -> PrinterSeed {
    PrinterSeed {
        id: id.into(),
        port: format!("/dev/tty-{id}"),
        filament: Some(filament.into()),
    }
}

pub fn job(id: &str, printer: Option<&str>, filament: Option<&str>, priority: i64) -> NewJob {
    NewJob {
        id: id.into(),
        printer_id: printer.map(Into::into),
        source: JobSource::Queue,
        model_url: Some(format!("models/{id}.gcode")),
        gcode_path: None,
        filament: filament.map(Into::into),
        priority,
        estimated_s: Some(3600),
        params: Some(serde_json::json!({"infill": 20})),
        sha256: None,
    }
}

pub fn event(printer: &str, text: &str) -> OutboxItem {
    OutboxItem {
        topic: format!("device/printer/{printer}/event"),
        payload: text.as_bytes().to_vec(),
        retain: false,
        kind: OutboxKind::Event,
        printer_id: Some(printer.into()),
    }
}

pub fn progress(printer: &str, pct: u32) -> OutboxItem {
    OutboxItem {
        topic: format!("device/printer/{printer}/progress"),
        payload: pct.to_string().into_bytes(),
        retain: false,
        kind: OutboxKind::Progress,
        printer_id: Some(printer.into()),
    }
}

pub fn open_with_printers(dir: &TestDir) -> Store {
    let store = Store::open(dir.path()).unwrap();
    store
        .sync_printers(&[seed("p1", "PLA"), seed("p2", "PETG")])
        .blocking()
        .unwrap();
    store
}

/// Walks a job to `printing` on `printer`, the way the farm would.
pub fn start(store: &Store, id: &str, printer: &str) {
    store
        .add_job(job(id, Some(printer), None, 0), None)
        .blocking()
        .unwrap();
    store
        .set_job_file(id, "/spool/x.gcode", 100, 10)
        .blocking()
        .unwrap();
    store
        .transition_job(id, JobState::Ready, None, None)
        .blocking()
        .unwrap();
    store
        .set_printer_state(printer, PrinterState::Idle, Some(true), None, None)
        .blocking()
        .unwrap();
    store
        .transition_job(id, JobState::Printing, None, None)
        .blocking()
        .unwrap();
    store
        .set_printer_state(
            printer,
            PrinterState::Printing,
            Some(false),
            Some(Some(id)),
            None,
        )
        .blocking()
        .unwrap();
}

/// What the daemon does at start, against a real store: the farm core
/// builds its view from the store and decides the recovery (prints caught
/// mid-way interrupted, downloads restarted, printers offline or waiting
/// for a clear plate); its writes are applied here as the driver would.
pub fn recover(store: &Store) {
    use printgate::farm::core::{CoreSettings, Effect, FarmCore, Input, Snapshot};
    use printgate::farm::messages::Messages;
    use std::time::{Instant, SystemTime};
    let rows = store.list_printers().blocking().unwrap();
    let snapshot = Snapshot {
        printers: rows
            .iter()
            .map(|r| (r.id.clone(), r.filament.clone(), Some(r.clone())))
            .collect(),
        jobs: store.open_jobs().blocking().unwrap(),
        identities: store.identities().blocking().unwrap(),
    };
    let topics = Some(printgate::mqtt::topics::Topics::new("gw"));
    let mut core = FarmCore::new(
        CoreSettings::for_tests("gw"),
        Messages::new(topics),
        snapshot,
        Instant::now(),
        SystemTime::now(),
    );
    while let Some(effect) = core.poll_effect() {
        if let Effect::Persist { op, batch } = effect {
            store.apply(batch).blocking().unwrap();
            core.handle(
                Instant::now(),
                SystemTime::now(),
                Input::Persisted {
                    op,
                    result: Ok(printgate::store::Applied::Done),
                },
            );
        }
    }
}
