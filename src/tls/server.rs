//! Builds the rustls `ServerConfig` for a policy: aws-lc-rs provider, protocol versions, ALPN,
//! session resumption and the mandatory client-certificate verifier.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::NoServerSessionStorage;
use rustls::ServerConfig;

use super::crl::Revocations;
use super::load::TrustedCa;
use super::verify::ClientVerifier;
use crate::config::{MinVersion, SessionResumption, TlsConfig};

/// The one crypto provider. Built explicitly (never `ServerConfig::builder()`), so a second
/// provider in the dependency tree can never make the process-default ambiguous.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds a server config. Fails if the key does not match the certificate or is unusable.
pub fn build(
    tls: &TlsConfig,
    http2: bool,
    cas: &[TrustedCa],
    verify_depth: u8,
    revocations: Revocations,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = provider();
    let verifier = Arc::new(ClientVerifier::new(
        cas,
        verify_depth,
        revocations,
        provider.signature_verification_algorithms,
    ));
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;

    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    match tls.session_resumption {
        SessionResumption::Tickets => {
            config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
        }
        SessionResumption::Off => {
            config.session_storage = Arc::new(NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
    }
    Ok(Arc::new(config))
}
