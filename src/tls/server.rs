//! Builds the rustls `ServerConfig` for a policy: aws-lc-rs provider, protocol versions, ALPN,
//! session resumption and the mandatory client-certificate verifier.
//!
//! Resumption uses stateless tickets only (no server-side session cache), encrypted with keys
//! private to this `ServerConfig`: every policy, and every reload, gets its own ticketer, so a
//! session verified under one policy can never resume under another. rustls itself does not
//! bound a ticket's age (its stock ticketer accepts tickets for up to 12 h), so tickets carry
//! their issue time inside the encryption and are refused after [`TICKET_MAX_AGE`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{NoServerSessionStorage, ProducesTickets};
use rustls::ServerConfig;

use super::verify::ClientVerifier;
use crate::config::{MinVersion, SessionResumption, TlsConfig};

/// Longest time a session ticket can resume a session: what a resumed connection may skip
/// (CRL and CA re-checks) is bounded by this.
pub const TICKET_MAX_AGE: Duration = Duration::from_secs(3600);

/// The one crypto provider. Built explicitly (never `ServerConfig::builder()`), so a second
/// provider in the dependency tree can never make the process-default ambiguous.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds a server config. Fails if the key does not match the certificate or is unusable.
pub fn build(
    tls: &TlsConfig,
    http2: bool,
    verifier: Arc<ClientVerifier>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;

    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    config.session_storage = Arc::new(NoServerSessionStorage {});
    match tls.session_resumption {
        SessionResumption::Tickets => {
            config.ticketer = Arc::new(BoundedTickets {
                inner: rustls::crypto::aws_lc_rs::Ticketer::new()?,
                max_age: TICKET_MAX_AGE,
            });
        }
        SessionResumption::Off => config.send_tls13_tickets = 0,
    }
    Ok(Arc::new(config))
}

/// A ticketer whose tickets expire: the issue time is sealed with the session state.
#[derive(Debug)]
struct BoundedTickets {
    inner: Arc<dyn ProducesTickets>,
    max_age: Duration,
}

impl BoundedTickets {
    fn decrypt_at(&self, cipher: &[u8], now: u64) -> Option<Vec<u8>> {
        let mut plain = self.inner.decrypt(cipher)?;
        let issued = u64::from_be_bytes(plain.get(..8)?.try_into().ok()?);
        if issued > now || now - issued > self.max_age.as_secs() {
            return None;
        }
        plain.drain(..8);
        Some(plain)
    }
}

impl ProducesTickets for BoundedTickets {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.inner
            .lifetime()
            .min(u32::try_from(self.max_age.as_secs()).unwrap_or(u32::MAX))
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut sealed = Vec::with_capacity(8 + plain.len());
        sealed.extend_from_slice(&unix_now().to_be_bytes());
        sealed.extend_from_slice(plain);
        self.inner.encrypt(&sealed)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.decrypt_at(cipher, unix_now())
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_expire_after_max_age_and_other_ticketers_cannot_read_them() {
        let tickets = BoundedTickets {
            inner: rustls::crypto::aws_lc_rs::Ticketer::new().expect("ticketer"),
            max_age: Duration::from_secs(3600),
        };
        let now = unix_now();
        let cipher = tickets.encrypt(b"session").expect("encrypt");
        assert_eq!(tickets.decrypt_at(&cipher, now).as_deref(), Some(&b"session"[..]));
        assert_eq!(
            tickets.decrypt_at(&cipher, now + 3599).as_deref(),
            Some(&b"session"[..])
        );
        assert_eq!(tickets.decrypt_at(&cipher, now + 3601), None, "expired ticket accepted");
        assert_eq!(
            tickets.decrypt_at(&cipher, now - 120),
            None,
            "ticket from the future accepted"
        );
        assert!(tickets.lifetime() <= 3600);
        let other = BoundedTickets {
            inner: rustls::crypto::aws_lc_rs::Ticketer::new().expect("ticketer"),
            max_age: Duration::from_secs(3600),
        };
        assert_eq!(
            other.decrypt(&cipher),
            None,
            "another policy's ticketer read the ticket"
        );
    }
}
