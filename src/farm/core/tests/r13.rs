//! Issue 13: stale, retained and unauthorised messages.

use super::*;

#[test]
fn r13_retained_stale_and_foreign_robot_reports_never_clear_a_plate() {
    let mut h = H::with(|s| {
        s.robots = Some(vec![RobotRule {
            id: "rob-1".into(),
            printers: vec!["p1".into()],
        }])
    });
    h.secs = 10_000;
    h.connect("p1");
    assert_eq!(h.state("p1"), PrinterState::AwaitingClear);
    let now = h.wall();
    let cases = [
        (robot("p1", "rob-1", now), true, "retained"),
        (
            robot("p1", "rob-1", now - Duration::from_secs(3600)),
            false,
            "stale",
        ),
        (
            robot("p1", "rob-1", now + Duration::from_secs(3600)),
            false,
            "future",
        ),
        (robot("p1", "rob-9", now), false, "not allowed"),
    ];
    for (r, retained, why) in cases {
        h.feed(Input::Robot {
            progress: r,
            retained,
        });
        assert_eq!(h.state("p1"), PrinterState::AwaitingClear, "{why}");
    }
    // A report from before this plate started waiting is about an earlier print.
    h.feed(Input::Robot {
        progress: robot("p1", "rob-1", now - Duration::from_secs(100)),
        retained: false,
    });
    assert_eq!(h.state("p1"), PrinterState::AwaitingClear, "predates");
    h.feed(Input::Robot {
        progress: robot("p1", "rob-1", now),
        retained: false,
    });
    assert_eq!(h.state("p1"), PrinterState::Idle);
}

#[test]
fn r13_retained_or_stale_emergency_stops_never_fire() {
    let mut h = H::new();
    h.secs = 10_000;
    h.ready("p1");
    h.take();
    let old = Some(rfc3339(h.wall() - Duration::from_secs(3600)));
    h.command_msg("p1", Command::EmergencyStop, None, true, None);
    h.command_msg("p1", Command::EmergencyStop, None, false, old);
    assert!(
        !h.take().iter().any(|e| matches!(
            e,
            Effect::Printer {
                cmd: PrinterCommand::EmergencyStop,
                ..
            }
        )),
        "a replayed e-stop fired"
    );
    assert_eq!(h.events("command_rejected").len(), 2);
    h.command("p1", Command::EmergencyStop, None);
    assert!(h.take().iter().any(|e| matches!(
        e,
        Effect::Printer {
            cmd: PrinterCommand::EmergencyStop,
            ..
        }
    )));
}
