//! Issue 12, defect 10: a second daemon on the same data folder must refuse
//! to start before it touches anything (recovery would interrupt the first
//! one's jobs; it would fight over the ports and the broker session).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e_support;

use e2e_support::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn r12_10_a_second_daemon_on_one_data_folder_refuses_to_start() {
    let dir = TestDir::new("daemon-lock");
    let link = dir.path().join("tty-p1");
    let _sim = start_sim(&link, &[]);
    let config = gateway_config(dir.path(), &[("p1", link)], None);
    let first = start_daemon(&config, &dir.path().join("first.log"));
    wait_until("the first daemon up", Duration::from_secs(30), || {
        cli(&["status", "--config", config.to_str().unwrap()])
            .stdout
            .ends_with(b"daemon: running\n")
    });
    let second = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "the second daemon ran: {err}");
    assert!(
        err.contains("another printgate is already running"),
        "{err}"
    );
    // The first is untouched: still running, its log free of a recovery.
    assert!(cli(&["status", "--config", config.to_str().unwrap()])
        .stdout
        .ends_with(b"daemon: running\n"));
    assert!(first.stop().success());
    // Once it stopped (or died), the lock is free again.
    let again = start_daemon(&config, &dir.path().join("again.log"));
    wait_until("a new daemon up", Duration::from_secs(30), || {
        cli(&["status", "--config", config.to_str().unwrap()])
            .stdout
            .ends_with(b"daemon: running\n")
    });
    again.kill9();
    let after_kill = start_daemon(&config, &dir.path().join("after-kill.log"));
    wait_until("a daemon up after kill -9", Duration::from_secs(30), || {
        cli(&["status", "--config", config.to_str().unwrap()])
            .stdout
            .ends_with(b"daemon: running\n")
    });
    assert!(after_kill.stop().success());
}
