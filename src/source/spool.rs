//! Files in the spool folder that cannot collide, be redirected or be
//! replaced: names come from the caller and are checked, temp files are
//! created exclusively, and a finished file is published under its final
//! name only if that name is still free.
//!
//! - `create_new` is `O_CREAT|O_EXCL`, which never follows a symlink at the
//!   final component (open(2)): a planted `.x.part -> /etc/...` link makes
//!   the create fail instead of writing through it.
//! - [`publish`] links the finished temp file to its final name with
//!   link(2), which fails with `EEXIST` when that name exists (as a file or
//!   a symlink) instead of replacing it as rename(2) would; only where the
//!   file system has no hard links does it fall back to a checked rename.
//!
//! No network, no clock. Called by the downloader and, through
//! [`clean_partial_files`], by the daemon at start-up.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::SourceError;

/// Longest name accepted for a spool file (without `.gcode`).
pub const MAX_NAME: usize = 96;

/// The spool name for a job id: a readable prefix (at most 32 of its
/// `[A-Za-z0-9_-]` characters) and 128 bits of the SHA-256 of the whole id,
/// so two different ids never share a file (`job.42` and `job_42-…` differ
/// in the hash). Stable across runs and builds. Empty ids are the caller's
/// to refuse: they get a name too, but [`check_name`] rejects `""` itself.
pub fn spool_name(job_id: &str) -> String {
    let prefix: String = job_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(32)
        .collect();
    let digest = super::checksum::sha256(job_id.as_bytes());
    let hex = super::checksum::hex(digest.get(..16).unwrap_or(&digest));
    if prefix.is_empty() {
        hex
    } else {
        format!("{prefix}-{hex}")
    }
}

/// A spool name must be 1 to [`MAX_NAME`] of `[A-Za-z0-9_-]`: no dots (so
/// no `..` and no hidden files), no separators, nothing to escape.
pub fn check_name(name: &str) -> Result<(), SourceError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(SourceError::Config(format!(
            "spool file name {:?} must be 1 to {MAX_NAME} of A-Z a-z 0-9 _ -",
            name.chars().take(MAX_NAME + 8).collect::<String>()
        )))
    }
}

/// The temp file and the final file of spool name `name` in `dir`.
pub(crate) fn paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!(".{name}.part")),
        dir.join(format!("{name}.gcode")),
    )
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SourceError + '_ {
    move |source| SourceError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Refuses early (before any request) when `target` already exists.
pub(crate) fn ensure_free(target: &Path) -> Result<(), SourceError> {
    match fs::symlink_metadata(target) {
        Ok(_) => Err(SourceError::Exists {
            path: target.to_owned(),
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(target)(e)),
    }
}

/// Creates `part` exclusively (never truncates, never follows a symlink).
/// An existing part file means another download of the same name is under
/// way or one was left by a crash ([`clean_partial_files`] removes those at
/// start-up): [`SourceError::Exists`], not retryable.
pub(crate) fn create_part(part: &Path) -> Result<File, SourceError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(part)
        .map_err(|e| {
            if e.kind() == ErrorKind::AlreadyExists {
                SourceError::Exists {
                    path: part.to_owned(),
                }
            } else {
                io_err(part)(e)
            }
        })
}

/// Gives the finished (fsynced) `part` its final name `target` without ever
/// replacing an existing file, then removes `part` and fsyncs the folder.
pub(crate) fn publish(part: &Path, target: &Path) -> Result<(), SourceError> {
    match fs::hard_link(part, target) {
        Ok(()) => fs::remove_file(part).map_err(io_err(part))?,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            return Err(SourceError::Exists {
                path: target.to_owned(),
            })
        }
        // No hard links here (FAT, some FUSE): a checked rename. The window
        // between check and rename only matters to someone who can already
        // write the spool folder.
        Err(_) => {
            ensure_free(target)?;
            fs::rename(part, target).map_err(io_err(target))?;
        }
    }
    sync_dir(target)
}

/// Makes a rename or link durable.
fn sync_dir(file_in_dir: &Path) -> Result<(), SourceError> {
    let Some(dir) = file_in_dir.parent() else {
        return Ok(());
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Removes the `*.part` files (downloads and control-socket uploads) that a
/// crash or kill left in `spool_dir`; call once at start-up, before any
/// download or upload can start. Only regular files and symlinks directly in
/// the folder are removed (a symlink is unlinked, never followed). Returns
/// how many were removed; a missing folder is zero.
pub fn clean_partial_files(spool_dir: &Path) -> Result<usize, SourceError> {
    let entries = match fs::read_dir(spool_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(spool_dir)(e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(io_err(spool_dir))?;
        let name = entry.file_name();
        if !name.to_string_lossy().ends_with(".part") {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().map_err(io_err(&path))?;
        if kind.is_file() || kind.is_symlink() {
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_names_are_checked_names_and_distinct() {
        for id in [
            "job-123",
            "job.42",
            "job_42-7302453c",
            "../../etc",
            "",
            "é",
            "a/b",
        ] {
            let name = spool_name(id);
            assert!(check_name(&name).is_ok(), "{id:?} -> {name:?}");
        }
        assert_ne!(spool_name("job.42"), spool_name("job_42-7302453c"));
        assert_ne!(spool_name("a/b"), spool_name("a_b"));
        assert_ne!(spool_name("a/b"), spool_name("ab"));
        assert!(spool_name("job-123").starts_with("job-123-"));
        assert_eq!(spool_name(&"x".repeat(500)).len(), 32 + 1 + 32);
        assert_eq!(spool_name("job-123"), spool_name("job-123"));
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "a.b",
            "a/b",
            "a b",
            "a\0",
            &"x".repeat(MAX_NAME + 1),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"x".repeat(MAX_NAME)).is_ok());
    }
}
