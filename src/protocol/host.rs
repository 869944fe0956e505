//! The host side of the Marlin serial protocol as a state machine.
//!
//! Call order, after opening the port:
//! 1. `handle_bytes(now, bytes)` with whatever the port returned (any chunking);
//! 2. `handle_timeout(now)` when the deadline from `poll_timeout` has passed
//!    (a spurious call is a no-op);
//! 3. commands: `queue_line`, `pause`, `resume`, `cancel`, `emergency_stop`;
//! 4. then drain: `poll_transmit` (bytes to write), `poll_event`, `poll_timeout`.
//!
//! Exactly-once rests on the printer's own line check: every line carries its
//! number and checksum, the printer refuses any number but last+1, so a line
//! sent again (after a resend request or a lost `ok`) is never run twice. The
//! host's job is liveness: keep the window full, rewind on `Resend:`, ignore
//! stale repeats of a resend request, and probe when an `ok` goes missing.

use super::line::{self, LineError};
use super::queue::LineQueue;
use super::reply::{parse_reply, ErrorKind, Reply};
use super::{Config, Event, Firmware, LineKind, PrinterError, Stats};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Longest printer line kept; longer ones are line noise and are dropped.
const MAX_REPLY_LEN: usize = 512;
/// Lines framed ahead of the window, so the caller can read ahead of the wire.
const READ_AHEAD: u64 = 8;
/// Handshake attempts after `Resend:` for a line we never sent.
const MAX_HANDSHAKES: u32 = 5;
const SAFETY_OFF: [&str; 4] = ["M104 S0", "M140 S0", "M107", "M84"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Port just opened: waiting for the firmware's `start` banner.
    AwaitingBoot {
        since: Instant,
    },
    /// `M110 N0`, `M115` (and `M155`) in flight, one at a time.
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
    autoreport_requested: bool,
    last_progress: Instant,
    busy: bool,
    timeouts_in_row: u32,
    probing: bool,
    expect_resend_ok: bool,
    stale: Option<Stale>,
    resend_line: u64,
    resend_count: u32,
    next_temp_poll: Option<Instant>,
    raw_out: Vec<u8>,
    job_active: bool,
    paused: bool,
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
            autoreport_requested: false,
            last_progress: now,
            busy: false,
            timeouts_in_row: 0,
            probing: false,
            expect_resend_ok: false,
            stale: None,
            resend_line: 0,
            resend_count: 0,
            next_temp_poll: None,
            raw_out: Vec::new(),
            job_active: false,
            paused: false,
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
        self.state == State::Ready && !self.paused && self.queue.unsent() < READ_AHEAD
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
        if self.queue.in_flight_lines() > 0 && now >= self.ack_deadline() {
            self.on_ack_timeout(now);
        }
        if let Some(at) = self.next_temp_poll {
            if now >= at {
                self.next_temp_poll = Some(now + self.cfg.temp_poll_interval);
                if self.state == State::Ready && !self.paused && self.queue.unsent() < 2 {
                    self.queue.push("M105", LineKind::Host);
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
        Ok(self.queue.push(cmd, kind))
    }

    /// While a job is active, a printer reset fails it instead of re-handshaking.
    pub fn set_job_active(&mut self, active: bool) {
        self.job_active = active;
    }

    /// Stops sending queued job lines; lines already in the printer finish.
    pub fn pause(&mut self) {
        self.paused = true;
    }
    pub fn resume(&mut self) {
        self.paused = false;
    }

    /// Drops unsent lines and turns heaters, fan and motors off. When the line
    /// protocol is no longer usable, the same commands go out unnumbered
    /// (Marlin accepts those whatever its line counter says).
    pub fn cancel(&mut self) {
        self.paused = false;
        self.job_active = false;
        if self.state == State::Ready {
            self.queue.drop_unsent();
            for cmd in SAFETY_OFF {
                self.queue.push(cmd, LineKind::Host);
            }
        } else {
            for cmd in SAFETY_OFF {
                self.raw_out.extend_from_slice(cmd.as_bytes());
                self.raw_out.push(b'\n');
            }
        }
    }

    /// `M112`, unnumbered and ahead of everything; the printer halts.
    pub fn emergency_stop(&mut self) {
        self.raw_out.clear();
        self.raw_out.extend_from_slice(b"M112\n");
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
        if matches!(self.state, State::Halted | State::AwaitingBoot { .. }) {
            return buf.len() > start;
        }
        while let Some(entry) = self.queue.next_unsent() {
            if self.paused && matches!(entry.kind, LineKind::Job(_)) {
                break;
            }
            if !self.window_allows(entry.len()) {
                break;
            }
            if self.queue.in_flight_lines() == 0 {
                self.last_progress = now;
            }
            buf.extend_from_slice(entry.bytes());
            self.stats.lines_sent += 1;
            self.stats.bytes_sent += entry.len() as u64;
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
        let ack = (self.queue.in_flight_lines() > 0).then(|| self.ack_deadline());
        let stale = self.stale.map(|s| s.until);
        [boot, ack, stale, self.next_temp_poll]
            .into_iter()
            .flatten()
            .min()
    }

    // ---- internals ----

    fn handle_line(&mut self, now: Instant, line: &[u8]) {
        if self.state == State::Halted {
            return;
        }
        let reply = parse_reply(line);
        if std::mem::take(&mut self.expect_resend_ok) && matches!(reply, Reply::Ok { .. }) {
            // Marlin answers a refused line with Error, Resend and an `ok`
            // that belongs to the refused line, not to any line in flight.
            self.stats.swallowed_oks += 1;
            return;
        }
        match reply {
            Reply::Ok { temps, advanced } => {
                if !temps.is_empty() {
                    self.events.push_back(Event::Temps(temps));
                }
                if let Some(free) = advanced.and_then(|a| a.queue_free) {
                    self.firmware.advanced_ok = true;
                    let slots = usize::try_from(free)
                        .unwrap_or(usize::MAX)
                        .saturating_add(1);
                    let learned = self.learned_slots.unwrap_or(1).max(slots).min(64);
                    self.learned_slots = Some(learned);
                }
                self.on_ok(now);
            }
            Reply::Resend(k) => self.on_resend(now, k),
            Reply::Error { kind, text } => match kind {
                ErrorKind::LineCheck { .. } => {
                    self.stats.line_errors += 1;
                    self.last_progress = now;
                }
                ErrorKind::Fatal => self.fail(PrinterError::Halted(text.to_owned())),
                ErrorKind::Other => self.events.push_back(Event::PrinterError(text.to_owned())),
            },
            Reply::Busy(_) => {
                self.last_progress = now;
                self.busy = true;
                self.events.push_back(Event::Busy);
            }
            Reply::Start => self.on_start(now),
            Reply::Temps(t) => self.events.push_back(Event::Temps(t)),
            Reply::Action(a) => self.events.push_back(Event::Action(a.to_owned())),
            Reply::FirmwareName(text) => {
                let name = text.trim_start_matches("FIRMWARE_NAME:");
                let end = name.find(" SOURCE_CODE_URL").unwrap_or(name.len());
                self.firmware.name = name.get(..end).unwrap_or(name).trim().to_owned();
            }
            Reply::Capability { name, enabled } => match name {
                "AUTOREPORT_TEMP" => self.firmware.autoreport_temp = enabled,
                "EMERGENCY_PARSER" => self.firmware.emergency_parser = enabled,
                "ADVANCED_OK" => self.firmware.advanced_ok |= enabled,
                _ => {}
            },
            Reply::Echo(text) | Reply::Other(text) if !text.is_empty() => {
                self.events.push_back(Event::Message(text.to_owned()));
            }
            Reply::Echo(_) | Reply::Other(_) | Reply::Wait | Reply::Empty => {}
        }
    }

    fn on_ok(&mut self, now: Instant) {
        self.last_progress = now;
        self.busy = false;
        self.timeouts_in_row = 0;
        self.probing = false;
        let Some((n, kind)) = self.queue.ack_oldest() else {
            self.stats.unexpected_oks += 1;
            return;
        };
        if self.stale.is_some_and(|s| n >= s.target) {
            // The printer handles bytes in order: it is past every stale line.
            self.stale = None;
        }
        self.on_acked(now, n, kind);
    }

    fn on_acked(&mut self, now: Instant, line: u64, kind: LineKind) {
        self.events.push_back(Event::Acked { line, kind });
        if self.state == State::AwaitingFirmwareInfo && line >= self.handshake_last {
            self.continue_handshake(now);
        }
    }

    fn on_resend(&mut self, now: Instant, k: u64) {
        self.stats.resends += 1;
        self.last_progress = now;
        self.expect_resend_ok = true;
        if let Some(stale) = self.stale.as_mut() {
            if stale.target == k && stale.lines > 0 {
                // The echo of a line sent before we rewound: already handled.
                stale.bytes -= stale.bytes / usize::try_from(stale.lines).unwrap_or(1).max(1);
                stale.lines -= 1;
                return;
            }
        }
        if k > self.queue.sent_high() {
            if self.state == State::AwaitingFirmwareInfo && self.handshakes < MAX_HANDSHAKES {
                // Our M110 was lost; the printer still counts from an old session.
                self.begin_handshake(now);
            } else {
                let next = self.queue.sent_high();
                self.fail(PrinterError::ResendAhead { line: k, next });
            }
            return;
        }
        if std::mem::take(&mut self.probing) {
            // The printer was quiet when probed: every line below k has run.
            self.timeouts_in_row = 0;
            while self.queue.acked() < k {
                let Some((n, kind)) = self.queue.ack_oldest() else {
                    break;
                };
                self.on_acked(now, n, kind);
            }
        }
        if k == self.resend_line {
            self.resend_count += 1;
            if self.resend_count > self.cfg.max_resends_per_line {
                self.fail(PrinterError::ResendLoop { line: k });
                return;
            }
        } else {
            self.resend_line = k;
            self.resend_count = 1;
        }
        let Some((lines, bytes)) = self.queue.rewind(k) else {
            let oldest = self.queue.first();
            self.fail(PrinterError::ResendOutOfHistory { line: k, oldest });
            return;
        };
        let first_len = self.queue.get(k).map_or(0, |e| e.len());
        self.stale = (lines > 1).then(|| {
            let stale_bytes = bytes.saturating_sub(first_len);
            Stale {
                target: k,
                lines: lines - 1,
                bytes: stale_bytes,
                until: now + self.wire_grace(stale_bytes),
            }
        });
        self.events.push_back(Event::Resend { line: k });
    }

    fn on_start(&mut self, now: Instant) {
        match self.state {
            State::Ready if self.job_active || self.queue.has_job_lines() => {
                self.fail(PrinterError::ResetMidPrint);
            }
            State::Ready => {
                self.events.push_back(Event::Reset);
                self.begin_handshake(now);
            }
            _ => self.begin_handshake(now),
        }
    }

    fn on_ack_timeout(&mut self, now: Instant) {
        self.timeouts_in_row += 1;
        self.stats.timeouts += 1;
        if self.timeouts_in_row > self.cfg.max_timeouts {
            let secs = now.saturating_duration_since(self.last_progress).as_secs();
            self.fail(PrinterError::NoResponse { secs });
            return;
        }
        // Send the oldest unacknowledged line again, alone. If its `ok` was
        // lost, the printer refuses the duplicate and says where it is.
        let oldest = self.queue.acked();
        let _ = self.queue.rewind(oldest);
        self.probing = true;
        self.stale = None;
        self.last_progress = now;
        self.events.push_back(Event::Timeout { line: oldest });
    }

    fn begin_handshake(&mut self, now: Instant) {
        self.handshakes += 1;
        self.state = State::AwaitingFirmwareInfo;
        self.queue.reset(0);
        self.firmware = Firmware::default();
        self.learned_slots = None;
        self.autoreport_requested = false;
        self.stale = None;
        self.probing = false;
        self.expect_resend_ok = false;
        self.busy = false;
        self.timeouts_in_row = 0;
        self.last_progress = now;
        self.next_temp_poll = None;
        // `N0 M110 N0`: the next line the printer expects is 1.
        self.queue.push("M110 N0", LineKind::Host);
        self.handshake_last = self.queue.push("M115", LineKind::Host);
    }

    fn continue_handshake(&mut self, now: Instant) {
        if self.firmware.autoreport_temp && !self.autoreport_requested {
            self.autoreport_requested = true;
            let cmd = format!("M155 S{}", self.cfg.autoreport_interval_s);
            self.handshake_last = self.queue.push(&cmd, LineKind::Host);
            return;
        }
        self.state = State::Ready;
        self.next_temp_poll =
            (!self.firmware.autoreport_temp).then(|| now + self.cfg.temp_poll_interval);
        self.events.push_back(Event::Ready(self.firmware.clone()));
    }

    fn window_allows(&self, len: usize) -> bool {
        let lines = self.queue.in_flight_lines();
        let stale_bytes = self.stale.map_or(0, |s| s.bytes);
        let one_at_a_time =
            self.cfg.ping_pong || self.probing || self.state == State::AwaitingFirmwareInfo;
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

    fn ack_deadline(&self) -> Instant {
        let wait = if self.queue.long_in_flight() {
            self.cfg.long_command_timeout
        } else if self.busy {
            self.cfg.busy_timeout.max(self.cfg.ack_timeout)
        } else {
            self.cfg.ack_timeout
        };
        self.last_progress + wait
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
}
