//! The content check a model passes before printgate keeps it.
//!
//! Streaming and bounded: [`GcodeChecker`] takes bytes in any chunking and
//! holds at most one line ([`MAX_LINE`] bytes), so a 2 GB file costs the
//! same memory as a 2 KB one. It is fed while downloading (a binary file is
//! refused at its first chunk) and by [`check_gcode_file`] for files on disk.
//!
//! The rules: text only (no NUL or control bytes other than tab, CR, LF;
//! bytes above 0x7f are allowed, slicers put UTF-8 in comments and `M117`),
//! no raw line over [`MAX_LINE`] bytes, no command over [`MAX_COMMAND`] bytes
//! once `;` comments and surrounding whitespace are stripped, and at least
//! one `G`/`M` command. [`MAX_COMMAND`] keeps the framed line
//! `N<line> <cmd>*<xor>\n` inside Marlin's 96-byte command buffer
//! (`MAX_CMD_SIZE`).

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::Path;

use super::SourceError;

/// Longest raw line accepted, comments included.
pub const MAX_LINE: usize = 1024;
/// Longest command accepted after stripping comments and whitespace.
pub const MAX_COMMAND: usize = 80;

/// What the check saw in a file that passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GcodeSummary {
    /// Lines in the file, a last line without newline included.
    pub lines: u64,
    /// Lines holding a command (anything left after stripping comments).
    pub commands: u64,
    /// Longest raw line, in bytes.
    pub longest_line: usize,
}

/// Push-based checker: [`feed`](Self::feed) chunks, then [`finish`](Self::finish).
/// Errors are a detail naming the line, for [`SourceError::NotGcode`].
#[derive(Debug, Default)]
pub struct GcodeChecker {
    line: Vec<u8>,
    summary: GcodeSummary,
    saw_gm: bool,
}

impl GcodeChecker {
    pub fn new() -> Self {
        GcodeChecker {
            line: Vec::with_capacity(MAX_LINE),
            ..Default::default()
        }
    }

    /// Checks the next bytes of the file.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), String> {
        for &b in chunk {
            match b {
                b'\n' => self.end_line()?,
                b'\t' | b'\r' => self.push(b)?,
                b if b < 0x20 || b == 0x7f => {
                    return Err(format!("line {}: binary byte 0x{b:02x}", self.line_no()));
                }
                b => self.push(b)?,
            }
        }
        Ok(())
    }

    /// Ends the check: the last line, then "at least one G/M command".
    pub fn finish(mut self) -> Result<GcodeSummary, String> {
        if !self.line.is_empty() {
            self.end_line()?;
        }
        if !self.saw_gm {
            return Err(format!("no g or m command in {} lines", self.summary.lines));
        }
        Ok(self.summary)
    }

    /// 1-based number of the line being read.
    fn line_no(&self) -> u64 {
        self.summary.lines + 1
    }

    fn push(&mut self, b: u8) -> Result<(), String> {
        if self.line.len() >= MAX_LINE {
            return Err(format!(
                "line {}: longer than {MAX_LINE} bytes",
                self.line_no()
            ));
        }
        self.line.push(b);
        Ok(())
    }

    fn end_line(&mut self) -> Result<(), String> {
        let line_no = self.line_no();
        let code = self.line.split(|b| *b == b';').next().unwrap_or(&[]);
        let command = code.trim_ascii();
        if command.len() > MAX_COMMAND {
            return Err(format!(
                "line {line_no}: command of {} bytes, over {MAX_COMMAND}",
                command.len()
            ));
        }
        if !command.is_empty() {
            self.summary.commands += 1;
            let is_gm = matches!(command.first(), Some(b'G' | b'g' | b'M' | b'm'))
                && command.get(1).is_some_and(u8::is_ascii_digit);
            self.saw_gm |= is_gm;
        }
        self.summary.longest_line = self.summary.longest_line.max(self.line.len());
        self.summary.lines = line_no;
        self.line.clear();
        Ok(())
    }
}

/// Checks the G-code file at `path` (see the module doc for the rules).
pub fn check_gcode_file(path: &Path) -> Result<GcodeSummary, SourceError> {
    let io_err = |source| SourceError::Io {
        path: path.to_owned(),
        source,
    };
    let not_gcode = |detail| SourceError::NotGcode {
        path: path.display().to_string(),
        detail,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let mut checker = GcodeChecker::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e)),
        };
        checker
            .feed(buf.get(..n).unwrap_or(&[]))
            .map_err(not_gcode)?;
    }
    checker.finish().map_err(not_gcode)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `text` in chunks of `size` bytes.
    fn check(text: &[u8], size: usize) -> Result<GcodeSummary, String> {
        let mut c = GcodeChecker::new();
        for chunk in text.chunks(size.max(1)) {
            c.feed(chunk)?;
        }
        c.finish()
    }

    #[test]
    fn plain_gcode_passes_in_any_chunking() {
        let text = b"; sliced by X\r\nG28 ; home\n\nM104 S210\n  G1 X10 Y10 E1.5  \n; caf\xc3\xa9\nM117 done";
        for size in [1, 2, 7, 4096] {
            let s = check(text, size).unwrap();
            assert_eq!(
                s,
                GcodeSummary {
                    lines: 7,
                    commands: 4,
                    longest_line: 19
                },
                "chunk {size}"
            );
        }
    }

    #[test]
    fn binary_and_empty_files_fail() {
        assert!(check(b"G28\n\x00\x01\x02", 3)
            .unwrap_err()
            .contains("line 2"));
        assert!(check(b"G28\x1b[0m\n", 64).is_err());
        assert!(check(b"", 64).unwrap_err().contains("no g or m"));
        assert!(check(b"; only comments\n\nT0\n", 64)
            .unwrap_err()
            .contains("no g or m"));
    }

    #[test]
    fn long_commands_and_lines_name_the_line() {
        let mut text = b"G28\nG1 X1\n".to_vec();
        text.extend(b"M117 ");
        text.extend(std::iter::repeat_n(b'A', 200));
        text.push(b'\n');
        let err = check(&text, 16).unwrap_err();
        assert!(err.contains("line 3") && err.contains("205"), "{err}");

        // A long comment is fine up to MAX_LINE, not beyond.
        let mut ok = b"G28 ; ".to_vec();
        ok.extend(std::iter::repeat_n(b'c', MAX_LINE - ok.len()));
        assert!(check(&ok, 100).is_ok());
        ok.push(b'c');
        assert!(check(&ok, 100)
            .unwrap_err()
            .contains("line 1: longer than 1024"));

        let mut exact = b"M117 ".to_vec();
        exact.extend(std::iter::repeat_n(b'B', MAX_COMMAND - 5));
        assert!(check(&exact, 8).is_ok());
    }

    #[test]
    fn file_check_names_the_path() {
        let dir =
            std::env::temp_dir().join(format!("printgate-gcode-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bin.gcode");
        std::fs::write(&path, b"G28\n\x00\x00").unwrap();
        let err = check_gcode_file(&path).unwrap_err();
        assert!(matches!(err, SourceError::NotGcode { .. }));
        assert!(err.to_string().contains("bin.gcode"));
        std::fs::write(&path, b"G28\nG1 X1\n").unwrap();
        assert_eq!(check_gcode_file(&path).unwrap().lines, 2);
        assert!(matches!(
            check_gcode_file(&dir.join("none")),
            Err(SourceError::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
