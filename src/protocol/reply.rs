//! Parser for one line of printer output. Total: every input maps to a
//! [`Reply`]; unknown lines become [`Reply::Other`], never an error.
//!
//! Texts follow Marlin 2.x (`gcode/queue.cpp`), with the variants seen from
//! Klipper (`!!`, `rs`) and virtual printers (`wait`).

/// Temperatures from an `ok T:..`, an autoreport (`M155`) or a heating (`W:`) line.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Temps {
    pub nozzle: Option<f32>,
    pub nozzle_target: Option<f32>,
    pub bed: Option<f32>,
    pub bed_target: Option<f32>,
}

impl Temps {
    pub fn is_empty(&self) -> bool {
        self.nozzle.is_none() && self.bed.is_none()
    }
}

/// The `ADVANCED_OK` fields: `ok N<line> P<planner free> B<queue free>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdvancedOk {
    pub line: Option<u64>,
    pub planner_free: Option<u32>,
    pub queue_free: Option<u32>,
}

/// What a printer error line means for the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A line check failed (checksum, line number, missing checksum): a
    /// `Resend:` follows (except for "No Line Number with checksum").
    LineCheck { last_line: Option<u64> },
    /// The firmware stopped (`kill()`, thermal protection, `!!`): fatal.
    Fatal,
    /// Anything else (`Error:Unknown command`, probing failed, …).
    Other,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reply<'a> {
    Ok {
        temps: Temps,
        advanced: Option<AdvancedOk>,
    },
    Resend(u64),
    Error {
        kind: ErrorKind,
        text: &'a str,
    },
    Busy(&'a str),
    Wait,
    Start,
    Temps(Temps),
    Action(&'a str),
    FirmwareName(&'a str),
    Capability {
        name: &'a str,
        enabled: bool,
    },
    Echo(&'a str),
    Empty,
    Other(&'a str),
}

/// Parses one line (without its line terminator).
pub fn parse_reply(raw: &[u8]) -> Reply<'_> {
    let text = trim(raw);
    let line = match std::str::from_utf8(text) {
        Ok(s) => s,
        // Garbage after a reset or line noise: shown, never acted on.
        Err(_) => return Reply::Other(""),
    };
    if line.is_empty() {
        return Reply::Empty;
    }
    if line == "ok" || line.starts_with("ok ") {
        let rest = line.get(2..).unwrap_or("");
        return Reply::Ok {
            temps: parse_temps(rest),
            advanced: parse_advanced_ok(rest),
        };
    }
    if let Some(rest) = strip_prefix_ci(line, "resend:").or_else(|| line.strip_prefix("rs ")) {
        return match first_number(rest) {
            Some(n) => Reply::Resend(n),
            None => Reply::Other(line),
        };
    }
    if let Some(rest) = strip_prefix_ci(line, "error:") {
        return Reply::Error {
            kind: classify_error(rest),
            text: rest.trim(),
        };
    }
    if let Some(rest) = line.strip_prefix("!!") {
        return Reply::Error {
            kind: ErrorKind::Fatal,
            text: rest.trim(),
        };
    }
    if line == "start" {
        return Reply::Start;
    }
    if line == "wait" {
        return Reply::Wait;
    }
    if let Some(rest) = line.strip_prefix("//action:") {
        return Reply::Action(rest.trim());
    }
    if let Some(rest) = line
        .strip_prefix("echo:busy:")
        .or_else(|| line.strip_prefix("busy:"))
    {
        return Reply::Busy(rest.trim());
    }
    if line.starts_with("FIRMWARE_NAME:") {
        return Reply::FirmwareName(line);
    }
    if let Some(rest) = line.strip_prefix("Cap:") {
        if let Some((name, value)) = rest.rsplit_once(':') {
            return Reply::Capability {
                name,
                enabled: value.trim() == "1",
            };
        }
        return Reply::Other(line);
    }
    if line.starts_with("T:") || line.starts_with("T0:") || line.starts_with("B:") {
        let temps = parse_temps(line);
        if !temps.is_empty() {
            return Reply::Temps(temps);
        }
    }
    if let Some(rest) = line.strip_prefix("echo:") {
        return Reply::Echo(rest.trim());
    }
    Reply::Other(line)
}

fn trim(raw: &[u8]) -> &[u8] {
    let start = raw
        .iter()
        .position(|b| !b.is_ascii_whitespace() && *b != 0)
        .unwrap_or(raw.len());
    let end = raw
        .iter()
        .rposition(|b| !b.is_ascii_whitespace() && *b != 0)
        .map_or(start, |i| i + 1);
    raw.get(start..end).unwrap_or(&[])
}

fn strip_prefix_ci<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let head = line.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        line.get(prefix.len()..)
    } else {
        None
    }
}

/// The first run of ASCII digits in `s`, as a number.
fn first_number(s: &str) -> Option<u64> {
    let start = s.find(|c: char| c.is_ascii_digit())?;
    let digits = s.get(start..)?;
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits.get(..end)?.parse().ok()
}

fn classify_error(rest: &str) -> ErrorKind {
    let lower = rest.to_ascii_lowercase();
    const LINE_CHECKS: [&str; 5] = [
        "line number is not last line number",
        "checksum mismatch",
        "no checksum with line number",
        "no line number with checksum",
        "missing checksum",
    ];
    if LINE_CHECKS.iter().any(|p| lower.contains(p)) || lower.contains("expected line") {
        let last_line = lower
            .rfind("last line:")
            .and_then(|i| lower.get(i..))
            .and_then(first_number);
        return ErrorKind::LineCheck { last_line };
    }
    const FATAL: [&str; 7] = [
        "kill() called",
        "printer halted",
        "mintemp",
        "maxtemp",
        "heating failed",
        "thermal runaway",
        "thermal malfunction",
    ];
    if FATAL.iter().any(|p| lower.contains(p)) {
        return ErrorKind::Fatal;
    }
    ErrorKind::Other
}

/// Reads `T:210.00 /210.00 B:60.00 /60.00 @:127` (targets after `/`, with or
/// without a space). Unknown keys are skipped.
pub fn parse_temps(s: &str) -> Temps {
    let mut temps = Temps::default();
    let mut last: Option<&str> = None;
    for token in s.split_ascii_whitespace() {
        if let Some(target) = token.strip_prefix('/') {
            set_target(&mut temps, last, target.parse().ok());
            continue;
        }
        let Some((key, value)) = token.split_once(':') else {
            last = None;
            continue;
        };
        let (current, target) = match value.split_once('/') {
            Some((c, t)) => (c, Some(t)),
            None => (value, None),
        };
        let current: Option<f32> = current.parse().ok().filter(|v: &f32| v.is_finite());
        match key {
            "T" | "T0" => {
                if temps.nozzle.is_none() || key == "T" {
                    temps.nozzle = current;
                }
            }
            "B" => temps.bed = current,
            _ => {
                last = None;
                continue;
            }
        }
        last = Some(key);
        if let Some(t) = target {
            set_target(&mut temps, last, t.parse().ok());
        }
    }
    temps
}

fn set_target(temps: &mut Temps, key: Option<&str>, value: Option<f32>) {
    let value = value.filter(|v| v.is_finite());
    match key {
        Some("T") | Some("T0") => temps.nozzle_target = value,
        Some("B") => temps.bed_target = value,
        _ => {}
    }
}

fn parse_advanced_ok(rest: &str) -> Option<AdvancedOk> {
    let mut adv = AdvancedOk::default();
    let mut any = false;
    for token in rest.split_ascii_whitespace() {
        let (key, value) = token.split_at_checked(1)?;
        match key {
            "N" => adv.line = value.parse().ok(),
            "P" => adv.planner_free = value.parse().ok(),
            "B" if !value.starts_with(':') => adv.queue_free = value.parse().ok(),
            _ => continue,
        }
        any = true;
    }
    (any && adv.queue_free.is_some()).then_some(adv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_variants() {
        assert_eq!(
            parse_reply(b"ok\r"),
            Reply::Ok {
                temps: Temps::default(),
                advanced: None
            }
        );
        let Reply::Ok { temps, advanced } =
            parse_reply(b"ok T:210.00 /210.00 B:60.00 /60.00 @:127 B@:0")
        else {
            panic!("not ok")
        };
        assert_eq!(temps.nozzle, Some(210.0));
        assert_eq!(temps.bed_target, Some(60.0));
        assert_eq!(advanced, None);
        let Reply::Ok { advanced, .. } = parse_reply(b"ok N12 P15 B3") else {
            panic!("not ok")
        };
        assert_eq!(
            advanced,
            Some(AdvancedOk {
                line: Some(12),
                planner_free: Some(15),
                queue_free: Some(3)
            })
        );
    }

    #[test]
    fn resend_spellings() {
        assert_eq!(parse_reply(b"Resend: 42"), Reply::Resend(42));
        assert_eq!(parse_reply(b"Resend:42"), Reply::Resend(42));
        assert_eq!(parse_reply(b"rs 7"), Reply::Resend(7));
        assert_eq!(parse_reply(b"resend: N9"), Reply::Resend(9));
    }

    #[test]
    fn marlin_error_texts() {
        let cases: [(&[u8], ErrorKind); 8] = [
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
        assert!(matches!(
            parse_reply(b"!! Shutdown due to webhooks request"),
            Reply::Error {
                kind: ErrorKind::Fatal,
                ..
            }
        ));
    }

    #[test]
    fn informational_lines() {
        assert_eq!(parse_reply(b"start"), Reply::Start);
        assert_eq!(parse_reply(b"wait"), Reply::Wait);
        assert_eq!(
            parse_reply(b"echo:busy: processing"),
            Reply::Busy("processing")
        );
        assert_eq!(parse_reply(b"//action:pause"), Reply::Action("pause"));
        assert_eq!(
            parse_reply(b"Cap:AUTOREPORT_TEMP:1"),
            Reply::Capability {
                name: "AUTOREPORT_TEMP",
                enabled: true
            }
        );
        assert_eq!(parse_reply(b"echo:SD card ok"), Reply::Echo("SD card ok"));
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
}
