//! A G-code file streamed line by line with bounded memory: a 100 MB file
//! is read through a fixed buffer, never loaded whole, and a line longer
//! than [`MAX_LINE`] is a format error as soon as its first kilobyte is read
//! (a 1 GiB file without a newline must not exhaust a Pi).
//!
//! Blocking I/O: call it from a blocking thread (`scan` in `spawn_blocking`,
//! streaming in the job reader thread), never on an async worker.

use crate::protocol::line::{prepare_range, LineError};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// Read-ahead buffer: enough for hundreds of lines, small for a Pi Zero.
const READ_BUFFER: usize = 64 * 1024;

/// The longest raw line (comment included) accepted in a G-code file.
/// Slicers write lines of well under 200 bytes; anything near this is not
/// G-code.
pub const MAX_LINE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum JobFileError {
    #[error("cannot read G-code file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {source}")]
    Line {
        path: PathBuf,
        line: u64,
        #[source]
        source: LineError,
    },
    #[error("{path}:{line}: not text (invalid UTF-8)")]
    NotText { path: PathBuf, line: u64 },
    #[error("{path}:{line}: line is longer than {max} bytes; not a G-code file?")]
    LineTooLong {
        path: PathBuf,
        line: u64,
        max: usize,
    },
    #[error("{path}: no G-code commands in the file")]
    Empty { path: PathBuf },
}

/// What a pre-scan found: checked once before a print starts, so a bad line
/// fails the job before the first byte goes to the printer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub commands: u64,
    pub bytes: u64,
}

/// Checks every line of `path` (streaming) and counts commands.
pub fn scan(path: &Path) -> Result<Summary, JobFileError> {
    let mut reader = JobFile::open(path, None)?;
    while reader.next_command()?.is_some() {}
    if reader.commands == 0 {
        return Err(JobFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(Summary {
        commands: reader.commands,
        bytes: reader.bytes_read,
    })
}

pub struct JobFile {
    path: PathBuf,
    reader: BufReader<File>,
    buf: Vec<u8>,
    raw_line: u64,
    commands: u64,
    bytes_read: u64,
    total: Option<Summary>,
}

impl JobFile {
    pub fn open(path: &Path, total: Option<Summary>) -> Result<Self, JobFileError> {
        let file = File::open(path).map_err(|source| JobFileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(JobFile {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(READ_BUFFER, file),
            buf: Vec::with_capacity(256),
            raw_line: 0,
            commands: 0,
            bytes_read: 0,
            total,
        })
    }

    /// The next command (comments and blank lines skipped) with its index
    /// among the file's commands, or `None` at the end of the file.
    pub fn next_command(&mut self) -> Result<Option<(&str, u64)>, JobFileError> {
        let range = loop {
            if !self.read_line()? {
                return Ok(None);
            }
            let text = std::str::from_utf8(&self.buf).map_err(|_| JobFileError::NotText {
                path: self.path.clone(),
                line: self.raw_line,
            })?;
            let range = prepare_range(text).map_err(|source| JobFileError::Line {
                path: self.path.clone(),
                line: self.raw_line,
                source,
            })?;
            if let Some(range) = range {
                break range;
            }
        };
        let index = self.commands;
        self.commands += 1;
        let cmd = self
            .buf
            .get(range)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("");
        Ok(Some((cmd, index)))
    }

    /// Reads one raw line into `buf` (newline included), never more than
    /// [`MAX_LINE`] bytes of it. `false` at the end of the file.
    fn read_line(&mut self) -> Result<bool, JobFileError> {
        self.buf.clear();
        loop {
            let chunk = self.reader.fill_buf().map_err(|source| JobFileError::Io {
                path: self.path.clone(),
                source,
            })?;
            if chunk.is_empty() {
                if self.buf.is_empty() {
                    return Ok(false);
                }
                break;
            }
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            if self.buf.len() + take > MAX_LINE + 1 {
                return Err(JobFileError::LineTooLong {
                    path: self.path.clone(),
                    line: self.raw_line + 1,
                    max: MAX_LINE,
                });
            }
            self.buf.extend_from_slice(chunk.get(..take).unwrap_or(&[]));
            self.reader.consume(take);
            if done {
                break;
            }
        }
        self.raw_line += 1;
        self.bytes_read += self.buf.len() as u64;
        Ok(true)
    }

    pub fn commands_read(&self) -> u64 {
        self.commands
    }
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }
    pub fn total(&self) -> Option<Summary> {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("printgate-jobfile-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("job.gcode");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn streams_commands_skipping_comments() {
        let path = temp_file("ok", "; header\nG28 ; home\n\n  G1 X1\nM104 S0");
        let mut f = JobFile::open(&path, None).unwrap();
        assert_eq!(f.next_command().unwrap(), Some(("G28", 0)));
        assert_eq!(f.next_command().unwrap(), Some(("G1 X1", 1)));
        assert_eq!(f.next_command().unwrap(), Some(("M104 S0", 2)));
        assert_eq!(f.next_command().unwrap(), None);
        assert_eq!(scan(&path).unwrap().commands, 3);
    }

    #[test]
    fn overlong_line_is_a_clear_error_with_its_line_number() {
        let long = format!("G28\nG1 X{}\n", "1".repeat(200));
        let path = temp_file("long", &long);
        let err = scan(&path).unwrap_err().to_string();
        assert!(err.contains(":2: command is"), "{err}");
    }

    #[test]
    fn r13_a_line_without_end_is_refused_after_a_kilobyte() {
        // A sparse 1 GiB file of zero bytes, no newline anywhere: reading it
        // whole would take a gigabyte of memory.
        let dir =
            std::env::temp_dir().join(format!("printgate-jobfile-{}-huge", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("huge.gcode");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(1 << 30).unwrap();
        let err = scan(&path).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(
            matches!(
                err,
                JobFileError::LineTooLong {
                    line: 1,
                    max: MAX_LINE,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains(":1: line is longer than 1024 bytes"),
            "{err}"
        );
        // A long comment line is fine up to the bound, and counted.
        let ok_line = format!("G28\n;{}\nG1 X1\n", "c".repeat(MAX_LINE - 2));
        let path = temp_file("bound", &ok_line);
        assert_eq!(scan(&path).unwrap().commands, 2);
        let too_long = format!("G28\n;{}\nG1 X1\n", "c".repeat(MAX_LINE));
        let path = temp_file("over", &too_long);
        assert!(scan(&path)
            .unwrap_err()
            .to_string()
            .contains(":2: line is longer"));
    }

    #[test]
    fn missing_and_empty_files_are_errors() {
        let err = scan(Path::new("/nonexistent/x.gcode")).unwrap_err();
        assert!(err.to_string().contains("cannot read G-code file"));
        let path = temp_file("empty", "; nothing\n");
        assert!(matches!(scan(&path), Err(JobFileError::Empty { .. })));
    }
}
