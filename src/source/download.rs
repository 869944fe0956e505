//! Downloading a model into the spool folder, crash-safely and verified.
//!
//! The body streams into `<spool>/.<name>.part` (created exclusively, see
//! `spool.rs`) through the G-code checker and SHA-256; when the expected
//! checksum matches, the file is fsynced and published as
//! `<spool>/<name>.gcode`, never replacing an existing file. After a power
//! cut either the whole checked model exists under its final name or it
//! does not. The part file is removed on every error.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::body::{copy_body, Sink};
use super::checksum::{self, Hasher, Sha256};
use super::gcode_check::GcodeChecker;
use super::spool;
use super::{QueueClient, SourceError};

/// The response header through which a server may announce the model's
/// SHA-256 (64 hex digits).
pub const CHECKSUM_HEADER: &str = "X-Checksum-Sha256";

/// A model that passed the content check, under its final name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub path: PathBuf,
    pub bytes: u64,
    pub lines: u64,
    /// Lowercase hex of the file's SHA-256 (verified when one was expected).
    pub sha256: String,
}

impl QueueClient {
    /// Downloads `model_url` (vetted by [`resolve_model_url`](Self::resolve_model_url)
    /// first: an unsafe URL makes no request), checks it and publishes it as
    /// `<spool_dir>/<dest_name>.gcode`.
    ///
    /// - `dest_name` is unique per job and chosen by the caller (a row id,
    ///   or [`spool_name`](super::spool_name) of the job id): 1 to 96 of
    ///   `[A-Za-z0-9_-]`. A file of that name that exists already is
    ///   [`SourceError::Exists`] and is never overwritten.
    /// - `expected_sha256` (64 hex digits, from the assignment or the
    ///   queue manager's job) is verified before the file gets its name; so
    ///   is an `X-Checksum-Sha256` response header. A mismatch is
    ///   [`SourceError::ChecksumMismatch`]. With `require_model_checksum`,
    ///   a download with neither the argument nor a header from the queue
    ///   manager's own origin fails with [`SourceError::Checksum`].
    ///
    /// A `404` is [`SourceError::Http`] and not retryable.
    pub fn download_model(
        &self,
        model_url: &str,
        dest_name: &str,
        expected_sha256: Option<&str>,
    ) -> Result<Downloaded, SourceError> {
        spool::check_name(dest_name)?;
        let resolved = self.resolve(model_url)?;
        let expected = expected_sha256
            .map(checksum::parse)
            .transpose()
            .map_err(|detail| SourceError::Checksum {
                url: resolved.url.clone(),
                detail: format!("expected sha256: {detail}"),
            })?;
        let dir = self.spool_dir.as_path();
        fs::create_dir_all(dir).map_err(|source| SourceError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let (part, target) = spool::paths(dir, dest_name);
        spool::ensure_free(&target)?;
        let plan = Plan {
            url: &resolved.url,
            same_origin: resolved.same_origin,
            expected,
            part: &part,
            target: &target,
        };
        self.download_to(&plan)
    }

    fn download_to(&self, plan: &Plan<'_>) -> Result<Downloaded, SourceError> {
        let url = plan.url;
        let resp = self.get(url, plan.same_origin)?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(SourceError::Http {
                status,
                url: url.to_owned(),
            });
        }
        let from_header = match resp.headers().get(CHECKSUM_HEADER) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .map_err(|e| e.to_string())
                    .and_then(checksum::parse)
                    .map_err(|detail| SourceError::Checksum {
                        url: url.to_owned(),
                        detail: format!("{CHECKSUM_HEADER} header: {detail}"),
                    })?,
            ),
        };
        // A header from another host only guards against corruption: that
        // host could send a matching header with any content.
        let trusted = plan.expected.is_some() || (from_header.is_some() && plan.same_origin);
        if self.require_checksum && !trusted {
            return Err(SourceError::Checksum {
                url: url.to_owned(),
                detail: "no sha256 for this model (require_model_checksum is set): \
                         the job needs a sha256, or the queue manager an X-Checksum-Sha256 header"
                    .to_owned(),
            });
        }
        let file = spool::create_part(plan.part)?;
        let result = self.receive(resp, plan, file, from_header);
        if result.is_err() {
            // Ours (created exclusively above): remove it, whatever failed.
            if let Err(e) = fs::remove_file(plan.part) {
                log::warn!("cannot remove {}: {e}", plan.part.display());
            }
        }
        result
    }

    fn receive(
        &self,
        resp: ureq::http::Response<ureq::Body>,
        plan: &Plan<'_>,
        file: File,
        from_header: Option<Sha256>,
    ) -> Result<Downloaded, SourceError> {
        let (url, part) = (plan.url, plan.part);
        let mut sink = CheckedFile {
            file,
            path: part,
            url,
            checker: GcodeChecker::new(),
            hasher: Hasher::new(),
        };
        let bytes = copy_body(resp, url, self.max_model_bytes, &mut sink)?;
        let CheckedFile {
            file,
            checker,
            hasher,
            ..
        } = sink;
        let summary = checker.finish().map_err(|detail| SourceError::NotGcode {
            path: url.to_owned(),
            detail,
        })?;
        let actual = hasher.finish();
        for expected in [plan.expected, from_header].into_iter().flatten() {
            if expected != actual {
                return Err(SourceError::ChecksumMismatch {
                    url: url.to_owned(),
                    expected: checksum::hex(&expected),
                    actual: checksum::hex(&actual),
                });
            }
        }
        file.sync_all().map_err(|source| SourceError::Io {
            path: part.to_owned(),
            source,
        })?;
        drop(file);
        spool::publish(part, plan.target)?;
        Ok(Downloaded {
            path: plan.target.to_owned(),
            bytes,
            lines: summary.lines,
            sha256: checksum::hex(&actual),
        })
    }
}

/// One download's inputs, checked.
struct Plan<'a> {
    url: &'a str,
    same_origin: bool,
    expected: Option<Sha256>,
    part: &'a Path,
    target: &'a Path,
}

/// The part file, checked and hashed as it is written.
struct CheckedFile<'a> {
    file: File,
    path: &'a Path,
    url: &'a str,
    checker: GcodeChecker,
    hasher: Hasher,
}

impl Sink for CheckedFile<'_> {
    fn put(&mut self, chunk: &[u8]) -> Result<(), SourceError> {
        self.checker
            .feed(chunk)
            .map_err(|detail| SourceError::NotGcode {
                path: self.url.to_owned(),
                detail,
            })?;
        self.hasher.update(chunk);
        self.file
            .write_all(chunk)
            .map_err(|source| SourceError::Io {
                path: self.path.to_owned(),
                source,
            })
    }
}
