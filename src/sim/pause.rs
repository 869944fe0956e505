//! A filament runout and the pause that follows, as each firmware does it,
//! in virtual time. No I/O, no clock.
//!
//! - Marlin (`feature/runout.cpp`, `feature/pause.cpp`,
//!   `feature/host_actions.cpp`): the runout opens a prompt and says
//!   `//action:paused filament_runout 0`, then `M600` parks and waits for the
//!   user with `busy: paused for user` keep-alives and a "Nozzle Parked"
//!   prompt. After `PAUSE_PARK_NOZZLE_TIMEOUT` (45 s) the nozzle heater goes
//!   off (the bed stays on) and the prompt becomes "HeaterTimeout / Reheat".
//!   Answers come as `M876 S<n>`: Reheat, then Continue, then the purge
//!   prompt "Paused / PurgeMore / Continue"; Continue resumes with
//!   `//action:resumed` and an informational "Resuming" prompt.
//! - Prusa-Firmware 3.x (`Filament_sensor.cpp` `filRunout`, `Marlin_main.cpp`
//!   `M600_wait_for_user`): `M600` in front of the queue, `busy: paused for
//!   user` until someone presses the knob; the nozzle goes off after
//!   `M600_TIMEOUT` (600 s) and reheats on the press. No host prompt.
//! - Klipper (`extras/pause_resume.py`) and Repetier (`Communication.cpp`):
//!   `// action:pause`; the host stops sending; `// action:resume` when the
//!   person resumes at the printer (Klipper: also the host's `RESUME`).
//!
//! - Prusa-Firmware-Buddy: the Marlin prompts, but without an emergency
//!   parser an `M876` waits in the command queue behind the blocking `M600`
//!   (see `profile.rs`), so the pause ends at the printer's screen.
//!
//! The simulated person (`SimConfig::person_after`) acts that long after the
//! pause began: presses the knob (Prusa), goes through the `M600` dialogue
//! on the printer's screen (Marlin prompts: reheat if the nozzle idled, then
//! continue), or resumes at the printer (Klipper, Repetier); `None`: nobody.

use super::profile::PauseFlow;
use super::thermal::Thermal;
use super::wire::WireOut;
use std::time::{Duration, Instant};

/// `HOST_KEEPALIVE` interval.
const KEEPALIVE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// Nozzle parked, waiting for the user ("Continue").
    Parked,
    /// The nozzle heater timed out; "Reheat" restarts it.
    HeaterOff,
    /// Reheating until this instant.
    Reheating { until: Instant },
    /// Reheated; "Continue".
    ReheatDone,
    /// Filament loaded; "PurgeMore" or "Continue".
    Purge,
}

#[derive(Debug, Clone)]
pub(crate) struct Pause {
    flow: PauseFlow,
    nozzle_timeout: Option<Duration>,
    person_after: Option<Duration>,
    busy_prefix: Option<&'static str>,
    /// An `M600` is running (it blocks the queue): Marlin and Prusa.
    step: Option<Step>,
    since: Instant,
    next_keepalive: Instant,
    saved_nozzle: f64,
    /// Klipper and Repetier: paused for the host, printing goes on.
    host_paused: bool,
}

impl Pause {
    pub(crate) fn new(
        now: Instant,
        flow: PauseFlow,
        nozzle_timeout_s: Option<f64>,
        person_after: Option<Duration>,
        busy_prefix: Option<&'static str>,
    ) -> Self {
        Pause {
            flow,
            nozzle_timeout: nozzle_timeout_s.map(Duration::from_secs_f64),
            person_after,
            busy_prefix,
            step: None,
            since: now,
            next_keepalive: now,
            saved_nozzle: 0.0,
            host_paused: false,
        }
    }

    /// Reset or kill: nothing is paused any more.
    pub(crate) fn reset(&mut self) {
        self.step = None;
        self.host_paused = false;
    }

    /// An `M600` blocks the queue.
    pub(crate) fn blocks(&self) -> bool {
        self.step.is_some()
    }

    /// The filament ran out at `t`. Returns whether an `M600` must run
    /// first thing (Marlin and Prusa inject it ahead of the queue).
    pub(crate) fn runout(&mut self, t: Instant, out: &mut WireOut) -> bool {
        match self.flow {
            PauseFlow::MarlinPrompts => {
                prompt(out, t, "FilamentRunout T0", &[]);
                out.line(t, "//action:paused filament_runout 0");
                true
            }
            PauseFlow::PrusaKnob => true,
            PauseFlow::HostPause => {
                out.line(t, "// action:pause");
                self.host_paused = true;
                self.since = t;
                false
            }
            PauseFlow::None => false,
        }
    }

    /// `M600` starts at `t`: park and wait.
    pub(crate) fn start_m600(&mut self, t: Instant, thermal: &Thermal, out: &mut WireOut) {
        self.step = Some(Step::Parked);
        self.since = t;
        self.next_keepalive = t;
        self.saved_nozzle = thermal.hotend.target();
        if self.flow == PauseFlow::MarlinPrompts {
            prompt(out, t, "Nozzle Parked", &["Continue"]);
        }
        self.keepalive(t, out);
    }

    /// The next instant something happens without input.
    pub(crate) fn next_event(&self) -> Option<Instant> {
        if self.host_paused {
            return self.person_after.map(|d| self.since + d);
        }
        let step = self.step?;
        let timeout = match (step, self.nozzle_timeout) {
            (Step::Parked, Some(d)) => Some(self.since + d),
            _ => None,
        };
        let reheat = match step {
            Step::Reheating { until } => Some(until),
            _ => None,
        };
        // Nobody acts while the nozzle reheats.
        let person = (!matches!(step, Step::Reheating { .. }))
            .then(|| self.person_after.map(|d| self.since + d))
            .flatten();
        let keepalive = self.busy_prefix.map(|_| self.next_keepalive);
        [timeout, reheat, person, keepalive]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs what is due at `now`; true when the `M600` finished.
    pub(crate) fn on_timer(
        &mut self,
        now: Instant,
        thermal: &mut Thermal,
        out: &mut WireOut,
    ) -> bool {
        if self.host_paused {
            if self.person_after.is_some_and(|d| now >= self.since + d) {
                self.resume_host(now, out);
            }
            return false;
        }
        let Some(step) = self.step else { return false };
        if self.busy_prefix.is_some() && now >= self.next_keepalive {
            self.keepalive(now, out);
        }
        match step {
            Step::Parked if self.nozzle_timeout.is_some_and(|d| now >= self.since + d) => {
                // The heater idles; the bed keeps its temperature.
                thermal.hotend.set_target(now, 0.0);
                self.step = Some(Step::HeaterOff);
                if self.flow == PauseFlow::MarlinPrompts {
                    prompt(out, now, "HeaterTimeout", &["Reheat"]);
                }
            }
            Step::Reheating { until } if now >= until => {
                self.step = Some(Step::ReheatDone);
                if self.flow == PauseFlow::MarlinPrompts {
                    prompt(out, now, "Reheat Done", &["Continue"]);
                } else {
                    return self.finish(now, out);
                }
            }
            _ => {}
        }
        // The person at the printer: the knob, or the screen's dialogue.
        if self.person_after.is_some_and(|d| now >= self.since + d) {
            return match self.step {
                Some(Step::HeaterOff) => self.press(now, thermal, out),
                Some(Step::Reheating { .. }) | None => false,
                Some(_) => self.finish(now, out),
            };
        }
        false
    }

    /// `M876 S<choice>` (Marlin `host_response_handler`); true when the
    /// `M600` finished.
    pub(crate) fn answer(
        &mut self,
        now: Instant,
        choice: u32,
        thermal: &mut Thermal,
        out: &mut WireOut,
    ) -> bool {
        match self.step {
            Some(Step::Purge) if choice == 0 => {
                // PurgeMore: purge again, ask again.
                prompt(out, now, "Paused", &["PurgeMore", "Continue"]);
                false
            }
            Some(Step::Purge) => self.finish(now, out),
            Some(_) => self.press(now, thermal, out),
            None => false,
        }
    }

    /// Klipper's `RESUME`.
    pub(crate) fn resume_host(&mut self, now: Instant, out: &mut WireOut) {
        if std::mem::take(&mut self.host_paused) {
            out.line(now, "// action:resume");
        }
    }

    /// The user's button: continue, or reheat first if the heater idled.
    fn press(&mut self, now: Instant, thermal: &mut Thermal, out: &mut WireOut) -> bool {
        match self.step {
            Some(Step::HeaterOff) => {
                thermal.hotend.set_target(now, self.saved_nozzle);
                let wait = thermal
                    .hotend
                    .time_to_window(now, 1.0)
                    .unwrap_or(Duration::ZERO);
                self.step = Some(Step::Reheating { until: now + wait });
                if self.flow == PauseFlow::MarlinPrompts {
                    prompt(out, now, "Reheating", &[]);
                }
                false
            }
            Some(Step::Parked | Step::ReheatDone) if self.flow == PauseFlow::MarlinPrompts => {
                // Filament loaded: the purge question.
                self.step = Some(Step::Purge);
                prompt(out, now, "Paused", &["PurgeMore", "Continue"]);
                false
            }
            Some(Step::Parked | Step::ReheatDone) => self.finish(now, out),
            _ => false,
        }
    }

    fn finish(&mut self, now: Instant, out: &mut WireOut) -> bool {
        self.step = None;
        if self.flow == PauseFlow::MarlinPrompts {
            out.line(now, "//action:prompt_end");
            out.line(now, "//action:resumed");
            prompt(out, now, "Resuming", &["Dismiss"]);
        }
        true
    }

    fn keepalive(&mut self, now: Instant, out: &mut WireOut) {
        if let Some(prefix) = self.busy_prefix {
            out.line(now, &format!("{prefix}paused for user"));
        }
        self.next_keepalive = now + KEEPALIVE;
    }
}

/// Marlin `host_prompt_do`: end the old prompt, begin, buttons, show.
fn prompt(out: &mut WireOut, t: Instant, text: &str, buttons: &[&str]) {
    out.line(t, "//action:prompt_end");
    out.line(t, &format!("//action:prompt_begin {text}"));
    for b in buttons {
        out.line(t, &format!("//action:prompt_button {b}"));
    }
    out.line(t, "//action:prompt_show");
}
