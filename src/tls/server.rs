//! Builds the rustls `ServerConfig` for a policy: aws-lc-rs provider, protocol versions, ALPN,
//! session resumption and the mandatory client-certificate verifier.
//!
//! Resumption uses stateless tickets only (no server-side session cache), encrypted with keys
//! private to this `ServerConfig`: every policy, and every reload, gets its own ticketer, so a
//! session verified under one policy can never resume under another.
//!
//! rustls never re-checks a client certificate on resumption, and its stock ticketer accepts
//! tickets for up to 12 h, re-issued (with a fresh lifetime) on every resumed connection. So
//! tickets seal two times of ours with the session state: when the session's *full* handshake
//! happened and the earliest notAfter of the client's verified path. A ticket is refused — the
//! client falls back to a full handshake, where the verifier decides again — once
//! [`TICKET_MAX_AGE`] has passed since that full handshake or the chain has expired. Tickets
//! re-issued on a resumed connection carry the original times (read from the task-local
//! handshake notes, see `verify::HandshakeNotes`), in TLS 1.2 and 1.3 alike.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{NoServerSessionStorage, ProducesTickets};
use rustls::ServerConfig;

use super::verify::{with_notes, ClientVerifier};
use crate::config::{MinVersion, SessionResumption, TlsConfig};

/// Longest time a session ticket can resume a session: what a resumed connection may skip
/// (CRL and CA re-checks) is bounded by this.
pub(crate) const TICKET_MAX_AGE: Duration = Duration::from_secs(3600);

/// Built with `--features fips`: aws-lc-rs's FIPS module, rustls restricted to FIPS-approved
/// suites and groups (no X25519 alone: X25519MLKEM768, P-256, P-384), extended master secret
/// required for TLS 1.2, and Cloudflare's shared AOP certificate refused by the config.
pub(crate) const FIPS: bool = cfg!(feature = "fips");

/// The one crypto provider. Built explicitly (never `ServerConfig::builder()`), so a second
/// provider in the dependency tree can never make the process-default ambiguous. With the
/// `fips` feature this is the FIPS module (rustls filters its defaults to approved algorithms).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// What `check` and the startup log say about FIPS.
pub(crate) fn fips_status() -> &'static str {
    match (FIPS, provider().fips()) {
        (true, true) => "active (AWS-LC FIPS module, approved algorithms only)",
        (true, false) => "BUILT BUT NOT ACTIVE (the FIPS module failed its self-test)",
        (false, _) => "off (build with --features fips for the AWS-LC FIPS module)",
    }
}

/// A policy's server configs: one per key-exchange variant `tls.key_exchange` needs, sharing
/// the verifier, certificate and ticketer (a ticket from one resumes on another).
#[derive(Clone, Debug)]
pub struct ServerConfigs {
    /// Every group, the hybrid first (or no hybrid with `classical`).
    pub default: Arc<ServerConfig>,
    /// X25519MLKEM768 alone: a client that supports it but sent another share gets a
    /// HelloRetryRequest for it (`hybrid-preferred`).
    pub hybrid_only: Option<Arc<ServerConfig>>,
    /// Without the hybrid: a client that sent no hybrid share is never asked for one
    /// (`hybrid-if-sent`).
    pub classical: Option<Arc<ServerConfig>>,
}

/// The key-exchange groups offered: rustls' default order (X25519MLKEM768, X25519, P-256,
/// P-384) or that without the hybrid.
fn kx_groups(hybrid: bool) -> Vec<&'static dyn rustls::crypto::SupportedKxGroup> {
    rustls::crypto::aws_lc_rs::default_provider()
        .kx_groups
        .into_iter()
        .filter(|g| hybrid || g.name() != rustls::NamedGroup::X25519MLKEM768)
        .collect()
}

/// Builds a policy's server configs. Fails if the key does not match the certificate or is
/// unusable.
pub(crate) fn build(
    tls: &TlsConfig,
    http2: bool,
    verifier: Arc<ClientVerifier>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    shared: Option<super::tickets::SharedTickets>,
) -> Result<ServerConfigs, rustls::Error> {
    use crate::config::KeyExchange;
    let default = build_one(
        tls,
        http2,
        verifier.clone(),
        chain.clone(),
        key.clone_key(),
        shared,
        kx_groups(tls.key_exchange != KeyExchange::Classical),
    )?;
    let variant =
        |groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup>| -> Result<Arc<ServerConfig>, rustls::Error> {
            let mut config = Arc::unwrap_or_clone(build_one(
                tls,
                http2,
                verifier.clone(),
                chain.clone(),
                key.clone_key(),
                None,
                groups,
            )?);
            config.ticketer = default.ticketer.clone();
            Ok(Arc::new(config))
        };
    let hybrid_only = match tls.key_exchange {
        KeyExchange::HybridPreferred => Some(variant(vec![rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768])?),
        _ => None,
    };
    let classical = match tls.key_exchange {
        KeyExchange::HybridIfSent => Some(variant(kx_groups(false))?),
        _ => None,
    };
    Ok(ServerConfigs {
        default,
        hybrid_only,
        classical,
    })
}

fn build_one(
    tls: &TlsConfig,
    http2: bool,
    verifier: Arc<ClientVerifier>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    shared: Option<super::tickets::SharedTickets>,
    groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    // Under FIPS the default groups are the approved ones; a variant's own list is filtered too.
    provider.kx_groups = groups.into_iter().filter(|g| !FIPS || g.fips()).collect();
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
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
            // Shared keys (tls.ticket_keys) or random ones private to this ServerConfig; either
            // way tickets are bounded in age and by the client's chain.
            let inner: Arc<dyn ProducesTickets> = match shared {
                Some(shared) => Arc::new(shared),
                None => rustls::crypto::aws_lc_rs::Ticketer::new()?,
            };
            config.ticketer = Arc::new(BoundedTickets {
                inner,
                max_age: TICKET_MAX_AGE,
            });
        }
        SessionResumption::Off => config.send_tls13_tickets = 0,
    }
    if FIPS && !config.fips() {
        return Err(rustls::Error::General(
            "a FIPS build made a TLS configuration that is not FIPS-approved (is the FIPS module active?)".into(),
        ));
    }
    Ok(Arc::new(config))
}

/// A ticketer whose tickets expire: the issue time is sealed with the session state.
#[derive(Debug)]
struct BoundedTickets {
    inner: Arc<dyn ProducesTickets>,
    max_age: Duration,
}

/// Sealed before the session state: the full handshake's time and the chain's notAfter.
const PREFIX: usize = 16;

impl BoundedTickets {
    fn encrypt_at(&self, plain: &[u8], now: u64) -> Option<Vec<u8>> {
        // Outside a handshake's notes (benches) there is no chain to bound the ticket by: the
        // age limit still holds.
        let (started, not_after) = with_notes(|n| {
            n.sealed_ticket();
            (n.session_started(), n.chain_not_after())
        })
        .unwrap_or_default();
        let started = started.unwrap_or(now);
        let not_after = not_after.unwrap_or(u64::MAX);
        let mut sealed = Vec::with_capacity(PREFIX + plain.len());
        sealed.extend_from_slice(&started.to_be_bytes());
        sealed.extend_from_slice(&not_after.to_be_bytes());
        sealed.extend_from_slice(plain);
        self.inner.encrypt(&sealed)
    }

    fn decrypt_at(&self, cipher: &[u8], now: u64) -> Option<Vec<u8>> {
        let mut plain = self.inner.decrypt(cipher)?;
        let started = u64::from_be_bytes(plain.get(..8)?.try_into().ok()?);
        let not_after = u64::from_be_bytes(plain.get(8..PREFIX)?.try_into().ok()?);
        if started > now || now - started > self.max_age.as_secs() || now > not_after {
            return None;
        }
        with_notes(|n| n.resumed(started, not_after));
        plain.drain(..PREFIX);
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
        self.encrypt_at(plain, unix_now())
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

    /// The lifetime a client is told is the shorter of the inner ticketer's and `max_age`:
    /// never longer than the server will honour.
    #[test]
    fn advertised_lifetime_is_capped_by_max_age() {
        let bounded = |max_age| BoundedTickets {
            inner: rustls::crypto::aws_lc_rs::Ticketer::new().expect("ticketer"),
            max_age,
        };
        let inner = bounded(Duration::ZERO).inner.lifetime();
        assert!(inner > 600, "rustls' ticketer lives {inner} s");
        assert_eq!(bounded(Duration::from_secs(600)).lifetime(), 600);
        assert_eq!(bounded(Duration::from_secs(u64::from(inner) + 1)).lifetime(), inner);
    }

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

    #[tokio::test]
    async fn tickets_carry_the_chain_expiry_and_the_first_handshake_time() {
        use crate::tls::verify::{with_handshake_notes, with_notes};
        let tickets = BoundedTickets {
            inner: rustls::crypto::aws_lc_rs::Ticketer::new().expect("ticketer"),
            max_age: Duration::from_secs(3600),
        };
        let now = unix_now();
        // A resumed session started 50 minutes ago, its chain valid for 30 more minutes.
        let (cipher, notes) = with_handshake_notes(async {
            with_notes(|n| n.resumed(now - 3000, now + 1800));
            tickets.encrypt_at(b"s", now).expect("encrypt")
        })
        .await;
        assert_eq!(notes.session_started, Some(now - 3000));
        assert!(tickets.decrypt_at(&cipher, now + 500).is_some());
        assert_eq!(
            tickets.decrypt_at(&cipher, now + 700),
            None,
            "a re-issued ticket restarted the lifetime"
        );
        let (cipher, _) = with_handshake_notes(async {
            with_notes(|n| n.resumed(now, now + 60));
            tickets.encrypt_at(b"s", now).expect("encrypt")
        })
        .await;
        assert!(tickets.decrypt_at(&cipher, now + 60).is_some());
        assert_eq!(
            tickets.decrypt_at(&cipher, now + 61),
            None,
            "ticket outlived the certificate"
        );
        // Decrypting tells the handshake when its session started and when its chain expires.
        let ((), notes) = with_handshake_notes(async {
            assert!(tickets.decrypt_at(&cipher, now + 1).is_some());
        })
        .await;
        assert_eq!(
            (notes.session_started, notes.chain_not_after),
            (Some(now), Some(now + 60))
        );
    }
}
