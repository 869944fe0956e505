//! The host's protocol core against the simulated board, both sans-IO on one
//! simulated clock, for what takes too long in real time: a filament runout
//! that waits 30 minutes for a person. Only bytes pass between the two; the
//! board keeps its own parser (the oracle), and its log of executed commands
//! is the truth the assertions check.

use crate::protocol::{self, Event, HostProtocol, LineKind};
use crate::sim::marlin::Marlin;
use crate::sim::{Firmware, SimConfig};
use std::time::{Duration, Instant};

mod runout;

/// A host core and a board, wired together, streaming `job`.
struct Pair {
    host: HostProtocol,
    board: Marlin,
    now: Instant,
    job: Vec<String>,
    next: usize,
    started: bool,
    ended: bool,
    /// Every host event, with when it happened.
    events: Vec<(Instant, Event)>,
    /// Everything the host wrote.
    host_wrote: Vec<u8>,
    /// The board's log of executed commands.
    log: Vec<u8>,
    buf: Vec<u8>,
}

impl Pair {
    fn new(sim: SimConfig, job: Vec<String>) -> Self {
        let now = Instant::now();
        let mut board = Marlin::new(
            &SimConfig {
                received_log: Some("/dev/null".into()),
                ..sim
            },
            now,
        );
        board.handle_open(now);
        let cfg = protocol::Config {
            boot_timeout: Duration::from_millis(300),
            ..protocol::Config::default()
        };
        Pair {
            host: HostProtocol::new(cfg, now),
            board,
            now,
            job,
            next: 0,
            started: false,
            ended: false,
            events: Vec::new(),
            host_wrote: Vec::new(),
            log: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// Moves bytes both ways at the current instant until both are quiet,
    /// handing job lines to the host as it wants them.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            self.buf.clear();
            if self.host.poll_transmit(self.now, &mut self.buf) {
                self.host_wrote.extend_from_slice(&self.buf);
                self.board.handle_bytes(self.now, &self.buf);
                moved = true;
            }
            self.buf.clear();
            while self.board.poll_transmit(self.now, &mut self.buf) {}
            if !self.buf.is_empty() {
                self.host.handle_bytes(self.now, &self.buf);
                moved = true;
            }
            while let Some(ev) = self.host.poll_event() {
                if matches!(ev, Event::Ready(_)) && !self.started {
                    self.started = true;
                    self.host.set_job_active(true);
                }
                self.events.push((self.now, ev));
                moved = true;
            }
            self.feed();
            let _ = self.board.poll_log(&mut self.log);
            if !moved {
                return;
            }
        }
    }

    fn feed(&mut self) {
        if !self.started || self.ended {
            return;
        }
        while self.host.wants_line() {
            match self.job.get(self.next) {
                Some(cmd) => {
                    let kind = LineKind::Job(self.next as u64);
                    assert!(self.host.queue_line(cmd, kind).is_ok(), "{cmd}");
                    self.next += 1;
                }
                None => {
                    self.ended = true;
                    assert!(self.host.end_job(Some("M400")).is_ok());
                    return;
                }
            }
        }
    }

    /// Runs for at most `limit` of simulated time, until `stop` holds for a
    /// new event; returns whether it did.
    fn run_until(&mut self, limit: Duration, mut stop: impl FnMut(&Event) -> bool) -> bool {
        let end = self.now + limit;
        let mut seen = self.events.len();
        loop {
            self.pump();
            if self.events[seen..].iter().any(|(_, e)| stop(e)) {
                return true;
            }
            seen = self.events.len();
            let next = [self.host.poll_timeout(), self.board.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => self.now = self.now.max(t),
                _ => {
                    self.now = end;
                    self.host.handle_timeout(end);
                    self.board.handle_timeout(end);
                    self.pump();
                    return self.events[seen..].iter().any(|(_, e)| stop(e));
                }
            }
            self.host.handle_timeout(self.now);
            self.board.handle_timeout(self.now);
        }
    }

    /// Executed commands, one per line.
    fn executed(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.log)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The events after index `from`.
    fn events_since(&self, from: usize) -> impl Iterator<Item = &Event> {
        self.events[from..].iter().map(|(_, e)| e)
    }

    /// The last prompt shown, if it is still open.
    fn open_prompt(&self) -> Option<(String, Vec<String>)> {
        let mut open = None;
        for (_, e) in &self.events {
            match e {
                Event::Prompt { text, choices } => open = Some((text.clone(), choices.clone())),
                Event::PromptClosed => open = None,
                _ => {}
            }
        }
        open
    }

    /// Answers the open prompt with the button labelled `label`.
    fn press(&mut self, label: &str) {
        let (text, choices) = self.open_prompt().expect("a prompt is open");
        let choice = choices
            .iter()
            .position(|c| c == label)
            .unwrap_or_else(|| panic!("prompt {text:?} has no {label:?}: {choices:?}"));
        self.host
            .answer_prompt(choice as u32)
            .expect("the host accepts the answer");
    }
}

/// A print: heat, home, `moves` moves, heaters off.
fn print_job(moves: usize) -> Vec<String> {
    let mut job: Vec<String> = [
        "M140 S60",
        "M104 S200",
        "M190 S60",
        "M109 S200",
        "G28",
        "G92 E0",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for i in 0..moves {
        job.push(format!(
            "G1 X{} Y{} E{:.3} F3000",
            10 + i % 150,
            10 + i * 7 % 150,
            i as f64 * 0.03
        ));
    }
    job.extend(["M104 S0".to_owned(), "M140 S0".to_owned()]);
    job
}

/// The job as the board ran it: without the host's own commands and the
/// runout's `M600`.
fn job_part(executed: &[String]) -> Vec<String> {
    executed
        .iter()
        .filter(|l| {
            ![
                "M105", "M110", "M115", "M155", "M400", "M600", "M876", "RESUME",
            ]
            .iter()
            .any(|h| l.starts_with(h))
        })
        .cloned()
        .collect()
}

fn sim(firmware: Firmware) -> SimConfig {
    SimConfig {
        baud: 250_000,
        motion_time_scale: 1.0,
        heat_time_scale: 0.05,
        ..SimConfig::for_firmware(firmware)
    }
}
