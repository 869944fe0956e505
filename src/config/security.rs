//! Secure-by-default checks of the config: credentials never travel in
//! clear text unless the section says `allow_plaintext_credentials = true`,
//! secrets have one source each, and [`warnings`] lists what is allowed
//! but weak (no TLS, secret files other users can read).
//!
//! [`problems`] is pure (part of validation); [`warnings`] reads file
//! permissions and nothing else. Traffic to this machine (`localhost`,
//! `127.0.0.0/8`, `::1`) never leaves it and is exempt.

use super::locate::KeyPath;
use super::secret::{valid_credential_name, world_readable, Secret};
use super::{Config, MqttConfig, QueueManagerConfig};
use std::path::Path;

type Problems = Vec<(KeyPath, String)>;

/// Whether `host` is this machine.
pub(super) fn is_loopback(host: &str) -> bool {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The host of an `http(s)://` URL (no user info: that is refused earlier).
pub(super) fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    }
}

fn mqtt_plaintext(m: &MqttConfig) -> bool {
    m.ca_file.is_none() && !is_loopback(&m.host)
}

fn queue_plaintext(q: &QueueManagerConfig) -> bool {
    !q.url.trim().to_ascii_lowercase().starts_with("https://") && !is_loopback(url_host(&q.url))
}

pub(super) fn check_mqtt(out: &mut Problems, m: &MqttConfig) {
    let key = |k: &str| KeyPath::of("mqtt", None, k);
    let sources = [
        m.password.is_some(),
        m.password_file.is_some(),
        m.password_env.is_some(),
        m.password_credential.is_some(),
    ];
    if sources.into_iter().filter(|s| *s).count() > 1 {
        out.push((
            key("password"),
            "set only one of password, password_file, password_env, password_credential".into(),
        ));
    }
    credential_name(
        out,
        key("password_credential"),
        m.password_credential.as_deref(),
    );
    if m.host.contains(['@', '/']) {
        out.push((
            key("host"),
            "expected a host name or address (no user info, no scheme, no path)".into(),
        ));
    }
    if m.has_credentials() && mqtt_plaintext(m) && !m.allow_plaintext_credentials {
        out.push((
            key("username"),
            format!(
                "credentials would cross the network to {} in clear text: set ca_file \
                 (TLS), or allow_plaintext_credentials = true to accept that risk",
                m.host
            ),
        ));
    }
}

pub(super) fn check_queue_manager(out: &mut Problems, q: &QueueManagerConfig) {
    let key = |k: &str| KeyPath::of("queue_manager", None, k);
    let tokens = [
        q.token.is_some(),
        q.token_file.is_some(),
        q.token_credential.is_some(),
    ];
    let passwords = [
        q.password.is_some(),
        q.password_file.is_some(),
        q.password_credential.is_some(),
    ];
    let count = |set: &[bool]| set.iter().filter(|s| **s).count();
    if count(&tokens) > 1 {
        out.push((
            key("token"),
            "set only one of token, token_file, token_credential".into(),
        ));
    }
    if count(&passwords) > 1 {
        out.push((
            key("password"),
            "set only one of password, password_file, password_credential".into(),
        ));
    }
    if count(&tokens) > 0 && (q.username.is_some() || count(&passwords) > 0) {
        out.push((
            key("token"),
            "use either a token or username + password, not both".into(),
        ));
    }
    if q.username.is_some() != (count(&passwords) > 0) {
        out.push((
            key("username"),
            "username and a password (password, password_file or password_credential) go together"
                .into(),
        ));
    }
    credential_name(out, key("token_credential"), q.token_credential.as_deref());
    credential_name(
        out,
        key("password_credential"),
        q.password_credential.as_deref(),
    );
    if q.has_credentials() && queue_plaintext(q) && !q.allow_plaintext_credentials {
        out.push((
            key("url"),
            "credentials would cross the network in clear text (http://): use https://, \
             or allow_plaintext_credentials = true to accept that risk"
                .into(),
        ));
    }
}

fn credential_name(out: &mut Problems, key: KeyPath, name: Option<&str>) {
    if let Some(name) = name.filter(|n| !valid_credential_name(n)) {
        out.push((
            key,
            format!("{name:?} is not a credential name (letters, digits, - _ . @; as in LoadCredential=)"),
        ));
    }
}

/// What is allowed but weak, one sentence each (for `check-config` and the
/// daemon's start-up log). Reads file permissions only.
pub fn warnings(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut secrets: Vec<(&str, Option<Secret>)> = Vec::new();
    if let Some(m) = &cfg.mqtt {
        if mqtt_plaintext(m) {
            out.push(format!(
                "mqtt: no TLS to {}:{} (no ca_file): anyone on the network can read and forge \
                 printer commands and reports",
                m.host, m.port
            ));
        }
        if m.has_credentials() && mqtt_plaintext(m) {
            out.push(
                "mqtt: allow_plaintext_credentials: the broker password travels in clear text"
                    .into(),
            );
        }
        if m.password_env.is_some() {
            out.push(
                "mqtt.password_env: environment variables set by systemd's Environment= can be \
                 read by other local users (systemctl show); prefer password_file or password_credential"
                    .into(),
            );
        }
        secrets.push(("mqtt.password", m.password_source()));
        if m.password.is_some() {
            inline_secret(&mut out, &cfg.path, "mqtt.password");
        }
    }
    if let Some(q) = &cfg.queue_manager {
        if queue_plaintext(q) {
            out.push(format!(
                "queue_manager: {} is not https://: jobs and models can be read and replaced on \
                 the network{}",
                q.url,
                if q.require_model_checksum {
                    ""
                } else {
                    " (require_model_checksum = true would at least catch replaced models)"
                }
            ));
        }
        if q.has_credentials() && queue_plaintext(q) {
            out.push("queue_manager: allow_plaintext_credentials: the token or password travels in clear text".into());
        }
        secrets.push(("queue_manager.token", q.token_source()));
        secrets.push(("queue_manager.password", q.password_source()));
        if q.token.is_some() || q.password.is_some() {
            inline_secret(&mut out, &cfg.path, "queue_manager");
        }
    }
    for (key, secret) in secrets {
        let Some(path) = secret.and_then(|s| s.file()) else {
            continue;
        };
        if let Some(mode) = world_readable(&path) {
            out.push(format!(
                "{key}: secret file {} is readable by all users (mode {mode:o}); \
                 chmod 0640 and chown root:printgate",
                path.display()
            ));
        }
    }
    out
}

fn inline_secret(out: &mut Vec<String>, config: &Path, key: &str) {
    if let Some(mode) = world_readable(config) {
        out.push(format!(
            "{key}: a secret is written in {}, which is readable by all users (mode {mode:o}); \
             chmod 0640, or move it to a *_file or *_credential",
            config.display()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_and_url_hosts() {
        for h in ["localhost", "127.0.0.1", "127.3.2.1", "::1", "[::1]"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["broker", "10.0.0.1", "::2", "localhost.evil.com"] {
            assert!(!is_loopback(h), "{h}");
        }
        assert_eq!(url_host("http://q.farm:8080/api"), "q.farm");
        assert_eq!(url_host("https://[::1]:8443"), "::1");
        assert_eq!(url_host("http://q"), "q");
    }
}
