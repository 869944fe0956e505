//! `kill -9` in the middle of a print: the accepted job survives, and the
//! next start marks it interrupted and holds its printer for a clear plate.
//!
//! The parent test runs this same test binary as a child (`crash_child`),
//! which writes through the store, reports "committed" on stdout and then
//! blocks; the parent kills it with SIGKILL and opens the database again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use printgate::lifecycle::{JobState, PrinterState};
use printgate::store::Store;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

const DIR_VAR: &str = "PRINTGATE_CRASH_DIR";

/// The child process of `accepted_job_survives_kill_9` (the test binary
/// re-runs itself with `PRINTGATE_CRASH_DIR` set); a no-op otherwise.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return;
    };
    let store = Store::open(std::path::Path::new(&dir)).unwrap();
    store
        .sync_printers(&[seed("p1", "PLA")])
        .blocking()
        .unwrap();
    start(&store, "mid-print", "p1");
    store
        .add_job(
            job("accepted", None, Some("PLA"), 3),
            Some(event("p1", "accepted")),
        )
        .blocking()
        .unwrap();
    println!("committed");
    // Block until killed (or until the parent goes away and closes stdin).
    let _ = std::io::stdin().read(&mut [0u8; 1]);
}

#[test]
fn accepted_job_survives_kill_9() {
    let dir = TestDir::new("crash");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture"])
        .env(DIR_VAR, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let committed = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line == "committed");
    child.kill().unwrap(); // SIGKILL: no destructors, no clean close.
    child.wait().unwrap();
    assert!(committed, "child did not reach the commit");

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.outbox_len().blocking().unwrap(),
        1,
        "the accepted event"
    );
    recover(&store);
    let accepted = store.get_job("accepted").blocking().unwrap().unwrap();
    assert_eq!((accepted.state, accepted.priority), (JobState::Queued, 3));
    let mid = store.get_job("mid-print").blocking().unwrap().unwrap();
    assert_eq!(mid.state, JobState::Interrupted);
    let printer = store.list_printers().blocking().unwrap().remove(0);
    assert_eq!(
        (printer.state, printer.plate_clear),
        (PrinterState::AwaitingClear, false)
    );
    // The accepted event, and the recovery's announcement of the interruption.
    let rows = store.outbox_after(0, 10).blocking().unwrap();
    assert_eq!(rows.len(), 2);
    let announced: serde_json::Value = serde_json::from_slice(&rows[1].payload).unwrap();
    assert_eq!(announced["type"], "job_interrupted");
    assert_eq!(announced["jobId"], "mid-print");
}
