//! Regression tests of the printer task's fault paths (issue 12: #2, #4, #6,
//! #7), over real pseudo-terminals: the simulator, or a scripted fake
//! printer on the pty's master side. Every wait is bounded.

use super::{JobOutcome, PrinterCommand, PrinterReport, PrinterSettings, ReportKind};
use crate::printer::job_file;
use crate::protocol;
use crate::sim::{self, SimConfig};
use crate::store::testdir::TestDir;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_serial::SerialPort as _;

const WAIT: Duration = Duration::from_secs(10);

fn settings(port: &Path) -> PrinterSettings {
    PrinterSettings {
        id: "p1".into(),
        port: port.to_path_buf(),
        baud: 250_000,
        protocol: protocol::Config {
            boot_timeout: Duration::from_millis(50),
            ack_timeout: Duration::from_secs(2),
            ..protocol::Config::default()
        },
        reopen_max: None,
        progress_interval: Duration::from_secs(3600),
        end_sync: Some("M400".into()),
    }
}

struct Started {
    handle: super::PrinterHandle,
    reports: mpsc::Receiver<PrinterReport>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts job `j1` from `path`.
async fn start_job(p: &Started, path: PathBuf, summary: job_file::Summary) {
    p.handle
        .send(PrinterCommand::StartJob {
            job_id: "j1".into(),
            path,
            summary,
            session: 0,
        })
        .await
        .unwrap();
}

/// Starts job `j1` from `path`, cancels it at once, and returns its
/// `JobFinished` report.
async fn start_then_cancel(
    p: &mut Started,
    path: PathBuf,
    summary: job_file::Summary,
) -> ReportKind {
    start_job(p, path, summary).await;
    p.handle.send(PrinterCommand::Cancel).await.unwrap();
    expect(&mut p.reports, "JobFinished", |k| {
        matches!(k, ReportKind::JobFinished { .. })
    })
    .await
}

fn start(s: PrinterSettings, report_capacity: usize) -> Started {
    let (tx, reports) = mpsc::channel(report_capacity);
    let (handle, task) = super::spawn(s, tx);
    Started {
        handle,
        reports,
        task,
    }
}

/// A task on `fake` that gives up on a silent printer within about a
/// second (`max_timeouts` ack time-outs of 200 ms), once connected.
async fn start_with_short_timeouts(fake: &Fake, max_timeouts: u32) -> Started {
    let mut s = settings(&fake.link);
    s.protocol.ack_timeout = Duration::from_millis(200);
    s.protocol.min_ack_timeout = Duration::from_millis(50);
    s.protocol.max_timeouts = max_timeouts;
    let mut p = start(s, 64);
    expect(&mut p.reports, "Connected", |k| {
        matches!(k, ReportKind::Connected(_))
    })
    .await;
    p
}

/// Waits (bounded) for a report matching `want`; returns it.
async fn expect(
    reports: &mut mpsc::Receiver<PrinterReport>,
    what: &str,
    mut want: impl FnMut(&ReportKind) -> bool,
) -> ReportKind {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, reports.recv()).await {
            Ok(Some(r)) if want(&r.kind) => return r.kind,
            Ok(Some(r)) => {
                if std::env::var("DBG").is_ok() {
                    eprintln!("report (waiting for {what}): {:?}", r.kind);
                }
            }
            Ok(None) => panic!("report channel closed before {what}"),
            Err(_) => panic!("no {what} within {WAIT:?}"),
        }
    }
}

fn job(dir: &Path, name: &str, moves: usize) -> (PathBuf, job_file::Summary) {
    let path = dir.join(name);
    let mut text = String::from("G28\n");
    for i in 0..moves {
        text.push_str(&format!("G1 X{} Y{} F3000\n", i % 100, i % 50));
    }
    std::fs::write(&path, text).unwrap();
    let summary = job_file::scan(&path).unwrap();
    (path, summary)
}

/// A printer on the master side of a pty that answers `ok` to every line
/// while `answer` is true (and loses lines while it is false), and logs the
/// commands it received.
struct Fake {
    link: PathBuf,
    answer: watch::Sender<bool>,
    flood: watch::Sender<bool>,
    received: Arc<Mutex<Vec<String>>>,
}

fn fake_printer(dir: &Path) -> Fake {
    let (master, slave) = tokio_serial::SerialStream::pair().unwrap();
    let link = dir.join("fake-tty");
    std::os::unix::fs::symlink(slave.name().unwrap(), &link).unwrap();
    drop(slave);
    let (answer, answer_rx) = watch::channel(true);
    let (flood, flood_rx) = watch::channel(false);
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&received);
    let (reply_tx, mut reply_rx) = mpsc::unbounded_channel::<String>();
    let (mut rd, mut wr) = tokio::io::split(master);
    // The writer: replies, and continuous noise while `flood` is set.
    tokio::spawn(async move {
        let noise = b"echo:line noise from a board in a reboot loop\n".repeat(64);
        loop {
            let flooding = *flood_rx.borrow();
            let reply = if flooding {
                reply_rx.try_recv().ok()
            } else {
                match tokio::time::timeout(Duration::from_millis(5), reply_rx.recv()).await {
                    Ok(Some(r)) => Some(r),
                    Ok(None) => return,
                    Err(_) => None,
                }
            };
            let written = match reply {
                Some(r) => wr.write_all(r.as_bytes()).await,
                None if flooding => wr.write_all(&noise).await,
                None => Ok(()),
            };
            if written.is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        let mut pending = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(n) if n > 0 => n,
                // EIO while no host has the slave open (before the first
                // open, between reconnects): wait, until the test ends.
                _ if answer_rx.has_changed().is_err() => return,
                _ => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
            };
            pending.extend_from_slice(&buf[..n]);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line).trim().to_string();
                if text.is_empty() {
                    continue;
                }
                let body = text.split('*').next().unwrap_or("");
                let cmd = match body.strip_prefix('N') {
                    Some(rest) => rest.split_once(' ').map_or("", |(_, c)| c),
                    None => body,
                }
                .to_string();
                log.lock().unwrap().push(cmd.clone());
                if !*answer_rx.borrow() {
                    continue; // not answering: the line is lost
                }
                let reply = if cmd.starts_with("M115") {
                    "FIRMWARE_NAME:Marlin 2.1.2 (fake)\nok\n"
                } else if cmd.starts_with("M105") {
                    "ok T:20.0 /0.0 B:20.0 /0.0\n"
                } else {
                    "ok\n"
                };
                if reply_tx.send(reply.to_string()).is_err() {
                    return;
                }
            }
        }
    });
    Fake {
        link,
        answer,
        flood,
        received,
    }
}

impl Fake {
    fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }
}

/// #4: a job cancelled while the connection handshake is under way must
/// never start afterwards, and is reported finished (cancelled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r12_4_cancel_clears_a_job_held_back_by_the_handshake() {
    let dir = TestDir::new("task-pending");
    let (path, summary) = job(dir.path(), "job.gcode", 20);
    let fake = fake_printer(dir.path());
    fake.answer.send(false).unwrap(); // hold the handshake
    let mut p = start(settings(&fake.link), 64);
    let finished = start_then_cancel(&mut p, path, summary).await;
    let ReportKind::JobFinished {
        job_id,
        outcome,
        progress,
        ..
    } = finished
    else {
        unreachable!()
    };
    assert_eq!((job_id.as_str(), outcome), ("j1", JobOutcome::Cancelled));
    assert_eq!(progress.lines_sent, 0, "the job never reached the printer");
    fake.answer.send(true).unwrap(); // the handshake completes now
    expect(&mut p.reports, "Connected", |k| {
        matches!(k, ReportKind::Connected(_))
    })
    .await;
    // Bounded wait for anything the task would still do, then check that
    // no line of the job went out.
    p.handle.send(PrinterCommand::Shutdown).await.unwrap();
    expect(&mut p.reports, "Stopped", |k| {
        matches!(k, ReportKind::Stopped)
    })
    .await;
    let sent = fake.received();
    assert!(!sent.iter().any(|c| c.starts_with("G1")), "{sent:?}");
    p.task.await.unwrap();
}

/// A board that floods the line (noise, a reboot loop) must not starve
/// commands or the protocol's timers, over a real pty (the regression test
/// of #6 is `link::tests`, where input is always ready).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_line_still_serves_commands_and_timers() {
    let dir = TestDir::new("task-flood");
    let fake = fake_printer(dir.path());
    let mut p = start_with_short_timeouts(&fake, 2).await;
    // From now on the printer answers nothing but floods the line.
    fake.answer.send(false).unwrap();
    fake.flood.send(true).unwrap();
    p.handle
        .send(PrinterCommand::RunMacro {
            gcode: "M117 hello".into(),
        })
        .await
        .unwrap();
    // The macro line's ok never comes: the ack time-out must fire through
    // the flood and finally give up on the silent printer.
    let fault = expect(&mut p.reports, "Fault", |k| {
        matches!(k, ReportKind::Fault { .. })
    })
    .await;
    assert!(format!("{fault:?}").contains("no response"), "{fault:?}");
    // And a command still gets through.
    p.handle.send(PrinterCommand::Shutdown).await.unwrap();
    expect(&mut p.reports, "Stopped", |k| {
        matches!(k, ReportKind::Stopped)
    })
    .await;
    fake.flood.send(false).unwrap();
    p.task.await.unwrap();
}

/// #2: reports are never dropped, even when the farm is slow to read them:
/// a full channel holds the task's reports back instead of losing them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r12_2_no_report_is_lost_while_the_farm_does_not_read() {
    let dir = TestDir::new("task-reports");
    let link = dir.path().join("tty");
    let sim = sim::spawn(
        &link,
        SimConfig {
            received_log: Some(dir.path().join("received.log")),
            ..SimConfig::default()
        },
    )
    .unwrap();
    let (path, summary) = job(dir.path(), "job.gcode", 300);
    let mut s = settings(&link);
    s.progress_interval = Duration::from_millis(1);
    let mut p = start(s, 1);
    start_job(&p, path, summary).await;
    // Do not read reports until the printer has run the whole job.
    let deadline = std::time::Instant::now() + WAIT;
    while sim.stats().executed < 300 {
        assert!(std::time::Instant::now() < deadline, "job did not run");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let finished = expect(&mut p.reports, "JobFinished", |k| {
        matches!(k, ReportKind::JobFinished { .. })
    })
    .await;
    assert!(
        matches!(
            finished,
            ReportKind::JobFinished {
                outcome: JobOutcome::Completed,
                ..
            }
        ),
        "{finished:?}"
    );
    p.handle.send(PrinterCommand::Shutdown).await.unwrap();
    expect(&mut p.reports, "Stopped", |k| {
        matches!(k, ReportKind::Stopped)
    })
    .await;
    p.task.await.unwrap();
    drop(sim);
}

/// #7: opening or reading a job file must never block the async workers: a
/// file that blocks on open (a FIFO with no writer, like a stalled SD card)
/// leaves the printer task answering commands. The runtime has one thread,
/// so a blocking open would stop everything.
#[test]
fn r12_7_a_blocking_job_file_does_not_stall_the_printer_task() {
    let dir = TestDir::new("task-fifo");
    let fifo = dir.path().join("stalled.gcode");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let link = dir.path().join("tty");
    let sim = sim::spawn(&link, SimConfig::default()).unwrap();
    let summary = job_file::Summary {
        commands: 10,
        bytes: 100,
    };
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let fifo2 = fifo.clone();
    let runner = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut p = start(settings(&link), 64);
            expect(&mut p.reports, "Connected", |k| {
                matches!(k, ReportKind::Connected(_))
            })
            .await;
            let finished = start_then_cancel(&mut p, fifo2, summary).await;
            done_tx.send(format!("{finished:?}")).unwrap();
            p.handle.send(PrinterCommand::Shutdown).await.unwrap();
            expect(&mut p.reports, "Stopped", |k| {
                matches!(k, ReportKind::Stopped)
            })
            .await;
        });
    });
    let result = done_rx.recv_timeout(WAIT);
    // Unblock whatever opened the FIFO (a writer that closes at once).
    drop(std::fs::OpenOptions::new().write(true).open(&fifo).unwrap());
    let finished = result.expect("the printer task stalled behind a blocking file open");
    assert!(finished.contains("Cancelled"), "{finished}");
    runner.join().unwrap();
    drop(sim);
}

/// A printer that stops answering for good (switched off behind a
/// USB-powered serial chip, or halted by `M112` until someone resets it)
/// is reported once: every further failed handshake is the same news, and
/// each report costs the farm a synced write and an MQTT event. When it
/// answers again the task says so (`Connected`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_printer_that_stays_silent_is_reported_once_not_every_handshake() {
    let dir = TestDir::new("task-silent");
    let fake = fake_printer(dir.path());
    let mut p = start_with_short_timeouts(&fake, 1).await;
    fake.answer.send(false).unwrap();
    expect(&mut p.reports, "Fault", |k| {
        matches!(k, ReportKind::Fault { .. })
    })
    .await;
    // Three more handshakes (each starts with M110) fail while it is silent.
    let handshakes = |f: &Fake| {
        f.received()
            .iter()
            .filter(|c| c.starts_with("M110"))
            .count()
    };
    let seen = handshakes(&fake);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut faults = Vec::new();
    while handshakes(&fake) < seen + 3 {
        assert!(tokio::time::Instant::now() < deadline, "no new handshakes");
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(20), p.reports.recv()).await
        {
            if let ReportKind::Fault { reason } = r.kind {
                faults.push(reason);
            }
        }
    }
    assert!(faults.is_empty(), "repeated faults: {faults:?}");
    // It answers again: connected, and a later silence is news again.
    fake.answer.send(true).unwrap();
    expect(&mut p.reports, "Connected", |k| {
        matches!(k, ReportKind::Connected(_))
    })
    .await;
    fake.answer.send(false).unwrap();
    expect(&mut p.reports, "Fault after reconnecting", |k| {
        matches!(k, ReportKind::Fault { .. })
    })
    .await;
    p.handle.send(PrinterCommand::Shutdown).await.unwrap();
    expect(&mut p.reports, "Stopped", |k| {
        matches!(k, ReportKind::Stopped)
    })
    .await;
    p.task.await.unwrap();
}
