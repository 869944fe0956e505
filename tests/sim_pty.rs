//! The simulator on a real pseudo-terminal, opened the way the host opens a
//! printer (tokio-serial): banner, numbered lines, the received log, close and
//! reopen, wire pacing, stop. Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use printgate::sim::{spawn, SimConfig, SimError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::{SerialPortBuilderExt, SerialStream};

const WAIT: Duration = Duration::from_secs(5);

#[path = "../src/store/testdir.rs"]
mod testdir;
use testdir::TestDir;

/// The host side: a port and a line buffer.
struct Host {
    port: SerialStream,
    buf: Vec<u8>,
}

impl Host {
    fn open(path: &Path) -> Host {
        let port = tokio_serial::new(path.to_str().unwrap(), 115_200)
            .open_native_async()
            .unwrap();
        Host {
            port,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, text: &str) {
        self.port.write_all(text.as_bytes()).await.unwrap();
    }

    /// The next line, without its newline; panics after [`WAIT`].
    async fn line(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return String::from_utf8_lossy(&line[..end]).into_owned();
            }
            let mut chunk = [0u8; 512];
            let n = tokio::time::timeout_at(deadline, self.port.read(&mut chunk))
                .await
                .expect("no line from the simulator in time")
                .unwrap();
            assert!(n > 0, "port closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads lines until one equal to `last`; returns them all.
    async fn until(&mut self, last: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await;
            let done = line == last;
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    async fn banner(&mut self) {
        let lines = self.until("echo:SD card ok").await;
        assert_eq!(
            lines.first().map(String::as_str),
            Some("start"),
            "{lines:?}"
        );
    }
}

fn framed(n: i64, cmd: &str) -> String {
    let body = format!("N{n} {cmd}");
    let xor = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("{body}*{xor}\n")
}

#[tokio::test]
async fn banner_lines_log_reopen_and_stop() {
    let dir = TestDir::new("sim-pty");
    let link = dir.path().join("printer0");
    let log = dir.path().join("received.log");
    let sim = spawn(
        &link,
        SimConfig {
            received_log: Some(log.clone()),
            ..SimConfig::default()
        },
    )
    .unwrap();
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());

    let mut host = Host::open(&link);
    host.banner().await;
    host.send("N0 M110 N0*125\n").await;
    assert_eq!(host.line().await, "ok");
    host.send("N1 M115*39\n").await;
    let m115 = host.until("ok").await;
    assert!(
        m115[0].starts_with("FIRMWARE_NAME:Marlin 2.1.2.4 (printgate sim)"),
        "{m115:?}"
    );
    assert!(m115.contains(&"Cap:EMERGENCY_PARSER:1".to_string()));
    host.send(&format!(
        "{}{}",
        framed(2, "G1 X10 F3000"),
        framed(3, "M104 S200")
    ))
    .await;
    assert_eq!(host.line().await, "ok");
    assert_eq!(host.line().await, "ok");
    host.send("N5 M105*0\n").await;
    assert_eq!(
        host.line().await,
        "Error:Line Number is not Last Line Number+1, Last Line: 3"
    );
    assert_eq!(host.line().await, "Resend: 4"); // Marlin 2: no ok after it
    host.send(&framed(4, "M105")).await;
    assert_eq!(
        host.line().await,
        "ok T:200.00 /200.00 B:21.00 /0.00 @:0 B@:0"
    );
    // The log is flushed whenever the board goes idle, before the last ok.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(logged, "M110 N0\nM115\nG1 X10 F3000\nM104 S200\nM105\n");

    // A second open is refused while the host holds the port (exclusive).
    assert!(tokio_serial::new(link.to_str().unwrap(), 115_200)
        .open_native_async()
        .is_err());

    // Close and reopen: the board resets (DTR) and prints a new banner.
    drop(host);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut host = Host::open(&link);
    host.banner().await;
    host.send(&framed(1, "G90")).await;
    assert_eq!(host.line().await, "ok");
    drop(host);

    let stats = sim.stop();
    assert!(
        std::fs::symlink_metadata(&link).is_err(),
        "stop() removes the link"
    );
    assert_eq!(
        (stats.opens, stats.resets, stats.executed, stats.errors),
        (2, 2, 6, 1)
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap().lines().last(),
        Some("G90")
    );
}

#[tokio::test]
async fn opens_are_detected_after_a_quiet_period_without_host() {
    let dir = TestDir::new("sim-reopen");
    let link = dir.path().join("p");
    let sim = spawn(&link, SimConfig::default()).unwrap();
    for round in 1..=3u64 {
        let mut host = Host::open(&link);
        host.banner().await;
        host.send("M105\n").await;
        assert!(host.line().await.starts_with("ok T:"));
        drop(host);
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(sim.stats().opens, round);
    }
    assert_eq!(sim.stop().executed, 3);
}

#[tokio::test]
async fn an_existing_symlink_is_replaced_and_a_file_is_refused() {
    let dir = TestDir::new("sim-link");
    let link = dir.path().join("p");
    std::os::unix::fs::symlink("/nonexistent", &link).unwrap();
    let sim = spawn(&link, SimConfig::default()).unwrap();
    assert_ne!(
        std::fs::read_link(&link).unwrap(),
        Path::new("/nonexistent")
    );
    sim.stop();

    let file = dir.path().join("regular");
    std::fs::write(&file, b"keep me").unwrap();
    let err = spawn(&file, SimConfig::default()).unwrap_err();
    assert!(matches!(err, SimError::LinkIsNotSymlink { .. }), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

    let bad = SimConfig {
        corrupt: 2.0,
        ..SimConfig::default()
    };
    assert!(matches!(
        spawn(&dir.path().join("q"), bad),
        Err(SimError::Config(_))
    ));
}

#[tokio::test]
async fn a_paced_wire_is_never_faster_than_baud_over_ten() {
    let dir = TestDir::new("sim-paced");
    let link = dir.path().join("p");
    let sim = spawn(
        &link,
        SimConfig {
            baud: 115_200,
            ..SimConfig::default()
        },
    )
    .unwrap();
    let mut host = Host::open(&link);
    host.banner().await;
    let lines: Vec<String> = (1..=100).map(|n| framed(n, "G1 X10 Y10 F3000")).collect();
    let start = Instant::now();
    for line in &lines {
        host.send(line).await;
        assert_eq!(host.line().await, "ok");
    }
    let elapsed = start.elapsed();
    let bytes: usize = lines.iter().map(|l| l.len() + 3).sum(); // each line plus "ok\n"
    let wire = Duration::from_secs_f64(bytes as f64 * 10.0 / 115_200.0);
    assert!(elapsed >= wire, "{elapsed:?} < wire time {wire:?}");
    eprintln!(
        "paced 115200, one line in flight: {elapsed:?} for {bytes} bytes (wire minimum {wire:?})"
    );
    drop(host);
    assert_eq!(sim.stop().executed, 100);
}

/// A windowed sender (unacknowledged bytes kept within the 128-byte RX
/// buffer) at 250000 baud: the wire, not the simulator's timers, sets the
/// pace. Prints the rate; asserts only that no byte beat the wire and none
/// was dropped.
#[tokio::test]
async fn a_windowed_sender_runs_at_wire_speed() {
    let dir = TestDir::new("sim-window");
    let link = dir.path().join("p");
    let sim = spawn(
        &link,
        SimConfig {
            baud: 250_000,
            ..SimConfig::default()
        },
    )
    .unwrap();
    let mut host = Host::open(&link);
    host.banner().await;
    let lines: Vec<String> = (1..=1000)
        .map(|n| framed(n, "G1 X12.345 Y67.89 E0.0123"))
        .collect();
    let mut in_flight = std::collections::VecDeque::new();
    let (mut next, mut acked) = (0, 0);
    let start = Instant::now();
    while acked < lines.len() {
        let mut batch = String::new();
        while let Some(line) = lines.get(next) {
            let used: usize = in_flight.iter().sum();
            if used + line.len() > 127 {
                break;
            }
            in_flight.push_back(line.len());
            batch += line;
            next += 1;
        }
        if !batch.is_empty() {
            host.send(&batch).await;
        }
        assert_eq!(host.line().await, "ok");
        in_flight.pop_front();
        acked += 1;
    }
    let elapsed = start.elapsed();
    let bytes: usize = lines.iter().map(String::len).sum();
    let wire = Duration::from_secs_f64(bytes as f64 * 10.0 / 250_000.0);
    eprintln!(
        "paced 250000, windowed: {:.0} lines/s, {elapsed:?} for {bytes} bytes (wire minimum {wire:?})",
        lines.len() as f64 / elapsed.as_secs_f64()
    );
    assert!(elapsed >= wire);
    drop(host);
    let stats = sim.stop();
    assert_eq!((stats.executed, stats.dropped_rx_bytes), (1000, 0));
}

/// Not an assertion: prints how fast a trivial client (one line in flight)
/// runs against the unpaced simulator, for the benchmarks' baseline.
#[tokio::test]
async fn unpaced_ping_pong_rate() {
    let dir = TestDir::new("sim-rate");
    let link = dir.path().join("p");
    let sim = spawn(&link, SimConfig::default()).unwrap();
    let mut host = Host::open(&link);
    host.banner().await;
    let lines: Vec<String> = (1..=5000)
        .map(|n| framed(n, "G1 X10.5 Y20.25 E0.1"))
        .collect();
    let start = Instant::now();
    for line in &lines {
        host.send(line).await;
        assert_eq!(host.line().await, "ok");
    }
    let elapsed = start.elapsed();
    eprintln!(
        "unpaced, one line in flight: {:.0} lines/s",
        lines.len() as f64 / elapsed.as_secs_f64()
    );
    drop(host);
    assert_eq!(sim.stop().executed, 5000);
}
