//! Issue 14, item 4, end to end: the real binary, a simulated printer on a
//! pseudo-terminal that is restarted as another board (another UUID) on the
//! same link, the CLI from another "shell". The printer is held in `error`
//! (across a daemon restart too) and prints nothing until an operator
//! accepts the new board and confirms its plate clear.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e_support;

use e2e_support::*;
use std::path::Path;
use std::time::Duration;

const UUID_A: &str = "6d1e2b4c-0a9f-4d2e-8b7a-1f3c5e7a9b01";
const UUID_B: &str = "f00dbabe-1111-4222-8333-444455556666";

fn cfg(config: &Path) -> &str {
    config.to_str().unwrap()
}

fn state_of(config: &Path, printer: &str) -> String {
    printer_states(config)
        .into_iter()
        .find(|(p, _)| p == printer)
        .map(|(_, s)| s)
        .unwrap_or_default()
}

fn job_state(config: &Path, job: &str) -> String {
    jobs_json(config)
        .iter()
        .find(|j| j["id"] == job)
        .and_then(|j| j["state"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn mismatches(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("identity_mismatch") && l.contains(UUID_B))
        .count()
}

#[test]
fn a_swapped_port_holds_the_printer_in_error_and_starts_no_job() {
    let dir = TestDir::new("identity-swap");
    let link = dir.path().join("tty1");
    let log_a = dir.path().join("a.log");
    let log_b = dir.path().join("b.log");
    let sim_a = start_sim(
        &link,
        &["--uuid", UUID_A, "--received", log_a.to_str().unwrap()],
    );
    let config = gateway_config(dir.path(), &[("p1", link.clone())], None);
    let daemon_log = dir.path().join("daemon.log");
    let daemon = start_daemon(&config, &daemon_log);
    wait_until("p1 connected", Duration::from_secs(20), || {
        state_of(&config, "p1") == "awaiting_clear"
    });
    assert!(cli(&["clear", "p1", "--config", cfg(&config)])
        .status
        .success());
    wait_until("p1 idle", Duration::from_secs(10), || {
        state_of(&config, "p1") == "idle"
    });

    // Another board answers on the same link.
    sim_a.stop();
    let _sim_b = start_sim(
        &link,
        &["--uuid", UUID_B, "--received", log_b.to_str().unwrap()],
    );
    wait_until("p1 held in error", Duration::from_secs(30), || {
        state_of(&config, "p1") == "error"
    });
    let text = std::fs::read_to_string(&daemon_log).unwrap();
    assert!(
        text.contains("now answers as") && text.contains("printgate printer accept p1"),
        "{text}"
    );

    // The hold survives a restart of the daemon and the reconnect after it.
    daemon.stop();
    let before = mismatches(&daemon_log);
    let daemon = start_daemon(&config, &daemon_log);
    wait_until(
        "the reconnect after the restart",
        Duration::from_secs(30),
        || mismatches(&daemon_log) > before,
    );
    assert_eq!(state_of(&config, "p1"), "error");

    // A job for it waits; clearing the plate does not release the hold.
    let (out, moves) = add_job(dir.path(), &config, "p1", "j1", 7, 200);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let clear = cli(&["clear", "p1", "--config", cfg(&config)]);
    assert!(
        !clear.status.success(),
        "a held printer's plate cannot be cleared"
    );
    let accept = cli(&["printer", "accept", "p1", "--config", cfg(&config)]);
    let said = String::from_utf8_lossy(&accept.stdout).into_owned();
    assert!(
        accept.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&accept.stderr)
    );
    assert!(
        said.contains(UUID_B) && said.contains("awaiting_clear"),
        "{said}"
    );
    assert_eq!(state_of(&config, "p1"), "awaiting_clear");
    assert_eq!(job_state(&config, "j1"), "ready");
    assert!(
        executed_moves(&log_b).is_empty(),
        "nothing printed while held"
    );

    // Once the plate is confirmed clear, the job prints on the new board.
    assert!(cli(&["clear", "p1", "--config", cfg(&config)])
        .status
        .success());
    wait_until("j1 completed", Duration::from_secs(60), || {
        job_state(&config, "j1") == "completed"
    });
    assert_eq!(executed_moves(&log_b), moves);
    assert!(daemon.stop().success());
}
