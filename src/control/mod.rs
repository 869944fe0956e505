//! The local control path: a Unix socket in the data folder through which
//! the CLI asks the running daemon to change things (add, cancel, clear,
//! pause, resume). One JSON line per request and per answer; `add_job` is
//! followed by the file's bytes, so the daemon never needs to read the
//! operator's files (systemd gives it a private /tmp and no /home).
//!
//! Reading commands (`status`, `jobs`) never come here: they read SQLite.
//!
//! Access: the socket is mode 0660 and the daemon checks each peer's
//! kernel-reported uid (root, its own user, or `[gateway] operator_group`),
//! bounds the request line (4 KiB), the time a client may stay silent, the
//! number of connections, and uploads (limit and free space).

mod peer;
mod server;
mod upload;

pub use server::{serve, serve_with, ServeOptions, MAX_REQUEST_LINE, SOCKET_MODE};
pub use upload::{free_bytes, FREE_SPACE_RESERVE};

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The socket's name inside the data folder.
pub const SOCKET: &str = "printgate.sock";
/// Largest file `job add` accepts over the socket.
pub const MAX_UPLOAD: u64 = 1 << 30;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// `size` bytes of G-code follow the request line.
    AddJob {
        printer: String,
        priority: i64,
        id: Option<String>,
        size: u64,
    },
    CancelJob {
        job: String,
    },
    Clear {
        printer: String,
    },
    /// The firmware identity the printer's port answers with now is the
    /// printer's (after a hold for a mismatch).
    AcceptIdentity {
        printer: String,
    },
    Pause {
        printer: String,
    },
    Resume {
        printer: String,
    },
    EmergencyStop {
        printer: String,
    },
    /// Answers the printer's open prompt (`M876 S<choice>`).
    PromptAnswer {
        printer: String,
        choice: u32,
    },
    /// Live view of every printer, temperatures included.
    Status,
    Ping,
}

/// One printer as the running daemon sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LivePrinter {
    pub id: String,
    pub state: String,
    pub plate_clear: bool,
    pub connected: bool,
    pub job: Option<String>,
    pub percent: f64,
    pub nozzle: Option<f32>,
    pub nozzle_target: Option<f32>,
    pub bed: Option<f32>,
    pub bed_target: Option<f32>,
    /// The host's own serial-link counters (absent from older daemons).
    #[serde(default)]
    pub link: LinkCounters,
}

/// What the host's protocol counted on one printer's link since the daemon
/// started, summed over the jobs that ended: what went wrong on the wire as
/// the gateway saw it (the demo prints these, not the faults it injected).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkCounters {
    /// `Resend:` requests from the printer.
    pub resends: u64,
    /// `ok`s that did not come in time (each answered by a probe).
    pub timeouts: u64,
    /// `Error:` lines about damaged or misnumbered lines.
    pub line_errors: u64,
    /// Lines whose `ok` was lost and that the host found done (a later
    /// `ok N`, a marker, or a probe), never sent twice.
    #[serde(default)]
    pub recovered_oks: u64,
}

impl LinkCounters {
    /// Adds one job's protocol counters.
    pub fn add(&mut self, stats: &crate::protocol::Stats) {
        self.resends += stats.resends;
        self.timeouts += stats.timeouts;
        self.line_errors += stats.line_errors;
        self.recovered_oks += stats.recovered_oks;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub printers: Option<Vec<LivePrinter>>,
    /// Bytes written and fsyncs, with `Status` (absent from older daemons).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io: Option<crate::iostats::IoReport>,
}

impl Response {
    pub fn ok(message: impl Into<String>) -> Self {
        Response {
            ok: true,
            message: message.into(),
            job_id: None,
            printers: None,
            io: None,
        }
    }
    pub fn err(message: impl Into<String>) -> Self {
        Response {
            ok: false,
            message: message.into(),
            job_id: None,
            printers: None,
            io: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no printgate daemon is running for {dir} (no control socket at {socket}); start it with `printgate run`")]
    NotRunning { dir: PathBuf, socket: PathBuf },
    #[error("control socket {socket}: {source}")]
    Io {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon sent an answer that is not JSON: {:?}", .0)]
    BadAnswer(String),
}

/// `s` with control characters escaped (`\u{1b}`, `\n`...), for printing
/// strings that came from outside (job ids, reasons, topics, server
/// messages) to a terminal or a log line: no forged lines, no terminal
/// escape sequences. Borrowed when there is nothing to escape.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// Sends one request (and, for `AddJob`, the file) to the daemon and waits
/// for its answer. Blocking: this is for the CLI.
pub fn request(
    data_dir: &Path,
    req: &Request,
    file: Option<&Path>,
) -> Result<Response, ControlError> {
    let socket = socket_path(data_dir);
    let io = |source| ControlError::Io {
        socket: socket.clone(),
        source,
    };
    let mut stream = UnixStream::connect(&socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ControlError::NotRunning {
                dir: data_dir.to_path_buf(),
                socket: socket.clone(),
            }
        }
        _ => io(e),
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| ControlError::BadAnswer(e.to_string()))?;
    line.push(b'\n');
    // The daemon may refuse (not allowed, bad id, too large) and close
    // before reading the file: then its answer is still there to read.
    let sent = send_request(&mut stream, &line, file);
    let mut answer = String::new();
    let read = BufReader::new(&stream).read_line(&mut answer);
    if answer.trim().is_empty() {
        sent?;
        read.map_err(io)?;
    }
    serde_json::from_str(answer.trim())
        .map_err(|_| ControlError::BadAnswer(answer.trim().chars().take(200).collect()))
}

fn send_request(
    stream: &mut UnixStream,
    line: &[u8],
    file: Option<&Path>,
) -> Result<(), ControlError> {
    let socket = stream
        .peer_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf))
        .unwrap_or_default();
    let io = |source| ControlError::Io {
        socket: socket.clone(),
        source,
    };
    stream.write_all(line).map_err(io)?;
    if let Some(path) = file {
        let mut f = std::fs::File::open(path).map_err(|source| ControlError::File {
            path: path.to_path_buf(),
            source,
        })?;
        std::io::copy(&mut f, stream).map_err(io)?;
    }
    stream.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn printable_escapes_control_characters_only() {
        assert_eq!(printable("job-1 é"), "job-1 é");
        assert_eq!(
            printable("a\nforged: line\x1b[31m"),
            "a\\nforged: line\\u{1b}[31m"
        );
    }
}
