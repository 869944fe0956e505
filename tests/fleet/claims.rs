//! The duplicate-claim scenario (issue 16): gateway `gw-a` serves
//! `printer-1` and `printer-2` behind the seed's job handler; a second
//! gateway `gw-b`, configured by mistake with its own printer also called
//! `printer-1`, starts while the farm runs, and the handler keeps assigning
//! to `printer-1` (the first jobs the moment `gw-b` is online, when it may
//! not have heard `gw-a` yet). What `gw-b` must do: notice `gw-a` at its
//! first heartbeat, take none of the id's assignments (refuse each with an
//! event on its own gateway topic), publish nothing for the id, leave its
//! own printer alone (no job, no plate confirmation from a robot that
//! cleared `gw-a`'s plate); and `gw-a`'s jobs all print exactly once.

use crate::checks::Verdict;
use crate::rig::{Fleet, Plan, STEP};
use crate::seed_handler::mqtt::Msg;
use std::time::{Duration, Instant};

pub const A: &str = "gw-a";
pub const B: &str = "gw-b";
pub const SHARED: &str = "printer-1";
/// `idle_announce_s` of both gateways.
pub const HEARTBEAT_S: u64 = 2;

pub fn plan() -> Plan {
    Plan {
        layout: vec![
            (A.into(), vec![SHARED.into(), "printer-2".into()]),
            (B.into(), vec![SHARED.into()]),
        ],
        moves: 40,
        motion_scale: 0.25,
        robots: 2,
        pick: Duration::from_millis(50),
        progress_interval_s: 1,
        heartbeat_s: HEARTBEAT_S,
        // Two heartbeats and more: the window is not what this test is about.
        discovery: Duration::from_secs(6),
    }
}

/// What `gw-b`'s detection looked like.
pub struct Detection {
    /// `gw-b`'s retained status said online.
    pub online: Instant,
    /// Its `error` event naming `gw-a`.
    pub detected: Instant,
    /// `gw-a`'s progress messages for the id between the two.
    pub heard_before: usize,
}

fn is_progress_of(m: &Msg, gateway: &str) -> bool {
    m.topic == format!("device/printer/{SHARED}/progress") && m.json()["gatewayId"] == gateway
}

/// `gw-b`'s `error` event about the shared id, if any.
pub fn detection_event(fleet: &Fleet) -> Option<Msg> {
    let want = format!("printer id {SHARED} is also claimed by gateway {A}");
    fleet
        .recorder
        .on(&format!("device/gateway/{B}/event"))
        .into_iter()
        .find(|m| {
            let e = m.json();
            e["type"] == "error" && e["message"].as_str().is_some_and(|t| t.contains(&want))
        })
}

/// When `gw-b` came online and when it reported the conflict.
pub fn detection(fleet: &Fleet) -> Option<Detection> {
    let online = fleet
        .recorder
        .on(&format!("device/gateway/{B}/status"))
        .into_iter()
        .find(|m| m.json()["status"] == "online")?
        .at;
    let detected = detection_event(fleet)?.at;
    let heard_before = fleet
        .recorder
        .messages()
        .iter()
        .filter(|m| m.at > online && m.at < detected && is_progress_of(m, A))
        .count();
    Some(Detection {
        online,
        detected,
        heard_before,
    })
}

/// `gw-b` came online (the returned instant) and stopped at `stopped`.
pub fn checks(v: &mut Verdict<'_>, fleet: &Fleet, b_states: &[(String, String)], stopped: Instant) {
    match detection(fleet) {
        None => v.fail(format!("{B} never reported that {A} also claims {SHARED}")),
        Some(d) => {
            eprintln!(
                "duplicate claim: {B} reported the conflict {:.2} s after it came online (heartbeat {HEARTBEAT_S} s), after {} of {A}'s progress messages for {SHARED}",
                (d.detected - d.online).as_secs_f64(),
                d.heard_before
            );
        }
    }
    let b_progress = v.messages.iter().filter(|m| is_progress_of(m, B)).count();
    if b_progress > 0 {
        v.fail(format!(
            "{B} published {b_progress} progress messages for {SHARED}, which {A} serves"
        ));
    }
    let b_jobs = v.gateway_jobs.get(B).cloned().unwrap_or_default();
    if !b_jobs.is_empty() {
        let ids: Vec<String> = b_jobs
            .iter()
            .map(|j| format!("{} {}", j["id"], j["state"]))
            .collect();
        v.fail(format!("{B} took jobs for {SHARED}: {ids:?}"));
    }
    // Every assignment to the id while B ran was refused by B, by name.
    let online = fleet
        .recorder
        .on(&format!("device/gateway/{B}/status"))
        .into_iter()
        .find(|m| m.json()["status"] == "online")
        .map(|m| m.at);
    let refused: Vec<String> = fleet
        .recorder
        .on(&format!("device/gateway/{B}/event"))
        .iter()
        .map(Msg::json)
        .filter(|e| e["type"] == "assignment_rejected")
        .filter_map(|e| e["jobId"].as_str().map(str::to_owned))
        .collect();
    let during: Vec<String> = v
        .rec
        .assignments
        .iter()
        .filter(|a| a.printer == SHARED && online.is_some_and(|t| a.at > t) && a.at < stopped)
        .map(|a| a.job.clone())
        .collect();
    if during.is_empty() {
        v.fail(format!(
            "the handler assigned nothing to {SHARED} while {B} ran: the scenario did not happen"
        ));
    }
    let unrefused: Vec<&String> = during.iter().filter(|j| !refused.contains(j)).collect();
    if !unrefused.is_empty() {
        v.fail(format!(
            "{B} did not refuse (assignment_rejected) {unrefused:?} of {during:?}"
        ));
    }
    eprintln!(
        "duplicate claim: {} assignments to {SHARED} while {B} ran, {} refused by {B}",
        during.len(),
        refused.len()
    );
    // B's own printer: its plate was never confirmed, and robots clearing
    // A's printer-1 must not confirm it.
    let state = b_states
        .iter()
        .find(|(p, _)| p == SHARED)
        .map(|(_, s)| s.as_str());
    if state != Some("awaiting_clear") {
        v.fail(format!("{B}'s own {SHARED} ended as {state:?}, not awaiting_clear (its plate was never cleared)"));
    }
}

/// Bound for `gw-b`'s detection.
pub fn detection_limit() -> Duration {
    Duration::from_secs(HEARTBEAT_S * 3) + STEP
}
