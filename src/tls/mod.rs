//! TLS: from configured paths to immutable `rustls::ServerConfig`s — one per policy — that
//! require and verify client certificates, and from a verified leaf to the identity forwarded
//! to the backend.

pub mod cache;
pub mod coalesce;
pub mod crl;
pub mod hello;
pub mod identity;
pub mod load;
pub mod select;
pub mod server;
pub mod tickets;
pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;

use crate::config::{AllowLists, ClientAuthConfig, Config, ConfigError, TrustSource};
pub use crl::Revocations;
pub use identity::ClientIdentity;
pub use load::TrustedCa;
pub use select::{PolicyId, PolicySet};
pub use verify::{ClientVerifier, Reason};

/// One client-authentication policy (the top level, or one `[[hosts]]` table) with everything a
/// listener needs, built and validated up front: every file is read and parsed here, so a bad
/// certificate fails at startup (or reload), never at the first connection.
#[derive(Clone, Debug)]
pub struct Policy {
    /// `default` or `hosts[N]`, for logs and reports.
    pub name: String,
    /// The names that select it (empty for the default policy).
    pub server_names: Vec<String>,
    pub server_config: Arc<rustls::ServerConfig>,
    /// The key-exchange variants of `server_config` (see [`server::ServerConfigs`]).
    pub variants: server::ServerConfigs,
    /// The server chain as loaded (leaf first), for reports.
    pub server_chain: Vec<CertificateDer<'static>>,
    pub cas: Vec<TrustedCa>,
    pub crl_files: Vec<PathBuf>,
    pub verify_depth: u8,
    pub allow: AllowLists,
    /// The policy's client-certificate verifier (also inside `server_config`), for checks such
    /// as "would this policy accept that certificate?".
    pub verifier: Arc<ClientVerifier>,
}

/// SHA-256 over a policy's trust material — CAs, CRLs, allow-lists, depth — for deriving its
/// shared ticket keys: replicas with the same trust agree, any change invalidates tickets.
fn trust_digest(
    cas: &[TrustedCa],
    crls: &[rustls::pki_types::CertificateRevocationListDer<'_>],
    auth: &ClientAuthConfig,
) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut item = |tag: &[u8], bytes: &[u8]| {
        ctx.update(tag);
        ctx.update(&(bytes.len() as u64).to_be_bytes());
        ctx.update(bytes);
    };
    item(b"depth", &[auth.verify_depth]);
    for ca in cas {
        item(b"ca", ca.der.as_ref());
    }
    for crl in crls {
        item(b"crl", crl.as_ref());
    }
    let a = &auth.allow;
    for (tag, values) in [
        (&b"subject"[..], &a.subjects),
        (b"dns", &a.dns_names),
        (b"uri", &a.uris),
    ] {
        for value in values {
            item(tag, value.as_bytes());
        }
    }
    for pin in &a.spki_sha256 {
        item(b"spki", pin);
    }
    for pin in &a.cert_sha256 {
        item(b"cert", pin);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A Unix time as `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn utc(unix: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| unix.to_string())
}

impl Policy {
    /// The server config for a ClientHello: `groups` it supports, and the groups of the key
    /// shares it sent (`None` when not looked at).
    pub(crate) fn config_for(
        &self,
        groups: &[rustls::NamedGroup],
        shares: Option<&[u16]>,
    ) -> &Arc<rustls::ServerConfig> {
        let hybrid = rustls::NamedGroup::X25519MLKEM768;
        if let Some(only) = &self.variants.hybrid_only {
            if groups.contains(&hybrid) {
                return only;
            }
        }
        if let (Some(classical), Some(shares)) = (&self.variants.classical, shares) {
            if !shares.contains(&u16::from(hybrid)) {
                return classical;
            }
        }
        &self.variants.default
    }
}

/// Where a policy's settings live in the config file, for error messages.
pub(crate) struct Keys {
    pub name: String,
    pub certificate: String,
    pub private_key: String,
    pub client_auth: String,
}

impl Policy {
    /// Builds the top-level policy alone (what a config without `[[hosts]]` serves).
    pub fn build(config: &Config) -> Result<Policy, ConfigError> {
        let keys = Keys {
            name: "default".into(),
            certificate: "tls.certificate".into(),
            private_key: "tls.private_key".into(),
            client_auth: "client_auth".into(),
        };
        Policy::build_one(
            config,
            &keys,
            &config.tls.certificate,
            &config.tls.private_key,
            &config.client_auth,
            &[],
        )
    }

    pub(crate) fn build_one(
        config: &Config,
        keys: &Keys,
        certificate: &Path,
        private_key: &Path,
        auth: &ClientAuthConfig,
        server_names: &[String],
    ) -> Result<Policy, ConfigError> {
        let file = &config.file;
        let from_load = |key: String| move |e: load::LoadError| ConfigError::new(file, key, e);

        let server_chain = load::certificates(certificate).map_err(from_load(keys.certificate.clone()))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        if let Some(expired) = load::not_after(&server_chain[0]).filter(|t| *t < now) {
            return Err(ConfigError::new(
                file,
                keys.certificate.clone(),
                format!(
                    "{}: the server certificate expired on {} (every client, Cloudflare included, refuses it)",
                    certificate.display(),
                    utc(expired)
                ),
            ));
        }
        let key = load::private_key(private_key).map_err(from_load(keys.private_key.clone()))?;

        let mut cas = Vec::new();
        for (i, source) in auth.trust.iter().enumerate() {
            match source {
                TrustSource::Cloudflare => cas.extend(load::cloudflare_ca()),
                TrustSource::File(path) => {
                    cas.extend(load::trusted_cas(path).map_err(from_load(format!("{}.trust[{i}]", keys.client_auth)))?)
                }
            }
        }

        if !cas.is_empty() && cas.iter().all(|ca| load::not_after(&ca.der).is_some_and(|t| t < now)) {
            return Err(ConfigError::new(
                file,
                format!("{}.trust", keys.client_auth),
                "every trusted CA has expired: no client certificate can be verified (add the CA that \
                 issues the current client certificates)",
            ));
        }
        let algorithms = server::provider().signature_verification_algorithms;
        let mut revocations = Revocations::default();
        revocations.refuse_stale = auth.crl_stale_refuse;
        let mut revocation_ders = Vec::new();
        for (i, path) in auth.crl.iter().enumerate() {
            let key = format!("{}.crl[{i}]", keys.client_auth);
            let ders = load::crls(path).map_err(from_load(key.clone()))?;
            revocation_ders.extend(ders.iter().cloned());
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

        let verifier = Arc::new(ClientVerifier::new(
            &cas,
            auth.verify_depth,
            revocations,
            auth.allow.clone(),
            auth.verify_cache,
            algorithms,
        ));
        let tickets = match &config.tls.ticket_keys {
            Some(path) => Some(
                tickets::TicketSecrets::load(path)
                    .map_err(from_load("tls.ticket_keys".to_string()))?
                    .ticketer(&trust_digest(&cas, &revocation_ders, auth)),
            ),
            None => None,
        };
        let variants = server::build(
            &config.tls,
            config.listener.http2,
            verifier.clone(),
            server_chain.clone(),
            key,
            tickets,
        )
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => ConfigError::new(
                file,
                keys.private_key.clone(),
                format!(
                    "{}: does not match the certificate in {}",
                    private_key.display(),
                    certificate.display()
                ),
            ),
            e => ConfigError::new(
                file,
                keys.certificate.clone(),
                format!("{}: {e}", certificate.display()),
            ),
        })?;

        Ok(Policy {
            name: keys.name.clone(),
            server_names: server_names.to_vec(),
            server_config: variants.default.clone(),
            variants,
            server_chain,
            cas,
            crl_files: auth.crl.clone(),
            verify_depth: auth.verify_depth,
            allow: auth.allow.clone(),
            verifier,
        })
    }
}
