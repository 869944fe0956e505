//! A printer board as a sans-IO state machine: serial bytes in, output
//! bytes out, the next deadline out. No tokio, no I/O, no clock: every call
//! takes `now`, and all behaviour is decided in virtual time, so tests drive
//! it byte for byte without sleeping and the driver's 1 ms timers do not
//! limit the wire's throughput. Stock Marlin 2.x by default; the other
//! firmwares differ where their [`Profile`] says.
//!
//! Call order (quinn style): input with [`Marlin::handle_open`],
//! [`Marlin::handle_bytes`] and [`Marlin::handle_timeout`]; then drain
//! [`Marlin::poll_transmit`] and [`Marlin::poll_log`]; then sleep until
//! [`Marlin::poll_timeout`]. A spurious `handle_timeout` is a no-op.
//!
//! The board: bytes land in an RX buffer of `rx_buffer` bytes at their wire
//! arrival time (a full buffer drops them, like a UART without flow
//! control); while the command queue (`slots`, Marlin's BUFSIZE) has room the
//! firmware reads lines out of it, checks them (`intake.rs`) and queues
//! them; queued commands run one at a time (`commands.rs`, [`Machine`]) and
//! each gets an `ok` when processed. The emergency parser sees every byte on
//! arrival. Input already on the wire is simulated eagerly up to its last
//! arrival: nothing read later can land earlier, so that future is fixed.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::faults::Rng;
use super::gcode::{Emergency, EmergencyParser, MAX_LINE};
use super::machine::{Machine, Reply};
use super::pause::Pause;
use super::profile::{Identity, Profile};
use super::wire::{WireIn, WireOut};
use super::{SimConfig, SimStats};

/// Repetier prints `wait` after a second idle (`gcode.cpp` `readFromSerial`).
const IDLE_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(super) struct Queued {
    /// The line's own number (echoed by ADVANCED_OK).
    pub number: Option<i64>,
    /// The command as executed (and logged).
    pub text: Vec<u8>,
    /// Sent by the host (owed an `ok`); a runout's `M600` is not.
    pub from_host: bool,
}

/// The simulated board. See the module doc for the call order.
#[derive(Debug)]
pub(crate) struct Marlin {
    pub(super) profile: Profile,
    pub(super) identity: Identity,
    pub(super) slots: usize,
    pub(super) rx_cap: usize,
    pub(super) advanced_ok: bool,
    pub(super) resend_ok: bool,
    pub(super) corrupt: f64,
    drop_ok: f64,
    reset_after: Option<u64>,
    reset_after_done: bool,
    runout_after: Option<u64>,
    runout_done: bool,
    logging: bool,

    wire_in: WireIn,
    pub(super) tx: WireOut,
    pub(super) rx: VecDeque<u8>,
    /// The line being assembled, and whether the rest of it is skipped
    /// (after `;` or past MAX_CMD_SIZE).
    pub(super) line: Vec<u8>,
    pub(super) skipping: bool,
    pub(super) queue: VecDeque<Queued>,
    pub(super) last_n: i64,
    /// Repetier: lines still skipped without a word after a resend request.
    pub(super) waiting_for_resend: i32,
    pub(super) halted: bool,
    ep: EmergencyParser,
    pub(super) machine: Machine,
    pub(super) pause: Pause,
    pub(super) rng: Rng,
    next_wait: Option<Instant>,
    log: Vec<u8>,
    dropped_log: Vec<(i64, Instant)>,
    pub(super) stats: SimStats,
}

impl Marlin {
    /// A powered board no host has opened yet (no banner until
    /// [`Marlin::handle_open`]).
    pub(crate) fn new(cfg: &SimConfig, now: Instant) -> Self {
        // The knobs win over the profile's defaults (M115 reports them).
        let profile = Profile {
            advanced_ok: cfg.advanced_ok,
            ok_after_resend: cfg.resend_ok,
            ..Profile::of(cfg.firmware)
        };
        Marlin {
            slots: cfg.slots.max(1),
            rx_cap: cfg.rx_buffer.max(1),
            advanced_ok: cfg.advanced_ok,
            resend_ok: cfg.resend_ok,
            corrupt: cfg.corrupt,
            drop_ok: cfg.drop_ok,
            reset_after: cfg.reset_after,
            reset_after_done: false,
            runout_after: cfg.runout_after,
            runout_done: false,
            logging: cfg.received_log.is_some(),
            wire_in: WireIn::new(cfg.baud),
            tx: WireOut::new(cfg.baud),
            rx: VecDeque::with_capacity(cfg.rx_buffer.max(1)),
            line: Vec::with_capacity(MAX_LINE + 1),
            skipping: false,
            queue: VecDeque::new(),
            last_n: 0,
            waiting_for_resend: -1,
            halted: false,
            ep: EmergencyParser::default(),
            machine: Machine::new(
                now,
                cfg.motion_time_scale,
                cfg.heat_time_scale,
                profile.busy_prefix,
            ),
            pause: Pause::new(
                now,
                profile.pause,
                profile.nozzle_timeout_s,
                cfg.person_after,
                profile.busy_prefix,
            ),
            identity: cfg.identity.clone(),
            profile,
            rng: Rng::seeded(cfg.seed),
            next_wait: None,
            log: Vec::new(),
            dropped_log: Vec::new(),
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
            && !self.pause.blocks()
    }

    /// A host opened the port: a board with DTR auto-reset reboots (output
    /// nobody read and input still on the wire are gone); native USB and a
    /// pty carry on.
    pub(crate) fn handle_open(&mut self, now: Instant) {
        self.stats.opens += 1;
        self.tx.clear();
        self.wire_in.restart();
        // A killed board without auto-reset was power-cycled meanwhile.
        if self.profile.resets_on_open || self.halted {
            self.reset(now);
        }
    }

    /// Bytes the host wrote, read from the port at `now`.
    pub(crate) fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        self.stats.bytes_in += bytes.len() as u64;
        if bytes.windows(4).any(|w| w == b"M112") {
            self.stats.m112_read_at = Some(now);
        }
        if self.halted && self.profile.resets_on_open {
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
        if let Some(at) = self.next_wait.filter(|t| *t <= now) {
            self.tx.line(at, "wait");
            self.next_wait = Some(at + IDLE_WAIT);
        }
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
        [
            self.tx.next_due(),
            self.machine.next_event(),
            self.pause.next_event(),
            self.next_wait,
        ]
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

    /// Moves the (line number, time) of each `ok` the `drop_ok` fault
    /// withheld into `out`.
    pub(crate) fn poll_dropped_oks(&mut self, out: &mut Vec<(i64, Instant)>) {
        out.append(&mut self.dropped_log);
    }

    /// Processes machine events and byte arrivals up to `until`, in time order.
    fn run(&mut self, until: Instant) {
        loop {
            let machine = [self.machine.next_event(), self.pause.next_event()]
                .into_iter()
                .flatten()
                .min()
                .filter(|t| *t <= until);
            let byte = self.wire_in.next_arrival().filter(|t| *t <= until);
            match (machine, byte) {
                // On a tie the machine goes first: a slot freed at t is free
                // for a byte landing at t.
                (Some(t), b) if b.is_none_or(|b| t <= b) => {
                    if let Some(reply) = self.machine.on_timer(t, &mut self.tx) {
                        self.finish(t, reply);
                    }
                    if self
                        .pause
                        .on_timer(t, &mut self.machine.thermal, &mut self.tx)
                    {
                        self.finish(t, Reply::Ok);
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
        self.arm_idle_wait(until);
    }

    /// One byte reaches the UART at `t` (the emergency parser sees it even
    /// when the full buffer drops it).
    fn land(&mut self, t: Instant, b: u8) {
        if self.profile.emergency_parser {
            match self.ep.feed(b) {
                Some(Emergency::M112) => return self.kill(t),
                Some(Emergency::M108) => self.machine.cancel_heating(t),
                Some(Emergency::M876(choice)) => self.prompt_answer(t, choice),
                None => {}
            }
        }
        if self.rx.len() >= self.rx_cap {
            self.stats.dropped_rx_bytes += 1;
            return;
        }
        self.rx.push_back(b);
    }

    /// The main loop at `t`: read lines while the queue has room, start
    /// queued commands until one blocks.
    pub(super) fn step(&mut self, t: Instant) {
        loop {
            if self.halted && self.profile.resets_on_open {
                return;
            }
            self.read_serial(t);
            if self.machine.is_busy() || self.pause.blocks() {
                return;
            }
            let Some(head) = self.queue.front() else {
                return;
            };
            let text = head.text.clone();
            match self.start_command(t, &text) {
                Some(reply) => self.finish(t, reply),
                None => return,
            }
        }
    }

    /// The head command was processed at `t`: ok, log, pop.
    pub(super) fn finish(&mut self, t: Instant, reply: Reply) {
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
        // Repetier acknowledged on receipt; a runout's M600 owes nothing.
        let owes_ok = done.from_host && self.profile.check != super::profile::LineCheck::Repetier;
        if !owes_ok {
            if let Reply::Custom(text) = reply {
                // Repetier prints M105's temperatures when it runs it.
                self.tx.line(t, text.trim_start_matches("ok"));
            }
        } else if !self.lose_ok(t, done.number) {
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
        if !self.runout_done && self.runout_after == Some(self.stats.executed) {
            self.runout_done = true;
            self.stats.runouts += 1;
            if self.pause.runout(t, &mut self.tx) {
                // Marlin's runout script and Prusa's filRunout put M600 first.
                self.queue.push_front(Queued {
                    number: None,
                    text: b"M600".to_vec(),
                    from_host: false,
                });
            }
        }
    }

    /// The `drop_ok` fault: whether this `ok` (for line `number`) is lost.
    pub(super) fn lose_ok(&mut self, t: Instant, number: Option<i64>) -> bool {
        if !self.rng.chance(self.drop_ok) {
            return false;
        }
        self.stats.dropped_oks += 1;
        self.dropped_log.push((number.unwrap_or(-1), t));
        true
    }

    /// M112 (or a kill): report once, then ignore everything until a reset
    /// (Klipper stays up in its "Shutdown" state and answers with errors).
    pub(super) fn kill(&mut self, t: Instant) {
        if self.profile.resets_on_open || !self.halted {
            let text = match self.profile.firmware {
                super::profile::Firmware::Klipper => "// Klipper state: Shutdown",
                _ => "Error:Printer halted. kill() called!",
            };
            self.tx.line(t, text);
        }
        self.halted = true;
        self.clear_input();
        self.machine.reset(t);
        self.pause.reset();
    }

    /// Reboot: queue, buffers and line counter cleared, heaters off, banner.
    fn reset(&mut self, t: Instant) {
        self.stats.resets += 1;
        self.halted = false;
        self.last_n = 0;
        self.waiting_for_resend = -1;
        self.clear_input();
        self.machine.reset(t);
        self.pause.reset();
        for line in self.profile.banner() {
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

    /// Repetier: `wait` each second while idle with an empty buffer.
    fn arm_idle_wait(&mut self, now: Instant) {
        if !self.profile.idle_wait || self.halted {
            return;
        }
        if self.is_idle() {
            self.next_wait.get_or_insert(now + IDLE_WAIT);
        } else {
            self.next_wait = None;
        }
    }
}
