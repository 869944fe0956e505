//! [`QueueSettings`] from the validated `[queue_manager]` section: the one
//! translation of config keys into client settings, so the daemon and the
//! tests build the client the same way.
//!
//! Reads the CA file; secrets stay sources (read at each request).

use std::path::Path;
use std::time::Duration;

use super::{Auth, QueueSettings, SourceError};
use crate::config::QueueManagerConfig;

impl QueueSettings {
    /// Settings for `[queue_manager]` `q`, downloading into `spool_dir`.
    /// Fails when `ca_file` cannot be read.
    pub fn from_config(q: &QueueManagerConfig, spool_dir: &Path) -> Result<Self, SourceError> {
        let auth = match (q.token_source(), &q.username, q.password_source()) {
            (Some(token), _, _) => Auth::Bearer(token),
            (None, Some(user), Some(password)) => Auth::Basic {
                user: user.clone(),
                password,
            },
            _ => Auth::None,
        };
        let ca_pem = match &q.ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                SourceError::Config(format!(
                    "cannot read queue_manager.ca_file {}: {e}",
                    path.display()
                ))
            })?),
            None => None,
        };
        Ok(QueueSettings {
            base_url: q.url.clone(),
            auth,
            ca_pem,
            allowed_hosts: q.allowed_hosts.clone(),
            max_model_bytes: q.max_model_bytes,
            connect_timeout: Duration::from_secs(q.connect_timeout_s),
            read_timeout: Duration::from_secs(q.read_timeout_s),
            total_timeout: Duration::from_secs(q.read_timeout_s.max(1).saturating_mul(60)),
            spool_dir: spool_dir.to_path_buf(),
            require_checksum: q.require_model_checksum,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use std::path::PathBuf;

    #[test]
    fn sources_and_flags_follow_the_section() {
        let q = QueueManagerConfig {
            token_file: Some(PathBuf::from("/run/tok")),
            require_model_checksum: true,
            ..QueueManagerConfig::default()
        };
        let s = QueueSettings::from_config(&q, Path::new("/spool")).unwrap();
        assert_eq!(
            s.auth,
            Auth::Bearer(Secret::File(PathBuf::from("/run/tok")))
        );
        assert!(s.require_checksum);
        let q = QueueManagerConfig {
            username: Some("farm".into()),
            password_credential: Some("qm-password".into()),
            ..QueueManagerConfig::default()
        };
        let s = QueueSettings::from_config(&q, Path::new("/spool")).unwrap();
        assert_eq!(
            s.auth,
            Auth::Basic {
                user: "farm".into(),
                password: Secret::Credential("qm-password".into())
            }
        );
    }
}
