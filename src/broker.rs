//! An in-process MQTT broker (rumqttd) on 127.0.0.1, for tests and for
//! `printgate demo`.
//!
//! Owns the broker's configuration. Never listens beyond loopback, and
//! cannot be stopped: rumqttd 0.20 has no shutdown API, so the broker lives
//! until the process exits (use one port per test binary).

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Largest payload the embedded broker accepts (matches the link's limit).
pub const MAX_PAYLOAD: usize = 256 * 1024;
const START_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("embedded broker: port {port} is already in use")]
    PortInUse { port: u16 },
    #[error("embedded broker: port {port} did not accept connections within {secs} s")]
    NotListening { port: u16, secs: u64 },
    #[error("embedded broker: cannot spawn its thread: {0}")]
    Spawn(std::io::Error),
}

/// Starts rumqttd on `127.0.0.1:port` and returns once the port accepts
/// connections. Port 0 is not supported (rumqttd does not report the port it
/// bound); use [`free_port`].
pub fn start_embedded(port: u16) -> Result<(), BrokerError> {
    start_embedded_with_limit(port, MAX_PAYLOAD + 1024)
}

/// [`start_embedded`] with another payload limit (tests of oversized
/// inbound messages need a broker that lets them through).
pub fn start_embedded_with_limit(port: u16, max_payload: usize) -> Result<(), BrokerError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // rumqttd only logs a failed bind and carries on, so check first.
    drop(TcpListener::bind(addr).map_err(|_| BrokerError::PortInUse { port })?);
    let config = config(addr, max_payload);
    std::thread::Builder::new()
        .name(format!("rumqttd-{port}"))
        .spawn(move || {
            if let Err(err) = Broker::new(config).start() {
                log::error!("embedded broker on port {port} stopped: {err}");
            }
        })
        .map_err(BrokerError::Spawn)?;
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            return Err(BrokerError::NotListening {
                port,
                secs: START_TIMEOUT.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// A port that was free on 127.0.0.1 a moment ago (bind to 0, read, drop).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn config(listen: SocketAddr, max_payload: usize) -> Config {
    // RouterConfig::default() is all zeros and disconnects every client at
    // once; these are the values of rumqttd's own rumqttd.toml.
    let router = RouterConfig {
        max_connections: 10_010,
        max_outgoing_packet_count: 200,
        max_segment_size: 104_857_600,
        max_segment_count: 10,
        ..RouterConfig::default()
    };
    let server = ServerSettings {
        name: "v4-embedded".to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: max_payload,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    Config {
        router,
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Config::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_once_per_port_and_refuses_a_taken_port() {
        let port = free_port().unwrap();
        start_embedded(port).unwrap();
        assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok());
        let err = start_embedded(port).unwrap_err();
        assert!(matches!(err, BrokerError::PortInUse { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!("embedded broker: port {port} is already in use")
        );
    }
}
