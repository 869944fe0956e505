//! Issue 12, defect 5: an MQTT `emergency_stop` reaches the printer task
//! out of band, whatever the farm is doing. `printgate run` as a real
//! process, the embedded broker and two simulated Marlins on ptys in this
//! process (`bench::estop`'s rig), a few fresh prints e-stopped with the
//! farm idle, then with the farm busy (big uploads copied, scanned and
//! cancelled on the other printer; a disk writer fsyncing beside the
//! store). Asserts correctness only: every stop put `M112` on the wire, the
//! job ended, the printer came back after its power cycle with the heaters
//! off and the plate to confirm. The latencies are printed, never asserted
//! (`printgate bench estop` measures them at full size).
#![cfg(feature = "embedded-broker")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use printgate::bench::estop::{measure, print_table, Options};
use std::path::PathBuf;

#[test]
fn every_estop_reaches_the_wire_idle_and_busy() {
    let stops = 3;
    let opts = Options {
        exe: PathBuf::from(env!("CARGO_BIN_EXE_printgate")),
        count: stops,
        big_bytes: 8_000_000,
    };
    let report = measure(&opts).unwrap();
    print_table(&report);
    for (name, phase) in [("idle", &report.idle), ("busy", &report.busy)] {
        assert_eq!(phase.latencies_ms.len(), stops, "{name}: {phase:?}");
        assert_eq!(phase.m112_seen, stops, "{name}: an M112 missing: {phase:?}");
        assert_eq!(
            phase.jobs_ended, stops,
            "{name}: a job did not end: {phase:?}"
        );
        assert_eq!(
            phase.heaters_off, stops,
            "{name}: a printer came back hot, printing or not at all: {phase:?}"
        );
    }
    // The busy phase was busy: big files went through the farm meanwhile.
    assert!(report.load.big_jobs >= 1, "{:?}", report.load);
    assert!(report.load.fsyncs >= 1, "{:?}", report.load);
    assert_eq!(report.load.refused, 0, "{:?}", report.load);
}
