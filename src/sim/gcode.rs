//! The simulator's own G-code text handling: the line checks a Marlin board
//! applies to `N<n> <cmd>*<xor>` lines, C-style number parsing, command words
//! (`G1 X10 F3000`) and the byte-level emergency parser.
//!
//! Deliberately independent of `crate::protocol`: the simulator is the host's
//! test oracle, and a framing bug shared by both would pass every test. The
//! rules follow Marlin 2.x `GCodeQueue::get_serial_commands` (checks in the
//! order line number, checksum, missing checksum) and `e_parser.h`.
//! No I/O, no clock.

/// Marlin's `MAX_CMD_SIZE`: a line keeps at most 95 characters, the rest of
/// it is dropped until the end of the line.
pub(crate) const MAX_LINE: usize = 95;

/// XOR of every byte: the checksum Marlin expects after `*`, in decimal.
pub(crate) fn xor_checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |acc, b| acc ^ b)
}

/// C `strtol(s, NULL, 10)`: leading whitespace, an optional sign, digits;
/// the first other byte ends the number; no digits gives 0. Saturates.
pub(crate) fn strtol(s: &[u8]) -> i64 {
    let mut it = s
        .iter()
        .copied()
        .skip_while(|b| b.is_ascii_whitespace())
        .peekable();
    let negative = match it.peek() {
        Some(b'-') => {
            it.next();
            true
        }
        Some(b'+') => {
            it.next();
            false
        }
        _ => false,
    };
    let mut value: i64 = 0;
    for b in it.take_while(u8::is_ascii_digit) {
        let digit = i64::from(b - b'0');
        value = value.saturating_mul(10).saturating_add(digit);
    }
    if negative {
        -value
    } else {
        value
    }
}

/// A decimal number as Marlin's parser reads parameter values (`-1.5`, `10`,
/// `.5`). Returns the value and the number of bytes used; `None` if `s` does
/// not start with a number.
pub(crate) fn parse_number(s: &[u8]) -> Option<(f64, usize)> {
    let mut end = 0;
    if matches!(s.first(), Some(b'-' | b'+')) {
        end = 1;
    }
    let digits_start = end;
    let mut seen_digit = false;
    let mut seen_dot = false;
    while let Some(&b) = s.get(end) {
        if b.is_ascii_digit() {
            seen_digit = true;
        } else if b == b'.' && !seen_dot {
            seen_dot = true;
        } else {
            break;
        }
        end += 1;
    }
    if !seen_digit || end == digits_start {
        return None;
    }
    let text = std::str::from_utf8(s.get(..end)?).ok()?;
    text.parse::<f64>().ok().map(|v| (v, end))
}

/// Why the board rejected a line. Each has Marlin's exact message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineError {
    /// `N` is not last+1 (and the line is not an M110).
    LineNumber,
    /// `*` present, wrong XOR.
    Checksum,
    /// Numbered line without `*`.
    NoChecksum,
    /// `*` on a line without `N`. No resend follows.
    NoLineNumber,
}

impl LineError {
    /// The text after `Error:` and before `, Last Line: <n>`.
    pub(crate) fn message(self) -> &'static str {
        match self {
            LineError::LineNumber => "Line Number is not Last Line Number+1",
            LineError::Checksum => "checksum mismatch",
            LineError::NoChecksum => "No Checksum with line number",
            LineError::NoLineNumber => "No Line Number with checksum",
        }
    }

    /// Whether Marlin flushes its RX buffer and asks for `Resend:`.
    pub(crate) fn requests_resend(self) -> bool {
        !matches!(self, LineError::NoLineNumber)
    }
}

/// A line that passed the checks.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Accepted<'a> {
    /// The line's own `N`, if it had one (echoed by ADVANCED_OK).
    pub number: Option<i64>,
    /// The command to execute: between `N<n> ` and `*`, or the whole line.
    pub command: &'a [u8],
    /// The new "last line" number (a numbered line or an M110 argument).
    pub new_last: Option<i64>,
}

/// Checks one received line (terminator and `;` comment already removed)
/// against the last accepted line number, as Marlin does before queueing it.
/// Returns `Ok(None)` for a blank line, which Marlin ignores without an `ok`.
pub(crate) fn check_line(line: &[u8], last: i64) -> Result<Option<Accepted<'_>>, LineError> {
    let start = line.iter().position(|&b| b != b' ').unwrap_or(line.len());
    let line = line.get(start..).unwrap_or_default();
    if line.is_empty() {
        return Ok(None);
    }
    let star = line.iter().rposition(|&b| b == b'*');
    if line.first() != Some(&b'N') {
        if star.is_some() {
            return Err(LineError::NoLineNumber);
        }
        return Ok(Some(Accepted {
            number: None,
            command: line,
            new_last: None,
        }));
    }
    let own = strtol(line.get(1..).unwrap_or_default());
    // An M110 anywhere in the line sets the counter: its own N argument wins,
    // else the line's number, and the "last+1" rule does not apply to it.
    let m110_at = find(line, b"M110");
    let number = match m110_at {
        Some(at) => line
            .get(at + 4..)
            .and_then(|rest| rest.iter().position(|&b| b == b'N').map(|p| at + 4 + p))
            .map_or(own, |n| strtol(line.get(n + 1..).unwrap_or_default())),
        None => own,
    };
    if m110_at.is_none() && Some(number) != last.checked_add(1) {
        return Err(LineError::LineNumber);
    }
    let Some(star) = star else {
        return Err(LineError::NoChecksum);
    };
    let body = line.get(..star).unwrap_or_default();
    if strtol(line.get(star + 1..).unwrap_or_default()) != i64::from(xor_checksum(body)) {
        return Err(LineError::Checksum);
    }
    // The command starts after `N`, the digits (and sign) and the spaces.
    let after_n = body.get(1..).unwrap_or_default();
    let digits = after_n
        .iter()
        .take_while(|b| b.is_ascii_digit() || **b == b'-')
        .count();
    let rest = after_n.get(digits..).unwrap_or_default();
    let spaces = rest.iter().take_while(|&&b| b == b' ').count();
    Ok(Some(Accepted {
        number: Some(own),
        command: rest.get(spaces..).unwrap_or_default(),
        new_last: Some(number),
    }))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One command: its letter and number (`G1`, `M109`, `T0`) and its arguments.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Command<'a> {
    pub letter: u8,
    pub code: u32,
    /// Everything after the code, e.g. ` X10 F3000`.
    pub args: &'a [u8],
}

impl<'a> Command<'a> {
    /// Parses `G1 X10`, `M104S200`, `T0`. `None` if the text does not start
    /// with a command letter followed by a number (Marlin: unknown command).
    pub(crate) fn parse(text: &'a [u8]) -> Option<Command<'a>> {
        let (&letter, rest) = text.split_first()?;
        if !matches!(letter, b'G' | b'M' | b'T') {
            return None;
        }
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 5 {
            return None;
        }
        let code = u32::try_from(strtol(rest.get(..digits)?)).ok()?;
        let mut args = rest.get(digits..)?;
        // A subcode (`G29.1`) is accepted and ignored.
        if args.first() == Some(&b'.') {
            let sub = args
                .iter()
                .skip(1)
                .take_while(|b| b.is_ascii_digit())
                .count();
            args = args.get(1 + sub..)?;
        }
        Some(Command { letter, code, args })
    }

    /// The value after parameter `key` (`X10` → 10.0), if present with a number.
    pub(crate) fn value(&self, key: u8) -> Option<f64> {
        self.params().find(|(k, _)| *k == key).and_then(|(_, v)| v)
    }

    /// Whether parameter `key` is present, with or without a value.
    pub(crate) fn has(&self, key: u8) -> bool {
        self.params().any(|(k, _)| k == key)
    }

    /// The parameters in order: an upper-case letter and the number after it.
    fn params(&self) -> impl Iterator<Item = (u8, Option<f64>)> + 'a {
        let args = self.args;
        let mut at = 0;
        std::iter::from_fn(move || {
            while let Some(&b) = args.get(at) {
                at += 1;
                if b.is_ascii_uppercase() {
                    let parsed = args.get(at..).and_then(parse_number);
                    if let Some((_, used)) = parsed {
                        at += used;
                    }
                    return Some((b, parsed.map(|(v, _)| v)));
                }
            }
            None
        })
    }
}

/// What the emergency parser acts on at once, before the line is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Emergency {
    /// `M108`: stop waiting for heaters.
    M108,
    /// `M112`: kill.
    M112,
    /// `M876 S<n>`: the answer to a host prompt.
    M876(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum EpState {
    #[default]
    Reset,
    N,
    M,
    M1,
    M10,
    M11,
    M8,
    M87,
    M876,
    M876S,
    Found(Emergency),
    Ignore,
}

/// Marlin's EMERGENCY_PARSER (`feature/e_parser.h`): watches every received
/// byte (even bytes the full RX buffer drops) for `[N<n> ]M108`, `M112` and
/// `M876 S<n>`, and acts at end of line.
#[derive(Debug, Default, Clone)]
pub(crate) struct EmergencyParser {
    state: EpState,
    value: u32,
}

impl EmergencyParser {
    /// Feeds one received byte; returns a command to act on at its line end.
    pub(crate) fn feed(&mut self, c: u8) -> Option<Emergency> {
        let eol = c == b'\n' || c == b'\r';
        self.state = match (self.state, c) {
            (EpState::Reset, b' ' | b'\n' | b'\r') => EpState::Reset,
            (EpState::Reset, b'N') => EpState::N,
            (EpState::Reset | EpState::N, b'M') => EpState::M,
            (EpState::N, b'0'..=b'9' | b'-' | b' ') => EpState::N,
            (EpState::M, b' ') => EpState::M,
            (EpState::M, b'1') => EpState::M1,
            (EpState::M, b'8') => EpState::M8,
            (EpState::M8, b'7') => EpState::M87,
            (EpState::M87, b'6') => EpState::M876,
            (EpState::M876, b' ') => EpState::M876,
            (EpState::M876, b'S') => {
                self.value = 0;
                EpState::M876S
            }
            (EpState::M876S, b'0'..=b'9') => {
                self.value = self
                    .value
                    .saturating_mul(10)
                    .saturating_add(u32::from(c - b'0'));
                EpState::M876S
            }
            (EpState::M876S, _) if eol => {
                self.state = EpState::Reset;
                return Some(Emergency::M876(self.value));
            }
            (EpState::M1, b'0') => EpState::M10,
            (EpState::M1, b'1') => EpState::M11,
            (EpState::M10, b'8') => EpState::Found(Emergency::M108),
            (EpState::M11, b'2') => EpState::Found(Emergency::M112),
            (EpState::Found(found), _) if eol => {
                self.state = EpState::Reset;
                return Some(found);
            }
            (EpState::Found(found), _) => EpState::Found(found),
            (_, _) if eol => EpState::Reset,
            (_, _) => EpState::Ignore,
        };
        None
    }

    pub(crate) fn reset(&mut self) {
        self.state = EpState::Reset;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str, last: i64) -> (Option<i64>, String, Option<i64>) {
        let a = check_line(line.as_bytes(), last).unwrap().unwrap();
        (
            a.number,
            String::from_utf8(a.command.to_vec()).unwrap(),
            a.new_last,
        )
    }

    #[test]
    fn checksum_vectors_are_accepted() {
        assert_eq!(
            ok("N0 M110 N0*125", 57),
            (Some(0), "M110 N0".into(), Some(0))
        );
        assert_eq!(ok("N1 M115*39", 0), (Some(1), "M115".into(), Some(1)));
        assert_eq!(ok("N49 M105*26", 48), (Some(49), "M105".into(), Some(49)));
        assert_eq!(xor_checksum(b"N1 M115"), 39);
    }

    #[test]
    fn errors_in_marlin_order() {
        // Line number is checked before the checksum.
        assert_eq!(check_line(b"N2 M115*0", 0), Err(LineError::LineNumber));
        assert_eq!(check_line(b"N1 M115*38", 0), Err(LineError::Checksum));
        assert_eq!(check_line(b"N1 M115", 0), Err(LineError::NoChecksum));
        assert_eq!(check_line(b"M115*39", 0), Err(LineError::NoLineNumber));
        assert!(!LineError::NoLineNumber.requests_resend());
    }

    #[test]
    fn m110_argument_wins_and_skips_the_sequence_check() {
        let line = "N7 M110 N41";
        let framed = format!("{line}*{}", xor_checksum(line.as_bytes()));
        assert_eq!(ok(&framed, 3), (Some(7), "M110 N41".into(), Some(41)));
        let own = "N9 M110";
        let framed = format!("{own}*{}", xor_checksum(own.as_bytes()));
        assert_eq!(ok(&framed, 100).2, Some(9));
        let reset = "N-1 M110 N-1";
        let framed = format!("{reset}*{}", xor_checksum(reset.as_bytes()));
        assert_eq!(ok(&framed, 5), (Some(-1), "M110 N-1".into(), Some(-1)));
    }

    #[test]
    fn unnumbered_and_blank_lines() {
        assert_eq!(ok("M105", 7), (None, "M105".into(), None));
        assert_eq!(ok("  G28", 7).1, "G28");
        assert_eq!(check_line(b"   ", 0), Ok(None));
    }

    #[test]
    fn strtol_is_c_like() {
        assert_eq!(strtol(b"12abc"), 12);
        assert_eq!(strtol(b" -3"), -3);
        assert_eq!(strtol(b"x"), 0);
        assert_eq!(strtol(b"99999999999999999999999"), i64::MAX);
    }

    #[test]
    fn command_words() {
        let c = Command::parse(b"G1 X10 Y-2.5F3000 E.5").unwrap();
        assert_eq!((c.letter, c.code), (b'G', 1));
        assert_eq!(c.value(b'X'), Some(10.0));
        assert_eq!(c.value(b'Y'), Some(-2.5));
        assert_eq!(c.value(b'F'), Some(3000.0));
        assert_eq!(c.value(b'E'), Some(0.5));
        assert_eq!(c.value(b'Z'), None);
        let c = Command::parse(b"M104S200").unwrap();
        assert_eq!((c.code, c.value(b'S')), (104, Some(200.0)));
        assert!(Command::parse(b"G28 X").unwrap().has(b'X'));
        assert!(Command::parse(b"X10").is_none());
        assert!(Command::parse(b"G").is_none());
    }

    #[test]
    fn emergency_parser_matches_numbered_and_plain() {
        let run = |s: &str| {
            let mut p = EmergencyParser::default();
            s.bytes().filter_map(|b| p.feed(b)).collect::<Vec<_>>()
        };
        assert_eq!(run("M112\n"), vec![Emergency::M112]);
        assert_eq!(run("N5 M112*33\n"), vec![Emergency::M112]);
        assert_eq!(run("M108\r"), vec![Emergency::M108]);
        assert_eq!(run("G1 M112\nM1120\n"), vec![Emergency::M112]);
        assert_eq!(run("M11\nM105\n"), vec![]);
        assert_eq!(run("M876 S1\nN7 M876 S12*9\n"), vec![Emergency::M876(1)]);
        assert_eq!(run("M876 S3\n"), vec![Emergency::M876(3)]);
    }
}
