//! Opening the database file: data directory checks, pragmas, integrity check
//! and ordered schema migrations tracked in `PRAGMA user_version`.
//!
//! Owns every `CREATE`/`ALTER` statement. Never reads or writes rows.

use super::StoreError;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::path::{Path, PathBuf};

/// The database file inside the data directory.
pub const DB_FILE: &str = "printgate.db";
/// Downloaded G-code lives here (written by the job source, not the store).
pub const SPOOL_DIR: &str = "spool";

/// Migrations in order; `MIGRATIONS[i]` takes the schema from version `i` to
/// `i + 1`. Append only: a released step is never edited.
const MIGRATIONS: &[&str] = &[
    // v1: the ledger.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
     INSERT INTO meta (key, value) VALUES ('last_seq', 0);
     CREATE TABLE printers (
         id TEXT PRIMARY KEY,
         port TEXT NOT NULL,
         filament TEXT,
         state TEXT NOT NULL DEFAULT 'offline',
         plate_clear INTEGER NOT NULL DEFAULT 0,
         current_job TEXT REFERENCES jobs(id) ON DELETE SET NULL,
         updated_at INTEGER NOT NULL
     );
     CREATE TABLE jobs (
         id TEXT PRIMARY KEY,
         printer_id TEXT REFERENCES printers(id),
         source TEXT NOT NULL CHECK (source IN ('mqtt', 'queue', 'local')),
         model_url TEXT,
         gcode_path TEXT,
         filament TEXT,
         priority INTEGER NOT NULL DEFAULT 0,
         estimated_s INTEGER,
         state TEXT NOT NULL,
         reason TEXT,
         lines_done INTEGER NOT NULL DEFAULT 0,
         lines_total INTEGER,
         bytes_done INTEGER NOT NULL DEFAULT 0,
         bytes_total INTEGER,
         progress REAL NOT NULL DEFAULT 0,
         created_at INTEGER NOT NULL,
         started_at INTEGER,
         finished_at INTEGER,
         updated_at INTEGER NOT NULL,
         params TEXT
     );
     CREATE INDEX jobs_pick ON jobs (state, priority DESC, created_at);
     CREATE TABLE job_events (
         id INTEGER PRIMARY KEY,
         job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
         from_state TEXT,
         to_state TEXT NOT NULL,
         reason TEXT,
         at INTEGER NOT NULL
     );
     CREATE INDEX job_events_job ON job_events (job_id, id);
     CREATE TABLE outbox (
         seq INTEGER PRIMARY KEY,
         topic TEXT NOT NULL,
         payload BLOB NOT NULL,
         retain INTEGER NOT NULL,
         kind TEXT NOT NULL CHECK (kind IN ('event', 'progress')),
         printer_id TEXT,
         created_at INTEGER NOT NULL
     );",
    // v2: progress coalescing looks up a printer's newest outbox row, and
    // retention scans finished jobs by age; without these both are full scans
    // that grow with a broker outage or a long history.
    "CREATE INDEX outbox_printer ON outbox (printer_id, seq);
     CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;",
    // v3: a model's expected SHA-256 survives a restart of its download; a
    // printer remembers the job whose plate waits (and how it ended), so the
    // completion signal names it after a restart too; and since when this
    // gateway serves the printer id (the earlier claimant of an id keeps it).
    "ALTER TABLE jobs ADD COLUMN sha256 TEXT;
     ALTER TABLE printers ADD COLUMN last_job TEXT;
     ALTER TABLE printers ADD COLUMN last_outcome TEXT;
     ALTER TABLE printers ADD COLUMN claimed_at INTEGER;",
    // v4: what each printer's firmware says it is (`M115`), so a port that
    // answers as another machine after a restart or a swapped USB link is
    // caught: `known` is the accepted identity, `held` what a mismatching
    // port answered while the printer is held for an operator.
    "CREATE TABLE printer_identity (
         printer_id TEXT NOT NULL REFERENCES printers(id) ON DELETE CASCADE,
         role TEXT NOT NULL CHECK (role IN ('known', 'held')),
         firmware TEXT NOT NULL,
         family TEXT NOT NULL,
         version TEXT,
         machine_type TEXT,
         uuid TEXT,
         caps TEXT NOT NULL DEFAULT '{}',
         updated_at INTEGER NOT NULL,
         PRIMARY KEY (printer_id, role)
     );",
];

/// The schema version this binary writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Opens (creating if needed) the writable database in `data_dir`, checks it
/// and migrates it to [`SCHEMA_VERSION`].
pub fn open_writer(data_dir: &Path) -> Result<Connection, StoreError> {
    prepare_dirs(data_dir)?;
    let path = data_dir.join(DB_FILE);
    let conn = Connection::open(&path).map_err(|e| classify(&path, data_dir, e))?;
    init_writer(&conn).map_err(|e| classify(&path, data_dir, e))?;
    integrity_check(&conn, &path)?;
    migrate(&conn, SCHEMA_VERSION)?;
    Ok(conn)
}

/// Opens an existing database read-only (for the CLI while the daemon runs).
pub fn open_reader(data_dir: &Path) -> Result<Connection, StoreError> {
    let path = data_dir.join(DB_FILE);
    if !path.is_file() {
        return Err(StoreError::NoDatabase { path });
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        Connection::open_with_flags(&path, flags).map_err(|e| classify(&path, data_dir, e))?;
    let found = user_version(&conn).map_err(|e| classify(&path, data_dir, e))?;
    if found == 0 {
        return Err(StoreError::NoDatabase { path });
    }
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(conn)
}

/// Creates the data and spool directories, then proves the data directory is
/// writable. SQLite alone would say "unable to open database file", which
/// sends an operator looking in the wrong place.
fn prepare_dirs(data_dir: &Path) -> Result<(), StoreError> {
    for dir in [data_dir.to_path_buf(), data_dir.join(SPOOL_DIR)] {
        std::fs::create_dir_all(&dir).map_err(|source| dir_error(&dir, source))?;
    }
    let probe = data_dir.join(".printgate-write-probe");
    std::fs::write(&probe, b"").map_err(|source| dir_error(data_dir, source))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn dir_error(dir: &Path, source: std::io::Error) -> StoreError {
    use std::io::ErrorKind;
    match source.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => StoreError::ReadOnly {
            path: dir.to_path_buf(),
        },
        _ => StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        },
    }
}

/// Turns SQLite's open-time codes into errors that name the file.
fn classify(path: &Path, data_dir: &Path, err: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match err.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path: PathBuf::from(path),
            detail: err.to_string(),
        },
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => StoreError::ReadOnly {
            path: data_dir.to_path_buf(),
        },
        _ => StoreError::from(err),
    }
}

/// WAL so readers (the CLI) never block the writer; `synchronous=FULL`
/// because a Pi loses power, and in WAL mode `NORMAL` may drop the last
/// committed transactions on power loss (it cannot corrupt, but "job
/// accepted" must survive). `journal_mode` returns a row, so it goes through
/// `pragma_update`, never `execute`.
fn init_writer(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // After a burst (a long broker outage) the -wal file is truncated back to
    // this size when it restarts instead of staying large on the card; about
    // what `wal::CHECKPOINT_FRAMES` lets accumulate. (Checkpoints themselves
    // are the writer thread's, see wal.rs: its WAL hook turns SQLite's
    // automatic checkpoint off.)
    conn.pragma_update(None, "journal_size_limit", 4 * 1024 * 1024)?;
    Ok(())
}

/// `PRAGMA quick_check` at open: catches torn pages before we write on top.
fn integrity_check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let mut stmt = conn.prepare("PRAGMA quick_check")?;
    let lines = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if lines.len() == 1 && lines.first().map(String::as_str) == Some("ok") {
        return Ok(());
    }
    Err(StoreError::Corrupt {
        path: path.to_path_buf(),
        detail: lines.join("; "),
    })
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Applies the missing migrations up to `target`, each step and its
/// `user_version` bump in one IMMEDIATE transaction, so a power cut leaves
/// either the old or the new version, never half of one.
pub(crate) fn migrate(conn: &Connection, target: i64) -> Result<(), StoreError> {
    let found = user_version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        if version <= found || version > target {
            continue;
        }
        let step = || -> rusqlite::Result<()> {
            let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()
        };
        step().map_err(|source| StoreError::Migration { version, source })?;
        log::info!("store: migrated schema to version {version}");
    }
    Ok(())
}
