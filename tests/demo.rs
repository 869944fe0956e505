//! `printgate demo` as a user runs it: the real binary, end to end, in a
//! pipe (plain lines) and on a pseudo-terminal (the live table). The
//! gateway builds for boards leave the demo out (`--no-default-features`).
#![cfg(feature = "embedded-broker")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_printgate");
/// A demo that has not ended by then is killed and the test fails.
const LIMIT: Duration = Duration::from_secs(150);

/// Kills the demo if the test fails before it ends.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Demo {
    fn start(args: &[&str], stdout: Stdio) -> Demo {
        let child = Command::new(BIN)
            .arg("demo")
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Demo(child)
    }

    /// Reads `pipe` to its end on a thread (so the demo never blocks on it).
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    }

    /// Waits (bounded) for the exit status.
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not end within {LIMIT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs `printgate demo <args>` with stdout in a pipe: (status, stdout, stderr).
fn run_plain(args: &[&str]) -> (ExitStatus, String, String) {
    let mut demo = Demo::start(args, Stdio::piped());
    let out = Demo::drain(demo.0.stdout.take());
    let err = Demo::drain(demo.0.stderr.take());
    let status = demo.wait();
    (status, out.join().unwrap(), err.join().unwrap())
}

/// The number after `label` in the summary (`resends: 3 (...)` → 3).
fn number(out: &str, label: &str) -> u64 {
    let line = out
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("no `{label}` in:\n{out}"));
    line.split_whitespace().next().unwrap().parse().unwrap()
}

fn assert_summary(out: &str, jobs: u64) {
    assert!(
        out.contains(&format!("jobs printed: {jobs}/{jobs}")),
        "{out}"
    );
    assert!(number(out, "lines sent:") > 0, "{out}");
    assert!(number(out, "events published:") > 0, "{out}");
    assert!(out.contains("elapsed:"), "{out}");
}

#[test]
fn the_default_demo_prints_every_job_and_shows_each_change() {
    let (status, out, err) = run_plain(&["--plain"]);
    assert!(status.success(), "exit {status}\n{out}\n{err}");
    assert_summary(&out, 6);
    // The header tells how to watch and how to ask the gateway.
    assert!(out.contains("mosquitto_sub -h 127.0.0.1 -p "), "{out}");
    assert!(out.contains("printgate status --data-dir "), "{out}");
    assert!(out.contains("printgate jobs --data-dir "), "{out}");
    // One plain line per change: every printer prints, every job shows up.
    for printer in ["printer-1", "printer-2", "printer-3"] {
        let printing = out.lines().any(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.get(1..3) == Some(&[printer, "printing"][..])
        });
        assert!(printing, "{printer} never shown printing:\n{out}");
    }
    for job in 1..=6 {
        assert!(
            out.contains(&format!(" job-{job} ")),
            "job-{job} never shown:\n{out}"
        );
    }
    assert!(out.contains("jobs 6/6 printed, 0 queued"), "{out}");
    assert!(!out.contains('\x1b'), "no escape codes in plain mode");
    // No fault injected, no `ok` lost. (Resends are not asserted: a badly
    // overloaded machine can make an `ok` late enough for a time-out probe.)
    assert_eq!(number(&out, "time-outs:"), 0, "{out}");
}

#[test]
fn line_noise_and_lost_oks_are_recovered_and_counted() {
    let (status, out, err) = run_plain(&["--plain", "--fault-rate", "0.01"]);
    assert!(status.success(), "exit {status}\n{out}\n{err}");
    assert_summary(&out, 6);
    // ~1 % of ~6 700 lines are corrupted: each one is a resend, and a
    // quarter as many `ok`s are lost: each one is found done by the host
    // (a marker or a probe), never sent twice. Both figures
    // are the gateway's own counters (what it noticed), not the faults the
    // simulators injected, which the summary shows beside them.
    assert!(number(&out, "resends:") > 0, "{out}");
    assert!(number(&out, "lost oks recovered:") > 0, "{out}");
    let injected = out
        .lines()
        .find(|l| l.contains("corrupted on purpose"))
        .unwrap_or_else(|| panic!("no injected-fault figures in:\n{out}"));
    assert!(!injected.contains("; 0 lines corrupted"), "{out}");
}

#[test]
fn bad_arguments_are_refused_before_anything_starts() {
    for args in [
        ["--printers", "0"],
        ["--printers", "17"],
        ["--fault-rate", "1.5"],
    ] {
        let (status, out, err) = run_plain(&args);
        assert_eq!(status.code(), Some(2), "{args:?}: {out}{err}");
        assert!(err.contains(args[0]), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
    }
}

/// On a terminal the demo draws a table and redraws it in place. The test
/// owns the pty's master and hands the slave to the demo as its stdout.
#[test]
fn on_a_terminal_the_table_is_redrawn_in_place() {
    use tokio::io::AsyncReadExt;
    use tokio_serial::SerialPort;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (mut master, slave) = tokio_serial::SerialStream::pair().unwrap();
        let tty = std::fs::OpenOptions::new()
            .write(true)
            .open(slave.name().unwrap())
            .unwrap();
        let mut demo = Demo::start(&["--printers", "2", "--jobs", "2"], Stdio::from(tty));
        // Only the demo holds the slave now: its exit ends the master's reads.
        drop(slave);
        let err = Demo::drain(demo.0.stderr.take());
        let mut screen = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            match tokio::time::timeout_at(deadline, AsyncReadExt::read(&mut master, &mut buf)).await
            {
                Err(_) => panic!("the demo did not end within {LIMIT:?}"),
                Ok(Ok(0)) | Ok(Err(_)) => break, // EIO: the demo closed the terminal
                Ok(Ok(n)) => screen.extend_from_slice(&buf[..n]),
            }
        }
        let status = demo.wait();
        let screen = String::from_utf8_lossy(&screen).into_owned();
        let err = err.join().unwrap();
        assert!(status.success(), "exit {status}\n{screen}\n{err}");
        assert!(
            screen.contains("PRINTER") && screen.contains("PROGRESS"),
            "{screen}"
        );
        // Redrawn in place: cursor up over the header, two printers, the footer.
        assert!(screen.contains("\x1b[4A"), "{screen}");
        assert!(screen.contains("[####"), "no progress bar:\n{screen}");
        assert!(screen.contains("°C"), "no temperatures:\n{screen}");
        assert!(screen.contains("jobs printed: 2/2"), "{screen}");
    });
}
