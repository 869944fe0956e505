//! Receiving the G-code file of `job add` into the spool: bounded by the
//! configured limit and by the spool's free space before a byte is read,
//! read with an idle time-out, written to a file created exclusively, and
//! removed on every error path (a [`PartFile`] deletes itself unless kept).
//!
//! Owns only the temporary upload file; the farm decides what becomes of it.

use super::server::ServeOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Space left free in the spool's file system after an upload, for the
/// store's journal and the downloads already under way.
pub const FREE_SPACE_RESERVE: u64 = 32 * 1024 * 1024;

/// An upload's temporary file: removed when dropped, unless [`keep`](Self::keep)
/// hands it on (to the farm).
#[derive(Debug)]
pub(crate) struct PartFile(Option<PathBuf>);

impl PartFile {
    pub(crate) fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }
    /// Someone else owns the file now.
    pub(crate) fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            if let Err(e) = std::fs::remove_file(&path) {
                log::warn!("control: cannot remove {}: {e}", path.display());
            }
        }
    }
}

/// Bytes available to this user on the file system of `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    // Both are unsigned; their widths differ by target (c_ulong is 32 bits
    // on the 32-bit Pis), hence the conversions that are no-ops on x86_64.
    #[allow(clippy::useless_conversion)]
    Ok(u64::from(st.blocks_available()).saturating_mul(u64::from(st.fragment_size())))
}

/// Why an upload of `size` bytes cannot be taken, if it cannot.
fn refuse(size: u64, spool: &Path, options: &ServeOptions) -> Option<String> {
    if size > options.max_upload {
        return Some(format!(
            "file is {size} bytes; the limit is {}",
            options.max_upload
        ));
    }
    match free_bytes(spool) {
        Ok(free) if size.saturating_add(FREE_SPACE_RESERVE) > free => Some(format!(
            "file is {size} bytes; {} has {free} bytes free (and keeps {FREE_SPACE_RESERVE})",
            spool.display()
        )),
        Ok(_) => None,
        Err(e) => Some(format!(
            "cannot tell free space in {}: {e}",
            spool.display()
        )),
    }
}

/// A fresh, unique name in the spool (never reused within this process;
/// the pid keeps two daemons' apart, and create_new refuses the rest).
fn part_path(spool: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    spool.join(format!(".upload-{}-{n}.part", std::process::id()))
}

/// Streams `size` bytes from `reader` into a new temporary file in the
/// spool, fsynced. Each read must come within `read_timeout`. On any error
/// the file is gone.
pub(crate) async fn receive_file(
    reader: &mut (impl AsyncRead + Unpin),
    spool: &Path,
    size: u64,
    options: &ServeOptions,
) -> std::io::Result<PartFile> {
    tokio::fs::create_dir_all(spool).await?;
    if let Some(why) = refuse(size, spool, options) {
        return Err(std::io::Error::other(why));
    }
    let path = part_path(spool);
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .await?;
    let part = PartFile(Some(path));
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let chunk = buf.get_mut(..want).unwrap_or_default();
        let n = match tokio::time::timeout(options.read_timeout, reader.read(chunk)).await {
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("upload timed out after {} of {size} bytes", size - left),
                ))
            }
            Ok(read) => read?,
        };
        if n == 0 {
            return Err(std::io::Error::other(format!(
                "upload cut short: {} of {size} bytes",
                size - left
            )));
        }
        file.write_all(buf.get(..n).unwrap_or_default()).await?;
        left -= n as u64;
    }
    file.sync_all().await?;
    Ok(part)
}
