//! TLS: from configured paths to an immutable `rustls::ServerConfig` that requires and verifies
//! client certificates, and from a verified leaf to the identity forwarded to the backend.

pub mod crl;
pub mod identity;
pub mod load;
pub mod server;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;

use crate::config::{Config, ConfigError, TrustSource};
pub use crl::Revocations;
pub use identity::ClientIdentity;
pub use load::TrustedCa;
pub use verify::{ClientVerifier, Reason};

/// Everything a listener needs to authenticate clients, built and validated up front: every
/// file is read and parsed here, so a bad certificate fails at startup (or reload), never at the
/// first connection.
#[derive(Clone, Debug)]
pub struct Policy {
    pub server_config: Arc<rustls::ServerConfig>,
    /// The server chain as loaded (leaf first), for reports.
    pub server_chain: Vec<CertificateDer<'static>>,
    pub cas: Vec<TrustedCa>,
    pub crl_files: Vec<PathBuf>,
    pub verify_depth: u8,
}

impl Policy {
    pub fn build(config: &Config) -> Result<Policy, ConfigError> {
        let file = &config.file;
        let tls = &config.tls;
        let auth = &config.client_auth;
        let from_load = |key: String| move |e: load::LoadError| ConfigError::new(file, key, e);

        let server_chain = load::certificates(&tls.certificate).map_err(from_load("tls.certificate".into()))?;
        let key = load::private_key(&tls.private_key).map_err(from_load("tls.private_key".into()))?;

        let mut cas = Vec::new();
        for (i, source) in auth.trust.iter().enumerate() {
            match source {
                TrustSource::Cloudflare => cas.extend(load::cloudflare_ca()),
                TrustSource::File(path) => {
                    cas.extend(load::trusted_cas(path).map_err(from_load(format!("client_auth.trust[{i}]")))?)
                }
            }
        }

        let algorithms = server::provider().signature_verification_algorithms;
        let mut revocations = Revocations::default();
        for (i, path) in auth.crl.iter().enumerate() {
            let key = format!("client_auth.crl[{i}]");
            let ders = load::crls(path).map_err(from_load(key.clone()))?;
            for (n, der) in ders.iter().enumerate() {
                revocations.add(der, &cas, algorithms.all).map_err(|message| {
                    ConfigError::new(
                        file,
                        key.clone(),
                        format!("{}: CRL #{}: {message}", path.display(), n + 1),
                    )
                })?;
            }
        }

        let server_config = server::build(
            tls,
            config.listener.http2,
            &cas,
            auth.verify_depth,
            revocations,
            server_chain.clone(),
            key,
        )
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => ConfigError::new(
                file,
                "tls.private_key",
                format!(
                    "{}: does not match the certificate in {}",
                    tls.private_key.display(),
                    tls.certificate.display()
                ),
            ),
            e => ConfigError::new(file, "tls.certificate", format!("{}: {e}", tls.certificate.display())),
        })?;

        Ok(Policy {
            server_config,
            server_chain,
            cas,
            crl_files: auth.crl.clone(),
            verify_depth: auth.verify_depth,
        })
    }
}
