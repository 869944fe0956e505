//! The daemon as an operator runs it: real binary, real SQLite file,
//! simulated printers on pseudo-terminals, the CLI from another "shell".
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e_support;

use e2e_support::*;
use std::path::Path;
use std::time::Duration;

fn cfg(config: &Path) -> &str {
    config.to_str().unwrap()
}

/// Plays the robot: confirms every plate waiting for it.
fn clear_waiting_plates(config: &Path) {
    for (printer, state) in printer_states(config) {
        if state == "awaiting_clear" {
            let _ = cli(&["clear", &printer, "--config", cfg(config)]);
        }
    }
}

fn job_states(config: &Path) -> Vec<(String, String)> {
    jobs_json(config)
        .iter()
        .map(|j| {
            (
                j["id"].as_str().unwrap_or("").to_owned(),
                j["state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[test]
fn jobs_print_once_and_the_same_state_is_seen_after_a_restart() {
    let dir = TestDir::new("daemon-restart");
    let links: Vec<(&str, std::path::PathBuf)> = vec![
        ("p1", dir.path().join("tty1")),
        ("p2", dir.path().join("tty2")),
    ];
    let logs = [dir.path().join("p1.log"), dir.path().join("p2.log")];
    let _sims: Vec<Proc> = links
        .iter()
        .zip(&logs)
        .map(|((_, link), log)| start_sim(link, &["--received", log.to_str().unwrap()]))
        .collect();
    let config = gateway_config(dir.path(), &links, None);
    let daemon_log = dir.path().join("daemon.log");
    let daemon = start_daemon(&config, &daemon_log);
    wait_until("both printers connected", Duration::from_secs(20), || {
        printer_states(&config)
            .iter()
            .filter(|(_, s)| s == "awaiting_clear")
            .count()
            == 2
    });
    // New printers start with the plate not confirmed clear: nothing prints.
    let mut expected = Vec::new();
    for (n, printer) in ["p1", "p2", "p1", "p2"].iter().enumerate() {
        let id = format!("job-{n}");
        let (out, moves) = add_job(dir.path(), &config, printer, &id, 10 + n as u32, 400);
        expected.push((printer.to_string(), moves));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        job_states(&config).iter().all(|(_, s)| s == "ready"),
        "nothing may start before a plate is clear"
    );
    wait_until("all four jobs completed", Duration::from_secs(60), || {
        clear_waiting_plates(&config);
        let states = job_states(&config);
        states.len() == 4 && states.iter().all(|(_, s)| s == "completed")
    });
    // Exactly once, in order, on the right printer.
    for (i, (printer, log)) in [("p1", &logs[0]), ("p2", &logs[1])].iter().enumerate() {
        let mut want: Vec<String> = Vec::new();
        for (p, moves) in &expected {
            if p == printer {
                want.extend(moves.iter().cloned());
            }
        }
        // Logs are flushed when the simulator is idle; wait for all of it.
        wait_until("simulator logs flushed", Duration::from_secs(10), || {
            executed_moves(log).len() >= want.len()
        });
        assert_eq!(executed_moves(log), want, "printer {i}");
    }
    let before = job_states(&config);
    assert!(daemon.stop().success(), "orderly stop exits 0");
    let after_stop = job_states(&config);
    assert_eq!(before, after_stop);
    let daemon = start_daemon(&config, &daemon_log);
    wait_until("daemon answers again", Duration::from_secs(20), || {
        cli(&["status", "--config", cfg(&config)])
            .stdout
            .ends_with(b"daemon: running\n")
    });
    assert_eq!(job_states(&config), before, "same jobs after a restart");
    let show = cli(&["job", "show", "job-0", "--config", cfg(&config)]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("ready -> printing") && text.contains("printing -> completed"),
        "{text}"
    );
    daemon.stop();
}

#[test]
fn bad_input_gives_one_clear_message_and_no_panic() {
    let dir = TestDir::new("daemon-bad-input");
    // A config with a typo.
    let config = dir.path().join("typo.toml");
    std::fs::write(&config, "[gateway]\nid = \"gw\"\ndata_dir = \"/tmp/x\"\n[[printer]]\nid = \"p1\"\nport = \"/dev/null\"\nbuad = 250000\n").unwrap();
    let out = cli(&["check-config", cfg(&config)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("buad"));
    let out = cli(&["run", "--config", cfg(&config)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("buad"));

    // A corrupt database file.
    let links = vec![("p1", dir.path().join("tty"))];
    let config = gateway_config(dir.path(), &links, None);
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/printgate.db"), vec![0x5au8; 8192]).unwrap();
    let out = cli(&["run", "--config", cfg(&config)]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("printgate.db"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // No daemon running: changing commands say so.
    std::fs::remove_file(dir.path().join("data/printgate.db")).unwrap();
    let out = cli(&["clear", "p1", "--config", cfg(&config)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no printgate daemon is running"));
}

#[test]
fn an_unplugged_printer_goes_offline_and_comes_back() {
    let dir = TestDir::new("daemon-hotplug");
    let link = dir.path().join("tty1");
    let links = vec![("p1", link.clone())];
    let sim = start_sim(&link, &[]);
    let config = gateway_config(dir.path(), &links, None);
    let daemon = start_daemon(&config, &dir.path().join("daemon.log"));
    let state = |config: &Path| {
        printer_states(config)
            .first()
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    };
    wait_until("printer connected", Duration::from_secs(20), || {
        state(&config) == "awaiting_clear"
    });
    let out = cli(&["clear", "p1", "--config", cfg(&config)]);
    assert!(out.status.success());
    wait_until("printer idle", Duration::from_secs(10), || {
        state(&config) == "idle"
    });
    // Temperatures come live from the running daemon (M155 autoreport).
    wait_until("temperatures in status", Duration::from_secs(10), || {
        String::from_utf8_lossy(&cli(&["status", "--config", cfg(&config)]).stdout).contains("°C")
    });
    // Unplug: the device disappears (the simulator exits and removes its link).
    sim.stop();
    wait_until("printer offline", Duration::from_secs(20), || {
        state(&config) == "offline"
    });
    // Plug it back in on the same path: reopened with back-off, and since the
    // plate was clear and nothing printed, it is idle again.
    let _sim = start_sim(&link, &[]);
    wait_until("printer back", Duration::from_secs(30), || {
        state(&config) == "idle"
    });
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap();
    assert!(log.contains("offline"), "the outage is logged");
    daemon.stop();
}

#[test]
fn unwritable_data_folder_is_one_clear_error() {
    let dir = TestDir::new("daemon-readonly");
    let config = dir.path().join("ro.toml");
    std::fs::write(
        &config,
        "[gateway]\nid = \"gw\"\ndata_dir = \"/proc/printgate-test-data\"\n",
    )
    .unwrap();
    let out = cli(&["run", "--config", cfg(&config)]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/proc/printgate-test-data"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The helpers fail the test on a CLI error or a missing log instead of
/// returning an empty list. With empty lists, `jobs_print_once...`'s
/// "nothing may start before a plate is clear" (`all(ready)` over no jobs)
/// and the crash campaign's "no line printed twice" (over no lines) passed
/// whatever the daemon did.
#[test]
fn e2e_helpers_fail_loudly_instead_of_returning_nothing() {
    let dir = TestDir::new("daemon-helpers");
    let config = gateway_config(dir.path(), &[("p1", dir.path().join("tty"))], None);
    // No daemon ever ran here: `printgate jobs --json` fails (no database).
    let jobs = std::panic::catch_unwind(|| jobs_json(&config));
    assert!(jobs.is_err(), "jobs_json returned {:?}", jobs.ok());
    let missing = dir.path().join("never-written.log");
    let moves = std::panic::catch_unwind(|| executed_moves(&missing));
    assert!(moves.is_err(), "executed_moves returned {:?}", moves.ok());
}

#[test]
fn status_json_shows_the_running_daemons_writes_and_fsyncs() {
    let dir = TestDir::new("daemon-status-json");
    let link = dir.path().join("tty1");
    let _sim = start_sim(&link, &[]);
    let config = gateway_config(dir.path(), &[("p1", link)], None);
    let status = |config: &Path| {
        let out = cli(&["status", "--json", "--config", cfg(config)]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let daemon = start_daemon(&config, &dir.path().join("daemon.log"));
    wait_until("printer connected", Duration::from_secs(20), || {
        printer_states(&config) == [("p1".to_owned(), "awaiting_clear".to_owned())]
    });
    let s = status(&config);
    assert_eq!(s["daemonRunning"], true, "{s}");
    assert_eq!(s["printers"][0]["id"], "p1", "{s}");
    assert_eq!(s["live"][0]["connected"], true, "{s}");
    let store = &s["io"]["store"];
    // Syncing the printers and their state changes were durable commits.
    assert!(store["commitsDurable"].as_u64().unwrap() >= 2, "{s}");
    assert!(store["syncs"].as_u64().unwrap() >= 2, "{s}");
    assert!(store["bytesWritten"].as_u64().unwrap() > 0, "{s}");
    assert!(s["io"]["process"]["writeBytes"].is_u64(), "{s}");
    assert_eq!(s["outboxLen"], 0, "{s}");
    daemon.stop();
    let s = status(&config);
    assert_eq!(s["daemonRunning"], false, "{s}");
    assert!(s["io"].is_null() && s["live"].is_null(), "{s}");
}
