//! The client-certificate policy: chain to a trusted CA within `verify_depth`, validity, EKU,
//! revocation — and why a certificate was refused.
//!
//! rustls' `WebPkiClientVerifier` accepts up to six client-sent intermediates and has no depth
//! knob, so [`ClientVerifier`] calls webpki itself and refuses every candidate path with more
//! intermediates than the policy allows. webpki tries trust anchors before intermediates, so a
//! leaf issued directly by a trusted CA verifies at the same cost as with the stock verifier.
//!
//! Chains that verified are remembered per policy (see [`super::cache`]) so that the common
//! case — the same client certificate again — skips the CA signature checks.
//!
//! A refusal maps to the TLS alert a peer expects (see [`Reason`]) and, because an alert cannot
//! say *why*, the precise reason is also recorded for the connection that caused it in the
//! task-local [`HandshakeNotes`]: the handshake runs inside the connection's task, so the
//! accept loop can log and count the exact reason (`bad_depth` vs `unknown_issuer`). The same
//! notes carry the verified path's earliest notAfter to the session ticket (see
//! `server::BoundedTickets`), so a resumed session never outlives the certificate.
//!
//! Purpose: the leaf must allow client authentication — an EKU, if present, must include
//! clientAuth (webpki), and a KeyUsage, if present, must include digitalSignature (checked here:
//! webpki does not look at KeyUsage). Either refusal is reason `bad_purpose`.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::cache::{self, VerifiedCache};
use super::crl::Revocations;
use super::identity::{self, sha256, ClientIdentity};
use super::load::TrustedCa;
use crate::config::AllowLists;

/// Why a handshake failed. The labels are the stable `result` values of
/// `originguard_handshakes_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    NoCertificate,
    UnknownIssuer,
    BadDepth,
    Expired,
    NotYetValid,
    Revoked,
    NotAllowed,
    BadSignature,
    BadPurpose,
    Timeout,
    ProtocolError,
    Other,
}

impl Reason {
    /// How many reasons there are; [`Reason::index`] is below it.
    pub(crate) const COUNT: usize = 12;

    /// A dense index, for per-reason tables.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::NoCertificate => "no_certificate",
            Reason::UnknownIssuer => "unknown_issuer",
            Reason::BadDepth => "bad_depth",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::Revoked => "revoked",
            Reason::NotAllowed => "not_allowed",
            Reason::BadSignature => "bad_signature",
            Reason::BadPurpose => "bad_purpose",
            Reason::Timeout => "timeout",
            Reason::ProtocolError => "protocol_error",
            Reason::Other => "other",
        }
    }

    /// Classifies a failed server handshake. `recorded` is what the verifier noted for this
    /// connection, which is more precise than the error rustls returns.
    pub(crate) fn of_handshake_error(error: &std::io::Error, recorded: Option<Reason>) -> Reason {
        if let Some(reason) = recorded {
            return reason;
        }
        let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
            return Reason::ProtocolError;
        };
        match tls {
            rustls::Error::NoCertificatesPresented => Reason::NoCertificate,
            rustls::Error::InvalidCertificate(e) => Reason::of_certificate_error(e),
            _ => Reason::ProtocolError,
        }
    }

    fn of_certificate_error(e: &CertificateError) -> Reason {
        match e {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => Reason::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => Reason::NotYetValid,
            CertificateError::Revoked => Reason::Revoked,
            CertificateError::UnknownIssuer => Reason::UnknownIssuer,
            CertificateError::BadSignature => Reason::BadSignature,
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => Reason::BadPurpose,
            _ => Reason::Other,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

tokio::task_local! {
    static NOTES: HandshakeNotes;
}

/// What a handshake learned, kept for the connection's task that runs it.
#[derive(Debug, Default)]
pub(crate) struct HandshakeNotes {
    rejection: Cell<Option<Reason>>,
    chain_not_after: Cell<Option<u64>>,
    session_started: Cell<Option<u64>>,
    ticket_sealed: Cell<bool>,
    presented: std::cell::RefCell<Option<CertificateDer<'static>>>,
}

/// A copy of [`HandshakeNotes`] once the handshake is over.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Notes {
    /// Why the verifier refused the client.
    pub rejection: Option<Reason>,
    /// The leaf the client presented, when the verifier refused it (for the refusal log).
    pub presented: Option<CertificateDer<'static>>,
    /// The earliest notAfter (Unix seconds) over the client's verified path: from the
    /// verifier on a full handshake, from the ticket on a resumed one.
    pub chain_not_after: Option<u64>,
    /// When the session's full handshake happened (Unix seconds), if it was resumed.
    pub session_started: Option<u64>,
}

/// Runs a handshake future with fresh notes, and returns its output with what they recorded.
pub(crate) async fn with_handshake_notes<F: Future>(handshake: F) -> (F::Output, Notes) {
    NOTES
        .scope(HandshakeNotes::default(), async {
            let output = handshake.await;
            let notes = NOTES.with(|n| Notes {
                rejection: n.rejection.get(),
                presented: n.presented.take(),
                chain_not_after: n.chain_not_after.get(),
                session_started: n.session_started.get(),
            });
            (output, notes)
        })
        .await
}

/// Reads or writes the current handshake's notes; `None` outside a handshake (benches, unit
/// tests, re-checks after a reload): there is nobody to tell, and that is fine.
pub(crate) fn with_notes<R>(f: impl FnOnce(&HandshakeNotes) -> R) -> Option<R> {
    NOTES.try_with(f).ok()
}

impl HandshakeNotes {
    pub(crate) fn chain_not_after(&self) -> Option<u64> {
        self.chain_not_after.get()
    }

    pub(crate) fn session_started(&self) -> Option<u64> {
        self.session_started.get()
    }

    /// A session ticket was sealed in this handshake (what `coalesce` waits for).
    pub(crate) fn ticket_sealed(&self) -> bool {
        self.ticket_sealed.get()
    }

    pub(crate) fn sealed_ticket(&self) {
        self.ticket_sealed.set(true);
    }

    /// A ticket was accepted: the session it resumes started at `started`, and its chain is
    /// good until `not_after`.
    pub(crate) fn resumed(&self, started: u64, not_after: u64) {
        self.session_started.set(Some(started));
        self.chain_not_after.set(Some(not_after));
    }
}

fn record_rejection(reason: Reason) {
    with_notes(|n| n.rejection.set(Some(reason)));
}

/// A client-certificate verifier for one policy: trusted CAs, depth, CRLs. Mandatory: a client
/// without a certificate never completes the handshake.
#[derive(Debug)]
pub struct ClientVerifier {
    anchors: Vec<rustls::pki_types::TrustAnchor<'static>>,
    hints: Vec<DistinguishedName>,
    revocations: Revocations,
    allow: AllowLists,
    cache: Option<VerifiedCache>,
    /// `verify_depth - 1`: how many intermediates a verified path may contain.
    max_intermediates: usize,
    /// Identities already derived, by SHA-256 of the leaf: every connection of the same client
    /// (Cloudflare presents one leaf) shares one, resumed connections included.
    identities: Mutex<HashMap<[u8; 32], Arc<ClientIdentity>>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientVerifier {
    pub fn new(
        cas: &[TrustedCa],
        verify_depth: u8,
        revocations: Revocations,
        allow: AllowLists,
        verify_cache: bool,
        algorithms: WebPkiSupportedAlgorithms,
    ) -> Self {
        let anchors: Vec<_> = cas.iter().map(|ca| ca.anchor.clone()).collect();
        // The CertificateRequest names our CAs so a client holding several certificates (or a
        // browser) picks one these CAs issued.
        let hints = anchors
            .iter()
            .map(|anchor| DistinguishedName::in_sequence(anchor.subject.as_ref()))
            .collect();
        ClientVerifier {
            anchors,
            hints,
            revocations,
            allow,
            cache: verify_cache.then(|| VerifiedCache::new(cache::CAPACITY)),
            max_intermediates: usize::from(verify_depth.max(1)) - 1,
            algorithms,
            identities: Mutex::new(HashMap::new()),
        }
    }

    /// The identity of an accepted leaf, derived once per distinct leaf (bounded: the map is
    /// emptied when it reaches [`cache::CAPACITY`] entries).
    pub(crate) fn identity(&self, leaf: &CertificateDer<'_>) -> Arc<ClientIdentity> {
        let digest = sha256(leaf.as_ref());
        let mut identities = self.identities.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(identity) = identities.get(&digest) {
            return identity.clone();
        }
        if identities.len() >= cache::CAPACITY {
            identities.clear();
        }
        let identity = Arc::new(ClientIdentity::from_leaf_with_digest(leaf, &digest));
        identities.insert(digest, identity.clone());
        identity
    }

    /// Verifies a presented chain against this policy. Returns the earliest notAfter (Unix
    /// seconds) over the verified path, or the refusal reason and the rustls error that
    /// selects the alert.
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<u64, (Reason, rustls::Error)> {
        let key = match &self.cache {
            Some(cache) => {
                let key = VerifiedCache::key(end_entity, intermediates);
                if let Some(not_after) = cache.hit(&key, now) {
                    return Ok(not_after);
                }
                Some(key)
            }
            None => None,
        };

        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| (Reason::Other, CertificateError::BadEncoding.into()))?;

        let max = self.max_intermediates;
        let within_policy = |path: &webpki::VerifiedPath<'_>| {
            if path.intermediate_certificates().count() > max {
                // Ranked below every validity error by webpki, so a shorter path that fails
                // for a concrete reason (expired, revoked) still reports that reason.
                return Err(webpki::Error::PathLenConstraintViolated);
            }
            if !self.revocations.is_empty() {
                // CRLs come from trust anchors: they cover the certificate the anchor issued,
                // the top of the path below it.
                let top = match path.intermediate_certificates().next_back() {
                    Some(intermediate) => intermediate.serial(),
                    None => path.end_entity().serial(),
                };
                let anchor_spki = path.anchor().subject_public_key_info.as_ref();
                if self.revocations.is_revoked(anchor_spki, top) {
                    return Err(webpki::Error::CertRevoked);
                }
                if self.revocations.stale_refusal(anchor_spki, now.as_secs()) {
                    return Err(webpki::Error::UnknownRevocationStatus);
                }
            }
            Ok(())
        };

        let path = cert
            .verify_for_usage(
                self.algorithms.all,
                &self.anchors,
                intermediates,
                now,
                webpki::KeyUsage::client_auth(),
                None,
                Some(&within_policy),
            )
            .map_err(classify)?;

        // x509-parser reads what webpki does not expose: KeyUsage and the validity window.
        let ders: Vec<CertificateDer<'_>> = std::iter::once(end_entity.clone())
            .chain(path.intermediate_certificates().map(|c| c.der()))
            .collect();
        let mut parsed = Vec::with_capacity(ders.len());
        for der in &ders {
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
                .map_err(|_| (Reason::Other, rustls::Error::from(CertificateError::BadEncoding)))?;
            parsed.push(cert);
        }
        if let Ok(Some(usage)) = parsed[0].key_usage() {
            // The client signs CertificateVerify with this key: a leaf whose KeyUsage does not
            // allow signatures (keyCertSign only, keyEncipherment only) is not fit for it.
            if !usage.value.digital_signature() {
                return Err((Reason::BadPurpose, CertificateError::InvalidPurpose.into()));
            }
        }
        if !self.allow.is_empty() && !permits(&self.allow, end_entity, &cert) {
            return Err((
                Reason::NotAllowed,
                CertificateError::ApplicationVerificationFailure.into(),
            ));
        }
        let mut window = cache::validity_window(&parsed)
            .ok_or((Reason::Other, rustls::Error::from(CertificateError::BadEncoding)))?;
        // A cached chain must not outlive a CRL that will then refuse it.
        if let Some(limit) = self
            .revocations
            .refuse_after(path.anchor().subject_public_key_info.as_ref())
        {
            window.1 = window.1.min(limit);
        }
        if let (Some(cache), Some(key)) = (&self.cache, key) {
            cache.insert(key, window);
        }
        Ok(window.1)
    }

    /// nextUpdate (Unix seconds) of each of this policy's CRLs that is past it at `now`.
    pub(crate) fn stale_crls(&self, now: u64) -> Vec<u64> {
        self.revocations.stale(now)
    }

    /// Verified-chain cache (hits, misses), when the cache is on.
    pub fn cache_stats(&self) -> Option<(u64, u64)> {
        self.cache.as_ref().map(VerifiedCache::stats)
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.verify(end_entity, intermediates, now) {
            Ok(not_after) => {
                with_notes(|n| {
                    n.chain_not_after.set(Some(not_after));
                    // A full verification starts a new session, even if a ticket was offered
                    // (and decrypted) first: new tickets count from now.
                    n.session_started.set(None);
                });
                Ok(ClientCertVerified::assertion())
            }
            Err((reason, error)) => {
                record_rejection(reason);
                // Copied on refusal only, for the one log line an operator greps for.
                with_notes(|n| n.presented.replace(Some(end_entity.clone().into_owned())));
                Err(error)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
            .inspect_err(|_| record_rejection(Reason::BadSignature))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
            .inspect_err(|_| record_rejection(Reason::BadSignature))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The allow-lists, checked after the chain verified: every non-empty list must match.
fn permits(allow: &AllowLists, der: &CertificateDer<'_>, cert: &webpki::EndEntityCert<'_>) -> bool {
    if !allow.cert_sha256.is_empty() && !allow.cert_sha256.contains(&sha256(der.as_ref())) {
        return false;
    }
    if !allow.spki_sha256.is_empty()
        && !allow
            .spki_sha256
            .contains(&sha256(cert.subject_public_key_info().as_ref()))
    {
        return false;
    }
    if !allow.dns_names.is_empty()
        && !cert.valid_dns_names().any(|name| {
            allow
                .dns_names
                .iter()
                .any(|pattern| crate::names::matches(pattern, name))
        })
    {
        return false;
    }
    if !allow.uris.is_empty() && !cert.valid_uri_names().any(|uri| allow.uris.iter().any(|u| u == uri)) {
        return false;
    }
    if !allow.subjects.is_empty() {
        let Some(subject) = identity::Subject::parse(der) else {
            return false;
        };
        if !allow.subjects.iter().any(|wanted| subject.matches(wanted)) {
            return false;
        }
    }
    true
}

/// webpki error -> (our reason, the rustls error whose alert the client receives).
///
/// Alerts follow rustls' own mapping (OpenSSL-compatible): expired and not-yet-valid ->
/// certificate_expired, revoked -> certificate_revoked, unknown issuer and too-long chains ->
/// unknown_ca (the intermediate is not a CA this policy trusts to issue clients), wrong EKU ->
/// unsupported_certificate, bad signature -> decrypt_error, a CA used as a leaf ->
/// certificate_unknown.
fn classify(error: webpki::Error) -> (Reason, rustls::Error) {
    use webpki::Error as E;
    let (reason, cert_error) = match error {
        E::CertExpired { time, not_after } => (Reason::Expired, CertificateError::ExpiredContext { time, not_after }),
        E::InvalidCertValidity => (Reason::Expired, CertificateError::Expired),
        E::CertNotValidYet { time, not_before } => (
            Reason::NotYetValid,
            CertificateError::NotValidYetContext { time, not_before },
        ),
        E::UnknownIssuer => (Reason::UnknownIssuer, CertificateError::UnknownIssuer),
        E::PathLenConstraintViolated | E::MaximumPathDepthExceeded => {
            (Reason::BadDepth, CertificateError::UnknownIssuer)
        }
        E::CertRevoked => (Reason::Revoked, CertificateError::Revoked),
        E::UnknownRevocationStatus => (Reason::Revoked, CertificateError::UnknownRevocationStatus),
        E::InvalidSignatureForPublicKey | E::SignatureAlgorithmMismatch => {
            (Reason::BadSignature, CertificateError::BadSignature)
        }
        #[allow(deprecated)]
        E::UnsupportedSignatureAlgorithm
        | E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKey
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            (Reason::BadSignature, CertificateError::UnsupportedSignatureAlgorithm)
        }
        #[allow(deprecated)]
        E::RequiredEkuNotFound | E::RequiredEkuNotFoundContext(_) | E::EmptyEkuExtension => {
            (Reason::BadPurpose, CertificateError::InvalidPurpose)
        }
        E::BadDer | E::BadDerTime | E::TrailingData(_) => (Reason::Other, CertificateError::BadEncoding),
        other => (
            Reason::Other,
            CertificateError::Other(rustls::OtherError(std::sync::Arc::new(other))),
        ),
    };
    (reason, cert_error.into())
}

#[cfg(test)]
mod tests {
    //! The pure parts: reasons, notes, the identity map. The policy itself is tested over real
    //! handshakes (tests/integration/handshake.rs, policy.rs, hardening.rs).

    use super::*;

    const ALL: [Reason; Reason::COUNT] = [
        Reason::NoCertificate,
        Reason::UnknownIssuer,
        Reason::BadDepth,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::Revoked,
        Reason::NotAllowed,
        Reason::BadSignature,
        Reason::BadPurpose,
        Reason::Timeout,
        Reason::ProtocolError,
        Reason::Other,
    ];

    #[test]
    fn reasons_have_distinct_labels_and_dense_indices() {
        let mut labels = std::collections::HashSet::new();
        for (i, reason) in ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), i);
            assert_eq!(reason.to_string(), reason.as_str());
            assert!(labels.insert(reason.as_str()), "{reason:?}");
        }
    }

    #[test]
    fn handshake_errors_map_to_reasons_when_the_verifier_recorded_none() {
        let tls = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let cert = |e: CertificateError| tls(e.into());
        assert_eq!(
            Reason::of_handshake_error(&cert(CertificateError::Revoked), Some(Reason::BadDepth)),
            Reason::BadDepth,
            "what the verifier recorded wins"
        );
        for (error, reason) in [
            (tls(rustls::Error::NoCertificatesPresented), Reason::NoCertificate),
            (cert(CertificateError::Expired), Reason::Expired),
            (cert(CertificateError::NotValidYet), Reason::NotYetValid),
            (cert(CertificateError::Revoked), Reason::Revoked),
            (cert(CertificateError::UnknownIssuer), Reason::UnknownIssuer),
            (cert(CertificateError::BadSignature), Reason::BadSignature),
            (cert(CertificateError::InvalidPurpose), Reason::BadPurpose),
            (cert(CertificateError::BadEncoding), Reason::Other),
            (tls(rustls::Error::HandshakeNotComplete), Reason::ProtocolError),
            (std::io::Error::other("connection reset"), Reason::ProtocolError),
        ] {
            assert_eq!(Reason::of_handshake_error(&error, None), reason, "{error}");
        }
    }

    #[tokio::test]
    async fn notes_belong_to_the_handshake_that_wrote_them() {
        assert_eq!(with_notes(|_| ()), None, "no notes outside a handshake");
        let (sealed, notes) = with_handshake_notes(async {
            with_notes(|n| {
                assert!(!n.ticket_sealed());
                n.sealed_ticket();
                n.ticket_sealed()
            })
        })
        .await;
        assert_eq!(sealed, Some(true));
        assert_eq!(notes, Notes::default());
        let ((), notes) = with_handshake_notes(async { record_rejection(Reason::Expired) }).await;
        assert_eq!(notes.rejection, Some(Reason::Expired));
    }

    #[test]
    fn one_identity_per_distinct_leaf() {
        let algorithms = crate::tls::server::provider().signature_verification_algorithms;
        let verifier = ClientVerifier::new(&[], 1, Revocations::default(), AllowLists::default(), false, algorithms);
        let leaf = |name: &str| {
            let key = rcgen::KeyPair::generate().expect("key");
            let params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
            params.self_signed(&key).expect("cert").der().clone()
        };
        let (a, b) = (leaf("a.test"), leaf("b.test"));
        let first = verifier.identity(&a);
        let other = verifier.identity(&b);
        assert_eq!(other.dns_names, vec!["b.test"]);
        assert!(!Arc::ptr_eq(&first, &other));
        assert!(Arc::ptr_eq(&first, &verifier.identity(&a)), "derived again");
    }
}
