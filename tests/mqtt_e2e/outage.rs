//! Store-and-forward at the gateway level: the broker becomes unreachable
//! (the proxy is cut) while a job prints, state changes pile up in the
//! outbox, then everything arrives once, in order, with no gap in `seq`;
//! then the same across `kill -9` of the daemon during an outage.

use super::accounting::{account, check_stream, Accounting};
use super::broker;
use super::e2e_support::executed_moves;
use super::mirror::Msg;
use super::rig::{outbox, wait_for, Rig, Row, Spec};

/// Waits until the farm has seen every row of `held` (or the order broke).
fn settle(rig: &Rig, held: &[Row], before: &[Msg], from: usize) -> Accounting {
    let acc = wait_for("every held row delivered", || {
        match account(&rig.prefix, held, before, &rig.mirror.since(from)) {
            Ok(acc) if acc.lost > 0 => None,
            done => Some(done),
        }
    });
    let acc = acc.unwrap_or_else(|e| panic!("{e}\n{}", rig.log_tail()));
    wait_for("the outbox drained", || {
        outbox(&rig.data).0.is_empty().then_some(())
    });
    acc
}

#[test]
fn broker_outage_and_gateway_restart_lose_nothing() {
    let rig = Rig::start(
        broker(),
        Spec {
            name: "outage",
            prefix: "out/",
            gateway: "gw-out",
            discovery: "ha-out",
            printers: &["p1"],
            sim_args: &["--baud", "115200"],
            queue_manager: None,
            triggers: &[],
        },
    );
    let m = &rig.mirror;
    let (event, progress) = ("out/printer/p1/event", "out/printer/p1/progress");
    rig.cli(&["clear", "p1"]);
    let moves_a = rig.add_job("p1", "job-a", 1, 1500);
    m.wait_msg("job-a past 10 %", 0, |m| {
        m.topic == progress && m.json["progress"].as_u64() >= Some(10)
    });

    // Outage: the job is paused, resumed and completes, and the plate is
    // cleared, all while offline.
    rig.proxy.cut();
    rig.cli(&["pause", "p1"]);
    wait_for("job-a paused", || {
        (rig.job_state("job-a").as_deref() == Some("paused")).then_some(())
    });
    rig.cli(&["resume", "p1"]);
    wait_for("job-a completed offline", || {
        (rig.job_state("job-a").as_deref() == Some("completed")).then_some(())
    });
    rig.cli(&["clear", "p1"]);
    let (held, last) = outbox(&rig.data);
    assert_eq!(held.last().map(|r| r.seq), Some(last), "{held:?}");
    assert!(held.len() >= 5, "too little happened offline: {held:?}");
    let restore_at = m.len();
    let before = m.since(0);
    rig.proxy.restore();
    let outage = settle(&rig, &held, &before, restore_at);
    assert_eq!(executed_moves(&rig.sim_log("p1")), moves_a);

    // Restart: a job starts during an outage, the daemon dies (kill -9),
    // comes back with the broker reachable and delivers the rest.
    rig.proxy.cut();
    let moves_b = rig.add_job("p1", "job-b", 2, 2500);
    // Progress is a last value (published from memory, not queued): the
    // printer's own log says how far job-b got.
    wait_for("job-b 100 moves into the print", || {
        let done = executed_moves(&rig.sim_log("p1")).len();
        (done >= moves_a.len() + 100).then_some(())
    });
    rig.kill9();
    let (held2, last2) = outbox(&rig.data);
    assert!(held2.len() >= 4, "too little happened offline: {held2:?}");
    let restart_at = m.len();
    let before2 = m.since(0);
    rig.proxy.restore();
    rig.restart();
    let restart = settle(&rig, &held2, &before2, restart_at);
    // Seq goes on from the outbox's counter: the recovery event is next.
    let (_, interrupted) = m.wait_event(event, "job_interrupted", restart_at);
    assert_eq!(interrupted.seq(), Some(last2 + 1), "{interrupted:?}");
    assert_eq!(interrupted.json["jobId"], "job-b");
    rig.wait_online(restart_at);
    // The interrupted print's plate waits for a robot: the job handler is
    // told the seed's way (idle, 100, the job), as after any print.
    let (_, waiting) = m.wait_msg("idle + 100 for job-b after the restart", restart_at, |m| {
        m.topic == progress && m.json["state"] == "awaiting_clear"
    });
    assert_eq!(waiting.json["status"], "idle");
    assert_eq!(waiting.json["progress"], 100);
    assert_eq!(waiting.json["jobId"], "job-b");
    assert_eq!(waiting.json["outcome"], "interrupted");

    // Never re-sent from the start: job-b's moves are a prefix of the file.
    let printed = executed_moves(&rig.sim_log("p1"));
    let b = printed.get(moves_a.len()..).unwrap_or_default();
    assert!(
        !b.is_empty() && b.len() < moves_b.len(),
        "{} of job-b",
        b.len()
    );
    assert_eq!(b, &moves_b[..b.len()]);
    assert_eq!(rig.job_state("job-b").as_deref(), Some("interrupted"));

    let all = m.since(0);
    let (distinct, repeats) = check_stream(&rig.prefix, &all);
    let first = all.iter().find_map(|m| m.seq());
    assert_eq!(first, Some(1), "the farm missed the start");
    for (name, acc) in [("broker outage", outage), ("kill -9 + restart", restart)] {
        eprintln!(
            "mqtt mirror, {name}: produced {} outbox rows ({} events), delivered {}, \
             duplicates {}, lost {}",
            acc.produced, acc.events, acc.delivered, acc.duplicates, acc.lost
        );
        assert_eq!(acc.lost, 0, "{name}");
        assert_eq!(acc.delivered, acc.produced, "{name}");
    }
    eprintln!(
        "mqtt mirror, whole run: {distinct} distinct seqs 1..={} in order, no gaps \
         {repeats} repeats; job-b stopped at {}/{} moves",
        all.iter().filter_map(|m| m.seq()).max().unwrap_or(0),
        b.len(),
        moves_b.len()
    );
}
