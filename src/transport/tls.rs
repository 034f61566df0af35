//! Optional `wss://`: a rustls server configuration from the PEM files of
//! `tls_cert` and `tls_key`, used on every accepted socket before HTTP.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::Config;

/// Why TLS could not be set up; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read tls_cert {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("cannot read tls_key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("tls_cert and tls_key do not make a usable TLS configuration: {0}")]
    Config(String),
}

/// The acceptor for `tls_cert`/`tls_key`, or `None` when they are not set.
pub(crate) fn acceptor(config: &Config) -> Result<Option<TlsAcceptor>, TlsError> {
    if config.tls_cert.is_empty() {
        return Ok(None);
    }
    let cert_error = |reason: String| TlsError::Cert {
        path: config.tls_cert.clone(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.tls_cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&config.tls_key).map_err(|e| TlsError::Key {
        path: config.tls_key.clone(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    // WebSocket runs over HTTP/1.1 only.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}
