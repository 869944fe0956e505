//! Store tests that need crate internals: migrations, refusal of bad files.
//! Behaviour through the public API is tested in `tests/store.rs`.

use super::testdir::TestDir;
use super::*;
use rusqlite::Connection;

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
    assert_eq!(user_version(&conn), super::SCHEMA_VERSION);
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

fn new_job(id: &str) -> NewJob {
    NewJob {
        id: id.to_owned(),
        printer_id: Some("p1".into()),
        source: JobSource::Local,
        model_url: None,
        gcode_path: Some(format!("/spool/{id}.gcode")),
        filament: None,
        priority: 0,
        estimated_s: None,
        params: None,
        sha256: None,
    }
}

/// A store with printer p1 and job j1 printing on it.
fn printing_store(dir: &TestDir) -> Store {
    let store = Store::open(dir.path()).unwrap();
    let seed = PrinterSeed {
        id: "p1".into(),
        port: "/dev/null".into(),
        filament: None,
    };
    store.sync_printers(&[seed]).blocking().unwrap();
    store.add_job(new_job("j1"), None).blocking().unwrap();
    store
        .transition_job("j1", JobState::Printing, None, None)
        .blocking()
        .unwrap();
    store
}

fn delta(after: StoreIo, before: StoreIo) -> StoreIo {
    StoreIo {
        bytes_written: after.bytes_written - before.bytes_written,
        bytes_estimated: after.bytes_estimated,
        syncs: after.syncs - before.syncs,
        commits_durable: after.commits_durable - before.commits_durable,
        commits_non_durable: after.commits_non_durable - before.commits_non_durable,
        checkpoints: after.checkpoints - before.checkpoints,
        wal_frames: after.wal_frames - before.wal_frames,
        checkpointed_frames: after.checkpointed_frames - before.checkpointed_frames,
    }
}

#[test]
fn io_stats_count_one_sync_per_durable_commit_and_none_for_progress() {
    let dir = TestDir::new("io-commits");
    let store = printing_store(&dir);
    let opened = store.io_stats();
    // At open the writer checkpointed the migrations' frames (two fsyncs);
    // the first commit into the restarted WAL also synced its header.
    assert_eq!(
        (opened.commits_durable, opened.checkpoints),
        (3, 1),
        "{opened:?}"
    );
    assert_eq!(opened.syncs, 3 + 2 + 1, "{opened:?}");
    for i in 0..10 {
        store.record_progress("j1", i, 1.0).blocking().unwrap();
    }
    let progress = delta(store.io_stats(), opened);
    assert_eq!(progress.syncs, 0, "{progress:?}");
    assert_eq!(progress.commits_non_durable, 10, "{progress:?}");
    assert!(progress.wal_frames >= 10, "{progress:?}");
    #[cfg(target_os = "linux")]
    assert!(!progress.bytes_estimated, "read from /proc/thread-self/io");
    // Each frame is a page plus its 24-byte header, written by the thread.
    assert!(
        progress.bytes_written >= progress.wal_frames * 4096,
        "{progress:?}"
    );
    let before = store.io_stats();
    store
        .transition_job("j1", JobState::Completed, None, None)
        .blocking()
        .unwrap();
    store.outbox_delivered(1).blocking().unwrap();
    let change = delta(store.io_stats(), before);
    assert_eq!((change.commits_durable, change.syncs), (1, 1), "{change:?}");
    // A commit that changed nothing writes nothing.
    store
        .record_progress("gone", 1, 1.0)
        .blocking()
        .unwrap_err();
    assert_eq!(
        delta(store.io_stats(), before).wal_frames,
        change.wal_frames
    );
}

#[test]
fn the_wal_is_checkpointed_when_frames_pile_up_not_per_commit() {
    let dir = TestDir::new("io-checkpoint");
    let store = printing_store(&dir);
    let before = store.io_stats();
    for i in 0..super::wal::CHECKPOINT_FRAMES + 10 {
        store.record_progress("j1", i, 1.0).blocking().unwrap();
    }
    let d = delta(store.io_stats(), before);
    assert_eq!(d.checkpoints, 1, "{d:?}");
    // The same hot pages were rewritten a thousand times in the WAL and
    // copied once each: a handful of frames, two fsyncs.
    assert!(
        d.checkpointed_frames >= super::wal::CHECKPOINT_FRAMES,
        "{d:?}"
    );
    // WAL sync and database sync, then the restarted WAL's header.
    assert_eq!(d.syncs, 3, "{d:?}");
}

#[test]
fn retention_purges_in_batches_with_one_durable_commit() {
    let dir = TestDir::new("io-purge");
    let store = printing_store(&dir);
    let n = super::jobs::PURGE_BATCH * 2 + 10;
    store
        .submit(move |w| {
            w.write(false, |tx| {
                for i in 0..n {
                    tx.execute(
                        "INSERT INTO jobs (id, source, state, created_at, updated_at, finished_at)
                         VALUES (?1, 'local', 'completed', 1, 1, 1)",
                        [format!("old-{i}")],
                    )?;
                }
                Ok(())
            })
        })
        .blocking()
        .unwrap();
    let before = store.io_stats();
    let purged = store.purge_finished(Duration::ZERO).blocking().unwrap();
    assert_eq!(purged.len(), n);
    let d = delta(store.io_stats(), before);
    assert_eq!((d.commits_non_durable, d.commits_durable), (2, 1), "{d:?}");
    assert_eq!(d.syncs, 1, "{d:?}");
    let before = store.io_stats();
    assert!(store
        .purge_finished(Duration::ZERO)
        .blocking()
        .unwrap()
        .is_empty());
    assert_eq!(store.io_stats(), before, "nothing to purge writes nothing");
}

/// The WAL bytes counted from frames are what the writer thread really
/// passed to `write(2)` (measured inside one operation, so no answer's
/// eventfd wake-up is mixed in).
#[cfg(target_os = "linux")]
#[test]
fn bytes_written_is_what_the_writer_thread_wrote() {
    let dir = TestDir::new("io-bytes");
    let store = printing_store(&dir);
    let before = store.io_stats();
    let wrote = store
        .submit(|w| {
            let start = super::wal::thread_wchar().unwrap_or(0);
            for i in 0..20 {
                let durable = i % 5 == 0;
                w.write(durable, |tx| {
                    jobs::progress(tx, "j1", i, 0, 1.0, None).map(|_| ())
                })?;
            }
            Ok(super::wal::thread_wchar().unwrap_or(0) - start)
        })
        .blocking()
        .unwrap();
    let d = delta(store.io_stats(), before);
    assert!(wrote > 20 * 4096, "{wrote}");
    assert_eq!(d.bytes_written, wrote, "{d:?}");
    assert_eq!((d.commits_durable, d.commits_non_durable), (4, 16));
}

/// Reads (the farm asks every second) do not keep a quiet store from its
/// idle checkpoint: only writes do.
#[test]
fn an_idle_checkpoint_comes_while_reads_go_on() {
    let dir = TestDir::new("io-idle");
    let store = Store::open_with_idle(dir.path(), Duration::from_millis(200)).unwrap();
    let seed = PrinterSeed {
        id: "p1".into(),
        port: "/dev/null".into(),
        filament: None,
    };
    store.sync_printers(&[seed]).blocking().unwrap();
    let before = store.io_stats();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.io_stats().checkpoints == before.checkpoints {
        assert!(std::time::Instant::now() < deadline, "no idle checkpoint");
        store.list_printers().blocking().unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let d = delta(store.io_stats(), before);
    assert_eq!(
        (d.checkpoints, d.syncs, d.commits_durable),
        (1, 2, 0),
        "{d:?}"
    );
}
