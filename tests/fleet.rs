//! A fleet on one broker (issue 16): G `printgate run` gateways × P
//! simulated printers behind the seed's job handler, on a real Mosquitto,
//! with a queue manager of J jobs (some without a model) and robots sharing
//! `device/printers`; and the duplicate-claim scenario (two gateways that
//! both claim `printer-1`, on the embedded broker). `fleet/rig.rs` builds
//! the farm, `fleet/checks.rs` judges it, `fleet/figures.rs` prints its
//! figures (`-- --nocapture`; nothing about time is asserted).
//!
//! Sizes come from the environment (defaults: the small fleet that CI
//! runs): `FLEET_GATEWAYS` (5), `FLEET_PRINTERS` per gateway (4),
//! `FLEET_JOBS` (100), `FLEET_MISSING_EVERY` (every 20th job has no model),
//! `FLEET_MOVES` per model (60), `FLEET_MOTION_SCALE` (0.25: a move of the
//! test models takes about 0.1 s, a job about 7 s), `FLEET_ROBOTS`
//! (printers / 50, at least 4), `FLEET_PICK_MS` (50), `FLEET_SETTLE_S`
//! (bound of the printing phase). Without `mosquitto` the fleet test is
//! skipped with a loud message, or fails with `FLEET_REQUIRE_MOSQUITTO=1`
//! (`.ci/fleet.sh`). The big one (README): `FLEET_GATEWAYS=50
//! FLEET_PRINTERS=8 FLEET_JOBS=2000 cargo test --release --test fleet --
//! --nocapture fleet_of_gateways`.
#![cfg(feature = "embedded-broker")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e_support;
#[path = "queue_e2e/qm.rs"]
#[allow(dead_code)]
mod qm;
mod seed_handler;
#[path = "source_http/server.rs"]
mod server;
#[path = "push_e2e/tally.rs"]
#[allow(dead_code)]
mod tally;

#[path = "fleet/checks.rs"]
mod checks;
#[path = "fleet/claims.rs"]
mod claims;
#[path = "fleet/figures.rs"]
mod figures;
#[path = "fleet/mosquitto.rs"]
mod mosquitto;
#[path = "fleet/owners.rs"]
mod owners;
#[path = "fleet/parts.rs"]
mod parts;
#[path = "fleet/procs.rs"]
mod procs;
#[path = "fleet/rig.rs"]
mod rig;
#[path = "fleet/settle.rs"]
mod settle;

use checks::Verdict;
use figures::Marks;
use rig::{Fleet, Plan, STEP};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// `name` from the environment, or `default`; a value that does not parse
/// fails the test with its name.
fn env<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a valid value")),
        Err(_) => default,
    }
}

/// The fleet from the environment.
fn plan() -> Plan {
    let (gateways, printers) = (env("FLEET_GATEWAYS", 5usize), env("FLEET_PRINTERS", 4usize));
    assert!(
        gateways >= 1 && printers >= 1,
        "FLEET_GATEWAYS and FLEET_PRINTERS must be at least 1"
    );
    Plan {
        layout: Plan::grid(gateways, printers),
        moves: env("FLEET_MOVES", 60),
        motion_scale: env("FLEET_MOTION_SCALE", 0.25),
        robots: env("FLEET_ROBOTS", (gateways * printers / 50).max(4)),
        pick: Duration::from_millis(env("FLEET_PICK_MS", 50)),
        // printgate's defaults: the figures are those of a deployed farm.
        progress_interval_s: 10,
        heartbeat_s: 10,
        discovery: Duration::from_secs(30),
    }
}

/// Whether the fleet test can run here; says loudly why not.
fn mosquitto_or_skip() -> bool {
    if mosquitto::installed() {
        return true;
    }
    if std::env::var("FLEET_REQUIRE_MOSQUITTO").as_deref() == Ok("1") {
        panic!("FLEET_REQUIRE_MOSQUITTO=1 but `mosquitto` cannot be run: install it (apt-get install mosquitto)");
    }
    eprintln!(
        "\n################################################################\n\
         # SKIPPED fleet_of_gateways_prints_every_job_once: `mosquitto`  #\n\
         # is not installed (apt-get install mosquitto; .ci/fleet.sh).   #\n\
         ################################################################\n"
    );
    false
}

#[test]
fn fleet_of_gateways_prints_every_job_once() {
    if !mosquitto_or_skip() {
        return;
    }
    let created = Instant::now();
    let plan = plan();
    let jobs = env("FLEET_JOBS", 100usize);
    let printers = plan.printers().len();
    // About 0.43 s of motion per move of `write_job` at scale 1, plus a
    // few seconds of accept, download and start per job.
    let job_s = plan.moves as f64 * 0.43 * plan.motion_scale + 3.0;
    let settle = Duration::from_secs(env(
        "FLEET_SETTLE_S",
        120 + (6.0 * job_s * jobs as f64 / printers as f64) as u64,
    ));
    let mut fleet = Fleet::new("grid", plan, true);
    let ids = fleet.prepare_jobs(jobs, Some(env("FLEET_MISSING_EVERY", 20usize)));
    fleet.release_jobs(&ids);
    fleet.start_all_gateways();
    let gateways_up = Instant::now();
    fleet.start_farm();
    let discovery_end = fleet
        .handler()
        .with_records(|r| r.discovery_end)
        .unwrap_or(gateways_up);
    let settled = fleet.wait_settled(Instant::now() + settle);
    let settled_at = fleet.sampler.mark();
    let ended = fleet.wind_down();
    let mut v = Verdict::after(&fleet, ended);
    v.owners_only();
    let marks = Marks {
        created,
        gateways_up,
        farm_started: gateways_up,
        discovery_end,
        settled: settled_at,
    };
    figures::print(&fleet, &v, &marks);
    v.finish(settled);
}

#[test]
fn a_second_claimant_of_a_printer_id_takes_none_of_its_jobs() {
    use claims::{A, B, SHARED};
    let mut fleet = Fleet::new("claims", claims::plan(), false);
    let first = fleet.prepare_jobs(4, None);
    let during = fleet.prepare_jobs(6, None);
    fleet.release_jobs(&first);
    fleet.start_gateway(A);
    fleet.wait_or_tell("gw-a online, its printers heard", STEP, || {
        fleet.gateway_online(A)
            && ["printer-1", "printer-2"].iter().all(|p| {
                !fleet
                    .recorder
                    .on(&format!("device/printer/{p}/progress"))
                    .is_empty()
            })
    });
    fleet.start_farm();
    let limit = Instant::now() + STEP;
    fleet
        .wait_settled(limit)
        .unwrap_or_else(|e| panic!("first jobs: {e}\n{}", fleet.logs(10)));
    // printer-1 is idle at gw-a (a heartbeat every 2 s) when gw-b starts;
    // jobs reach the handler the moment gw-b is online.
    fleet.start_gateway(B);
    fleet.wait_or_tell("gw-b online", STEP, || fleet.gateway_online(B));
    fleet.release_jobs(&during[..2]);
    fleet.wait_or_tell("gw-b's conflict report", claims::detection_limit(), || {
        claims::detection_event(&fleet).is_some()
    });
    fleet.release_jobs(&during[2..]);
    let settled = fleet.wait_settled(Instant::now() + STEP);
    let b_states: Vec<(String, String)> = fleet.printer_states(B).into_iter().collect();
    let stopped = Instant::now();
    let ended = fleet.wind_down();
    let mut v = Verdict::after(&fleet, ended);
    claims::checks(&mut v, &fleet, &b_states, stopped);
    let on_shared = v.rec.assignments_of(SHARED).len();
    eprintln!("duplicate claim: {on_shared} jobs assigned to {SHARED} in all; {} set aside by the handler", v.rec.ignored.len());
    for (_, p, why) in v.rec.ignored.iter().take(10) {
        eprintln!("  set aside from {p}: {why}");
    }
    v.finish(settled);
}
