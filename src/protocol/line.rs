//! G-code line preparation and framing: `N<n> <command>*<xor>\n`.
//!
//! Pure functions over bytes; no I/O. Marlin keeps at most 96 bytes per
//! command (`MAX_CMD_SIZE`, terminator included) and silently drops the rest,
//! so a line that would not fit is an error here, before it is ever sent.

use std::fmt;

/// The longest framed line (without the newline) Marlin accepts whole.
pub const MAX_FRAMED_LEN: usize = 95;

/// The longest command that fits a frame whatever its line number
/// (`N` + 10 digits + space + `*` + 3 checksum digits = 16 bytes of framing).
pub const MAX_COMMAND_LEN: usize = MAX_FRAMED_LEN - 16;

/// Why a G-code line cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// The command is longer than a printer can buffer.
    TooLong { len: usize, max: usize },
    /// `*` inside a command would be read as the checksum marker.
    Asterisk,
    /// Bytes a printer would misread as line ends or that are not text.
    ControlByte { byte: u8 },
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::TooLong { len, max } => write!(
                f,
                "command is {len} bytes after stripping comments; printers buffer at most {max}"
            ),
            LineError::Asterisk => write!(f, "command contains '*', which marks a checksum"),
            LineError::ControlByte { byte } => {
                write!(f, "command contains control byte 0x{byte:02x}")
            }
        }
    }
}

impl std::error::Error for LineError {}

/// Strips a `;` comment and surrounding whitespace. Returns `Ok(None)` for a
/// line with nothing to send, the command otherwise.
pub fn prepare(raw: &str) -> Result<Option<&str>, LineError> {
    Ok(prepare_range(raw)?.and_then(|r| raw.get(r)))
}

/// Like [`prepare`], but gives the command's byte range within `raw`, for
/// callers that keep the line in their own buffer.
pub fn prepare_range(raw: &str) -> Result<Option<std::ops::Range<usize>>, LineError> {
    let code = match raw.find(';') {
        Some(i) => raw.get(..i).unwrap_or(""),
        None => raw,
    };
    let start = code.len() - code.trim_start().len();
    let cmd = code.trim();
    if cmd.is_empty() {
        return Ok(None);
    }
    check_command(cmd)?;
    Ok(Some(start..start + cmd.len()))
}

/// What framing needs of a command, in one pass: no control bytes (they
/// would end the line early), no `*` (it starts the checksum), and a length
/// that fits a frame. `prepare` ends with it; the protocol core calls it
/// alone on commands that were prepared already.
pub fn check_command(cmd: &str) -> Result<(), LineError> {
    let mut asterisk = false;
    for &byte in cmd.as_bytes() {
        if byte.is_ascii_control() && byte != b'\t' {
            return Err(LineError::ControlByte { byte });
        }
        asterisk |= byte == b'*';
    }
    if asterisk {
        return Err(LineError::Asterisk);
    }
    if cmd.len() > MAX_COMMAND_LEN {
        return Err(LineError::TooLong {
            len: cmd.len(),
            max: MAX_COMMAND_LEN,
        });
    }
    Ok(())
}

/// XOR of every byte, as Marlin computes it over `N<n> <command>`.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |acc, b| acc ^ b)
}

/// Appends `N<n> <cmd>*<xor>\n` to `out` and returns the framed length
/// (newline included). `cmd` must come from [`prepare`].
pub fn frame(n: u64, cmd: &str, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.push(b'N');
    push_decimal(out, n);
    out.push(b' ');
    out.extend_from_slice(cmd.as_bytes());
    let sum = checksum(out.get(start..).unwrap_or(&[]));
    out.push(b'*');
    push_decimal(out, u64::from(sum));
    out.push(b'\n');
    out.len() - start
}

/// Decimal formatting without going through `fmt` (this is the per-line path).
fn push_decimal(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (v % 10) as u8;
        }
        v /= 10;
        if v == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(i..).unwrap_or(&[]));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(n: u64, cmd: &str) -> String {
        let mut out = Vec::new();
        frame(n, cmd, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn checksum_vectors_from_the_protocol_notes() {
        assert_eq!(framed(0, "M110 N0"), "N0 M110 N0*125\n");
        assert_eq!(framed(1, "M115"), "N1 M115*39\n");
        assert_eq!(framed(49, "M105"), "N49 M105*26\n");
    }

    #[test]
    fn frame_reports_length_and_appends() {
        let mut out = b"xx".to_vec();
        let n = frame(12345678901, "G1 X1", &mut out);
        assert_eq!(n, out.len() - 2);
        assert!(out.starts_with(b"xxN12345678901 G1 X1*"));
    }

    #[test]
    fn prepare_strips_comments_and_whitespace() {
        assert_eq!(prepare("  G1 X10 Y5 ; move\r"), Ok(Some("G1 X10 Y5")));
        assert_eq!(prepare("; only a comment"), Ok(None));
        assert_eq!(prepare("   \t "), Ok(None));
        assert_eq!(prepare("M117 a*b"), Err(LineError::Asterisk));
        assert_eq!(prepare("G1\u{7}X"), Err(LineError::ControlByte { byte: 7 }));
    }

    #[test]
    fn overlong_command_is_rejected_and_longest_allowed_fits_any_line_number() {
        let long = "G1 ".to_string() + &"X".repeat(200);
        assert!(matches!(
            prepare(&long),
            Err(LineError::TooLong { len: 203, .. })
        ));
        let max = "M117 ".to_string() + &"a".repeat(MAX_COMMAND_LEN - 5);
        let cmd = prepare(&max).unwrap().unwrap();
        let line = framed(9_999_999_999, cmd);
        assert!(line.len() - 1 <= MAX_FRAMED_LEN, "{} bytes", line.len() - 1);
    }
}
