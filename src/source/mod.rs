//! The job source: the farm's queue manager over HTTP, and model downloads.
//!
//! Everything here is blocking (ureq) and owns no thread, no tokio and no
//! clock: the daemon runs these calls inside `tokio::task::spawn_blocking`
//! and sleeps where the helpers in [`retry`] tell it to.
//!
//! - [`QueueClient`]: one configured `ureq::Agent` (connect, per-read and
//!   global timeouts; no redirects; statuses are answers, not errors).
//!   [`QueueClient::fetch_job`] asks `GET <base>/prioritary_job`,
//!   [`QueueClient::resolve_model_url`] vets a `modelUrl`, and
//!   [`QueueClient::download_model`] streams a model to the spool folder,
//!   verifying its SHA-256 when one is known.
//! - [`spool_name`], [`clean_partial_files`]: spool files that cannot
//!   collide, and the start-up clean-up of interrupted ones.
//! - [`gcode_check`]: the content check every model passes before it is kept.
//! - [`retry`] has [`retry_download`].
//!
//! Nothing the network sends can panic this module: every failure is a
//! [`SourceError`], and [`SourceError::is_retryable`] tells the caller whether
//! trying again later can help.

mod body;
pub mod checksum;
mod download;
mod error;
pub mod gcode_check;
mod model_url;
mod queue;
pub mod retry;
mod settings;
mod spool;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

pub use download::{Downloaded, CHECKSUM_HEADER};
pub use error::SourceError;
pub use gcode_check::{check_gcode_file, GcodeSummary};
pub use queue::QueueJob;
pub use retry::retry_download;
pub use spool::{check_name, clean_partial_files, spool_name};

use crate::config::Secret;
use model_url::BaseUrl;

/// How printgate authenticates to the queue manager. Credentials are only
/// ever sent to the queue manager's own origin, never to other allowed hosts.
/// Secrets held as a [`Secret`] source are read again for every request, so
/// a rotated token file is used at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Auth {
    #[default]
    None,
    Bearer(Secret),
    Basic {
        user: String,
        password: Secret,
    },
}

/// Everything [`QueueClient::new`] needs; checked once there.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// `http(s)://host[:port][/path]`, e.g. `http://queue.farm:8080/api`.
    pub base_url: String,
    pub auth: Auth,
    /// PEM with the CA certificate(s) to trust instead of the web PKI roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Hosts (`name` or `name:port`) from which an absolute `modelUrl` may be
    /// downloaded, besides the queue manager itself.
    pub allowed_hosts: Vec<String>,
    pub max_model_bytes: u64,
    pub connect_timeout: Duration,
    /// Longest wait for any single read: a stalled body fails after this.
    pub read_timeout: Duration,
    /// Cap on one whole request, body included.
    pub total_timeout: Duration,
    /// Where models are downloaded (`.<name>.part`, then `<name>.gcode`).
    pub spool_dir: PathBuf,
    /// Refuse a model without a trusted SHA-256 (`[queue_manager]
    /// require_model_checksum`).
    pub require_checksum: bool,
}

/// The queue manager client. `Send + Sync`: share it behind an `Arc`; every
/// call is blocking and independent.
pub struct QueueClient {
    agent: ureq::Agent,
    base: BaseUrl,
    auth: Auth,
    allowed_hosts: Vec<String>,
    max_model_bytes: u64,
    spool_dir: PathBuf,
    require_checksum: bool,
}

impl std::fmt::Debug for QueueClient {
    // The Authorization header stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueClient")
            .field("base", &self.base)
            .field("auth", &self.auth)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("max_model_bytes", &self.max_model_bytes)
            .field("spool_dir", &self.spool_dir)
            .field("require_checksum", &self.require_checksum)
            .finish_non_exhaustive()
    }
}

impl QueueClient {
    /// Checks the settings and builds the HTTP agent once. Fails with
    /// [`SourceError::Config`] on a bad base URL, CA or timeout.
    pub fn new(settings: QueueSettings) -> Result<Self, SourceError> {
        let base = BaseUrl::parse(&settings.base_url)?;
        for (name, d) in [
            ("connect_timeout", settings.connect_timeout),
            ("read_timeout", settings.read_timeout),
            ("total_timeout", settings.total_timeout),
        ] {
            if d.is_zero() {
                return Err(SourceError::Config(format!("{name} must be above zero")));
            }
        }
        if settings.max_model_bytes == 0 {
            return Err(SourceError::Config(
                "max_model_bytes must be above zero".into(),
            ));
        }
        // Fixed values are checked now; files and credentials at each use.
        if let Auth::Bearer(Secret::Value(_))
        | Auth::Basic {
            password: Secret::Value(_),
            ..
        } = &settings.auth
        {
            auth_header(&settings.auth)?;
        }
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(pem) = &settings.ca_pem {
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(pem) {
                match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
                    Ok(_) => {}
                    Err(e) => return Err(SourceError::Config(format!("ca pem: {e}"))),
                }
            }
            if certs.is_empty() {
                return Err(SourceError::Config("ca pem holds no certificate".into()));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let config = ureq::Agent::config_builder()
            .timeout_resolve(Some(settings.connect_timeout))
            .timeout_connect(Some(settings.connect_timeout))
            .timeout_per_read(Some(settings.read_timeout))
            .timeout_per_write(Some(settings.read_timeout))
            .timeout_global(Some(settings.total_timeout))
            // 404 and 204 are answers here, not errors.
            .http_status_as_error(false)
            // A redirect would bypass the model URL checks: treat 3xx as a status.
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(format!("printgate/{}", env!("CARGO_PKG_VERSION")))
            .tls_config(tls.build())
            .build();
        let allowed_hosts = settings
            .allowed_hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        Ok(QueueClient {
            agent: ureq::Agent::new_with_config(config),
            base,
            auth: settings.auth,
            allowed_hosts,
            max_model_bytes: settings.max_model_bytes,
            spool_dir: settings.spool_dir,
            require_checksum: settings.require_checksum,
        })
    }
}

/// The `Authorization` header for `auth`, reading its secret now. A
/// secret that cannot be read, or that would break the header (control
/// characters), is [`SourceError::Config`]; the message never holds it.
fn auth_header(auth: &Auth) -> Result<Option<String>, SourceError> {
    let read = |what: &str, s: &Secret| {
        s.read()
            .map_err(|e| SourceError::Config(format!("queue manager {what}: {e}")))
    };
    let header = match auth {
        Auth::None => return Ok(None),
        Auth::Bearer(token) => format!("Bearer {}", read("token", token)?),
        Auth::Basic { user, password } => format!(
            "Basic {}",
            base64(format!("{user}:{}", read("password", password)?).as_bytes())
        ),
    };
    if header.bytes().any(|b| b.is_ascii_control()) {
        return Err(SourceError::Config(
            "control character in credentials".into(),
        ));
    }
    Ok(Some(header))
}

/// Standard base64 with padding (RFC 4648), for the Basic auth header.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let idx = ((n >> (18 - 6 * i)) & 63) as usize;
                out.push(char::from(ALPHABET.get(idx).copied().unwrap_or(b'=')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, want) in cases {
            assert_eq!(base64(input.as_bytes()), want, "{input:?}");
        }
    }

    #[test]
    fn percent_encode_keeps_unreserved_only() {
        assert_eq!(percent_encode("printer-1_a.b~"), "printer-1_a.b~");
        assert_eq!(percent_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn retryable_split() {
        let http = |status| SourceError::Http {
            status,
            url: "u".into(),
        };
        assert!(http(500).is_retryable());
        assert!(http(503).is_retryable());
        assert!(http(429).is_retryable());
        assert!(!http(404).is_retryable());
        assert!(!http(401).is_retryable());
        let unsafe_url = SourceError::UnsafeModelUrl {
            url: "u".into(),
            reason: "r".into(),
        };
        assert!(!unsafe_url.is_retryable());
    }

    #[test]
    fn client_can_be_shared_across_blocking_tasks() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<QueueClient>();
        send_sync::<SourceError>();
    }

    #[test]
    fn debug_output_hides_secrets() {
        let basic = Auth::Basic {
            user: "bob".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{basic:?}").contains("hunter2"));
        let settings = QueueSettings {
            base_url: "http://q.farm".into(),
            auth: Auth::Bearer("s3cret-token".into()),
            ca_pem: None,
            allowed_hosts: vec![],
            max_model_bytes: 1,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            total_timeout: Duration::from_secs(1),
            spool_dir: PathBuf::from("spool"),
            require_checksum: false,
        };
        let client = QueueClient::new(settings.clone()).unwrap();
        assert!(!format!("{client:?} {settings:?}").contains("s3cret"));
        let bad = QueueSettings {
            auth: Auth::Bearer("a\r\nX-Evil: 1".into()),
            ..settings
        };
        assert!(matches!(QueueClient::new(bad), Err(SourceError::Config(_))));
    }
}
