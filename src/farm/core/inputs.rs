//! Robot reports (fresh, allowed and about this print, or ignored),
//! trigger topics, and inbound messages that failed validation.

use super::fresh;
use super::{AckId, Effect, FarmCore};
use crate::mqtt::payload::{parse_rfc3339, RobotProgress};
use crate::printer::PrinterCommand;
use log::info;

impl FarmCore {
    pub(super) fn on_robot(&mut self, r: RobotProgress, retained: bool) {
        let fresh = fresh::check(retained, Some(&r.timestamp), self.wall, self.freshness());
        if let Err(why) = fresh {
            let problem = format!("robot {} about {}: {why}", r.robot_id, r.printer_id);
            self.reject_input(Some(&r.printer_id), "robot", &problem);
            return;
        }
        if let Some(rules) = &self.s.robots {
            let allowed = rules
                .iter()
                .any(|rule| rule.id == r.robot_id && rule.printers.contains(&r.printer_id));
            if !allowed {
                let problem = format!(
                    "robot {} may not clear printer {} (see [[robot]])",
                    r.robot_id, r.printer_id
                );
                self.reject_input(Some(&r.printer_id), "robot", &problem);
                return;
            }
        }
        if !(r.action == "pick" && r.is_completed()) {
            info!(
                "robot {}: {} {} on {}",
                r.robot_id, r.action, r.status, r.printer_id
            );
            return;
        }
        // A report written before this plate started waiting is about an
        // earlier print (a late or duplicated message): never clear on it.
        let since = self
            .printers
            .get(&r.printer_id)
            .and_then(|p| p.awaiting_since);
        let stamp = parse_rfc3339(&r.timestamp);
        if let (Some(since), Some(stamp)) = (since, stamp) {
            if stamp + self.s.clock_skew < since {
                let problem = format!(
                    "robot {}: pick completed at {} predates the end of the print on {}",
                    r.robot_id, r.timestamp, r.printer_id
                );
                self.reject_input(Some(&r.printer_id), "robot", &problem);
                return;
            }
        }
        // The id names another gateway's printer (or may): its robot's
        // clear says nothing about this gateway's plate (yet).
        if let Some(why) = self.hold_robot_clear(&r.printer_id, &r.robot_id) {
            info!("robot {}: pick completed {why}", r.robot_id);
            return;
        }
        let by = format!("robot {}", r.robot_id);
        if let Err(reason) = self.plate_cleared(&r.printer_id, &by) {
            info!("robot {}: pick completed ignored: {reason}", r.robot_id);
        }
    }

    pub(super) fn on_trigger(&mut self, topic: &str, retained: bool) {
        if retained {
            self.reject_input(
                None,
                "trigger",
                &format!("{topic}: retained trigger ignored"),
            );
            return;
        }
        let matching: Vec<(usize, String, String)> = self
            .s
            .triggers
            .iter()
            .enumerate()
            .filter(|(_, t)| t.topic == topic)
            .map(|(i, t)| (i, t.printer.clone(), t.gcode.clone()))
            .collect();
        for (index, printer, gcode) in matching {
            let Some(p) = self.printers.get(&printer) else {
                continue;
            };
            // Idle only: never while printing, and not on a plate nobody has
            // confirmed clear (a homing macro could hit the part).
            let idle = self.is_free(p) && self.queued_for(&printer).is_none();
            let state = self.view(p).wire.state;
            let (kind, msg) = if idle {
                self.push(Effect::Printer {
                    printer: printer.clone(),
                    cmd: PrinterCommand::RunMacro { gcode },
                });
                self.running_triggers.insert(printer.clone(), index);
                ("trigger_run", format!("macro from {topic}"))
            } else {
                (
                    "trigger_refused",
                    format!("macro from {topic} refused: printer is {state}, not idle"),
                )
            };
            let item = self.msgs.event(&printer, kind, None, Some(&msg));
            self.announce(item);
        }
    }

    pub(super) fn on_invalid(
        &mut self,
        printer: Option<&str>,
        kind: &str,
        problem: &str,
        ack: Option<AckId>,
    ) {
        self.reject_input(printer, kind, problem);
        self.push_ack(ack);
    }
}
