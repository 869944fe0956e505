//! The firmware behind the serial line: executes one queued command at a
//! time (moves, heaters, dwell, homing, reports) and runs Marlin's idle-loop
//! output (temperature autoreport, `busy:` keep-alives, M109/M190 wait
//! lines). A command either finishes at once or blocks until a deadline the
//! board asks for via [`Machine::next_event`]. No I/O, no clock.

use std::time::{Duration, Instant};

use super::gcode::Command;
use super::motion::Motion;
use super::thermal::{secs, Thermal};
use super::wire::WireOut;

/// How a finished command is acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// The normal `ok` (plain or ADVANCED_OK, the board decides).
    Ok,
    /// A reply that is the ok itself (M105: `ok T:…`).
    Custom(String),
}

/// The result of starting a command.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Started {
    Done(Reply),
    /// Still running: the board waits for [`Machine::on_timer`] to finish it.
    Blocked,
}

/// Marlin's TEMP_WINDOW / TEMP_BED_WINDOW (°C) and residency times (s).
const WINDOW: f64 = 1.0;
const RESIDENCY: f64 = 10.0;
/// Unscaled durations of G28 and G29 on a typical printer (s).
const HOMING: f64 = 12.0;
const LEVELING: f64 = 60.0;
/// HOST_KEEPALIVE_INTERVAL and the M109/M190 report period.
const BUSY_EVERY: Duration = Duration::from_secs(2);
const TEMP_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
enum Wait {
    /// Dwell or homing in progress.
    Until(Instant),
    /// `planner.synchronize()`, then wait this long more.
    Sync(Duration),
    /// A move of this duration waiting for a planner slot.
    Room(Duration),
    /// M109/M190: `done` is when the residency ends (`None`: never).
    Heat {
        reached: Option<Instant>,
        done: Option<Instant>,
    },
}

#[derive(Debug, Clone, Copy)]
struct Job {
    wait: Wait,
    busy_next: Instant,
    temp_next: Option<Instant>,
}

#[derive(Debug, Clone)]
pub(crate) struct Machine {
    pub thermal: Thermal,
    pub motion: Motion,
    autoreport: Option<(Duration, Instant)>,
    job: Option<Job>,
    /// `busy:` keep-alive prefix, `None` where the firmware sends none.
    busy_prefix: Option<&'static str>,
    motion_scale: f64,
    heat_scale: f64,
}

impl Machine {
    pub(crate) fn new(
        now: Instant,
        motion_scale: f64,
        heat_scale: f64,
        busy_prefix: Option<&'static str>,
    ) -> Self {
        Machine {
            thermal: Thermal::new(now, heat_scale),
            motion: Motion::new(motion_scale),
            autoreport: None,
            job: None,
            busy_prefix,
            motion_scale,
            heat_scale,
        }
    }

    /// Board reset or kill: heaters off, planner empty, no autoreport.
    pub(crate) fn reset(&mut self, now: Instant) {
        self.thermal.all_off(now);
        self.motion.reset();
        self.autoreport = None;
        self.job = None;
    }

    /// Whether a command is running (the next one must wait).
    pub(crate) fn is_busy(&self) -> bool {
        self.job.is_some()
    }

    /// Starts the command `text` at `now`.
    pub(crate) fn start(&mut self, now: Instant, text: &[u8], out: &mut WireOut) -> Started {
        let Some(cmd) = Command::parse(text) else {
            return unknown(now, text, out);
        };
        let done = Started::Done(Reply::Ok);
        match (cmd.letter, cmd.code) {
            (b'G', 0..=3) => {
                let duration = self.motion.plan_linear(&cmd);
                if duration.is_zero() || self.motion.free(now) > 0 {
                    self.motion.push(now, duration);
                    return done;
                }
                self.block(now, Wait::Room(duration), out)
            }
            (b'G', 4) => {
                let mut dwell = Duration::ZERO;
                if let Some(ms) = cmd.value(b'P') {
                    dwell = secs(ms / 1000.0);
                }
                if let Some(s) = cmd.value(b'S') {
                    dwell = secs(s);
                }
                self.block(now, Wait::Sync(dwell), out)
            }
            (b'G', 28) => {
                self.motion.home(&cmd);
                self.block(now, Wait::Sync(secs(HOMING * self.motion_scale)), out)
            }
            (b'G', 29) => self.block(now, Wait::Sync(secs(LEVELING * self.motion_scale)), out),
            (b'G', 90) | (b'G', 91) => {
                self.motion.set_relative(cmd.code == 91);
                done
            }
            (b'M', 82) | (b'M', 83) => {
                self.motion.set_e_relative(cmd.code == 83);
                done
            }
            (b'G', 92) => {
                self.motion.set_position(&cmd);
                done
            }
            (b'M', 104) | (b'M', 140) => {
                if let Some(s) = cmd.value(b'S') {
                    let heater = if cmd.code == 140 {
                        &mut self.thermal.bed
                    } else {
                        &mut self.thermal.hotend
                    };
                    heater.set_target(now, s);
                }
                done
            }
            (b'M', 109) | (b'M', 190) => self.heat(now, &cmd, out),
            (b'M', 105) => Started::Done(Reply::Custom(format!("ok{}", self.thermal.report(now)))),
            (b'M', 114) => {
                out.line(now, &self.motion.report());
                done
            }
            (b'M', 118) => {
                out.line(now, String::from_utf8_lossy(cmd.args).trim());
                done
            }
            (b'M', 155) => {
                if let Some(s) = cmd.value(b'S') {
                    let every = secs(s.clamp(0.0, 60.0).floor());
                    self.autoreport = (!every.is_zero()).then(|| (every, now + every));
                }
                done
            }
            (b'M', 400) => self.block(now, Wait::Sync(Duration::ZERO), out),
            (b'T', _) => done,
            (b'G', 10 | 11 | 20 | 21)
            | (b'M', 17 | 18 | 73 | 75..=77 | 80 | 81 | 84 | 106..=108 | 110..=112 | 117)
            | (b'M', 201..=209 | 211 | 220 | 221 | 301..=304 | 502 | 503 | 851 | 900 | 907) => done,
            _ => unknown(now, text, out),
        }
    }

    fn heat(&mut self, now: Instant, cmd: &Command<'_>, out: &mut WireOut) -> Started {
        let bed = cmd.code == 190;
        let (s, r) = (cmd.value(b'S'), cmd.value(b'R'));
        let Some(target) = r.or(s) else {
            return Started::Done(Reply::Ok);
        };
        let heater = if bed {
            &mut self.thermal.bed
        } else {
            &mut self.thermal.hotend
        };
        heater.set_target(now, target);
        // `S` waits only for heating; `R` also for cooling.
        if r.is_none() && heater.temp_at(now) > heater.target() {
            return Started::Done(Reply::Ok);
        }
        let reached = heater.time_to_window(now, WINDOW).map(|d| now + d);
        let done = reached.map(|at| at + secs(RESIDENCY * self.heat_scale));
        self.block(now, Wait::Heat { reached, done }, out)
    }

    fn block(&mut self, now: Instant, wait: Wait, out: &mut WireOut) -> Started {
        let heating = matches!(wait, Wait::Heat { .. });
        self.job = Some(Job {
            wait,
            busy_next: now + BUSY_EVERY,
            temp_next: heating.then_some(now),
        });
        match self.on_timer(now, out) {
            Some(reply) => Started::Done(reply),
            None => Started::Blocked,
        }
    }

    /// Aborts an M109/M190 wait (M108 seen by the emergency parser).
    pub(crate) fn cancel_heating(&mut self, now: Instant) {
        if let Some(Job {
            wait: Wait::Heat { done, .. },
            ..
        }) = &mut self.job
        {
            *done = Some(now);
        }
    }

    /// The earliest time something happens without new input.
    pub(crate) fn next_event(&self) -> Option<Instant> {
        let auto = self.autoreport.map(|(_, next)| next);
        let Some(job) = &self.job else { return auto };
        let wait = match job.wait {
            Wait::Until(at) => Some(at),
            Wait::Sync(_) => self.motion.idle_at(),
            Wait::Room(_) => self.motion.next_slot_at(),
            Wait::Heat { done, .. } => done,
        };
        let busy = self.busy_prefix.map(|_| job.busy_next);
        [auto, wait, busy, job.temp_next]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs everything due at or before `now`; returns the reply if the
    /// running command finished.
    pub(crate) fn on_timer(&mut self, now: Instant, out: &mut WireOut) -> Option<Reply> {
        if let Some((every, next)) = &mut self.autoreport {
            while *next <= now {
                out.line(*next, &self.thermal.report(*next));
                *next += *every;
            }
        }
        let mut job = self.job?;
        if let (Some(at), Wait::Heat { reached, done, .. }) = (job.temp_next, job.wait) {
            if at <= now {
                let left = match (reached, done) {
                    (Some(r), Some(d)) if r <= now => {
                        d.saturating_duration_since(now).as_secs().to_string()
                    }
                    _ => "?".to_string(),
                };
                out.line(now, &format!("{} W:{left}", self.thermal.report(now)));
                job.temp_next = Some(now + TEMP_EVERY);
            }
        }
        if job.busy_next <= now {
            if let Some(prefix) = self.busy_prefix {
                out.line(now, &format!("{prefix}processing"));
            }
            job.busy_next = now + BUSY_EVERY;
        }
        loop {
            match job.wait {
                Wait::Until(at) if at <= now => break,
                Wait::Sync(then) if self.motion.idle_at().is_none_or(|idle| idle <= now) => {
                    job.wait = Wait::Until(now + then);
                }
                Wait::Room(duration) if self.motion.free(now) > 0 => {
                    self.motion.push(now, duration);
                    break;
                }
                Wait::Heat { done: Some(at), .. } if at <= now => break,
                _ => {
                    self.job = Some(job);
                    return None;
                }
            }
        }
        self.job = None;
        Some(Reply::Ok)
    }
}

/// Marlin's answer to a command it does not implement; an `ok` follows.
fn unknown(now: Instant, text: &[u8], out: &mut WireOut) -> Started {
    out.line(
        now,
        &format!(
            "echo:Unknown command: \"{}\"",
            String::from_utf8_lossy(text)
        ),
    );
    Started::Done(Reply::Ok)
}
