//! Reply parsing, one test per family of printer output.

use super::*;

fn ok(line: &[u8]) -> OkReply<'_> {
    match parse_reply(line) {
        Reply::Ok(o) => o,
        other => panic!("not ok: {other:?}"),
    }
}

#[test]
fn ok_variants() {
    let plain = ok(b"ok\r");
    assert_eq!(
        (plain.temps, plain.advanced, plain.line),
        (Temps::default(), None, None)
    );
    let t = ok(b"ok T:210.00 /210.00 B:60.00 /60.00 @:127 B@:0");
    assert_eq!(t.temps.nozzle, Some(210.0));
    assert_eq!(t.temps.bed_target, Some(60.0));
    assert_eq!((t.advanced, t.line), (None, None));
    let a = ok(b"ok N12 P15 B3");
    assert_eq!(
        a.advanced,
        Some(AdvancedOk {
            line: Some(12),
            planner_free: Some(15),
            queue_free: Some(3)
        })
    );
    assert_eq!(a.line, Some(12));
    // ADVANCED_OK for an unnumbered command has no N.
    assert_eq!(ok(b"ok P15 B3").line, None);
    // Repetier ACK_WITH_LINENUMBER.
    assert_eq!(ok(b"ok 4711").line, Some(4711));
    assert_eq!(ok(b"ok 4711").advanced, None);
    // Klipper answers M115 inside the ok.
    let k = ok(b"ok FIRMWARE_NAME:Klipper FIRMWARE_VERSION:v0.12.0");
    assert_eq!(k.rest, "FIRMWARE_NAME:Klipper FIRMWARE_VERSION:v0.12.0");
    assert_eq!((k.line, k.advanced), (None, None));
}

#[test]
fn resend_and_skip_spellings() {
    assert_eq!(parse_reply(b"Resend: 42"), Reply::Resend(42));
    assert_eq!(parse_reply(b"Resend:42"), Reply::Resend(42));
    assert_eq!(parse_reply(b"rs 7"), Reply::Resend(7));
    assert_eq!(parse_reply(b"resend: N9"), Reply::Resend(9));
    assert_eq!(parse_reply(b"skip 17"), Reply::Skip(17));
}

#[test]
fn marlin_error_texts() {
    let cases: [(&[u8], ErrorKind); 9] = [
        (
            b"Error:Line Number is not Last Line Number+1, Last Line: 41",
            ErrorKind::LineCheck {
                last_line: Some(41),
            },
        ),
        (
            b"Error:checksum mismatch, Last Line: 7",
            ErrorKind::LineCheck { last_line: Some(7) },
        ),
        (
            b"Error:No Checksum with line number, Last Line: 3",
            ErrorKind::LineCheck { last_line: Some(3) },
        ),
        (
            b"Error:No Line Number with checksum, Last Line: 3",
            ErrorKind::LineCheck { last_line: Some(3) },
        ),
        (
            b"Error: Missing checksum",
            ErrorKind::LineCheck { last_line: None },
        ),
        (
            b"Error:Wrong checksum",
            ErrorKind::LineCheck { last_line: None },
        ),
        (b"Error:Printer halted. kill() called!", ErrorKind::Fatal),
        (b"Error:MINTEMP triggered", ErrorKind::Fatal),
        (b"Error:Unknown command", ErrorKind::Other),
    ];
    for (line, kind) in cases {
        match parse_reply(line) {
            Reply::Error { kind: k, .. } => {
                assert_eq!(k, kind, "{}", String::from_utf8_lossy(line))
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn klipper_errors_are_fatal_only_for_a_shutdown() {
    assert_eq!(
        parse_reply(b"!! Must home axis first: 10.000 0.000 0.200 [0.000]"),
        Reply::Error {
            kind: ErrorKind::Other,
            text: "Must home axis first: 10.000 0.000 0.200 [0.000]"
        }
    );
    assert!(matches!(
        parse_reply(b"!! Shutdown due to M112 command"),
        Reply::Error {
            kind: ErrorKind::Fatal,
            ..
        }
    ));
    assert!(matches!(
        parse_reply(b"// Klipper state: Shutdown"),
        Reply::Error {
            kind: ErrorKind::Fatal,
            ..
        }
    ));
    assert_eq!(
        parse_reply(b"// Klipper state: Ready"),
        Reply::Info("Klipper state: Ready")
    );
}

#[test]
fn actions_in_every_spelling() {
    assert_eq!(parse_reply(b"//action:pause"), Reply::Action("pause"));
    assert_eq!(parse_reply(b"// action:paused"), Reply::Action("paused"));
    assert_eq!(
        parse_reply(b"//action:prompt_begin FilamentRunout T0"),
        Reply::Action("prompt_begin FilamentRunout T0")
    );
    assert_eq!(
        parse_reply(b"RequestPause:Filament runout"),
        Reply::Action("pause")
    );
}

#[test]
fn informational_lines() {
    assert_eq!(parse_reply(b"start"), Reply::Start);
    assert_eq!(parse_reply(b"wait"), Reply::Wait);
    assert_eq!(
        parse_reply(b"echo:busy: processing"),
        Reply::Busy("processing")
    );
    assert_eq!(
        parse_reply(b"busy:paused for user interaction"),
        Reply::Busy("paused for user interaction")
    );
    assert_eq!(
        parse_reply(b"Cap:AUTOREPORT_TEMP:1"),
        Reply::Capability {
            name: "AUTOREPORT_TEMP",
            enabled: true
        }
    );
    assert_eq!(parse_reply(b"echo:SD card ok"), Reply::Echo("SD card ok"));
    assert_eq!(parse_reply(b"Echo:G1 X1"), Reply::Echo("G1 X1"));
    assert_eq!(parse_reply(b"\xff\xfe garbage"), Reply::Other(""));
    assert_eq!(parse_reply(b""), Reply::Empty);
    let Reply::Temps(t) = parse_reply(b" T:190.2 /210.0 B:59.1 /60.0 @:127 B@:0 W:?") else {
        panic!()
    };
    assert_eq!((t.nozzle, t.nozzle_target), (Some(190.2), Some(210.0)));
    let Reply::Temps(t) = parse_reply(b"T:20.5/0.0 B:21/0") else {
        panic!()
    };
    assert_eq!(
        (t.nozzle, t.nozzle_target, t.bed),
        (Some(20.5), Some(0.0), Some(21.0))
    );
}
