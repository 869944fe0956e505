//! Turns rumqttc's connection errors into one short sentence an operator
//! can act on: a refused CONNACK is named as such, a TLS failure as a
//! certificate problem, a dead link as a lost connection.
//!
//! Owns the wording only; never retries or logs.

use rumqttc::{ConnectReturnCode, ConnectionError, StateError};
use std::error::Error as StdError;

/// Why the link to the broker failed, in lowercase, without the host.
pub(crate) fn describe(err: &ConnectionError) -> String {
    if let Some(tls) = find_rustls(err) {
        return describe_rustls(tls);
    }
    match err {
        ConnectionError::ConnectionRefused(code) => {
            let why = match code {
                ConnectReturnCode::BadUserNamePassword => "bad user name or password",
                // mosquitto answers a wrong password with this code, not code 4.
                ConnectReturnCode::NotAuthorized => {
                    "not authorized (check the user name and password)"
                }
                ConnectReturnCode::BadClientId => "client id rejected",
                ConnectReturnCode::ServiceUnavailable => "server unavailable",
                ConnectReturnCode::RefusedProtocolVersion => "unsupported protocol version",
                ConnectReturnCode::Success => "success code in a refusal",
            };
            format!("broker refused the connection: {why}")
        }
        ConnectionError::Tls(tls) => describe_tls(tls),
        ConnectionError::Io(io) => describe_io(io),
        ConnectionError::NetworkTimeout => "connection timed out".to_owned(),
        ConnectionError::FlushTimeout => "writing to the broker timed out".to_owned(),
        ConnectionError::MqttState(StateError::AwaitPingResp) => {
            "broker stopped answering pings".to_owned()
        }
        ConnectionError::MqttState(StateError::ConnectionAborted) => {
            "broker closed the connection".to_owned()
        }
        ConnectionError::MqttState(StateError::Io(io)) => describe_io(io),
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::Error::PayloadSizeLimitExceeded(size),
        )) => format!(
            "broker sent a {size}-byte packet, over the {} KiB limit \
             (a queued or retained oversized message repeats this at every reconnect)",
            super::MAX_INCOMING_PACKET / 1024
        ),
        ConnectionError::MqttState(other) => format!("protocol error: {other}"),
        ConnectionError::NotConnAck(packet) => {
            format!("broker answered the connect with {packet:?} instead of a connack")
        }
        ConnectionError::RequestsDone => "link request channel closed".to_owned(),
    }
}

fn describe_io(io: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match io.kind() {
        K::ConnectionRefused => "connection refused (is the broker running?)".to_owned(),
        K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
            format!("connection lost: {io}")
        }
        _ => format!("network error: {io}"),
    }
}

fn describe_tls(tls: &rumqttc::TlsError) -> String {
    use rumqttc::TlsError as E;
    match tls {
        E::NoValidCertInChain => {
            "tls certificate problem: no valid ca certificate configured".into()
        }
        E::NoValidClientCertInChain => {
            "tls certificate problem: no valid client certificate".into()
        }
        E::NoValidKeyInChain => "tls certificate problem: no valid client key".into(),
        E::DNSName(_) => "tls: the broker host is not a valid certificate name".into(),
        E::Io(io) => format!("tls: {}", describe_io(io)),
        other => format!("tls certificate problem: {other}"),
    }
}

fn describe_rustls(err: &rustls::Error) -> String {
    match err {
        rustls::Error::InvalidCertificate(why) => {
            format!("tls certificate problem: broker certificate rejected: {why:?}")
        }
        rustls::Error::AlertReceived(alert) => format!(
            "tls certificate problem: broker ended the handshake ({alert:?}); \
             check the client certificate and key"
        ),
        other => format!("tls error: {other}"),
    }
}

/// The first rustls error in the chain, including inside `io::Error`s
/// (tokio-rustls reports handshake failures as I/O errors).
fn find_rustls<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                return Some(r);
            }
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_named() {
        let e = ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword);
        assert_eq!(
            describe(&e),
            "broker refused the connection: bad user name or password"
        );
        let e = ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized);
        assert_eq!(
            describe(&e),
            "broker refused the connection: not authorized (check the user name and password)"
        );
    }

    #[test]
    fn tls_failures_inside_io_errors_are_certificate_problems() {
        let rustls_err = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_err);
        let e = ConnectionError::Tls(rumqttc::TlsError::Io(io));
        assert!(describe(&e)
            .starts_with("tls certificate problem: broker certificate rejected: UnknownIssuer"));
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
        );
        assert!(describe(&ConnectionError::Io(io)).contains("client certificate"));
    }

    #[test]
    fn oversized_inbound_is_explained() {
        let e = ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::Error::PayloadSizeLimitExceeded(2_000_000),
        ));
        assert!(describe(&e)
            .starts_with("broker sent a 2000000-byte packet, over the 262143 KiB limit"));
    }

    #[test]
    fn lost_and_refused_connections() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(describe(&ConnectionError::Io(io)).starts_with("connection refused"));
        let e = ConnectionError::MqttState(StateError::ConnectionAborted);
        assert_eq!(describe(&e), "broker closed the connection");
    }
}
