//! Issue 16: a printer id claimed at this start listens for another
//! claimant before it speaks or takes anything (see `claims`), on the
//! harness of `tests.rs`.

use super::{base, peer, robot, H};
use crate::farm::core::{ControlRequest, Effect, Input};
use crate::lifecycle::PrinterState;
use crate::mqtt::payload::Command;
use crate::printer::{JobOutcome, ReportKind};
use serde_json::Value;
use std::time::Duration;

/// `claim_listen` of a gateway with a 10 s heartbeat.
const LISTEN: Duration = Duration::from_secs(15);

fn listening() -> H {
    H::with(|s| s.claim_listen = LISTEN)
}

fn progress_of(h: &H, printer: &str) -> usize {
    let topic = format!("device/printer/{printer}/progress");
    h.messages().iter().filter(|(t, _)| *t == topic).count()
}

fn refusals(h: &H) -> Vec<Value> {
    h.messages()
        .into_iter()
        .filter(|(t, v)| t == "device/gateway/gw/event" && v["type"] == "assignment_rejected")
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn r16_a_new_claim_listens_a_heartbeat_and_a_half_before_it_serves() {
    let mut h = listening();
    h.ready("p1");
    // No broker yet: nothing said, nothing taken.
    h.assign("p1", "j1", 1);
    assert_eq!(h.acks(), [1], "held, and acknowledged");
    assert!(h.last_download().is_none());
    h.feed(Input::BrokerConnected);
    h.tick(10);
    h.assign("p1", "j2", 2);
    assert!(h.last_download().is_none(), "taken while listening");
    assert_eq!(progress_of(&h, "p1"), 0, "spoke while listening");
    assert!(refusals(&h).is_empty(), "{:?}", refusals(&h));
    // Nobody else spoke for p1 in a heartbeat and a half: served from now
    // on, and what the handler pushed meanwhile is taken, in order.
    h.tick(6);
    assert!(progress_of(&h, "p1") > 0, "silent after listening");
    assert!(h.last_download().is_some_and(|(j, _)| j == "j1"));
    let queued: Vec<String> = h.core.jobs().map(|j| j.id.clone()).collect();
    assert!(queued.contains(&"j2".to_owned()), "{queued:?}");
    assert!(refusals(&h).is_empty());
}

#[test]
fn r16_assignments_held_while_listening_are_refused_when_the_first_claimant_speaks() {
    let mut h = listening();
    h.ready("p1");
    h.feed(Input::BrokerConnected);
    h.tick(2);
    h.assign("p1", "j1", 1);
    peer(&mut h, "gw-a", base() - Duration::from_secs(3600));
    h.tick(14);
    assert!(h.last_download().is_none(), "took gw-a's job");
    assert!(h.core.jobs().next().is_none(), "stored gw-a's job");
    let refused = refusals(&h);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["jobId"], "j1");
    assert!(refused[0]["message"]
        .as_str()
        .is_some_and(|m| m.contains("gw-a")));
}

#[test]
fn r16_a_new_claim_that_hears_the_first_claimant_never_speaks_for_the_id() {
    let mut h = listening();
    h.connect("p1"); // plate never confirmed here
    h.connect("p2");
    h.feed(Input::BrokerConnected);
    h.tick(2);
    let earlier = base() - Duration::from_secs(3600);
    peer(&mut h, "gw-a", earlier);
    for _ in 0..5 {
        h.tick(5);
        peer(&mut h, "gw-a", earlier);
        h.assign("p1", "j1", 1);
    }
    assert!(h.last_download().is_none());
    assert_eq!(progress_of(&h, "p1"), 0, "spoke for gw-a's id");
    assert!(progress_of(&h, "p2") > 0, "p2 is ours alone");
    // gw-a's robot clears gw-a's p1: not this gateway's plate.
    let report = robot("p1", "rob-1", h.wall());
    h.feed(Input::Robot {
        progress: report,
        retained: false,
    });
    assert_eq!(h.state("p1"), PrinterState::AwaitingClear);
    assert!(!h.core.printers().any(|p| p.id == "p1" && p.plate_clear));
}

#[test]
fn r16_a_robot_clear_heard_while_listening_counts_once_nobody_else_claims_the_id() {
    // `printgate demo`'s robot clears every new plate at once.
    let mut h = listening();
    h.connect("p1");
    h.feed(Input::BrokerConnected);
    h.tick(1);
    let report = robot("p1", "rob-1", h.wall());
    h.feed(Input::Robot {
        progress: report,
        retained: false,
    });
    assert_eq!(
        h.state("p1"),
        PrinterState::AwaitingClear,
        "acted while listening"
    );
    h.tick(15);
    assert_eq!(h.state("p1"), PrinterState::Idle, "the clear was lost");
    // The same clear, then another claimant: never applied.
    let mut h = listening();
    h.connect("p1");
    h.feed(Input::BrokerConnected);
    let report = robot("p1", "rob-1", h.wall());
    h.feed(Input::Robot {
        progress: report,
        retained: false,
    });
    peer(&mut h, "gw-a", base() - Duration::from_secs(3600));
    h.tick(16);
    assert_eq!(h.state("p1"), PrinterState::AwaitingClear);
}

#[test]
fn r16_a_listening_claim_still_prints_its_own_jobs_and_never_pulls() {
    // No broker yet (it may be down for hours): listening has not begun,
    // but the printer is this gateway's own and a local job prints.
    let mut h = H::with(|s| {
        s.claim_listen = LISTEN;
        s.pull = true;
    });
    h.ready("p1");
    h.tick(1);
    let pulls = |h: &H| {
        h.out
            .iter()
            .filter(|e| matches!(e, Effect::Pull { .. }))
            .count()
    };
    assert_eq!(
        pulls(&h),
        0,
        "asked the queue manager for an id it may not own"
    );
    h.feed(Input::Control {
        req: ControlRequest::AddJob {
            printer: "p1".into(),
            priority: 0,
            id: Some("local-1".into()),
            upload: "/spool/upload-1".into(),
        },
        reply: 7,
    });
    h.scanned("local-1");
    h.feed(Input::Spooled {
        job: "local-1".into(),
        result: Ok(()),
    });
    h.scanned("local-1");
    assert!(
        h.started("p1", "local-1"),
        "its own job waits for the broker"
    );
    // Nobody else claims p1: pulls begin once listening is over.
    h.report(
        "p1",
        ReportKind::JobStarted {
            job_id: "local-1".into(),
        },
    );
    h.finish("p1", "local-1", JobOutcome::Completed, 10);
    h.command("p1", Command::ClearPlate, None);
    h.feed(Input::BrokerConnected);
    h.tick(16);
    assert!(pulls(&h) > 0, "never pulled after listening");
}
