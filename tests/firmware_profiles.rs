//! Every simulated firmware, end to end over a real pseudo-terminal with the
//! printer task: a 5,000-move job arrives exactly once and in order through
//! 2 % corrupted lines (where the firmware checks lines) and 0.5 % lost
//! `ok`s, with the firmware's own runout pause (and prompts) in the middle
//! where it has one. The host is given no per-firmware setting: it decides
//! from `M115`. Exactly-once is checked against the simulator's log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e_support;

use e2e_support::{write_job, TestDir};
use printgate::printer::{
    self, job_file, JobOutcome, PausedBy, PrinterCommand, PrinterReport, PrinterSettings,
    ReportKind,
};
use printgate::protocol::{self, Firmware as HostFirmware, FirmwareKind};
use printgate::sim::{self, Firmware, Identity, SimConfig};
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;

const MOVES: usize = 5_000;
/// A whole run, pauses included: a bound for a stuck run, not a speed
/// check (a healthy run takes a few seconds, nine at once on two cores).
const LIMIT: Duration = Duration::from_secs(60);

fn settings(link: &Path, reopen: bool) -> PrinterSettings {
    PrinterSettings {
        id: "p1".into(),
        port: link.to_path_buf(),
        baud: 250_000,
        protocol: protocol::Config {
            boot_timeout: Duration::from_millis(500),
            ..protocol::Config::default()
        },
        reopen_max: reopen.then(|| Duration::from_millis(200)),
        progress_interval: Duration::from_secs(3600),
        end_sync: Some("M400".into()),
    }
}

/// What a run saw.
#[derive(Default)]
struct Seen {
    firmware: Option<HostFirmware>,
    paused: Vec<(PausedBy, Option<String>)>,
    resumed: usize,
    prompts: Vec<(String, Vec<String>)>,
    /// Commands the printer task refused (a prompt answer it cannot deliver).
    rejected: Vec<String>,
    outcome: Option<JobOutcome>,
    resends: u64,
    timeouts: u64,
}

/// The farm's side of a run: answers prompts the way an operator would
/// (Continue, else Reheat) and resumes a pause the printer asked the host
/// for (Klipper's `// action:pause`) at once.
async fn drive(
    handle: &printer::PrinterHandle,
    reports: &mut mpsc::Receiver<PrinterReport>,
    farm_resumes: bool,
) -> Seen {
    let mut seen = Seen::default();
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let report = tokio::time::timeout_at(deadline, reports.recv())
            .await
            .expect("the run did not finish in time")
            .expect("the printer task ended early");
        if std::env::var("DBG").is_ok() && !matches!(report.kind, ReportKind::Temps(_)) {
            let t = LIMIT - deadline.saturating_duration_since(tokio::time::Instant::now());
            eprintln!("{:>8.3}s report: {:?}", t.as_secs_f64(), report.kind);
        }
        match report.kind {
            ReportKind::Connected(fw) => seen.firmware = Some(fw),
            ReportKind::Paused { by, reason, .. } => {
                seen.paused.push((by, reason));
                if farm_resumes {
                    handle.send(PrinterCommand::Resume).await.unwrap();
                }
            }
            ReportKind::Resumed { .. } => seen.resumed += 1,
            ReportKind::Rejected { reason, .. } => seen.rejected.push(reason),
            ReportKind::Prompt { text, choices } => {
                let answer = ["Continue", "Reheat"]
                    .iter()
                    .find_map(|want| choices.iter().position(|c| c == want));
                if let Some(choice) = answer {
                    let choice = u32::try_from(choice).unwrap();
                    handle
                        .send(PrinterCommand::PromptAnswer { choice })
                        .await
                        .unwrap();
                }
                seen.prompts.push((text, choices));
            }
            ReportKind::JobFinished {
                outcome,
                stats,
                progress,
                ..
            } => {
                if outcome == JobOutcome::Completed {
                    assert_eq!(progress.lines_sent, progress.lines_total);
                }
                seen.outcome = Some(outcome);
                seen.resends = stats.resends;
                seen.timeouts = stats.timeouts;
                return seen;
            }
            ReportKind::Fault { reason } | ReportKind::Offline { reason } => {
                panic!("printer went down: {reason}")
            }
            _ => {}
        }
    }
}

struct Case {
    firmware: Firmware,
    corrupt: f64,
    runout: bool,
    /// A person at the printer ends the pause (Prusa's knob, Repetier).
    person: bool,
    /// The farm ends the pause (Klipper: `RESUME`).
    farm_resumes: bool,
}

async fn print(case: Case) -> Seen {
    let dir = TestDir::new(&format!("fw-{}", case.firmware));
    let (link, job, log) = (
        dir.path().join("tty"),
        dir.path().join("job.gcode"),
        dir.path().join("received.log"),
    );
    let moves = write_job(&job, 4, MOVES);
    let cfg = SimConfig {
        corrupt: case.corrupt,
        drop_ok: 0.005,
        seed: 11,
        received_log: Some(log.clone()),
        runout_after: case.runout.then_some(MOVES as u64 / 2),
        person_after: case.person.then_some(Duration::from_millis(1500)),
        ..SimConfig::for_firmware(case.firmware)
    };
    let sim = sim::spawn(&link, cfg).unwrap();
    if std::env::var("DBG").is_ok() {
        eprintln!(
            "log at spawn: {:?}",
            std::fs::metadata(&log).map(|m| m.len())
        );
    }
    let (tx, mut reports) = mpsc::channel(256);
    let (handle, task) = printer::spawn(settings(&link, false), tx);
    let summary = job_file::scan(&job).unwrap();
    handle
        .send(PrinterCommand::StartJob {
            job_id: "j1".into(),
            path: job.clone(),
            summary,
            session: 0,
        })
        .await
        .unwrap();
    let seen = drive(&handle, &mut reports, case.farm_resumes).await;
    handle.send(PrinterCommand::Shutdown).await.unwrap();
    while reports.recv().await.is_some() {}
    task.await.unwrap();
    if std::env::var("DBG").is_ok() {
        eprintln!(
            "log before stop: {:?} {:?}",
            std::fs::metadata(&log).map(|m| m.len()),
            sim.stats()
        );
    }
    let stats = sim.stop();
    assert_eq!(seen.outcome, Some(JobOutcome::Completed), "{stats}");
    let executed = executed_moves(&log);
    if std::env::var("DBG").is_ok() {
        let bytes = std::fs::read(&log).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        eprintln!(
            "log {} bytes: {:?}",
            text.len(),
            text.lines()
                .filter(|l| !l.starts_with("G1 "))
                .collect::<Vec<_>>()
        );
    }
    assert_eq!(
        executed.len(),
        moves.len(),
        "each move exactly once ({stats})"
    );
    for (i, (got, want)) in executed.iter().zip(&moves).enumerate() {
        assert_eq!(got, want, "move {i} out of order or altered");
    }
    assert!(stats.dropped_oks > 10, "the faults happened: {stats}");
    if case.corrupt > 0.0 {
        assert!(stats.corrupted > 50, "{stats}");
    }
    if case.runout {
        assert_eq!(stats.runouts, 1);
        assert_eq!(
            seen.paused.len(),
            1,
            "paused once: {:?} resumed {}",
            seen.paused,
            seen.resumed
        );
        assert_eq!(seen.paused[0].0, PausedBy::Printer);
        assert_eq!(seen.resumed, 1);
    }
    eprintln!(
        "{}: {MOVES} moves once, in order; sim {stats}; host resends {} time-outs {}; pauses {:?}; prompts {:?}",
        case.firmware,
        seen.resends,
        seen.timeouts,
        seen.paused,
        seen.prompts.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>()
    );
    seen
}

fn kind(seen: &Seen) -> FirmwareKind {
    seen.firmware.as_ref().expect("connected").kind
}

fn prompt_texts(seen: &Seen) -> Vec<&str> {
    seen.prompts.iter().map(|(t, _)| t.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marlin_prompts_through_faults() {
    let seen = print(Case {
        firmware: Firmware::Marlin,
        corrupt: 0.02,
        runout: true,
        person: false,
        farm_resumes: false,
    })
    .await;
    let fw = seen.firmware.as_ref().unwrap();
    assert_eq!(kind(&seen), FirmwareKind::Marlin);
    assert!(fw.emergency_parser && fw.prompt_support && !fw.advanced_ok);
    assert_eq!(fw.thermal_protection, Some(true));
    assert_eq!(seen.paused[0].1.as_deref(), Some("filament runout 0"));
    assert_eq!(
        prompt_texts(&seen),
        ["FilamentRunout T0", "Nozzle Parked", "Paused", "Resuming"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marlin_advanced_ok_through_faults() {
    let seen = print(Case {
        firmware: Firmware::MarlinAdvanced,
        corrupt: 0.02,
        runout: true,
        person: false,
        farm_resumes: false,
    })
    .await;
    assert!(seen.firmware.as_ref().unwrap().advanced_ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prusa_mk3_knob_through_faults() {
    let seen = print(Case {
        firmware: Firmware::PrusaMk3,
        corrupt: 0.02,
        runout: true,
        person: true,
        farm_resumes: false,
    })
    .await;
    assert_eq!(kind(&seen), FirmwareKind::Prusa);
    assert_eq!(seen.paused[0].1.as_deref(), Some("paused for user"));
    assert!(seen.prompts.is_empty(), "Prusa MK3 shows no host prompt");
}

/// Buddy shows Marlin's prompts but has no emergency parser: an `M876`
/// would wait behind the blocking `M600`, so the host refuses the farm's
/// answer (it would hit a later prompt) and the person at the printer's
/// screen ends the pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prusa_buddy_prompts_answered_at_the_printer_through_faults() {
    let seen = print(Case {
        firmware: Firmware::PrusaBuddy,
        corrupt: 0.02,
        runout: true,
        person: true,
        farm_resumes: false,
    })
    .await;
    let fw = seen.firmware.as_ref().unwrap();
    assert!(!fw.emergency_parser && fw.prompt_support);
    assert!(prompt_texts(&seen).contains(&"Nozzle Parked"));
    assert!(
        seen.rejected
            .iter()
            .any(|r| r.contains("answer at the printer")),
        "the farm's answer was not refused: {:?}",
        seen.rejected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creality_through_faults() {
    let seen = print(Case {
        firmware: Firmware::Creality,
        corrupt: 0.02,
        runout: false,
        person: false,
        farm_resumes: false,
    })
    .await;
    assert_eq!(kind(&seen), FirmwareKind::Marlin);
    assert!(!seen.firmware.as_ref().unwrap().emergency_parser);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repetier_through_faults() {
    let seen = print(Case {
        firmware: Firmware::Repetier,
        corrupt: 0.02,
        runout: true,
        person: true,
        farm_resumes: false,
    })
    .await;
    assert_eq!(kind(&seen), FirmwareKind::Repetier);
}

/// RepRapFirmware drops a line with a bad checksum without a word and checks
/// no line numbers, so a corrupted line and a lost `ok` look the same to any
/// host: only lost `ok`s here (USB's own CRC makes corruption rare there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reprap_lost_oks() {
    let seen = print(Case {
        firmware: Firmware::RepRap,
        corrupt: 0.0,
        runout: false,
        person: false,
        farm_resumes: false,
    })
    .await;
    assert_eq!(kind(&seen), FirmwareKind::RepRap);
}

/// Klipper checks nothing (a pseudo-terminal does not corrupt) and never
/// asks for a resend: lost `ok`s are found by markers alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn klipper_lost_oks_and_a_farm_resume() {
    let seen = print(Case {
        firmware: Firmware::Klipper,
        corrupt: 0.0,
        runout: true,
        person: false,
        farm_resumes: true,
    })
    .await;
    assert_eq!(kind(&seen), FirmwareKind::Klipper);
    assert_eq!(seen.resends, 0);
}

/// Another board on the same port (a swapped cable): the task reconnects
/// and reports the new identity; holding the printer is the farm's call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_board_reports_another_identity() {
    let dir = TestDir::new("fw-swap");
    let link = dir.path().join("tty");
    let board = |uuid: &str, machine: &str| SimConfig {
        identity: Identity {
            uuid: Some(uuid.into()),
            machine_type: Some(machine.into()),
        },
        ..SimConfig::for_firmware(Firmware::Marlin)
    };
    let first = "6d1e2b4c-0a9f-4d2e-8b7a-1f3c5e7a9b01";
    let second = "f00dbabe-1111-4222-8333-444455556666";
    let sim = sim::spawn(&link, board(first, "Ender-3 V2")).unwrap();
    let (tx, mut reports) = mpsc::channel(64);
    let (handle, task) = printer::spawn(settings(&link, true), tx);
    let a = connected(&mut reports).await;
    sim.stop();
    let sim = sim::spawn(&link, board(second, "Prusa-MK4")).unwrap();
    let b = connected(&mut reports).await;
    assert_eq!(a.unique_uuid(), Some(first));
    assert_eq!(b.unique_uuid(), Some(second));
    assert_eq!(a.machine_type.as_deref(), Some("Ender-3 V2"));
    assert_eq!(b.machine_type.as_deref(), Some("Prusa-MK4"));
    assert!(b.capability("THERMAL_PROTECTION") == Some(true));
    handle.send(PrinterCommand::Shutdown).await.unwrap();
    while reports.recv().await.is_some() {}
    task.await.unwrap();
    sim.stop();
}

/// The next `Connected` report (bounded).
async fn connected(reports: &mut mpsc::Receiver<PrinterReport>) -> HostFirmware {
    let next = async {
        loop {
            if let ReportKind::Connected(fw) = reports.recv().await.expect("task alive").kind {
                return fw;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), next)
        .await
        .expect("no Connected report in time")
}

/// The moves in the simulator's log. Read lossily: an unnumbered line has no
/// checksum, so a corrupted one (a prompt answer sent out of band) runs, and
/// is logged, as received.
fn executed_moves(log: &Path) -> Vec<String> {
    let bytes = std::fs::read(log).unwrap();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| l.starts_with("G1 "))
        .map(str::to_owned)
        .collect()
}
