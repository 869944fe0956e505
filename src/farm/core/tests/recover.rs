//! Start-up recovery against the store's rows: what memory believes must
//! also be written, since `printgate status` reads the rows.

use crate::farm::core::{CoreSettings, Effect, FarmCore, Snapshot};
use crate::farm::messages::Messages;
use crate::lifecycle::{JobState, PrinterState};
use crate::mqtt::topics::Topics;
use crate::store::{Job, JobSource, PrinterRow, Write};
use std::time::{Duration, Instant, SystemTime};

fn printer_row(state: PrinterState, job: Option<&str>) -> PrinterRow {
    PrinterRow {
        current_job: job.map(str::to_owned),
        ..PrinterRow::for_tests("p1", "/dev/p1", state)
    }
}

fn job_row(state: JobState) -> Job {
    Job {
        id: "j1".into(),
        printer_id: Some("p1".into()),
        source: JobSource::Mqtt,
        model_url: None,
        gcode_path: Some("/spool/j1.gcode".into()),
        filament: None,
        priority: 0,
        estimated_s: None,
        state,
        reason: None,
        lines_done: 10,
        lines_total: Some(100),
        bytes_done: 0,
        bytes_total: None,
        progress: 10.0,
        created_at: 0,
        started_at: None,
        finished_at: None,
        updated_at: 0,
        params: None,
        sha256: None,
    }
}

#[test]
fn r16_a_printer_caught_printing_is_written_awaiting_clear() {
    let snapshot = Snapshot {
        printers: vec![(
            "p1".into(),
            None,
            Some(printer_row(PrinterState::Printing, Some("j1"))),
        )],
        jobs: vec![job_row(JobState::Printing)],
        identities: Vec::new(),
    };
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_749_976_200);
    let mut core = FarmCore::new(
        CoreSettings::for_tests("gw"),
        Messages::new(Some(Topics::new("gw"))),
        snapshot,
        Instant::now(),
        wall,
    );
    let mut writes = Vec::new();
    while let Some(e) = core.poll_effect() {
        if let Effect::Persist { batch, .. } = e {
            writes.extend(batch.writes);
        }
    }
    let row = writes.iter().find_map(|w| match w {
        Write::Printer { id, state, .. } if id == "p1" => Some(*state),
        _ => None,
    });
    assert_eq!(
        row,
        Some(PrinterState::AwaitingClear),
        "the row keeps saying printing: {writes:?}"
    );
}
