//! A Marlin 2.x board as a sans-IO state machine: serial bytes in, output
//! bytes out, the next deadline out. No tokio, no I/O, no clock: every call
//! takes `now`, and all behaviour is decided in virtual time, so tests drive
//! it byte for byte without sleeping and the driver's 1 ms timers do not
//! limit the wire's throughput.
//!
//! Call order (quinn style): input with [`Marlin::handle_open`],
//! [`Marlin::handle_bytes`] and [`Marlin::handle_timeout`]; then drain
//! [`Marlin::poll_transmit`] and [`Marlin::poll_log`]; then sleep until
//! [`Marlin::poll_timeout`]. A spurious `handle_timeout` is a no-op.
//!
//! The board: bytes land in an RX buffer of `rx_buffer` bytes at their wire
//! arrival time (a full buffer drops them, like a UART without flow
//! control); while the command queue (`slots`, Marlin's BUFSIZE) has room the
//! firmware reads lines out of it, checks them (`gcode::check_line`) and
//! queues them; queued commands run one at a time in [`Machine`] and each
//! gets an `ok` when processed. The emergency parser sees every byte on
//! arrival. Input already on the wire is simulated eagerly up to its last
//! arrival: nothing read later can land earlier, so that future is fixed.

use std::collections::VecDeque;
use std::time::Instant;

use super::faults::{corrupt_line, Rng};
use super::gcode::{check_line, Command, Emergency, EmergencyParser, LineError, MAX_LINE};
use super::machine::{Machine, Reply, Started};
use super::wire::{WireIn, WireOut};
use super::{SimConfig, SimStats};

/// What Marlin prints after a reset.
const BANNER: [&str; 6] = [
    "start",
    "echo:Marlin 2.1.2.4",
    "echo: Last Updated: 2024-01-01 | Author: (printgate sim)",
    "echo:Compiled: Jan  1 2024",
    "echo: Free Memory: 2048  PlannerBufferBytes: 1232",
    "echo:SD card ok",
];

const KILLED: &str = "Error:Printer halted. kill() called!";

#[derive(Debug)]
struct Queued {
    /// The line's own number (echoed by ADVANCED_OK).
    number: Option<i64>,
    /// The command as executed (and logged).
    text: Vec<u8>,
}

/// The simulated board. See the module doc for the call order.
#[derive(Debug)]
pub(crate) struct Marlin {
    slots: usize,
    rx_cap: usize,
    advanced_ok: bool,
    resend_ok: bool,
    corrupt: f64,
    drop_ok: f64,
    reset_after: Option<u64>,
    reset_after_done: bool,
    logging: bool,

    wire_in: WireIn,
    tx: WireOut,
    rx: VecDeque<u8>,
    /// The line being assembled, and whether the rest of it is skipped
    /// (after `;` or past MAX_CMD_SIZE).
    line: Vec<u8>,
    skipping: bool,
    queue: VecDeque<Queued>,
    last_n: i64,
    halted: bool,
    ep: EmergencyParser,
    machine: Machine,
    rng: Rng,
    log: Vec<u8>,
    stats: SimStats,
}

impl Marlin {
    /// A powered board no host has opened yet (no banner until
    /// [`Marlin::handle_open`]).
    pub(crate) fn new(cfg: &SimConfig, now: Instant) -> Self {
        Marlin {
            slots: cfg.slots.max(1),
            rx_cap: cfg.rx_buffer.max(1),
            advanced_ok: cfg.advanced_ok,
            resend_ok: cfg.resend_ok,
            corrupt: cfg.corrupt,
            drop_ok: cfg.drop_ok,
            reset_after: cfg.reset_after,
            reset_after_done: false,
            logging: cfg.received_log.is_some(),
            wire_in: WireIn::new(cfg.baud),
            tx: WireOut::new(cfg.baud),
            rx: VecDeque::with_capacity(cfg.rx_buffer.max(1)),
            line: Vec::with_capacity(MAX_LINE + 1),
            skipping: false,
            queue: VecDeque::new(),
            last_n: 0,
            halted: false,
            ep: EmergencyParser::default(),
            machine: Machine::new(
                now,
                cfg.motion_time_scale,
                cfg.heat_time_scale,
                cfg.advanced_ok,
            ),
            rng: Rng::seeded(cfg.seed),
            log: Vec::new(),
            stats: SimStats::default(),
        }
    }

    pub(crate) fn stats(&self) -> &SimStats {
        &self.stats
    }

    /// No command queued or running and no input pending.
    pub(crate) fn is_idle(&self) -> bool {
        self.queue.is_empty()
            && self.rx.is_empty()
            && self.wire_in.is_empty()
            && !self.machine.is_busy()
    }

    /// A host opened the port: DTR auto-reset. Output nobody read and input
    /// still on the wire are gone; the board reboots at `now`.
    pub(crate) fn handle_open(&mut self, now: Instant) {
        self.stats.opens += 1;
        self.tx.clear();
        self.wire_in.restart();
        self.reset(now);
    }

    /// Bytes the host wrote, read from the port at `now`.
    pub(crate) fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        self.stats.bytes_in += bytes.len() as u64;
        if self.halted {
            return; // killed: deaf until the next reset
        }
        self.run(now);
        self.wire_in.push(now, bytes);
        let horizon = self.wire_in.horizon().unwrap_or(now).max(now);
        self.run(horizon);
    }

    /// Time passed; runs whatever was due by `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.run(now);
    }

    /// Appends to `buf` the output whose last byte has left the wire by `now`.
    #[must_use]
    pub(crate) fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> bool {
        let n = self.tx.poll(now, buf);
        self.stats.bytes_out += n as u64;
        n > 0
    }

    /// When to call `handle_timeout` (and `poll_transmit`) next.
    #[must_use]
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        [self.tx.next_due(), self.machine.next_event()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Moves the executed-command log (one command per line) into `out`.
    #[must_use]
    pub(crate) fn poll_log(&mut self, out: &mut Vec<u8>) -> bool {
        if self.log.is_empty() {
            return false;
        }
        out.append(&mut self.log);
        true
    }

    /// Processes machine events and byte arrivals up to `until`, in time order.
    fn run(&mut self, until: Instant) {
        loop {
            let machine = self.machine.next_event().filter(|t| *t <= until);
            let byte = self.wire_in.next_arrival().filter(|t| *t <= until);
            match (machine, byte) {
                // On a tie the machine goes first: a slot freed at t is free
                // for a byte landing at t.
                (Some(t), b) if b.is_none_or(|b| t <= b) => {
                    if let Some(reply) = self.machine.on_timer(t, &mut self.tx) {
                        self.finish(t, reply);
                    }
                    self.step(t);
                }
                // Bytes arriving at the same instant (an unpaced read) all
                // reach the RX buffer before the firmware looks at it.
                (_, Some(t)) => {
                    while !self.halted && self.wire_in.next_arrival() == Some(t) {
                        if let Some((_, b)) = self.wire_in.pop() {
                            self.land(t, b);
                        }
                    }
                    self.step(t);
                }
                _ => break,
            }
        }
    }

    /// One byte reaches the UART at `t` (the emergency parser sees it even
    /// when the full buffer drops it).
    fn land(&mut self, t: Instant, b: u8) {
        match self.ep.feed(b) {
            Some(Emergency::M112) => return self.kill(t),
            Some(Emergency::M108) => self.machine.cancel_heating(t),
            None => {}
        }
        if self.rx.len() >= self.rx_cap {
            self.stats.dropped_rx_bytes += 1;
            return;
        }
        self.rx.push_back(b);
    }

    /// Marlin's main loop at `t`: read lines while the queue has room, start
    /// queued commands until one blocks.
    fn step(&mut self, t: Instant) {
        loop {
            if self.halted {
                return;
            }
            self.read_serial(t);
            if self.machine.is_busy() {
                return;
            }
            let Some(head) = self.queue.front() else {
                return;
            };
            let board = Command::parse(&head.text)
                .filter(|c| c.letter == b'M' && matches!(c.code, 110 | 112));
            let started = match board {
                // M110 at execution: Marlin sets the counter again from its N.
                Some(c) if c.code == 110 => {
                    if let Some(n) = c.value(b'N') {
                        self.last_n = n as i64;
                    }
                    Started::Done(Reply::Ok)
                }
                Some(_) => return self.kill(t),
                None => self.machine.start(t, &head.text, &mut self.tx),
            };
            match started {
                Started::Done(reply) => self.finish(t, reply),
                Started::Blocked => return,
            }
        }
    }

    /// `get_serial_commands`: moves complete lines from RX into the queue.
    fn read_serial(&mut self, t: Instant) {
        while !self.halted && self.queue.len() < self.slots {
            let Some(b) = self.rx.pop_front() else { break };
            if b == b'\n' || b == b'\r' {
                let line = std::mem::take(&mut self.line);
                self.skipping = false;
                self.on_line(t, line);
            } else if !self.skipping {
                if b == b';' {
                    self.skipping = true;
                } else {
                    self.line.push(b);
                    self.skipping = self.line.len() >= MAX_LINE;
                }
            }
        }
    }

    fn on_line(&mut self, t: Instant, mut line: Vec<u8>) {
        if line.iter().any(|&b| b != b' ') {
            if self.rng.chance(self.corrupt) {
                corrupt_line(&mut self.rng, &mut line);
                self.stats.corrupted += 1;
            }
            match check_line(&line, self.last_n) {
                Ok(None) => {}
                Ok(Some(accepted)) => {
                    if let Some(n) = accepted.new_last {
                        self.last_n = n;
                    }
                    let text = accepted.command.to_vec();
                    self.queue.push_back(Queued {
                        number: accepted.number,
                        text,
                    });
                }
                Err(e) => self.line_error(t, e),
            }
        }
        line.clear();
        if self.line.capacity() < line.capacity() {
            self.line = line; // keep the allocation
        }
    }

    /// `gcode_line_error`: report, flush RX, ask for the next line again.
    fn line_error(&mut self, t: Instant, e: LineError) {
        self.stats.errors += 1;
        self.tx.line(
            t,
            &format!("Error:{}, Last Line: {}", e.message(), self.last_n),
        );
        if e.requests_resend() {
            self.rx.clear();
            self.line.clear();
            self.skipping = false;
            self.stats.resends += 1;
            self.tx
                .line(t, &format!("Resend: {}", self.last_n.saturating_add(1)));
            if self.resend_ok {
                self.tx.line(t, "ok");
            }
        }
    }

    /// The head command was processed at `t`: ok, log, pop.
    fn finish(&mut self, t: Instant, reply: Reply) {
        // ADVANCED_OK counts the command being acknowledged as still queued.
        let free_slots = self.slots.saturating_sub(self.queue.len());
        let Some(done) = self.queue.pop_front() else {
            return;
        };
        self.stats.executed += 1;
        if self.logging {
            self.log.extend_from_slice(&done.text);
            self.log.push(b'\n');
        }
        if self.rng.chance(self.drop_ok) {
            self.stats.dropped_oks += 1;
        } else {
            match reply {
                Reply::Custom(text) => self.tx.line(t, &text),
                Reply::Ok if self.advanced_ok => {
                    let planner = self.machine.motion.free(t);
                    let ok = match done.number {
                        Some(n) => format!("ok N{n} P{planner} B{free_slots}"),
                        None => format!("ok P{planner} B{free_slots}"),
                    };
                    self.tx.line(t, &ok);
                }
                Reply::Ok => self.tx.line(t, "ok"),
            }
        }
        if !self.reset_after_done && self.reset_after == Some(self.stats.executed) {
            self.reset_after_done = true;
            self.reset(t);
        }
    }

    /// M112 (or a kill): report once, then ignore everything until a reset.
    fn kill(&mut self, t: Instant) {
        self.tx.line(t, KILLED);
        self.halted = true;
        self.clear_input();
        self.machine.reset(t);
    }

    /// Reboot: queue, buffers and line counter cleared, heaters off, banner.
    fn reset(&mut self, t: Instant) {
        self.stats.resets += 1;
        self.halted = false;
        self.last_n = 0;
        self.clear_input();
        self.machine.reset(t);
        for line in BANNER {
            self.tx.line(t, line);
        }
    }

    fn clear_input(&mut self) {
        self.wire_in.clear();
        self.rx.clear();
        self.line.clear();
        self.skipping = false;
        self.queue.clear();
        self.ep.reset();
    }
}
