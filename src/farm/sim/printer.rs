//! A printer and its task, as the farm core sees them through reports: the
//! port (up, handshaking, down), the job being streamed, the plate as it
//! physically is, and what was really executed. It behaves like the fixed
//! printer task (reports never lost, a cancel drops a held-back start), so
//! the simulation tests the farm's decisions, not the serial protocol.

use crate::printer::{
    JobOutcome, JobProgress, PausedBy, PrinterCommand, PrinterReport, ReportKind,
};
use crate::protocol::{Firmware, Stats};
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Down,
    /// Opened; the handshake finishes after a few steps.
    Handshake(u32),
    Ready,
}

#[derive(Debug, Clone)]
pub struct Streaming {
    pub job: String,
    pub total: u64,
    pub done: u64,
    pub paused: bool,
}

#[derive(Debug)]
pub struct PrinterModel {
    pub id: String,
    pub port: Port,
    pub commands: VecDeque<PrinterCommand>,
    pub reports: VecDeque<PrinterReport>,
    pub job: Option<Streaming>,
    /// A start received during the handshake.
    pub pending: Option<(String, u64)>,
    /// Something is on the plate (a print sent at least one line).
    pub dirty: bool,
    /// Every job this printer ever started executing (survives gateway crashes).
    pub executed: Vec<String>,
    /// Set by the checker: a start on a dirty plate, a second execution.
    pub violations: Vec<String>,
    /// E-stops that came from the farm core (not out of band).
    pub estops_from_core: u64,
    /// Steps left of silence (a busy or hung board: no progress, no reports).
    pub silent: u32,
    /// `Offline`/`Fault` reports sent (a start from before one is refused).
    losses: u64,
    /// The printer asks a person (after a runout) and waits.
    pub prompt_open: bool,
    /// Steps until the person at the printer answers it there.
    person_in: u32,
    /// Which board answers on this port: 0 is the printer's own, 1 another
    /// machine (after a port swap).
    pub board: u8,
    /// The board an operator last accepted (answered ok), and one whose
    /// acceptance is on its way: a job may start on no other.
    pub accepted: u8,
    pub accepting: Option<u8>,
    /// The farm has heard this printer connect (its first board is the
    /// printer's by definition: a swap before that cannot be seen).
    pub first_heard: bool,
}

/// The firmware name each board answers `M115` with.
pub const BOARD_FIRMWARE: [&str; 2] = ["Marlin sim", "Repetier sim"];

/// Which board answered as `name` (`u8::MAX`: neither).
pub fn board_of(name: &str) -> u8 {
    BOARD_FIRMWARE
        .iter()
        .position(|b| *b == name)
        .map_or(u8::MAX, |i| i as u8)
}

impl PrinterModel {
    pub fn new(id: &str, dirty: bool) -> PrinterModel {
        PrinterModel {
            id: id.to_owned(),
            port: Port::Handshake(1),
            commands: VecDeque::new(),
            reports: VecDeque::new(),
            job: None,
            pending: None,
            dirty,
            executed: Vec::new(),
            violations: Vec::new(),
            estops_from_core: 0,
            silent: 0,
            losses: 0,
            prompt_open: false,
            person_in: 0,
            board: 0,
            accepted: 0,
            accepting: None,
            first_heard: false,
        }
    }

    fn report(&mut self, kind: ReportKind) {
        if matches!(kind, ReportKind::Offline { .. } | ReportKind::Fault { .. }) {
            self.losses += 1;
        }
        self.reports.push_back(PrinterReport {
            printer: self.id.clone(),
            kind,
        });
    }

    fn progress(s: &Streaming) -> JobProgress {
        JobProgress {
            lines_done: s.done,
            lines_total: s.total,
            lines_sent: s.done,
            percent: s.done as f64 * 100.0 / s.total.max(1) as f64,
        }
    }

    fn end(&mut self, outcome: JobOutcome) {
        // The job's prompt goes with it (the farm closes it on the end).
        self.prompt_open = false;
        if let Some(s) = self.job.take() {
            let stats = Stats {
                lines_sent: s.done.max(1),
                ..Stats::default()
            };
            self.report(ReportKind::JobFinished {
                job_id: s.job.clone(),
                outcome,
                progress: Self::progress(&s),
                stats,
            });
        }
    }

    /// The start of a job's stream: where the invariants bite.
    fn start(&mut self, job: String, total: u64) {
        if self.executed.contains(&job) {
            self.violations
                .push(format!("{}: job {job} executed a second time", self.id));
        }
        if self.dirty {
            self.violations.push(format!(
                "{}: job {job} started on a plate not confirmed clear",
                self.id
            ));
        }
        if self.board != self.accepted && self.accepting != Some(self.board) {
            self.violations.push(format!(
                "{}: job {job} started on board {} ({}), which no operator accepted",
                self.id,
                self.board,
                BOARD_FIRMWARE[usize::from(self.board)]
            ));
        }
        self.executed.push(job.clone());
        self.dirty = true;
        self.report(ReportKind::JobStarted {
            job_id: job.clone(),
        });
        self.job = Some(Streaming {
            job,
            total: total.max(1),
            done: 0,
            paused: false,
        });
    }

    /// One step of the task: a command, the handshake, or some lines.
    pub fn step(&mut self, lines: u64) {
        if self.silent > 0 {
            self.silent -= 1;
            return;
        }
        if self.prompt_open {
            self.person_in = self.person_in.saturating_sub(1);
            if self.person_in == 0 {
                self.close_prompt();
            }
        }
        if let Port::Handshake(n) = self.port {
            if n == 0 {
                self.port = Port::Ready;
                self.report(ReportKind::Connected(Firmware {
                    name: BOARD_FIRMWARE[usize::from(self.board)].into(),
                    ..Firmware::default()
                }));
                if let Some((job, total)) = self.pending.take() {
                    self.start(job, total);
                }
            } else {
                self.port = Port::Handshake(n - 1);
            }
        }
        if let Some(cmd) = self.commands.pop_front() {
            self.command(cmd);
            return;
        }
        if let Some(s) = self.job.as_mut().filter(|s| !s.paused) {
            s.done = (s.done + lines).min(s.total);
            let (job, progress, done) = (s.job.clone(), Self::progress(s), s.done == s.total);
            if done {
                self.end(JobOutcome::Completed);
            } else {
                self.report(ReportKind::Progress {
                    job_id: job,
                    progress,
                });
            }
        }
    }

    fn command(&mut self, cmd: PrinterCommand) {
        match cmd {
            PrinterCommand::StartJob {
                job_id,
                summary,
                session,
                ..
            } => match self.port {
                _ if session != self.losses => self.report(ReportKind::Rejected {
                    reason: "the connection changed since this start was decided".into(),
                    job_id: Some(job_id),
                }),
                Port::Down => self.report(ReportKind::Rejected {
                    reason: "printer is offline".into(),
                    job_id: Some(job_id),
                }),
                _ if self.job.is_some() || self.pending.is_some() => {
                    self.report(ReportKind::Rejected {
                        reason: "printer is busy with another job".into(),
                        job_id: Some(job_id),
                    })
                }
                Port::Handshake(_) => self.pending = Some((job_id, summary.commands)),
                Port::Ready => self.start(job_id, summary.commands),
            },
            PrinterCommand::Pause | PrinterCommand::Resume => {
                let pause = matches!(cmd, PrinterCommand::Pause);
                if let Some(s) = self.job.as_mut().filter(|s| s.paused != pause) {
                    s.paused = pause;
                    let job_id = s.job.clone();
                    self.report(if pause {
                        ReportKind::Paused {
                            job_id,
                            by: PausedBy::Farm,
                            reason: None,
                        }
                    } else {
                        ReportKind::Resumed { job_id }
                    });
                }
            }
            PrinterCommand::Cancel => {
                self.drop_pending();
                self.end(JobOutcome::Cancelled);
            }
            PrinterCommand::EmergencyStop => {
                self.drop_pending();
                if self.port == Port::Ready {
                    self.end(JobOutcome::Failed("emergency stop".into()));
                    self.report(ReportKind::Fault {
                        reason: "emergency stop".into(),
                    });
                    self.port = Port::Handshake(2);
                }
            }
            PrinterCommand::PromptAnswer { choice } => {
                if self.prompt_open && choice == 0 {
                    self.close_prompt();
                } else {
                    self.report(ReportKind::Rejected {
                        reason: format!("prompt answer {choice}: no such choice open"),
                        job_id: None,
                    });
                }
            }
            PrinterCommand::RunMacro { .. } => {}
            PrinterCommand::Shutdown => {
                self.drop_pending();
                self.end(JobOutcome::Failed(
                    "gateway stopped during the print".into(),
                ));
                self.report(ReportKind::Stopped);
            }
        }
    }

    /// Filament runs out mid-print: the printer pauses itself and asks a
    /// person (`Continue`), who comes by within some steps if nobody
    /// answers over MQTT. False when nothing was printing.
    pub fn runout(&mut self) -> bool {
        let Some(s) = self.job.as_mut().filter(|s| !s.paused) else {
            return false;
        };
        if self.port != Port::Ready {
            return false;
        }
        s.paused = true;
        let job_id = s.job.clone();
        self.prompt_open = true;
        self.person_in = 40;
        self.report(ReportKind::Paused {
            job_id,
            by: PausedBy::Printer,
            reason: Some("filament runout 0".into()),
        });
        self.report(ReportKind::Prompt {
            text: "Nozzle Parked".into(),
            choices: vec!["Continue".into()],
        });
        true
    }

    /// The prompt is answered (over MQTT or at the printer): the job goes on.
    fn close_prompt(&mut self) {
        self.prompt_open = false;
        self.report(ReportKind::PromptClosed);
        if let Some(s) = self.job.as_mut().filter(|s| s.paused) {
            s.paused = false;
            let job_id = s.job.clone();
            self.report(ReportKind::Resumed { job_id });
        }
    }

    /// A start held back during the handshake never runs after a cancel.
    fn drop_pending(&mut self) {
        if let Some((job, total)) = self.pending.take() {
            self.report(ReportKind::JobFinished {
                job_id: job,
                outcome: JobOutcome::Cancelled,
                progress: JobProgress::none(total),
                stats: Stats::default(),
            });
        }
    }

    /// The USB cable is pulled (or the board resets): the job ends, the
    /// port goes down until `replug`.
    pub fn unplug(&mut self) {
        if self.port == Port::Down {
            return;
        }
        self.end(JobOutcome::Failed("serial port disconnected".into()));
        if let Some((job, total)) = self.pending.take() {
            self.report(ReportKind::JobFinished {
                job_id: job,
                outcome: JobOutcome::Failed("serial port disconnected".into()),
                progress: JobProgress::none(total),
                stats: Stats::default(),
            });
        }
        self.port = Port::Down;
        self.report(ReportKind::Offline {
            reason: "serial port disconnected".into(),
        });
    }

    /// The ports re-enumerate and another board answers on this one (or
    /// the printer's own comes back): unplugged, then another machine.
    pub fn swap_board(&mut self) {
        self.unplug();
        self.board ^= 1;
    }

    pub fn replug(&mut self) {
        if self.port == Port::Down {
            self.port = Port::Handshake(2);
        }
    }

    /// The board rebooted mid-print: the firmware's `start` ends the job.
    pub fn reset(&mut self) {
        if self.port != Port::Ready {
            return;
        }
        self.end(JobOutcome::Failed("printer reset during the print".into()));
        self.report(ReportKind::Fault {
            reason: "printer reset".into(),
        });
        self.port = Port::Handshake(1);
    }

    /// The gateway process died: its task, queue and reports die with it;
    /// the physical printer stops where it was (the plate stays as it is).
    pub fn gateway_crashed(&mut self) {
        self.job = None;
        self.pending = None;
        self.commands.clear();
        self.reports.clear();
        self.silent = 0;
        self.losses = 0;
        self.prompt_open = false;
        self.accepting = None;
        if self.port != Port::Down {
            self.port = Port::Handshake(2);
        }
    }
}
