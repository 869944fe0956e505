//! Builds the link's settings from the validated config: topics (prefix,
//! discovery prefix, trigger topics in config order), printers, credentials,
//! TLS files, keep-alive, and the birth / Last Will status payloads.
//!
//! Reads the TLS files (call it again to pick up a new certificate); the
//! password stays a source that the link reads at every connection
//! attempt. Never connects.

use super::link::{LinkSettings, TlsSettings};
use super::payload::{rfc3339, Availability, GatewayStatus};
use super::topics::Topics;
use crate::config::{Config, ConfigError, MqttConfig};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The topic contract for `cfg` (prefixes, trigger topics in config order),
/// or `None` when the config has no `[mqtt]`.
pub fn topics(cfg: &Config) -> Option<Topics> {
    let m = cfg.mqtt.as_ref()?;
    Some(
        Topics::new(&cfg.gateway.id)
            .with_prefix(&m.topic_prefix)
            .with_discovery_prefix(&m.discovery_prefix)
            .with_triggers(cfg.triggers.iter().map(|t| t.topic.clone()).collect()),
    )
}

/// The link settings for `cfg`, or `None` when the config has no `[mqtt]`.
/// `now` stamps the birth and will payloads.
pub fn link_settings(cfg: &Config, now: SystemTime) -> Result<Option<LinkSettings>, ConfigError> {
    let (Some(m), Some(topics)) = (cfg.mqtt.as_ref(), topics(cfg)) else {
        return Ok(None);
    };
    let printers: Vec<String> = cfg.printers().iter().map(|p| p.id.clone()).collect();
    let status = |status| GatewayStatus {
        status,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        printers: printers.clone(),
        timestamp: rfc3339(now),
    };
    let (birth, will) = (
        status(Availability::Online).to_bytes(),
        status(Availability::Offline).to_bytes(),
    );
    let mut s = LinkSettings::new(&m.host, m.port, topics, printers);
    s.client_id = m.client_id.clone();
    s.username = m.username.clone();
    s.password = m.password_source();
    s.tls = tls(m)?;
    s.keep_alive = Duration::from_secs(m.keep_alive_s);
    s.birth = birth;
    s.will = will;
    Ok(Some(s))
}

fn tls(m: &MqttConfig) -> Result<Option<TlsSettings>, ConfigError> {
    let Some(ca) = &m.ca_file else {
        return Ok(None);
    };
    let client_auth = match (&m.client_cert, &m.client_key) {
        (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
        _ => None,
    };
    Ok(Some(TlsSettings {
        ca_pem: read(ca)?,
        client_auth,
    }))
}

fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use std::time::UNIX_EPOCH;

    const CFG: &str = r#"
[gateway]
id = "gw-7"
[[printer]]
id = "mk3"
port = "/dev/ttyACM0"
[mqtt]
host = "broker.local"
port = 8883
username = "pg"
password = "pw"
allow_plaintext_credentials = true
topic_prefix = "farm"
[[trigger]]
topic = "farm/purge"
printer = "mk3"
gcode = "G28"
"#;

    #[test]
    fn settings_follow_the_config() {
        let cfg = parse(CFG, Path::new("pg.toml")).unwrap();
        let s = link_settings(&cfg, UNIX_EPOCH).unwrap().unwrap();
        assert_eq!((s.host.as_str(), s.port), ("broker.local", 8883));
        assert_eq!(s.client_id, "printgate-gw-7");
        assert_eq!(s.password, Some("pw".into()));
        assert_eq!(s.topics.assignment("mk3"), "farm/printer/mk3/assignement");
        assert_eq!(s.topics.gateway_status(), "farm/gateway/gw-7/status");
        assert_eq!(s.printers, vec!["mk3"]);
        assert!(s.tls.is_none());
        let will: serde_json::Value = serde_json::from_slice(&s.will).unwrap();
        assert_eq!(will["status"], "offline");
        assert_eq!(will["printers"][0], "mk3");
        assert_eq!(will["timestamp"], "1970-01-01T00:00:00Z");
        assert_eq!(
            s.topics.classify("farm/purge"),
            Some(crate::mqtt::topics::InTopic::Trigger { index: 0 })
        );
    }

    #[test]
    fn missing_ca_file_is_a_read_error_and_no_mqtt_is_none() {
        let text = format!("{CFG}\n");
        let text = text.replace(
            "topic_prefix",
            "ca_file = \"/nonexistent/ca.pem\"\ntopic_prefix",
        );
        let cfg = parse(&text, Path::new("pg.toml")).unwrap();
        let err = link_settings(&cfg, UNIX_EPOCH).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        let cfg = parse("[gateway]\nid = \"g\"\n", Path::new("pg.toml")).unwrap();
        assert!(link_settings(&cfg, UNIX_EPOCH).unwrap().is_none());
    }
}
