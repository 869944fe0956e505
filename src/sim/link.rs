//! The port's name: a symlink to the pty slave, created at start (replacing
//! an old symlink, never a regular file) and removed at stop if it still
//! points at our slave.

use std::path::{Path, PathBuf};

use super::SimError;

/// The symlink to the pty slave; removed on drop if it still points there.
pub(super) struct LinkGuard {
    link: PathBuf,
    target: PathBuf,
}

impl LinkGuard {
    pub(super) fn create(link: &Path, target: &Path) -> Result<Self, SimError> {
        let link_err = |source| SimError::Link {
            path: link.to_path_buf(),
            source,
        };
        match std::fs::symlink_metadata(link) {
            Ok(meta) if meta.file_type().is_symlink() => {
                std::fs::remove_file(link).map_err(link_err)?
            }
            Ok(_) => {
                return Err(SimError::LinkIsNotSymlink {
                    path: link.to_path_buf(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(link_err(e)),
        }
        std::os::unix::fs::symlink(target, link).map_err(link_err)?;
        Ok(LinkGuard {
            link: link.to_path_buf(),
            target: target.to_path_buf(),
        })
    }
}

impl Drop for LinkGuard {
    fn drop(&mut self) {
        if std::fs::read_link(&self.link).is_ok_and(|t| t == self.target) {
            let _ = std::fs::remove_file(&self.link);
        }
    }
}
