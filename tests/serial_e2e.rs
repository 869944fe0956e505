//! End to end over real pseudo-terminals with the real binary: `printgate
//! sim` (the independent oracle) in one process, `printgate send` in another.
//! Exactly-once is checked against the simulator's log of executed commands.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e_support;

use e2e_support::{executed_moves, start_sim, write_job, TestDir, BIN};
use std::path::Path;
use std::process::{Command, Output};

fn send(port: &Path, file: &Path) -> Output {
    Command::new(BIN)
        .args([
            "send",
            "--json",
            "--baud",
            "250000",
            "--boot-timeout-ms",
            "2000",
            "--ack-timeout-ms",
            "300",
        ])
        .arg("--port")
        .arg(port)
        .arg(file)
        .output()
        .unwrap()
}

#[test]
fn noisy_link_twenty_thousand_lines_arrive_exactly_once_in_order() {
    let dir = TestDir::new("e2e-noisy");
    let (link, job, log) = (
        dir.path().join("tty"),
        dir.path().join("job.gcode"),
        dir.path().join("received.log"),
    );
    let moves = write_job(&job, 1, 20_000);
    let sim = start_sim(
        &link,
        &[
            "--corrupt",
            "0.02",
            "--drop-ok",
            "0.005",
            "--seed",
            "7",
            "--received",
            log.to_str().unwrap(),
        ],
    );
    let out = send(&link, &job);
    sim.stop();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "send failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let executed = executed_moves(&log);
    assert_eq!(
        executed.len(),
        moves.len(),
        "every move executed exactly once"
    );
    for (i, (got, want)) in executed.iter().zip(&moves).enumerate() {
        assert_eq!(got, want, "move {i} out of order or altered");
    }
    // The faults really happened and were recovered from.
    assert!(summary["resends"].as_u64().unwrap() > 50, "{summary}");
    assert!(summary["timeouts"].as_u64().unwrap() > 0, "{summary}");
    eprintln!("noisy link: {summary}");
}

#[test]
fn printer_reset_mid_stream_fails_the_send_and_stops_streaming() {
    let dir = TestDir::new("e2e-reset");
    let (link, job, log) = (
        dir.path().join("tty"),
        dir.path().join("job.gcode"),
        dir.path().join("received.log"),
    );
    let moves = write_job(&job, 2, 3_000);
    let sim = start_sim(
        &link,
        &["--reset-after", "500", "--received", log.to_str().unwrap()],
    );
    let out = send(&link, &job);
    sim.stop();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "send should fail: {stdout}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let error = summary["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("reset"),
        "clear message expected, got {error:?}"
    );
    let executed = executed_moves(&log);
    assert!(
        !executed.is_empty() && executed.len() < 500,
        "{} moves before the reset",
        executed.len()
    );
    // What ran is an exact prefix of the file: nothing after the reset.
    assert_eq!(executed[..], moves[..executed.len()]);
}

#[test]
fn send_reports_missing_port_and_bad_file_clearly() {
    let dir = TestDir::new("e2e-errors");
    let job = dir.path().join("job.gcode");
    write_job(&job, 3, 10);
    let out = send(&dir.path().join("no-such-tty"), &job);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("does not exist"), "{text}");

    let bad = dir.path().join("bad.gcode");
    std::fs::write(&bad, format!("G28\nG1 X{}\n", "9".repeat(200))).unwrap();
    let out = send(&dir.path().join("no-such-tty"), &bad);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.gcode:2: command is"), "{err}");

    let out = send(
        &dir.path().join("no-such-tty"),
        &dir.path().join("missing.gcode"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read G-code file"));
}
