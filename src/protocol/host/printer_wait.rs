//! Printer-initiated pauses and prompts: filament runout, `M600`, a button
//! on the printer, a question for the operator.
//!
//! What the firmwares send, with sources:
//! - Marlin `feature/host_actions.cpp`: `//action:paused`, `//action:pause`,
//!   `//action:resumed`, `//action:cancel`, `//action:prompt_begin <text>`,
//!   `//action:prompt_button <label>`, `//action:prompt_show`,
//!   `//action:prompt_end`; answers come back as `M876 S<index>`.
//!   `feature/runout.cpp` appends a reason: `//action:paused filament_runout 0`.
//! - OctoPrint's protocol spelling `prompt_choice` for a button.
//! - Prusa-Firmware (`Marlin_main.cpp`, `KEEPALIVE_STATE(PAUSED_FOR_USER)`)
//!   says only `echo:busy: paused for user` while `M600` waits at the LCD.
//! - Klipper (`klippy/extras/pause_resume.py`): `// action:pause` and
//!   `// action:resume` around its `PAUSE` and `RESUME` commands.
//! - Repetier-Firmware (`Communication.cpp`): `// action:pause`,
//!   `// action:resume`, `busy:paused for user interaction`.
//!
//! While the printer waits for a person the host neither times out nor
//! sends `M112`, and sends no job line while the printer is paused.

use super::HostProtocol;
use crate::protocol::{Event, LineKind};
use std::fmt;
use std::time::{Duration, Instant};

/// `paused for user` keep-alives come every 2 s (Marlin and Prusa
/// `DEFAULT_KEEPALIVE_INTERVAL`); once they have stopped this long the
/// person is done, even if no `ok` says so (a runout's `M600` owes none).
const USER_WAIT_LAPSE: Duration = Duration::from_secs(5);

/// What the printer is waiting for, as far as the host knows.
#[derive(Debug, Default)]
pub(super) struct PrinterWait {
    /// The printer paused itself or asked the host to pause.
    pub printer_paused: bool,
    /// The pause came from a `busy: paused for user` keep-alive (Prusa's
    /// `M600`), so the next `ok` ends it.
    pub paused_by_busy: bool,
    /// A keep-alive said the printer waits for a person (cleared by an `ok`,
    /// or when the keep-alives stop).
    pub user_busy: bool,
    /// When the last such keep-alive came.
    pub user_busy_at: Option<Instant>,
    pub prompt: Prompt,
}

#[derive(Debug, Default)]
pub(super) struct Prompt {
    text: Option<String>,
    choices: Vec<String>,
    shown: bool,
}

/// Why a prompt answer was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptError {
    NoPrompt,
    NoSuchChoice {
        choice: u32,
        choices: usize,
    },
    NotConnected,
    /// The firmware reads `M876` only as an ordinary command and a command
    /// that waits for a person blocks its queue: the answer could not run
    /// before the pause ends, and would then answer a later prompt.
    PrinterBlocked,
}

impl fmt::Display for PromptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PromptError::NoPrompt => write!(f, "the printer shows no prompt"),
            PromptError::NoSuchChoice { choice, choices } => write!(
                f,
                "choice {choice} does not exist (the prompt has {choices} choices, counted from 0)"
            ),
            PromptError::NotConnected => write!(f, "the printer is not connected"),
            PromptError::PrinterBlocked => write!(
                f,
                "this firmware has no emergency parser, so it runs M876 only after the \
                 command that waits for a person: answer at the printer"
            ),
        }
    }
}

impl std::error::Error for PromptError {}

impl PrinterWait {
    /// Whether a person has to act before the printer goes on. An open
    /// prompt alone does not say so: Marlin leaves an informational
    /// "Resuming" prompt open after `M600` (`feature/pause.cpp`).
    pub fn waiting_for_person(&self) -> bool {
        self.user_busy || self.printer_paused
    }
}

impl HostProtocol {
    /// Answers the open prompt with the choice at `choice` (0-based, in the
    /// order the printer listed them) as `M876 S<choice>`: unnumbered and
    /// ahead of every queued line when the firmware has an emergency parser
    /// (it acts on it while a command blocks the queue); otherwise as the
    /// next numbered line (Prusa-Firmware-Buddy, `Cap:EMERGENCY_PARSER:0`,
    /// handles `M876` as a normal command: `src/marlin_stubs/M876.cpp`).
    ///
    /// Such a firmware cannot take the answer while the printer waits for a
    /// person: the waiting command (`M600`) blocks its queue, and Buddy's
    /// `lib/Marlin/Marlin/src/gcode/queue.cpp` (`get_serial_commands`) acts
    /// early on `M108`, `M112` and `M410` only. Queued, the answer would run
    /// after the pause and hit whatever prompt is open then, so it is
    /// refused ([`PromptError::PrinterBlocked`]) and the prompt stays open.
    pub fn answer_prompt(&mut self, choice: u32) -> Result<(), PromptError> {
        if !self.is_ready() {
            return Err(PromptError::NotConnected);
        }
        let prompt = &self.wait.prompt;
        if !prompt.shown {
            return Err(PromptError::NoPrompt);
        }
        if usize::try_from(choice).map_or(true, |c| c >= prompt.choices.len()) {
            return Err(PromptError::NoSuchChoice {
                choice,
                choices: prompt.choices.len(),
            });
        }
        if !self.firmware.emergency_parser && self.wait.waiting_for_person() {
            return Err(PromptError::PrinterBlocked);
        }
        let cmd = format!("M876 S{choice}");
        if self.firmware.emergency_parser {
            self.raw_out.extend_from_slice(cmd.as_bytes());
            self.raw_out.push(b'\n');
            // The line also reaches Marlin's command queue (as an unknown
            // command when the parser handled it) and gets an `ok` in turn.
            self.raw_oks.push_back(self.queue.sent_high());
        } else {
            let cost = self.motion.cost(&cmd);
            self.queue.push(&cmd, LineKind::Host, cost);
        }
        self.close_prompt();
        Ok(())
    }

    /// `//action:<action>` from the printer.
    pub(super) fn on_action(&mut self, action: &str) {
        let (verb, rest) = match action.split_once(' ') {
            Some((v, r)) => (v, r.trim()),
            None => (action, ""),
        };
        let reason = (!rest.is_empty()).then(|| rest.replace('_', " "));
        match verb {
            "paused" | "pause" => self.printer_paused(reason),
            "resumed" | "resume" => self.printer_resumed(),
            "cancel" => self.events.push_back(Event::CancelRequested),
            "prompt_begin" => {
                self.wait.prompt = Prompt {
                    text: Some(rest.to_owned()),
                    ..Prompt::default()
                };
            }
            "prompt_button" | "prompt_choice" => {
                self.wait.prompt.choices.push(rest.to_owned());
            }
            "prompt_show" => {
                let prompt = &mut self.wait.prompt;
                prompt.shown = true;
                self.events.push_back(Event::Prompt {
                    text: prompt.text.clone().unwrap_or_default(),
                    choices: prompt.choices.clone(),
                });
            }
            "prompt_end" => self.close_prompt(),
            "notification" => self.events.push_back(Event::Message(rest.to_owned())),
            _ => self.events.push_back(Event::Action(action.to_owned())),
        }
    }

    /// `busy: <what>`: the printer is alive; some keep-alives say it waits
    /// for a person (Marlin `paused for user` / `paused for input`,
    /// Repetier `paused for user interaction`).
    pub(super) fn on_busy_text(&mut self, now: Instant, what: &str) {
        if what.starts_with("paused for") {
            self.wait.user_busy = true;
            self.wait.user_busy_at = Some(now);
            if !self.wait.printer_paused {
                self.wait.paused_by_busy = true;
                self.printer_paused(Some(what.to_owned()));
            }
        }
    }

    /// An `ok` arrived: the command that waited for a person is done.
    pub(super) fn on_ok_for_wait(&mut self) {
        self.wait.user_busy = false;
        self.wait.user_busy_at = None;
        if std::mem::take(&mut self.wait.paused_by_busy) {
            self.printer_resumed();
        }
    }

    /// When the `paused for user` keep-alives count as stopped.
    pub(super) fn user_wait_deadline(&self) -> Option<Instant> {
        self.wait.user_busy_at.map(|t| t + USER_WAIT_LAPSE)
    }

    /// The keep-alives stopped: the person is done.
    pub(super) fn on_user_wait_lapse(&mut self, now: Instant) {
        if self.user_wait_deadline().is_some_and(|t| now >= t) {
            self.wait.user_busy = false;
            self.wait.user_busy_at = None;
            self.last_progress = now;
            if std::mem::take(&mut self.wait.paused_by_busy) {
                self.printer_resumed();
            }
        }
    }

    fn printer_paused(&mut self, reason: Option<String>) {
        if !self.wait.printer_paused {
            self.wait.printer_paused = true;
            self.events.push_back(Event::PrinterPaused { reason });
        }
    }

    fn printer_resumed(&mut self) {
        self.wait.paused_by_busy = false;
        if std::mem::take(&mut self.wait.printer_paused) {
            self.events.push_back(Event::PrinterResumed);
        }
    }

    fn close_prompt(&mut self) {
        let was = std::mem::take(&mut self.wait.prompt);
        if was.shown {
            self.events.push_back(Event::PromptClosed);
        }
    }
}
