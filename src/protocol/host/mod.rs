//! The host side of the G-code serial protocol as a state machine.
//!
//! Call order, after opening the port:
//! 1. `handle_bytes(now, bytes)` with whatever the port returned (any chunking);
//! 2. `handle_timeout(now)` when the deadline from `poll_timeout` has passed
//!    (a spurious call is a no-op);
//! 3. commands: `queue_line`, `end_job`, `pause`, `resume`, `cancel`,
//!    `answer_prompt`, `emergency_stop`;
//! 4. then drain: `poll_transmit` (bytes to write), `poll_event`, `poll_timeout`.
//!
//! Exactly-once rests on the printer's own line check: every line carries its
//! number and checksum, the printer refuses any number but last+1, so a line
//! sent again (after a resend request or a lost `ok`) is never run twice.
//! Where the firmware checks no line numbers (Klipper, RepRapFirmware) the
//! host never sends a line twice. The host's job is liveness: keep the window
//! full, rewind on `Resend:`, ignore stale repeats of a resend request, and
//! find lost `ok`s quickly (`recovery.rs`).
//!
//! Parts: `inbound.rs` (what each reply means), `recovery.rs` (deadlines,
//! lost `ok`s, probes), `printer_wait.rs` (printer-initiated pauses and
//! prompts), `handshake.rs` (connect, `M115`, capabilities).

mod handshake;
mod inbound;
mod printer_wait;
mod recovery;

use super::firmware::Firmware;
use super::line::{self, LineError};
use super::motion::{Cost, MotionModel};
use super::planned::PlannedMoves;
use super::queue::LineQueue;
use super::{Config, Event, LineKind, PrinterError, Stats};
use handshake::StyleCheck;
use printer_wait::PrinterWait;
use recovery::{AckClock, Probe};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use printer_wait::PromptError;

/// Longest printer line kept; longer ones are line noise and are dropped.
const MAX_REPLY_LEN: usize = 512;
/// Lines framed ahead of the window, so the caller can read ahead of the wire.
const READ_AHEAD: u64 = 8;
/// Job lines between two `M105` markers where oks carry no line number.
const MARKER_EVERY: u32 = 32;
const SAFETY_OFF: [&str; 4] = ["M104 S0", "M140 S0", "M107", "M84"];
const MARKER: &str = "M105";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Port just opened: waiting for the firmware's `start` banner.
    AwaitingBoot {
        since: Instant,
    },
    /// `M110 N0`, `M115`, (`M155`,) `M105` in flight, one at a time.
    AwaitingFirmwareInfo,
    Ready,
    /// Sticky: further input is ignored; a new connection needs a new core.
    Halted,
}

/// Lines sent before a rewind that are still on the wire or in the printer's
/// RX buffer. Each may come back as one more "Resend: k" (to be ignored), and
/// their bytes still take room in the printer's buffer until they are gone.
#[derive(Debug, Clone, Copy)]
struct Stale {
    target: u64,
    lines: u64,
    bytes: usize,
    until: Instant,
}

/// The end of a job: the sync command (`M400`) and the line whose proven
/// acknowledgement completes the job.
#[derive(Debug, Clone)]
struct JobEnd {
    sync: Option<String>,
    proof_line: u64,
    resyncs: u32,
    /// Repetier acknowledges on receipt: wait for its idle `wait` too.
    awaiting_idle: bool,
}

#[derive(Debug, Default)]
struct JobState {
    active: bool,
    /// One past the highest job tag written to the wire.
    sent_high: Option<u64>,
    since_marker: u32,
    end: Option<JobEnd>,
    complete: bool,
}

pub struct HostProtocol {
    cfg: Config,
    state: State,
    queue: LineQueue,
    events: VecDeque<Event>,
    rx: Vec<u8>,
    rx_overlong: bool,
    firmware: Firmware,
    learned_slots: Option<usize>,
    handshake_last: u64,
    handshakes: u32,
    /// One past the highest line reported acknowledged this session: a line
    /// the printer asks for again after we counted it is not reported twice.
    acked_high: u64,
    autoreport_requested: bool,
    ping_sent: bool,
    last_progress: Instant,
    busy: bool,
    timeouts_in_row: u32,
    /// The last progress before the current run of time-outs.
    silent_since: Instant,
    probe: Option<Probe>,
    expect_resend_ok: bool,
    /// Whether this firmware sends `ok` after `Resend:` (prior from `M115`,
    /// then learned from a resend that leaves no doubt).
    resend_ok: Option<bool>,
    /// The connect-time check of the resend style (`handshake.rs`).
    style_check: StyleCheck,
    expect_skip_ok: bool,
    stale: Option<Stale>,
    resend_line: u64,
    resend_count: u32,
    next_temp_poll: Option<Instant>,
    raw_out: Vec<u8>,
    job: JobState,
    /// Paused by the host (the farm).
    paused: bool,
    wait: PrinterWait,
    /// `M105` answers with `ok T:…` (seen during the handshake).
    markers: bool,
    clock: AckClock,
    motion: MotionModel,
    /// The moves the printer has planned (host estimate).
    planned: PlannedMoves,
    /// Unnumbered lines written out of band (`M876` to an emergency
    /// parser), which the printer also queues and acknowledges: for each,
    /// one past the highest line number written before it.
    raw_oks: VecDeque<u64>,
    /// Firmwares that acknowledge on receipt (Repetier): the costs of the
    /// last lines acknowledged, which may still wait in the printer's queue.
    received: VecDeque<Cost>,
    stats: Stats,
}

impl HostProtocol {
    /// A new connection, opened at `now`.
    pub fn new(cfg: Config, now: Instant) -> Self {
        HostProtocol {
            cfg,
            state: State::AwaitingBoot { since: now },
            queue: LineQueue::new(0),
            events: VecDeque::new(),
            rx: Vec::with_capacity(128),
            rx_overlong: false,
            firmware: Firmware::default(),
            learned_slots: None,
            handshake_last: 0,
            handshakes: 0,
            acked_high: 0,
            autoreport_requested: false,
            ping_sent: false,
            last_progress: now,
            busy: false,
            timeouts_in_row: 0,
            silent_since: now,
            probe: None,
            expect_resend_ok: false,
            resend_ok: None,
            style_check: StyleCheck::Idle,
            expect_skip_ok: false,
            stale: None,
            resend_line: 0,
            resend_count: 0,
            next_temp_poll: None,
            raw_out: Vec::new(),
            job: JobState::default(),
            paused: false,
            wait: PrinterWait::default(),
            markers: false,
            clock: AckClock::default(),
            motion: MotionModel::default(),
            planned: PlannedMoves::default(),
            raw_oks: VecDeque::new(),
            received: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    // ---- getters ----

    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }
    pub fn is_halted(&self) -> bool {
        self.state == State::Halted
    }
    pub fn firmware(&self) -> &Firmware {
        &self.firmware
    }
    pub fn stats(&self) -> Stats {
        self.stats
    }
    /// True when nothing is in flight or waiting to be sent.
    pub fn is_drained(&self) -> bool {
        self.queue.in_flight_lines() == 0 && self.queue.unsent() == 0
    }
    /// True when the caller should hand over another job line.
    pub fn wants_line(&self) -> bool {
        self.state == State::Ready
            && !self.paused
            && !self.wait.printer_paused
            && self.job.end.is_none()
            && self.queue.unsent() < READ_AHEAD
    }
    /// The printer paused itself (or asked the host to pause) and has not
    /// resumed yet.
    pub fn is_printer_paused(&self) -> bool {
        self.wait.printer_paused
    }
    /// Job lines (by their tag) written to the wire at least once since
    /// `set_job_active(true)`: 0 means the printer never saw the job.
    pub fn job_lines_sent(&self) -> u64 {
        self.job.sent_high.unwrap_or(0)
    }
    /// Whether `M105` markers find lost `ok`s on this printer (its `M105`
    /// answers with `ok T:…` and its oks carry no line number).
    pub fn uses_markers(&self) -> bool {
        self.markers_for_streaming()
    }

    // ---- input ----

    /// Feeds bytes read from the port, in any chunking.
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                if self.rx_overlong {
                    self.rx_overlong = false;
                    self.events
                        .push_back(Event::Message("overlong printer line dropped".into()));
                } else if !self.rx.is_empty() {
                    let line = std::mem::take(&mut self.rx);
                    self.handle_line(now, &line);
                    self.rx = line;
                }
                self.rx.clear();
            } else if self.rx.len() < MAX_REPLY_LEN {
                self.rx.push(b);
            } else {
                self.rx_overlong = true;
            }
        }
    }

    /// Acts on expired deadlines. Calling it early does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Halted => return,
            State::AwaitingBoot { since } => {
                if now >= since + self.cfg.boot_timeout {
                    // Boards without auto-reset never print `start`.
                    self.begin_handshake(now);
                }
                return;
            }
            _ => {}
        }
        if self.stale.is_some_and(|s| now >= s.until) {
            self.stale = None;
        }
        self.on_user_wait_lapse(now);
        if self.style_check.deadline().is_some_and(|t| now >= t) {
            self.style_check_timed_out(now);
        }
        if self.ack_deadline().is_some_and(|d| now >= d) {
            self.on_ack_timeout(now);
        }
        if let Some(at) = self.next_temp_poll {
            if now >= at {
                self.next_temp_poll = Some(now + self.cfg.temp_poll_interval);
                let idle = !self.paused && self.queue.unsent() < 2 && !self.queue.marker_unacked();
                if self.state == State::Ready && idle {
                    self.push_host(MARKER);
                }
            }
        }
    }

    // ---- commands ----

    /// Frames and queues one prepared command (see [`line::prepare`]);
    /// refuses what would break the frame (see [`line::check_command`]).
    pub fn queue_line(&mut self, cmd: &str, kind: LineKind) -> Result<u64, LineError> {
        // The caller prepared `cmd` (comments and whitespace gone); only
        // the framing guarantee is checked here, once per line.
        line::check_command(cmd)?;
        let cost = self.motion.cost(cmd);
        let n = self.queue.push(cmd, kind, cost);
        if matches!(kind, LineKind::Job(_)) && self.markers_for_streaming() {
            self.job.since_marker += 1;
            if self.job.since_marker >= MARKER_EVERY {
                self.job.since_marker = 0;
                self.push_host(MARKER);
            }
        }
        Ok(n)
    }

    /// No more job lines: finish with `sync` (e.g. `M400`, whose `ok` comes
    /// only once every move has ended; `None` for firmwares without it) and
    /// report [`Event::JobComplete`] when the printer has proven it is past
    /// that point: an `ok` that names the line (ADVANCED_OK), the `ok T:` of
    /// an `M105` sent after it, or (Repetier, which acknowledges on receipt)
    /// its idle `wait` afterwards. An `ok` inferred from a probe proves
    /// nothing (the line may still be queued), so the sync is sent again.
    pub fn end_job(&mut self, sync: Option<&str>) -> Result<(), LineError> {
        if let Some(cmd) = sync {
            line::check_command(cmd)?;
        }
        let proof_line = self.push_proof(sync);
        self.job.end = Some(JobEnd {
            sync: sync.map(str::to_owned),
            proof_line,
            resyncs: 0,
            awaiting_idle: false,
        });
        self.check_drained_end();
        Ok(())
    }

    /// While a job is active, a printer reset fails it instead of
    /// re-handshaking. Starting a job resets its counters.
    pub fn set_job_active(&mut self, active: bool) {
        if active && !self.job.active {
            self.job = JobState {
                active: true,
                ..JobState::default()
            };
        }
        self.job.active = active;
    }

    /// Stops sending queued job lines; lines already in the printer finish.
    pub fn pause(&mut self) {
        self.paused = true;
    }

    /// Sends job lines again, also after the printer paused itself. Klipper
    /// (`klippy/extras/pause_resume.py`) restores its saved state on `RESUME`.
    pub fn resume(&mut self) {
        self.paused = false;
        if std::mem::take(&mut self.wait.printer_paused) {
            if self.firmware.kind == super::FirmwareKind::Klipper {
                self.push_host("RESUME");
            }
            self.events.push_back(Event::PrinterResumed);
        }
    }

    /// Drops unsent lines and turns heaters, fan and motors off. When the line
    /// protocol is no longer usable, the same commands go out unnumbered
    /// (Marlin accepts those whatever its line counter says).
    pub fn cancel(&mut self) {
        self.paused = false;
        self.wait = PrinterWait::default();
        self.job.active = false;
        self.job.end = None;
        if self.state == State::Ready {
            self.queue.drop_unsent();
            for cmd in SAFETY_OFF {
                self.push_host(cmd);
            }
        } else {
            for cmd in SAFETY_OFF {
                self.raw_out.extend_from_slice(cmd.as_bytes());
                self.raw_out.push(b'\n');
            }
        }
    }

    /// `M112`, unnumbered and ahead of everything; the printer halts. A
    /// leading newline ends any partial line, so that Marlin's emergency
    /// parser sees `M112` at the start of a line.
    pub fn emergency_stop(&mut self) {
        self.raw_out.clear();
        self.raw_out.extend_from_slice(b"\nM112\n");
        self.queue.drop_unsent();
        self.fail(PrinterError::EmergencyStop);
    }

    // ---- output ----

    /// Appends everything that may be written now to `buf` (several lines in
    /// one write). Returns whether anything was added.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> bool {
        let start = buf.len();
        if !self.raw_out.is_empty() {
            buf.append(&mut self.raw_out);
        }
        if matches!(self.state, State::Halted | State::AwaitingBoot { .. })
            || self.style_check.deadline().is_some()
        {
            return buf.len() > start;
        }
        while let Some(entry) = self.queue.next_unsent() {
            let job_tag = match entry.kind {
                LineKind::Job(tag) => Some(tag),
                LineKind::Host => None,
            };
            if job_tag.is_some() && (self.paused || self.wait.printer_paused) {
                break;
            }
            // A marker probe must get out even when lines whose oks were
            // lost fill the window (no line-check firmwares talk over USB or
            // a pty, which lose no bytes): send up to the marker.
            let probe_marker = self.probe == Some(Probe::Marker) && self.queue.marker_unsent();
            if !probe_marker && !self.window_allows(entry.len()) {
                break;
            }
            if self.queue.in_flight_lines() == 0 {
                self.last_progress = now;
            }
            buf.extend_from_slice(entry.bytes());
            self.stats.lines_sent += 1;
            self.stats.bytes_sent += entry.len() as u64;
            if let Some(tag) = job_tag {
                let high = self.job.sent_high.unwrap_or(0).max(tag.saturating_add(1));
                self.job.sent_high = Some(high);
            }
            self.queue.mark_sent();
        }
        buf.len() > start
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest instant at which `handle_timeout` has work to do.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let boot = match self.state {
            State::Halted => return None,
            State::AwaitingBoot { since } => return Some(since + self.cfg.boot_timeout),
            _ => None,
        };
        let stale = self.stale.map(|s| s.until);
        [
            boot,
            self.ack_deadline(),
            stale,
            self.next_temp_poll,
            self.style_check.deadline(),
            self.user_wait_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---- shared internals ----

    fn push_host(&mut self, cmd: &str) -> u64 {
        let cost = self.motion.cost(cmd);
        self.queue.push(cmd, LineKind::Host, cost)
    }

    /// Queues the sync command and, where markers work, an `M105` after it;
    /// returns the line whose proven ack completes the job.
    ///
    /// Where no ok names its line (no ADVANCED_OK, no marker, a firmware
    /// that checks line numbers so the host may infer acks from probes), a
    /// counted `ok` can be early by at most the lines that were in the
    /// printer's queue when an ack was inferred (a `Resend:` resets the
    /// count): the sync goes out window + 1 times, and the last one's `ok`
    /// means the first has run.
    fn push_proof(&mut self, sync: Option<&str>) -> u64 {
        let mut last = self.queue.next_n().saturating_sub(1);
        let Some(cmd) = sync else { return last };
        let named = self.markers
            || self.firmware.advanced_ok
            || self.firmware.acks_on_receipt()
            || !self.firmware.checks_line_numbers();
        let repeats = if named {
            1
        } else {
            self.learned_slots
                .unwrap_or(self.cfg.max_lines_in_flight)
                .max(1)
                + 1
        };
        for _ in 0..repeats {
            last = self.push_host(cmd);
        }
        if self.markers_for_streaming() {
            last = self.push_host(MARKER);
        }
        last
    }

    fn markers_for_streaming(&self) -> bool {
        self.markers && !self.firmware.advanced_ok && !self.firmware.acks_on_receipt()
    }

    fn window_allows(&self, len: usize) -> bool {
        let lines = self.queue.in_flight_lines();
        let stale_bytes = self.stale.map_or(0, |s| s.bytes);
        let one_at_a_time = self.cfg.ping_pong
            || self.probe == Some(Probe::Resend)
            || self.state == State::AwaitingFirmwareInfo;
        if one_at_a_time {
            return lines == 0;
        }
        if lines == 0 && stale_bytes == 0 {
            return true;
        }
        let slots = self
            .learned_slots
            .unwrap_or(self.cfg.max_lines_in_flight)
            .max(1);
        let budget = self.cfg.rx_buffer.saturating_sub(1).max(1);
        lines < slots as u64 && self.queue.in_flight_bytes() + stale_bytes + len <= budget
    }

    /// How long stale bytes may still arrive: twice their wire time, plus
    /// scheduling slack.
    fn wire_grace(&self, bytes: usize) -> Duration {
        let slack = Duration::from_millis(20);
        if self.cfg.baud == 0 {
            return slack;
        }
        let micros = (bytes as u64 * 10 * 1_000_000) / u64::from(self.cfg.baud);
        Duration::from_micros(2 * micros) + slack
    }

    fn fail(&mut self, err: PrinterError) {
        self.state = State::Halted;
        self.events.push_back(Event::Failed(err));
    }

    /// Ends a job whose sync was disabled once nothing is left in flight.
    fn check_drained_end(&mut self) {
        let drained_end = self
            .job
            .end
            .as_ref()
            .is_some_and(|e| e.sync.is_none() && !e.awaiting_idle);
        if drained_end && self.is_drained() {
            self.complete_job();
        }
    }

    fn complete_job(&mut self) {
        if self.job.end.take().is_some() && !self.job.complete {
            self.job.complete = true;
            self.job.active = false;
            self.events.push_back(Event::JobComplete);
        }
    }

    /// The first long or synchronising command the printer may still be
    /// working on: among the lines in flight, and on firmwares that
    /// acknowledge on receipt also among the last lines acknowledged.
    fn cost_of_unacked(&self) -> Cost {
        self.received
            .iter()
            .copied()
            .chain(self.queue.in_flight().map(|e| e.cost))
            .find(|c| matches!(c, Cost::Long | Cost::Sync(_)))
            .unwrap_or(Cost::Instant)
    }
}
