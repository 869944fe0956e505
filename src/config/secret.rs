//! Secrets in the configuration: a string type whose `Debug` never shows
//! it, and [`Secret`], where a password or token is read from each time it
//! is needed (inline, a file, an environment variable, or a systemd
//! credential), so a rotated file is picked up at the next connection.
//!
//! Reads only the one file a caller asks for, bounded; never logs a value,
//! and no error message contains one.

use serde::Deserialize;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest secret file read (a password or token is a few dozen bytes;
/// the bound keeps `/dev/zero` or a wrong path from eating memory).
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// A secret string from the config file. `Debug` prints `"***"`; the value
/// is only reachable through [`SecretString::expose`].
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }
    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

impl From<&str> for SecretString {
    fn from(s: &str) -> Self {
        SecretString(s.to_owned())
    }
}

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        SecretString(s)
    }
}

/// Where a secret comes from. Read with [`Secret::read`] at every use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// Written in the config file itself.
    Value(SecretString),
    /// A file holding only the secret (one trailing newline is ignored).
    File(PathBuf),
    /// An environment variable (visible to root and, with systemd's
    /// `Environment=`, in the unit: prefer a file or a credential).
    Env(String),
    /// A systemd credential: `$CREDENTIALS_DIRECTORY/<name>`, from
    /// `LoadCredential=<name>:<path>` in the unit.
    Credential(String),
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::Value(s.into())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret::Value(s.into())
    }
}

/// Why a secret could not be read. Never contains the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read secret file {}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret file {} {what}", path.display())]
    BadFile { path: PathBuf, what: &'static str },
    #[error("environment variable {var}: {detail}")]
    Env { var: String, detail: String },
    #[error(
        "systemd credential {name:?}: $CREDENTIALS_DIRECTORY is not set \
         (add LoadCredential={name}:/path/to/file to the unit's [Service])"
    )]
    NoCredentials { name: String },
}

impl Secret {
    /// The secret's current value. Files and credentials are read anew.
    pub fn read(&self) -> Result<String, SecretError> {
        match self {
            Secret::Value(v) => Ok(v.expose().to_owned()),
            Secret::File(path) => read_file(path),
            Secret::Credential(name) => read_file(&credential_path(name)?),
            Secret::Env(var) => std::env::var(var).map_err(|e| SecretError::Env {
                var: var.clone(),
                detail: e.to_string(),
            }),
        }
    }

    /// The file it is read from, if any (for permission warnings).
    pub fn file(&self) -> Option<PathBuf> {
        match self {
            Secret::File(path) => Some(path.clone()),
            Secret::Credential(name) => credential_path(name).ok(),
            Secret::Value(_) | Secret::Env(_) => None,
        }
    }
}

/// `$CREDENTIALS_DIRECTORY/<name>`.
pub fn credential_path(name: &str) -> Result<PathBuf, SecretError> {
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if !dir.is_empty() => Ok(Path::new(&dir).join(name)),
        _ => Err(SecretError::NoCredentials {
            name: name.to_owned(),
        }),
    }
}

fn read_file(path: &Path) -> Result<String, SecretError> {
    let io = |source| SecretError::File {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let bad = |what| SecretError::BadFile {
        path: path.to_owned(),
        what,
    };
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(bad("is larger than 64 KiB"));
    }
    let text = String::from_utf8(bytes).map_err(|_| bad("is not UTF-8 text"))?;
    // Files written with `echo` end in a newline that is not part of it.
    let value = text.trim_end_matches(['\r', '\n']);
    if value.is_empty() {
        return Err(bad("is empty"));
    }
    if value.bytes().any(|b| b.is_ascii_control()) {
        return Err(bad("holds control characters or several lines"));
    }
    Ok(value.to_owned())
}

/// A systemd credential name: what `LoadCredential=` accepts as a file name.
pub(super) fn valid_credential_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// Picks the one configured source among the four ways of giving a secret;
/// `Err` when more than one is set. Order of the arguments is the order of
/// the keys: value, file, env, credential.
pub(super) fn one_source(
    value: Option<&SecretString>,
    file: Option<&PathBuf>,
    env: Option<&String>,
    credential: Option<&String>,
) -> Result<Option<Secret>, ()> {
    let all = [
        value.cloned().map(Secret::Value),
        file.cloned().map(Secret::File),
        env.cloned().map(Secret::Env),
        credential.cloned().map(Secret::Credential),
    ];
    let mut set = all.into_iter().flatten();
    let first = set.next();
    match set.next() {
        Some(_) => Err(()),
        None => Ok(first),
    }
}

/// Unix permission bits that let users other than owner and group read
/// `path`; `None` when it is fine or cannot be checked.
pub fn world_readable(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o004 != 0).then_some(mode & 0o777)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, content: &[u8]) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("printgate-secret-{name}-{}", std::process::id()));
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::Value("hunter2".into());
        assert_eq!(format!("{s:?}"), "Value(\"***\")");
        assert!(!format!("{:?}", SecretString::new("hunter2")).contains("hunter2"));
    }

    #[test]
    fn a_file_is_read_anew_each_time() {
        let path = temp("rotate", b"first\n");
        let s = Secret::File(path.clone());
        assert_eq!(s.read().unwrap(), "first");
        std::fs::write(&path, "second\r\n").unwrap();
        assert_eq!(s.read().unwrap(), "second");
        std::fs::write(&path, "").unwrap();
        assert!(s.read().unwrap_err().to_string().contains("is empty"));
        std::fs::write(&path, "a\nb\n").unwrap();
        let err = s.read().unwrap_err().to_string();
        assert!(err.contains("several lines"), "{err}");
        std::fs::write(&path, vec![b'x'; MAX_SECRET_BYTES as usize + 1]).unwrap();
        assert!(s.read().unwrap_err().to_string().contains("larger"));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(s.read(), Err(SecretError::File { .. })));
    }

    #[test]
    fn credentials_need_their_directory() {
        // Not set in tests unless a test sets it; this one only reads it.
        if std::env::var_os("CREDENTIALS_DIRECTORY").is_none() {
            let err = Secret::Credential("mqtt-password".into())
                .read()
                .unwrap_err();
            assert!(
                err.to_string().contains("LoadCredential=mqtt-password:"),
                "{err}"
            );
        }
        assert!(valid_credential_name("mqtt-password"));
        for bad in ["", ".x", "a/b", "a b"] {
            assert!(!valid_credential_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn one_source_at_most() {
        let v = SecretString::new("x");
        let f = PathBuf::from("/f");
        assert_eq!(one_source(None, None, None, None), Ok(None));
        assert_eq!(
            one_source(None, Some(&f), None, None),
            Ok(Some(Secret::File(f.clone())))
        );
        assert!(one_source(Some(&v), Some(&f), None, None).is_err());
    }

    #[test]
    fn world_readable_files_are_flagged() {
        use std::os::unix::fs::PermissionsExt;
        let path = temp("mode", b"x");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(world_readable(&path), Some(0o644));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(world_readable(&path), None);
        std::fs::remove_file(&path).unwrap();
    }
}
