//! Downloading a model into the spool folder, crash-safely.
//!
//! The body streams into `<spool>/.<job>.part` through the G-code checker,
//! then the file is fsynced, renamed to `<spool>/<job>.gcode` and the folder
//! fsynced, so after a power cut either the whole checked model exists under
//! its final name or it does not. The part file is removed on every error.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::body::{copy_body, Sink};
use super::gcode_check::GcodeChecker;
use super::{QueueClient, SourceError};

/// A model that passed the content check, under its final name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub path: PathBuf,
    pub bytes: u64,
    pub lines: u64,
}

impl QueueClient {
    /// Downloads `model_url` (vetted by [`resolve_model_url`](Self::resolve_model_url)
    /// first: an unsafe URL makes no request) for `job_id`, checks it and moves
    /// it to `<spool_dir>/<job_id>.gcode` (job id sanitised for a file name).
    /// A `404` is [`SourceError::Http`] and not retryable.
    pub fn download_model(&self, model_url: &str, job_id: &str) -> Result<Downloaded, SourceError> {
        let resolved = self.resolve(model_url)?;
        let dir = self.spool_dir.as_path();
        fs::create_dir_all(dir).map_err(|source| SourceError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let name = file_stem(job_id);
        let part = dir.join(format!(".{name}.part"));
        let target = dir.join(format!("{name}.gcode"));
        let result = self.download_to(&resolved.url, resolved.same_origin, &part, &target);
        if result.is_err() {
            // Best effort: a part file left behind is overwritten next time.
            let _ = fs::remove_file(&part);
        }
        result
    }

    fn download_to(
        &self,
        url: &str,
        same_origin: bool,
        part: &Path,
        target: &Path,
    ) -> Result<Downloaded, SourceError> {
        let resp = self.get(url, same_origin)?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(SourceError::Http {
                status,
                url: url.to_owned(),
            });
        }
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| SourceError::Io { path, source }
        };
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(part)
            .map_err(io_err(part))?;
        let mut sink = CheckedFile {
            file,
            path: part,
            url,
            checker: GcodeChecker::new(),
        };
        let bytes = copy_body(resp, url, self.max_model_bytes, &mut sink)?;
        let CheckedFile { file, checker, .. } = sink;
        let summary = checker.finish().map_err(|detail| SourceError::NotGcode {
            path: url.to_owned(),
            detail,
        })?;
        file.sync_all().map_err(io_err(part))?;
        drop(file);
        fs::rename(part, target).map_err(io_err(target))?;
        sync_dir(target)?;
        Ok(Downloaded {
            path: target.to_owned(),
            bytes,
            lines: summary.lines,
        })
    }
}

/// The part file, checked as it is written.
struct CheckedFile<'a> {
    file: File,
    path: &'a Path,
    url: &'a str,
    checker: GcodeChecker,
}

impl Sink for CheckedFile<'_> {
    fn put(&mut self, chunk: &[u8]) -> Result<(), SourceError> {
        self.checker
            .feed(chunk)
            .map_err(|detail| SourceError::NotGcode {
                path: self.url.to_owned(),
                detail,
            })?;
        self.file
            .write_all(chunk)
            .map_err(|source| SourceError::Io {
                path: self.path.to_owned(),
                source,
            })
    }
}

/// Makes the rename durable (a no-op where directories cannot be opened).
fn sync_dir(file_in_dir: &Path) -> Result<(), SourceError> {
    let Some(dir) = file_in_dir.parent() else {
        return Ok(());
    };
    match File::open(dir) {
        Ok(d) => d.sync_all().map_err(|source| SourceError::Io {
            path: dir.to_owned(),
            source,
        }),
        Err(_) if cfg!(windows) => Ok(()),
        Err(source) => Err(SourceError::Io {
            path: dir.to_owned(),
            source,
        }),
    }
}

/// A file name stem for `job_id`: `[A-Za-z0-9_-]` kept, the rest `_`, at most
/// 64 bytes; when anything was changed a hash of the original is appended, so
/// that `a/b` and `a_b` never share a file.
pub(crate) fn file_stem(job_id: &str) -> String {
    let mut stem: String = job_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if stem != job_id || stem.is_empty() {
        // FNV-1a: stable across runs and builds, unlike std's hasher.
        let hash = job_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        stem.push_str(&format!("-{:08x}", hash as u32));
    }
    stem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_stems_are_safe_and_distinct() {
        assert_eq!(file_stem("job-123"), "job-123");
        for id in ["../../etc/passwd", "a/b", ".", "..", "", "x\0y", "é"] {
            let stem = file_stem(id);
            assert!(
                !stem.is_empty() && !stem.contains(['/', '\\', '.', '\0']),
                "{id:?} -> {stem:?}"
            );
        }
        assert_ne!(file_stem("a/b"), file_stem("a_b"));
        assert_ne!(file_stem("a/b"), file_stem("a.b"));
        assert!(file_stem(&"x".repeat(500)).len() <= 64 + 9);
    }
}
