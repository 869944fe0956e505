//! [`SourceError`]: every way the job source fails, sorted for the caller
//! into "try again later" and "give up" by [`SourceError::is_retryable`], and
//! the one mapping from ureq's errors into it.

use std::path::PathBuf;

/// Why a source call failed. Messages are short, lowercase and name the URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    #[error("{url}: http status {status}")]
    Http { status: u16, url: String },
    #[error("{url}: {detail}")]
    Transport { url: String, detail: String },
    #[error("{url}: {what} timed out")]
    Timeout { url: String, what: &'static str },
    #[error("{url}: body cut off after {got} of {} bytes", expected.map_or("?".to_owned(), |e| e.to_string()))]
    Truncated {
        url: String,
        expected: Option<u64>,
        got: u64,
    },
    #[error("{url}: body larger than the {limit}-byte limit{}", announced.map_or(String::new(), |a| format!(" (announced {a})")))]
    TooLarge {
        url: String,
        limit: u64,
        announced: Option<u64>,
    },
    #[error("{url}: bad body: {detail}")]
    BadBody { url: String, detail: String },
    #[error("unsafe model url {url:?}: {reason}")]
    UnsafeModelUrl { url: String, reason: String },
    /// `path` is the file checked, or the URL for a download checked in flight.
    #[error("{path}: not g-code: {detail}")]
    NotGcode { path: String, detail: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The model's SHA-256 is not the expected one: whoever served it,
    /// it is not the model the job names. Never retried.
    #[error("{url}: sha256 mismatch: expected {expected}, got {actual}")]
    ChecksumMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    /// `require_model_checksum` is set and neither the job nor the queue
    /// manager gave a checksum, or the one given is not 64 hex digits.
    #[error("{url}: {detail}")]
    Checksum { url: String, detail: String },
    /// The spool file (or its temp file) already exists: it is never
    /// overwritten. A left-over temp file is removed at start-up.
    #[error("{}: already exists; not overwritten", path.display())]
    Exists { path: PathBuf },
    /// Bad [`QueueSettings`]: a caller or config bug, never retryable.
    #[error("queue settings: {0}")]
    Config(String),
}

impl SourceError {
    /// True when the same request may succeed later (server or network
    /// trouble); false when retrying cannot help (missing model, unsafe URL,
    /// bad content, local disk or config trouble).
    pub fn is_retryable(&self) -> bool {
        match self {
            SourceError::Http { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            SourceError::Transport { .. }
            | SourceError::Timeout { .. }
            | SourceError::Truncated { .. }
            | SourceError::BadBody { .. } => true,
            SourceError::TooLarge { .. }
            | SourceError::UnsafeModelUrl { .. }
            | SourceError::NotGcode { .. }
            | SourceError::Io { .. }
            | SourceError::ChecksumMismatch { .. }
            | SourceError::Checksum { .. }
            | SourceError::Exists { .. }
            | SourceError::Config(_) => false,
        }
    }

    /// Maps a ureq failure (request or body read) for `url`.
    pub(crate) fn from_ureq(err: ureq::Error, url: &str) -> Self {
        use ureq::Timeout as T;
        let url = url.to_owned();
        match err {
            ureq::Error::Timeout(t) => SourceError::Timeout {
                url,
                what: match t {
                    T::Resolve | T::Connect => "connect",
                    T::PerRead | T::RecvBody => "read",
                    T::RecvResponse => "response",
                    T::PerWrite | T::SendRequest | T::SendBody => "send",
                    // Global, PerCall, and any kind a later ureq adds.
                    _ => "request",
                },
            },
            ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                SourceError::Timeout { url, what: "read" }
            }
            ureq::Error::StatusCode(status) => SourceError::Http { status, url },
            ureq::Error::BodyExceedsLimit(limit) => SourceError::TooLarge {
                url,
                limit,
                announced: None,
            },
            ureq::Error::Io(e) => SourceError::Transport {
                url,
                detail: crate::control::printable(&e.to_string().to_lowercase()).into_owned(),
            },
            ureq::Error::BadUri(detail) => SourceError::Config(format!("bad url {url}: {detail}")),
            // ureq's text may quote what the server sent: escaped.
            other => SourceError::Transport {
                url,
                detail: crate::control::printable(&other.to_string().to_lowercase()).into_owned(),
            },
        }
    }
}
