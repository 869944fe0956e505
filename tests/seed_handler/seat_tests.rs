//! The handler's rules on their own: the seed's cycle, and the two guards
//! against messages that cross an assignment on the broker.

use super::seat::{Seat, Seats, Why};

fn discovered(printers: &[&str]) -> Seats {
    let mut seats = Seats::new();
    for p in printers {
        seats.on_progress(p, "idle", 0.0, None).unwrap();
    }
    seats.discovering = false;
    seats
}

#[test]
fn the_seed_cycle() {
    let mut s = discovered(&["p1"]);
    assert_eq!(s.seat("p1"), Some(&Seat::Available));
    let (p, _) = s.assign_next("j1").unwrap();
    assert_eq!(p, "p1");
    assert!(s.assign_next("j2").is_none(), "no second printer");
    let c = s
        .on_progress("p1", "printing", 3.0, Some("j1"))
        .unwrap()
        .unwrap();
    assert_eq!(c.to, Seat::Printing(Some("j1".into())));
    let c = s
        .on_progress("p1", "idle", 100.0, Some("j1"))
        .unwrap()
        .unwrap();
    assert_eq!(c.why, Why::Completed(Some("j1".into())));
    assert_eq!(s.awaiting_cleaning(), vec!["p1".to_owned()]);
    // Repeats change nothing; only the robot frees the plate.
    assert_eq!(s.on_progress("p1", "idle", 100.0, Some("j1")), Ok(None));
    assert!(s.on_progress("p1", "idle", 0.0, None).is_err());
    assert_eq!(s.on_robot("p1").unwrap().why, Why::Cleared);
    assert_eq!(s.seat("p1"), Some(&Seat::Available));
    assert!(s.on_robot("p1").is_err(), "a second clear is not acted on");
}

#[test]
fn a_job_that_ends_before_the_plate_frees_the_printer() {
    let mut s = discovered(&["p1"]);
    s.assign_next("j1").unwrap();
    s.on_progress("p1", "printing", 0.0, Some("j1")).unwrap();
    let c = s.on_progress("p1", "idle", 0.0, None).unwrap().unwrap();
    assert_eq!(c.why, Why::EndedBeforePlate(Some("j1".into())));
    assert_eq!(s.seat("p1"), Some(&Seat::Available));
}

#[test]
fn messages_that_cross_an_assignment_are_set_aside() {
    let mut s = discovered(&["p1"]);
    s.assign_next("j1").unwrap();
    // A heartbeat sent before the printer got j1.
    assert!(s.on_progress("p1", "idle", 0.0, None).is_err());
    s.on_progress("p1", "printing", 5.0, Some("j1")).unwrap();
    s.on_progress("p1", "idle", 100.0, Some("j1")).unwrap();
    s.on_robot("p1").unwrap();
    // A repeat of j1's completion sent before the gateway heard the robot.
    assert!(s.on_progress("p1", "idle", 100.0, Some("j1")).is_err());
    s.assign_next("j2").unwrap();
    assert!(s.on_progress("p1", "idle", 100.0, Some("j1")).is_err());
    assert!(s.on_progress("p1", "printing", 1.0, Some("j1")).is_err());
    assert_eq!(s.seat("p1"), Some(&Seat::Assigned("j2".into())));
}

#[test]
fn discovery_registers_only_during_its_window() {
    let mut s = Seats::new();
    s.on_progress("p1", "idle", 0.0, None).unwrap();
    s.on_progress("p2", "idle", 100.0, Some("old")).unwrap();
    assert!(s.on_progress("p3", "awaiting_clear", 100.0, None).is_err());
    s.discovering = false;
    assert!(s.on_progress("p4", "idle", 0.0, None).is_err());
    assert_eq!(s.awaiting_cleaning(), vec!["p2".to_owned()]);
    assert_eq!(s.all().len(), 2);
}

#[test]
fn the_longest_waiting_printer_goes_first() {
    let mut s = discovered(&["a", "b"]);
    let (first, _) = s.assign_next("j1").unwrap();
    assert_eq!(first, "a");
    s.on_progress("a", "printing", 0.0, Some("j1")).unwrap();
    s.on_progress("a", "idle", 0.0, None).unwrap(); // a is available again, after b
    let (second, _) = s.assign_next("j2").unwrap();
    assert_eq!(second, "b");
}

#[test]
fn a_repeat_of_an_unconfirmed_plate_after_its_clear_is_set_aside() {
    // A first start: the plate was never confirmed, no job known.
    let mut s = Seats::new();
    s.on_progress("p1", "idle", 100.0, None).unwrap();
    s.discovering = false;
    assert_eq!(s.awaiting_cleaning(), vec!["p1".to_owned()]);
    s.on_robot("p1").unwrap();
    // A heartbeat sent before the gateway heard the robot: not a new
    // plate to clean (the robots would never see the printer listed anew,
    // and it would wait for them forever).
    assert!(s.on_progress("p1", "idle", 100.0, None).is_err());
    assert_eq!(s.seat("p1"), Some(&Seat::Available));
    // A finished print is still one.
    s.assign_next("j1").unwrap();
    s.on_progress("p1", "printing", 5.0, Some("j1")).unwrap();
    let c = s
        .on_progress("p1", "idle", 100.0, Some("j1"))
        .unwrap()
        .unwrap();
    assert_eq!(c.why, Why::Completed(Some("j1".into())));
}
