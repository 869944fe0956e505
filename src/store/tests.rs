//! Store tests that need crate internals: migrations, refusal of bad files.
//! Behaviour through the public API is tested in `tests/store.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::testdir::TestDir;
use super::*;

fn user_version(conn: &Connection) -> i64 {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn fresh_database_is_at_current_version_in_wal_mode() {
    let dir = TestDir::new("fresh");
    let store = Store::open(dir.path()).unwrap();
    store.close().blocking().unwrap();
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    assert_eq!(user_version(&conn), SCHEMA_VERSION);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert!(dir.path().join(SPOOL_DIR).is_dir());
}

#[test]
fn v1_database_opens_and_upgrades_keeping_rows() {
    let dir = TestDir::new("v1");
    {
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        schema::migrate(&conn, 1).unwrap();
        assert_eq!(user_version(&conn), 1);
        conn.execute(
            "INSERT INTO jobs (id, source, state, created_at, updated_at)
             VALUES ('old-job', 'queue', 'queued', 1, 1)",
            [],
        )
        .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let job = store.get_job("old-job").blocking().unwrap().unwrap();
    assert_eq!(job.state, JobState::Queued);
    store.close().blocking().unwrap();

    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    assert_eq!(user_version(&conn), 2);
    let index: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'outbox_printer'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(index, 1);
}

#[test]
fn newer_schema_is_refused() {
    let dir = TestDir::new("newer");
    {
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::TooNew { found, supported }
            if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
        "{err}"
    );
    let err = StoreReader::open(dir.path()).err().unwrap();
    assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
}

#[test]
fn garbage_file_is_reported_corrupt_with_its_path() {
    let dir = TestDir::new("garbage");
    let path = dir.path().join(DB_FILE);
    let garbage: Vec<u8> = (0..16384u32).map(|i| (i * 7 + 13) as u8).collect();
    std::fs::write(&path, garbage).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    match &err {
        StoreError::Corrupt { path: p, .. } => assert_eq!(p, &path),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(err.to_string().contains("printgate.db"), "{err}");
}

#[test]
fn damaged_page_is_reported_corrupt() {
    let dir = TestDir::new("damaged");
    let store = Store::open(dir.path()).unwrap();
    store.close().blocking().unwrap();
    let path = dir.path().join(DB_FILE);
    // Checkpoint everything into the main file, then smash page 2 onwards.
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")
            .unwrap();
        conn.pragma_update(None, "journal_mode", "DELETE").unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 8192, "expected several pages");
    for b in bytes.iter_mut().skip(4096) {
        *b = 0xA5;
    }
    std::fs::write(&path, bytes).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}

/// `/sys` refuses new entries even for root, which is what these tests run
/// as on CI; a chmod-based test would pass vacuously there.
#[cfg(target_os = "linux")]
#[test]
fn unwritable_data_dir_is_read_only_error() {
    let err = Store::open(Path::new("/sys/printgate-test")).unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
    assert!(err.to_string().contains("/sys"), "{err}");
}

#[test]
fn reader_without_database_says_so() {
    let dir = TestDir::new("nodb");
    let err = StoreReader::open(dir.path()).err().unwrap();
    assert!(matches!(err, StoreError::NoDatabase { .. }), "{err}");
    assert!(
        !dir.path().join(DB_FILE).exists(),
        "reader must not create it"
    );
}

/// Bytes the writer thread hands to the kernel (`wchar` in
/// `/proc/thread-self/io`, read on the writer thread itself): WAL frames,
/// checkpoint copies into the main file, fsyncs not included.
#[cfg(target_os = "linux")]
fn writer_bytes(store: &Store) -> u64 {
    let io = store
        .submit(|_| Ok(std::fs::read_to_string("/proc/thread-self/io").unwrap_or_default()))
        .blocking()
        .unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// One printer-hour: a progress write every `interval_s` (with its coalesced
/// outbox row) plus 10 state changes with events. `broker_up` also delivers
/// each row (read + delete), as the MQTT link does when connected.
#[cfg(target_os = "linux")]
fn printer_hour(interval_s: u32, broker_up: bool) -> u64 {
    let dir = TestDir::new("wear");
    let store = Store::open(dir.path()).unwrap();
    let seed = PrinterSeed {
        id: "p1".into(),
        port: "/dev/null".into(),
        filament: None,
    };
    store.sync_printers(&[seed]).blocking().unwrap();
    let job = NewJob {
        id: "j1".into(),
        printer_id: Some("p1".into()),
        source: JobSource::Local,
        model_url: None,
        gcode_path: Some("/spool/j1.gcode".into()),
        filament: None,
        priority: 0,
        estimated_s: Some(3600),
        params: None,
    };
    store.add_job(job, None).blocking().unwrap();
    store
        .transition_job("j1", JobState::Printing, None, None)
        .blocking()
        .unwrap();
    let item = |kind, n: u32| {
        OutboxItem {
        topic: "device/printer/p1/progress".into(),
        payload: format!(
            r#"{{"printerId":"p1","jobId":"j1","status":"printing","progress":{},"seq":{n},"timestamp":"2025-06-15T08:30:00Z"}}"#,
            n / 36
        )
        .into_bytes(),
        retain: false,
        kind,
        printer_id: Some("p1".into()),
    }
    };
    let before = writer_bytes(&store);
    let writes = 3600 / interval_s;
    let mut cursor = 0;
    for n in 0..writes {
        let (lines, pct) = (u64::from(n) * 100, f64::from(n) / f64::from(writes) * 100.0);
        let ev = Some(item(OutboxKind::Progress, n));
        store
            .record_progress("j1", lines, lines * 30, pct, ev)
            .blocking()
            .unwrap();
        if n % (writes / 10) == 0 {
            let to = if (n / (writes / 10)).is_multiple_of(2) {
                JobState::Paused
            } else {
                JobState::Printing
            };
            let ev = Some(item(OutboxKind::Event, n));
            store.transition_job("j1", to, None, ev).blocking().unwrap();
        }
        if broker_up {
            for row in store.outbox_after(cursor, 10).blocking().unwrap() {
                cursor = row.seq;
                store.outbox_delivered(row.seq).blocking().unwrap();
            }
        }
    }
    writer_bytes(&store) - before
}

/// The SD-wear figure for the report. Ignored by default (it performs ~7000
/// fsynced commits); run with
/// `cargo test --lib sd_wear -- --ignored --nocapture`.
#[cfg(target_os = "linux")]
#[test]
#[ignore]
fn sd_wear_per_printer_hour() {
    for interval in [1, 10] {
        for broker_up in [false, true] {
            let bytes = printer_hour(interval, broker_up);
            println!(
                "progress every {interval:>2} s, broker {}: {:>9} bytes/printer-hour ({:.1} MiB, ~{} WAL frames of 4 KiB)",
                if broker_up { "up  " } else { "down" },
                bytes,
                bytes as f64 / 1048576.0,
                bytes / 4120
            );
        }
    }
}
