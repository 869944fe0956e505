//! The link's TLS client configuration, built here with rustls 0.23 and
//! handed to rumqttc ready-made (`TlsConfiguration::Rustls`).
//!
//! Why not rumqttc's `TlsConfiguration::Simple`: that path parses PEM with
//! `rustls-pemfile` (unmaintained, RUSTSEC-2025-0134), in the same module
//! that names `rustls-webpki` 0.102 (RUSTSEC-2026-0049 and later CRL and
//! name-constraint advisories). With a ready-made config neither runs:
//! PEM goes through rustls-pki-types, certificates are verified by the
//! rustls-webpki that rustls 0.23 itself uses (0.103, patched). See
//! deny.toml for the exception this allows.
//!
//! Pure construction; no I/O (the PEM bytes are read by the caller).

use super::TlsSettings;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use std::sync::Arc;

/// A client config trusting only `tls.ca_pem`, with the client certificate
/// and key for mutual TLS when given. `Err` says what is wrong with which
/// PEM (never a key's bytes).
pub(crate) fn client_config(tls: &TlsSettings) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&tls.ca_pem) {
        let cert = cert.map_err(|e| format!("ca_file: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("ca_file: unusable certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("ca_file holds no certificate".to_owned());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots);
    let config = match &tls.client_auth {
        None => builder.with_no_client_auth(),
        Some((cert_pem, key_pem)) => {
            let certs = CertificateDer::pem_slice_iter(cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client_cert: {e}"))?;
            if certs.is_empty() {
                return Err("client_cert holds no certificate".to_owned());
            }
            let key = PrivateKeyDer::from_pem_slice(key_pem)
                .map_err(|_| "client_key holds no usable private key".to_owned())?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("client_cert/client_key: {e}"))?
        }
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_without_certificates_or_a_bad_key_is_refused() {
        let none = TlsSettings {
            ca_pem: b"not a pem".to_vec(),
            client_auth: None,
        };
        assert!(client_config(&none).unwrap_err().contains("no certificate"));
        let ca = include_bytes!("../../../tests/testdata/ca.pem").to_vec();
        let ok = TlsSettings {
            ca_pem: ca.clone(),
            client_auth: None,
        };
        assert!(client_config(&ok).is_ok());
        let bad_key = TlsSettings {
            ca_pem: ca.clone(),
            client_auth: Some((
                ca,
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec(),
            )),
        };
        let err = client_config(&bad_key).unwrap_err();
        assert!(err.contains("client_"), "{err}");
        assert!(!err.contains("AAAA"), "{err}");
    }
}
