//! One GET and its body: the only place that talks to ureq's request and
//! reader APIs, so that every way a transfer can fail (status, refused,
//! stalled, cut short, oversized) is mapped to a [`SourceError`] once.
//!
//! Bodies are streamed through a fixed buffer into a [`Sink`], never read
//! whole by ureq, and are bounded by a byte limit checked against both the
//! announced `Content-Length` (before reading anything) and the bytes seen.

use std::io::{ErrorKind, Read};

use ureq::http::Response;
use ureq::Body;

use super::{QueueClient, SourceError};

/// Bytes per read: fixed, so a download uses the same memory at any size.
const CHUNK: usize = 64 * 1024;

/// Where a body goes, chunk by chunk. A sink error (disk full, bad content)
/// aborts the transfer as is.
pub(crate) trait Sink {
    fn put(&mut self, chunk: &[u8]) -> Result<(), SourceError>;
}

impl Sink for Vec<u8> {
    fn put(&mut self, chunk: &[u8]) -> Result<(), SourceError> {
        self.extend_from_slice(chunk);
        Ok(())
    }
}

impl QueueClient {
    /// Sends `GET url`, with credentials only for the queue manager's own
    /// origin. Any status comes back as `Ok`; only transport failures are `Err`.
    pub(crate) fn get(&self, url: &str, same_origin: bool) -> Result<Response<Body>, SourceError> {
        let mut req = self.agent.get(url);
        if same_origin {
            if let Some(h) = super::auth_header(&self.auth)? {
                req = req.header("Authorization", h);
            }
        }
        req.call().map_err(|e| SourceError::from_ureq(e, url))
    }
}

/// Streams the body of `resp` into `sink`, refusing more than `limit` bytes,
/// and returns the number of bytes copied. A `Content-Length` above `limit`
/// fails before the first read; a body shorter than its `Content-Length` is
/// [`SourceError::Truncated`]. Without gzip support in ureq, `Content-Length`
/// is the length on the wire and can be trusted for that check.
pub(crate) fn copy_body(
    resp: Response<Body>,
    url: &str,
    limit: u64,
    sink: &mut impl Sink,
) -> Result<u64, SourceError> {
    let announced = resp.body().content_length();
    if let Some(n) = announced.filter(|n| *n > limit) {
        // Dropping the response closes the connection unread.
        return Err(SourceError::TooLarge {
            url: url.to_owned(),
            limit,
            announced: Some(n),
        });
    }
    let mut reader = resp.into_body().into_reader();
    let mut buf = vec![0u8; CHUNK];
    let mut got: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // ureq's "peer disconnected" before Content-Length or the last chunk.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                return Err(SourceError::Truncated {
                    url: url.to_owned(),
                    expected: announced,
                    got,
                });
            }
            Err(e) => return Err(SourceError::from_ureq(ureq::Error::from(e), url)),
        };
        got = got.saturating_add(n as u64);
        if got > limit {
            return Err(SourceError::TooLarge {
                url: url.to_owned(),
                limit,
                announced: None,
            });
        }
        sink.put(buf.get(..n).unwrap_or(&[]))?;
    }
    match announced {
        Some(expected) if expected != got => Err(SourceError::Truncated {
            url: url.to_owned(),
            expected: Some(expected),
            got,
        }),
        _ => Ok(got),
    }
}
