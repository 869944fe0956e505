//! Commands the board answers itself, where firmwares differ (`M110`,
//! `M112`, `M115`, `M105`, `M600`, `M876`, Klipper's `PAUSE`/`RESUME` and
//! its answers to unknown commands); everything else runs in the
//! [`Machine`](super::machine::Machine). No I/O.

use std::time::Instant;

use super::gcode::Command;
use super::machine::{Reply, Started};
use super::marlin::Marlin;
use super::profile::{Firmware, PauseFlow};

impl Marlin {
    /// Starts the head command at `t`: `Some(reply)` when it is done, `None`
    /// while it blocks.
    pub(super) fn start_command(&mut self, t: Instant, text: &[u8]) -> Option<Reply> {
        let klipper = self.profile.firmware == Firmware::Klipper;
        if self.halted {
            if !klipper {
                return None;
            }
            // Klipper after a shutdown: every command gets an error, then ok.
            self.tx.line(t, "!! Shutdown due to M112 command");
            return Some(Reply::Ok);
        }
        if klipper {
            match text {
                b"PAUSE" => {
                    if self.pause.runout(t, &mut self.tx) {
                        return None;
                    }
                    return Some(Reply::Ok);
                }
                b"RESUME" => {
                    self.pause.resume_host(t, &mut self.tx);
                    return Some(Reply::Ok);
                }
                _ => {}
            }
        }
        let Some(cmd) = Command::parse(text) else {
            return Some(self.unknown(t, text));
        };
        match (cmd.letter, cmd.code) {
            (b'M', 110) => {
                // M110 at execution: Marlin sets the counter again from its N.
                if let Some(n) = cmd.value(b'N') {
                    self.last_n = n as i64;
                }
                Some(Reply::Ok)
            }
            (b'M', 112) => {
                self.kill(t);
                None
            }
            (b'M', 115) => {
                let lines = self.profile.m115(&self.identity);
                if klipper {
                    return Some(Reply::Custom(format!("ok {}", lines.join(" "))));
                }
                for line in lines {
                    self.tx.line(t, &line);
                }
                Some(Reply::Ok)
            }
            (b'M', 600)
                if matches!(
                    self.profile.pause,
                    PauseFlow::MarlinPrompts | PauseFlow::PrusaKnob
                ) =>
            {
                self.pause
                    .start_m600(t, &self.machine.thermal, &mut self.tx);
                None
            }
            (b'M', 876) => {
                let choice = cmd.value(b'S').unwrap_or(0.0).max(0.0) as u32;
                self.prompt_answer(t, choice);
                Some(Reply::Ok)
            }
            _ => match self.machine.start(t, text, &mut self.tx) {
                Started::Done(reply) => Some(reply),
                Started::Blocked => None,
            },
        }
    }

    /// `M876 S<choice>`: the answer to the open prompt.
    pub(super) fn prompt_answer(&mut self, t: Instant, choice: u32) {
        if self
            .pause
            .answer(t, choice, &mut self.machine.thermal, &mut self.tx)
        {
            self.finish(t, Reply::Ok);
            self.step(t);
        }
    }

    fn unknown(&mut self, t: Instant, text: &[u8]) -> Reply {
        let text = String::from_utf8_lossy(text);
        if self.profile.firmware == Firmware::Klipper {
            // gcode.py cmd_default: respond_info, then the ok.
            self.tx.line(t, &format!("// Unknown command:\"{text}\""));
        } else {
            self.tx
                .line(t, &format!("echo:Unknown command: \"{text}\""));
        }
        Reply::Ok
    }
}
