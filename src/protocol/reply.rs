//! Parser for one line of printer output. Total: every input maps to a
//! [`Reply`]; unknown lines become [`Reply::Other`], never an error.
//!
//! Texts follow Marlin 2.x (`Marlin/src/gcode/queue.cpp`), Prusa-Firmware
//! (`Firmware/cmdqueue.cpp`), Repetier-Firmware (`Communication.cpp`:
//! `Resend:`, `ok <n>`, `skip <n>`, `busy:`, `wait`) and Klipper
//! (`klippy/gcode.py`: `!! ` errors, `// ` info lines, `ok` carrying the
//! answer). Which of them a printer uses is never configured: the parser
//! accepts every spelling.

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

/// One `ok` and what it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct OkReply<'a> {
    pub temps: Temps,
    pub advanced: Option<AdvancedOk>,
    /// The line this ok is for, when the firmware says: ADVANCED_OK's `N`
    /// or Repetier's `ok <n>` (`ACK_WITH_LINENUMBER`).
    pub line: Option<u64>,
    /// Everything after `ok` (Klipper answers `M115` here).
    pub rest: &'a str,
}

/// What a printer error line means for the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A line check failed (checksum, line number, missing checksum): a
    /// `Resend:` follows (except for Marlin's "No Line Number with checksum").
    LineCheck { last_line: Option<u64> },
    /// The firmware stopped (`kill()`, thermal protection, Klipper shutdown): fatal.
    Fatal,
    /// Anything else (`Error:Unknown command`, Klipper's `!! Must home axis
    /// first`, …): reported, and the command still gets its `ok`.
    Other,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reply<'a> {
    Ok(OkReply<'a>),
    Resend(u64),
    /// Repetier: `skip <n>`, the line was seen already (a duplicate, or
    /// garbage after a resend request); an `ok` follows that belongs to it.
    Skip(u64),
    Error {
        kind: ErrorKind,
        text: &'a str,
    },
    Busy(&'a str),
    Wait,
    Start,
    Temps(Temps),
    /// `//action:x` (Marlin, Prusa) or `// action:x` (Klipper, Repetier).
    Action(&'a str),
    /// The `M115` report line (`FIRMWARE_NAME:...`).
    FirmwareName(&'a str),
    Capability {
        name: &'a str,
        enabled: bool,
    },
    /// Klipper's informational `// ...` lines.
    Info(&'a str),
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
        return Reply::Ok(parse_ok(line.get(2..).unwrap_or("")));
    }
    if let Some(rest) = strip_prefix_ci(line, "resend:").or_else(|| line.strip_prefix("rs ")) {
        return match first_number(rest) {
            Some(n) => Reply::Resend(n),
            None => Reply::Other(line),
        };
    }
    if let Some(rest) = line.strip_prefix("skip ") {
        if let Some(n) = first_number(rest) {
            return Reply::Skip(n);
        }
    }
    if let Some(rest) = strip_prefix_ci(line, "error:") {
        return Reply::Error {
            kind: classify_error(rest),
            text: rest.trim(),
        };
    }
    if let Some(rest) = line.strip_prefix("!!") {
        // klippy/gcode.py `_respond_error`: `!! ` then an `ok`; only a
        // shutdown is fatal (its state line also says so, see `Info`).
        let text = rest.trim();
        let kind = if text.to_ascii_lowercase().contains("shutdown") {
            ErrorKind::Fatal
        } else {
            ErrorKind::Other
        };
        return Reply::Error { kind, text };
    }
    if line == "start" {
        return Reply::Start;
    }
    if line == "wait" {
        return Reply::Wait;
    }
    if let Some(rest) = line
        .strip_prefix("//action:")
        .or_else(|| line.strip_prefix("// action:"))
    {
        return Reply::Action(rest.trim());
    }
    if line.starts_with("RequestPause:") {
        // Repetier-Host protocol: the printer asks the host to pause.
        return Reply::Action("pause");
    }
    if let Some(rest) = line.strip_prefix("//") {
        let text = rest.trim();
        if is_klipper_down(text) {
            return Reply::Error {
                kind: ErrorKind::Fatal,
                text,
            };
        }
        return Reply::Info(text);
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
    if let Some(rest) = strip_prefix_ci(line, "echo:").or_else(|| line.strip_prefix("Info:")) {
        return Reply::Echo(rest.trim());
    }
    Reply::Other(line)
}

/// `// Klipper state: Shutdown` (or `Disconnect`): Klipper stopped
/// (`klippy/gcode.py` `_respond_state`), the print cannot go on.
fn is_klipper_down(text: &str) -> bool {
    text.strip_prefix("Klipper state:")
        .map(str::trim)
        .is_some_and(|s| s == "Shutdown" || s == "Disconnect")
}

fn parse_ok(rest: &str) -> OkReply<'_> {
    let advanced = parse_advanced_ok(rest);
    // Repetier's ACK_WITH_LINENUMBER: `ok 123` (the whole rest is a number).
    let bare = rest.trim();
    let repetier = (!bare.is_empty() && bare.bytes().all(|b| b.is_ascii_digit()))
        .then(|| bare.parse().ok())
        .flatten();
    OkReply {
        temps: parse_temps(rest),
        advanced,
        line: advanced.and_then(|a| a.line).or(repetier),
        rest: bare,
    }
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
    const LINE_CHECKS: [&str; 6] = [
        "line number is not last line number",
        "checksum mismatch",
        "no checksum with line number",
        "no line number with checksum",
        "missing checksum",
        "wrong checksum",
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
    for token in rest.split_ascii_whitespace() {
        let Some((key, value)) = token.split_at_checked(1) else {
            continue;
        };
        match key {
            "N" => adv.line = value.parse().ok(),
            "P" => adv.planner_free = value.parse().ok(),
            "B" if !value.starts_with(':') => adv.queue_free = value.parse().ok(),
            _ => {}
        }
    }
    adv.queue_free.is_some().then_some(adv)
}

#[cfg(test)]
#[path = "reply_tests.rs"]
mod tests;
