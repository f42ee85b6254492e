//! Certificate revocation lists, verified once at load and consulted by serial per handshake.
//!
//! webpki's own CRL support re-verifies each CRL's signature on every handshake (measured:
//! ~+100 µs per handshake with a 100-entry CRL) and only reports a forged or mismatched CRL when
//! a client connects. Here a CRL must be issued by one of the policy's trusted CAs and its
//! signature is verified against that CA's key when the policy is built, so a bad CRL fails at
//! startup or reload. A handshake then costs one ordered-map lookup of the serial.
//!
//! Scope: CRLs issued by trusted CAs cover the certificates those CAs issued directly — the
//! whole AOP chain at `verify_depth = 1`. Intermediate CAs' CRLs are not supported. A CRL past
//! its nextUpdate still revokes what it lists; with `client_auth.crl_stale = "refuse"` it also
//! refuses every other client of its CA (revocation status unknown), otherwise `check`, startup
//! and the daily check warn.

use rustls::pki_types::{CertificateRevocationListDer, SignatureVerificationAlgorithm};

use super::load::TrustedCa;

/// The verified CRLs of one policy.
#[derive(Debug, Default)]
pub struct Revocations {
    /// (SPKI contents of the issuing trust anchor, its CRL, its nextUpdate in Unix seconds).
    lists: Vec<(Vec<u8>, webpki::CertRevocationList<'static>, Option<u64>)>,
    /// `crl_stale = "refuse"`.
    pub refuse_stale: bool,
}

impl Revocations {
    /// Verifies `der` (one CRL) against the trusted CAs and adds it. Errors are plain messages;
    /// the caller adds the key and path.
    pub fn add(
        &mut self,
        der: &CertificateRevocationListDer<'_>,
        cas: &[TrustedCa],
        algorithms: &[&dyn SignatureVerificationAlgorithm],
    ) -> Result<(), String> {
        let crl = webpki::OwnedCertRevocationList::from_der(der.as_ref())
            .map(webpki::CertRevocationList::from)
            .map_err(|e| format!("invalid CRL: {e}"))?;
        use x509_parser::prelude::FromDer;
        let (_, parsed) = x509_parser::revocation_list::CertificateRevocationList::from_der(der.as_ref())
            .map_err(|e| format!("invalid CRL: {e}"))?;
        let candidates: Vec<&TrustedCa> = cas
            .iter()
            .filter(|ca| ca.anchor.subject.as_ref() == crl.issuer())
            .collect();
        if candidates.is_empty() {
            return Err("CRL issuer is not one of the trusted CAs".into());
        }
        let signer = candidates
            .into_iter()
            .find(|ca| verify_signature(&parsed, ca, algorithms))
            .ok_or("CRL signature does not verify with the key of the trusted CA that has its issuer name")?;
        let next_update = parsed.next_update().and_then(|t| u64::try_from(t.timestamp()).ok());
        self.lists.push((
            signer.anchor.subject_public_key_info.as_ref().to_vec(),
            crl,
            next_update,
        ));
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }

    /// Whether the certificate with `serial`, issued by the anchor with `issuer_spki`, is revoked.
    pub(crate) fn is_revoked(&self, issuer_spki: &[u8], serial: &[u8]) -> bool {
        self.lists
            .iter()
            .filter(|(spki, _, _)| spki.as_slice() == issuer_spki)
            .any(|(_, crl, _)| matches!(crl.find_serial(serial), Ok(Some(_))))
    }

    /// With `refuse_stale`: whether a CRL of this anchor is past its nextUpdate at `now`.
    pub(crate) fn stale_refusal(&self, issuer_spki: &[u8], now: u64) -> bool {
        self.refuse_stale
            && self
                .lists
                .iter()
                .any(|(spki, _, next)| spki.as_slice() == issuer_spki && next.is_some_and(|n| now > n))
    }

    /// The earliest nextUpdate of this anchor's CRLs, when stale CRLs refuse (bounds how long a
    /// verified chain may stay cached).
    pub(crate) fn refuse_after(&self, issuer_spki: &[u8]) -> Option<u64> {
        self.refuse_stale
            .then(|| {
                self.lists
                    .iter()
                    .filter(|(spki, _, _)| spki.as_slice() == issuer_spki)
                    .filter_map(|(_, _, next)| *next)
                    .min()
            })
            .flatten()
    }

    /// nextUpdate (Unix seconds) of every CRL past it at `now`, for warnings.
    pub(crate) fn stale(&self, now: u64) -> Vec<u64> {
        self.lists
            .iter()
            .filter_map(|(_, _, next)| next.filter(|n| now > *n))
            .collect()
    }
}

/// Whether the CRL's signature verifies with the CA's key, under an algorithm the provider
/// offers for that key type (the same list rustls verifies handshakes with).
fn verify_signature(
    crl: &x509_parser::revocation_list::CertificateRevocationList<'_>,
    ca: &TrustedCa,
    algorithms: &[&dyn SignatureVerificationAlgorithm],
) -> bool {
    use x509_parser::prelude::FromDer;
    let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(ca.der.as_ref()) else {
        return false;
    };
    let spki = cert.public_key();
    let (Some(key_algorithm), Some(signature_algorithm)) =
        (algorithm_id(&spki.algorithm), algorithm_id(&crl.signature_algorithm))
    else {
        return false;
    };
    if crl.signature_value.unused_bits != 0 || spki.subject_public_key.unused_bits != 0 {
        return false;
    }
    algorithms
        .iter()
        .filter(|alg| {
            alg.signature_alg_id().as_ref() == signature_algorithm.as_slice()
                && alg.public_key_alg_id().as_ref() == key_algorithm.as_slice()
        })
        .any(|alg| {
            alg.verify_signature(
                &spki.subject_public_key.data,
                crl.tbs_cert_list.as_ref(),
                &crl.signature_value.data,
            )
            .is_ok()
        })
}

/// An AlgorithmIdentifier's DER contents (OID and parameters, without the SEQUENCE header):
/// the form rustls names algorithms in.
fn algorithm_id(algorithm: &x509_parser::x509::AlgorithmIdentifier<'_>) -> Option<Vec<u8>> {
    use x509_parser::asn1_rs::ToDer;
    let mut out = algorithm.algorithm.to_der_vec().ok()?;
    if let Some(parameters) = &algorithm.parameters {
        out.extend(parameters.to_der_vec().ok()?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, IsCa, KeyPair, KeyUsagePurpose,
        RevokedCertParams, SerialNumber,
    };

    use super::*;

    /// A CA of `alg` and a CRL it signed revoking serial 7, valid for another week.
    fn ca_and_crl(alg: &'static rcgen::SignatureAlgorithm) -> (TrustedCa, Vec<u8>) {
        ca_and_crl_until(alg, time::OffsetDateTime::now_utc() + time::Duration::days(7))
    }

    fn ca_and_crl_until(
        alg: &'static rcgen::SignatureAlgorithm,
        next_update: time::OffsetDateTime,
    ) -> (TrustedCa, Vec<u8>) {
        let key = KeyPair::generate_for(alg).expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA");
        let pem = cert.pem();
        let ca = super::super::load::trusted_cas_for_test(pem.as_bytes()).remove(0);
        let issuer = rcgen::Issuer::new(params, key);
        let now = time::OffsetDateTime::now_utc();
        let crl = CertificateRevocationListParams {
            this_update: next_update.min(now) - time::Duration::days(1),
            next_update,
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from(7u64),
                revocation_time: now - time::Duration::hours(1),
                reason_code: None,
                invalidity_date: None,
            }],
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&issuer)
        .expect("CRL");
        (ca, crl.der().to_vec())
    }

    #[test]
    fn crl_signatures_verify_for_every_key_type_and_a_flipped_bit_fails() {
        let algorithms = crate::tls::server::provider().signature_verification_algorithms.all;
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
            &rcgen::PKCS_RSA_SHA256,
            &rcgen::PKCS_ML_DSA_44,
        ] {
            let (ca, der) = ca_and_crl(alg);
            let mut revocations = Revocations::default();
            revocations
                .add(
                    &CertificateRevocationListDer::from(der.clone()),
                    std::slice::from_ref(&ca),
                    algorithms,
                )
                .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            let spki = ca.anchor.subject_public_key_info.as_ref();
            assert!(revocations.is_revoked(spki, &[7]));
            assert!(!revocations.is_revoked(spki, &[8]), "only the listed serial");
            assert!(!revocations.is_revoked(b"another CA", &[7]), "only this CA's serials");

            let mut forged = der;
            let last = forged.len() - 1;
            forged[last] ^= 1;
            let e = Revocations::default()
                .add(&CertificateRevocationListDer::from(forged), &[ca], algorithms)
                .expect_err("forged");
            assert!(e.contains("does not verify"), "{alg:?}: {e}");
        }
    }

    #[test]
    fn a_stale_crl_is_reported_and_refuses_only_when_configured() {
        let algorithms = crate::tls::server::provider().signature_verification_algorithms.all;
        let now = time::OffsetDateTime::now_utc();
        let next_update = now - time::Duration::days(2);
        let (ca, der) = ca_and_crl_until(&rcgen::PKCS_ECDSA_P256_SHA256, next_update);
        let spki = ca.anchor.subject_public_key_info.as_ref().to_vec();
        let next = u64::try_from(next_update.unix_timestamp()).expect("after 1970");
        let unix_now = u64::try_from(now.unix_timestamp()).expect("after 1970");
        for refuse in [false, true] {
            let mut revocations = Revocations {
                refuse_stale: refuse,
                ..Revocations::default()
            };
            assert!(revocations.is_empty());
            revocations
                .add(
                    &CertificateRevocationListDer::from(der.clone()),
                    std::slice::from_ref(&ca),
                    algorithms,
                )
                .expect("a stale CRL still loads");
            assert!(!revocations.is_empty());
            assert_eq!(revocations.stale(unix_now), vec![next]);
            assert_eq!(
                revocations.stale(next),
                Vec::<u64>::new(),
                "not stale at nextUpdate itself"
            );
            assert_eq!(revocations.stale_refusal(&spki, unix_now), refuse);
            assert!(!revocations.stale_refusal(&spki, next), "fresh until nextUpdate");
            assert!(!revocations.stale_refusal(b"another CA", unix_now));
            assert_eq!(revocations.refuse_after(&spki), refuse.then_some(next));
            assert_eq!(revocations.refuse_after(b"another CA"), None);
            // A stale CRL still revokes what it lists.
            assert!(revocations.is_revoked(&spki, &[7]));
        }
    }
}
