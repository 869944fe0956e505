//! Farm-unique printer ids. The topic contract names printers, not
//! gateways, so two gateways configured with the same printer id would both
//! take its assignments. Every progress message carries `gatewayId` and
//! `claimedAt` (when this gateway began to serve the id, kept in the store
//! across restarts); each gateway listens to its own printers' progress
//! topics, and on hearing another claimant compares claims the same way on
//! both sides: the earlier `claimedAt` keeps the id, a tie goes to the
//! smaller gateway id. The later claimant refuses every assignment for the
//! id, starts nothing on it and stops publishing for it (its messages would
//! mislead the job handler) until the other claimant has been silent for
//! three heartbeat intervals.
//!
//! A claim made at this start (or younger than the listening time) first
//! listens: from the first broker connection until `claim_listen` later
//! (a heartbeat interval and a half), it publishes nothing for the id,
//! refuses its assignments and does not pull for it, as a yielding claimant
//! does, but still prints the jobs it holds (its printer is its own; a
//! broker down at start must not stop a gateway); a robot's clear
//! heard meanwhile is held, applied when listening ends with no other
//! claimant, dropped if one keeps the id (a yielding claimant ignores robot
//! clears: they are for the other's plate). Every live claimant speaks at
//! least once a heartbeat, so
//! a gateway started by mistake with another's printer id hears the other
//! before it has said or taken anything; without this, the handler's jobs
//! for the id reached both gateways until the first heartbeat, and both
//! printed them.

use super::model::Printer;
use super::{Effect, FarmCore};
use crate::mqtt::payload::{rfc3339, Availability};
use log::{error, info};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

/// Another claimant of one of our printer ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Rival {
    pub gateway: String,
    pub claimed_at: Option<SystemTime>,
    pub last_seen: Instant,
    /// The comparison says we keep the id.
    pub we_keep: bool,
}

/// Whether a new claim is still listening for another claimant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listening {
    No,
    /// Until the broker connects, then for `claim_listen`.
    UntilConnected,
    Until(Instant),
}

/// How a claim made at `claimed_at` starts: listening if it is younger than
/// `listen` (made at this start, or at a start that may not have finished
/// listening).
pub fn listening_at_start(claimed_at: SystemTime, wall: SystemTime, listen: Duration) -> Listening {
    let age = wall.duration_since(claimed_at).unwrap_or(Duration::ZERO);
    if listen.is_zero() || age >= listen {
        Listening::No
    } else {
        Listening::UntilConnected
    }
}

impl Printer {
    /// Whether this gateway must stay silent about the id at `now`: another
    /// claimant keeps it, or the claim still listens.
    pub fn silent(&self, now: Instant) -> bool {
        self.rival.as_ref().is_some_and(|r| !r.we_keep) || self.listens(now)
    }

    fn listens(&self, now: Instant) -> bool {
        match self.listening {
            Listening::No => false,
            Listening::UntilConnected => true,
            Listening::Until(t) => now < t,
        }
    }
}

/// Whether our claim `(ours, our_id)` beats theirs. A claimant that states
/// no time (not a printgate, or an old one) never beats an existing claim.
pub fn we_keep(ours: SystemTime, our_id: &str, theirs: Option<SystemTime>, their_id: &str) -> bool {
    match theirs {
        None => true,
        Some(t) => (ours, our_id) <= (t, their_id),
    }
}

impl FarmCore {
    pub(super) fn on_peer(
        &mut self,
        printer: &str,
        gateway: Option<String>,
        claimed_at: Option<SystemTime>,
    ) {
        let gateway = gateway.unwrap_or_else(|| "(a publisher without gatewayId)".into());
        let (now, our_id) = (self.now, self.s.gateway_id.clone());
        let Some(p) = self.printers.get_mut(printer) else {
            return;
        };
        let keep = we_keep(p.claimed_at, &our_id, claimed_at, &gateway);
        let news = p
            .rival
            .as_ref()
            .is_none_or(|r| r.gateway != gateway || r.we_keep != keep);
        p.rival = Some(Rival {
            gateway: gateway.clone(),
            claimed_at,
            last_seen: now,
            we_keep: keep,
        });
        if !keep {
            // A clear heard while listening was for the other's printer.
            p.held_clear = None;
        }
        if !news {
            return;
        }
        let theirs = claimed_at.map_or("no claim time".to_owned(), rfc3339);
        let verdict = if keep {
            format!(
                "this gateway keeps serving it (claimed {}, theirs {theirs})",
                rfc3339(p.claimed_at)
            )
        } else {
            format!(
                "this gateway refuses its assignments until the conflict is gone (theirs {theirs}, ours {})",
                rfc3339(p.claimed_at)
            )
        };
        let text = format!("printer id {printer} is also claimed by gateway {gateway}; {verdict}");
        error!("{text}");
        let item = self.msgs.gateway_event("error", None, Some(&text));
        self.announce(item);
        self.publish_gateway_status(false);
    }

    /// The broker connected: new claims listen from now on.
    pub(super) fn start_listening(&mut self) {
        let until = self.now + self.s.claim_listen;
        for p in self.printers.values_mut() {
            if p.listening == Listening::UntilConnected {
                p.listening = Listening::Until(until);
            }
        }
    }

    /// New claims that heard nobody serve their id from now on: each says
    /// where it stands (stored, like any state change), and a robot's clear
    /// heard meanwhile now counts.
    pub(super) fn end_listening(&mut self) {
        let now = self.now;
        let mut ended = Vec::new();
        for p in self.printers.values_mut() {
            if matches!(p.listening, Listening::Until(t) if now >= t) {
                p.listening = Listening::No;
                p.last_publish = None;
                ended.push((
                    p.id.clone(),
                    p.held_clear.take(),
                    std::mem::take(&mut p.held_assignments),
                ));
            }
        }
        for (printer, held, assignments) in ended {
            if let Some(reason) = self.claim_refusal(&printer) {
                for (a, _) in assignments {
                    info!(
                        "assignment {} (held while listening) refused: {reason}",
                        a.job_id
                    );
                    let item = self.msgs.gateway_event(
                        "assignment_rejected",
                        Some(&a.job_id),
                        Some(&reason),
                    );
                    self.announce(item);
                }
                continue;
            }
            info!("printer id {printer}: listened for other claimants; serving it");
            let item = self.progress_item(&printer);
            self.announce(item);
            if let Some(robot) = held {
                if let Err(reason) = self.plate_cleared(&printer, &format!("robot {robot}")) {
                    info!("robot {robot}: pick completed (held while listening) ignored: {reason}");
                }
            }
            for (a, warnings) in assignments {
                self.on_assignment(&printer, a, warnings, None);
            }
        }
    }

    /// Why a robot's clear of `printer` is not acted on now: ignored (another
    /// claimant keeps the id), or held until the claim stops listening.
    pub(super) fn hold_robot_clear(&mut self, printer: &str, robot: &str) -> Option<String> {
        let reason = self.claim_refusal(printer)?;
        let p = self.printers.get_mut(printer)?;
        if p.rival.as_ref().is_some_and(|r| !r.we_keep) {
            return Some(format!("ignored: {reason}"));
        }
        p.held_clear = Some(robot.to_owned());
        Some(format!("held: {reason}"))
    }

    /// Forgets claimants silent for three heartbeat intervals.
    pub(super) fn expire_rivals(&mut self) {
        let limit = self.s.idle_announce * 3;
        let now = self.now;
        let gone: Vec<(String, String)> = self
            .printers
            .values_mut()
            .filter(|p| {
                p.rival
                    .as_ref()
                    .is_some_and(|r| now.saturating_duration_since(r.last_seen) > limit)
            })
            .filter_map(|p| p.rival.take().map(|r| (p.id.clone(), r.gateway)))
            .collect();
        for (printer, gateway) in &gone {
            let text = format!("printer id {printer}: gateway {gateway} no longer claims it");
            info!("{text}");
            let item = self.msgs.gateway_event("claim_resolved", None, Some(&text));
            self.announce(item);
        }
        if !gone.is_empty() {
            for (printer, _) in gone {
                if let Some(p) = self.printers.get_mut(&printer) {
                    p.last_publish = None;
                }
            }
            self.publish_gateway_status(false);
        }
    }

    /// Why an assignment (or a robot's clear) for `printer` is refused by
    /// this gateway, if it is: another claimant keeps the id, or the claim
    /// still listens.
    pub(super) fn claim_refusal(&self, printer: &str) -> Option<String> {
        let p = self.printers.get(printer)?;
        if let Some(r) = p.rival.as_ref().filter(|r| !r.we_keep) {
            return Some(format!(
                "printer id {printer} is also claimed by gateway {}, which claimed it first; \
                 refused until the conflict is gone",
                r.gateway
            ));
        }
        p.listens(self.now).then(|| {
            format!(
                "printer id {printer} is newly claimed by this gateway, which listens for \
                 another claimant for {} s after connecting before it serves the id",
                self.s.claim_listen.as_secs()
            )
        })
    }

    /// The retained `device/gateway/<gw>/status`: online, the printers, each
    /// one's claim time and any conflict. `force`: publish even if unchanged.
    pub(super) fn publish_gateway_status(&mut self, force: bool) {
        let Some(topic) = self.msgs.topics().map(|t| t.gateway_status()) else {
            return;
        };
        let claims: BTreeMap<&str, String> = self
            .printers
            .values()
            .map(|p| (p.id.as_str(), rfc3339(p.claimed_at)))
            .collect();
        let conflicts: BTreeMap<&str, serde_json::Value> = self
            .printers
            .values()
            .filter_map(|p| {
                p.rival.as_ref().map(|r| {
                    let v = serde_json::json!({"gateway": r.gateway, "weKeep": r.we_keep});
                    (p.id.as_str(), v)
                })
            })
            .collect();
        let body = serde_json::json!({
            "status": Availability::Online,
            "version": env!("CARGO_PKG_VERSION"),
            "gatewayId": self.s.gateway_id,
            "printers": self.printers.keys().collect::<Vec<_>>(),
            "claims": claims,
            "conflicts": conflicts,
            "firmware": self.firmware_status(),
            "timestamp": rfc3339(self.wall),
        });
        let mut fingerprint = body.clone();
        if let Some(obj) = fingerprint.as_object_mut() {
            obj.remove("timestamp");
        }
        let fingerprint = fingerprint.to_string();
        if !force && self.status_published.as_deref() == Some(fingerprint.as_str()) {
            return;
        }
        self.status_published = Some(fingerprint);
        self.push(Effect::Publish {
            topic,
            payload: serde_json::to_vec(&body).unwrap_or_default(),
            retain: true,
        });
    }

    /// Whether another gateway keeps `printer`'s id.
    pub(super) fn lost_claim(&self, printer: &str) -> bool {
        self.printers
            .get(printer)
            .is_some_and(|p| p.rival.as_ref().is_some_and(|r| !r.we_keep))
    }

    /// Whether this gateway must stay silent about `printer` (it lost a
    /// claim, or a new claim still listens).
    pub(super) fn yields(&self, printer: &str) -> bool {
        self.claim_refusal(printer).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::we_keep;
    use std::time::{Duration, SystemTime};

    #[test]
    fn both_sides_agree_on_who_keeps_an_id() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let later = t + Duration::from_secs(1);
        // The earlier claim wins on both sides.
        assert!(we_keep(t, "gw-b", Some(later), "gw-a"));
        assert!(!we_keep(later, "gw-a", Some(t), "gw-b"));
        // A tie goes to the smaller gateway id, on both sides.
        assert!(we_keep(t, "gw-a", Some(t), "gw-b"));
        assert!(!we_keep(t, "gw-b", Some(t), "gw-a"));
        // A claimant without a time never takes an id away.
        assert!(we_keep(later, "gw-z", None, "octoprint"));
    }
}
