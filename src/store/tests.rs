//! Store tests that need crate internals: migrations, refusal of bad files.
//! Behaviour through the public API is tested in `tests/store.rs`.

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
