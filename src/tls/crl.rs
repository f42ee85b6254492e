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
        let candidates: Vec<&TrustedCa> = cas
            .iter()
            .filter(|ca| ca.anchor.subject.as_ref() == crl.issuer())
            .collect();
        if candidates.is_empty() {
            return Err("CRL issuer is not one of the trusted CAs".into());
        }
        let signer = candidates
            .into_iter()
            .find(|ca| verify_signature(der.as_ref(), ca.anchor.subject_public_key_info.as_ref(), algorithms))
            .ok_or("CRL signature does not verify with the key of the trusted CA that has its issuer name")?;
        use x509_parser::prelude::FromDer;
        let next_update = x509_parser::revocation_list::CertificateRevocationList::from_der(der.as_ref())
            .ok()
            .and_then(|(_, parsed)| parsed.next_update())
            .and_then(|t| u64::try_from(t.timestamp()).ok());
        self.lists.push((
            signer.anchor.subject_public_key_info.as_ref().to_vec(),
            crl,
            next_update,
        ));
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }

    /// Whether the certificate with `serial`, issued by the anchor with `issuer_spki`, is revoked.
    pub fn is_revoked(&self, issuer_spki: &[u8], serial: &[u8]) -> bool {
        self.lists
            .iter()
            .filter(|(spki, _, _)| spki.as_slice() == issuer_spki)
            .any(|(_, crl, _)| matches!(crl.find_serial(serial), Ok(Some(_))))
    }

    /// With `refuse_stale`: whether a CRL of this anchor is past its nextUpdate at `now`.
    pub fn stale_refusal(&self, issuer_spki: &[u8], now: u64) -> bool {
        self.refuse_stale
            && self
                .lists
                .iter()
                .any(|(spki, _, next)| spki.as_slice() == issuer_spki && next.is_some_and(|n| now > n))
    }

    /// The earliest nextUpdate of this anchor's CRLs, when stale CRLs refuse (bounds how long a
    /// verified chain may stay cached).
    pub fn refuse_after(&self, issuer_spki: &[u8]) -> Option<u64> {
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
    pub fn stale(&self, now: u64) -> Vec<u64> {
        self.lists
            .iter()
            .filter_map(|(_, _, next)| next.filter(|n| now > *n))
            .collect()
    }
}

/// Verifies the signature of a signed X.509 structure (`SEQUENCE { tbs, algorithm, signature }`)
/// with the public key in `spki` (the contents of a SubjectPublicKeyInfo SEQUENCE).
fn verify_signature(signed: &[u8], spki: &[u8], algorithms: &[&dyn SignatureVerificationAlgorithm]) -> bool {
    let Some((tbs, algorithm, signature)) = split_signed(signed) else {
        return false;
    };
    let Some((key_algorithm, public_key)) = split_spki(spki) else {
        return false;
    };
    algorithms
        .iter()
        .filter(|alg| alg.signature_alg_id().as_ref() == algorithm && alg.public_key_alg_id().as_ref() == key_algorithm)
        .any(|alg| alg.verify_signature(public_key, tbs, signature).is_ok())
}

/// -> (tbs TLV, AlgorithmIdentifier contents, signature bits).
fn split_signed(der: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (tag, outer, rest) = read_tlv(der)?;
    if tag != 0x30 || !rest.is_empty() {
        return None;
    }
    let tbs_len = outer.len() - read_tlv(outer)?.2.len();
    let (tbs, after_tbs) = outer.split_at(tbs_len);
    let (tag, algorithm, after_alg) = read_tlv(after_tbs)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, bits, rest) = read_tlv(after_alg)?;
    if tag != 0x03 || !rest.is_empty() {
        return None;
    }
    Some((tbs, algorithm, bit_string(bits)?))
}

/// SubjectPublicKeyInfo contents -> (AlgorithmIdentifier contents, public key bits).
fn split_spki(spki: &[u8]) -> Option<(&[u8], &[u8])> {
    let (tag, algorithm, rest) = read_tlv(spki)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, bits, rest) = read_tlv(rest)?;
    if tag != 0x03 || !rest.is_empty() {
        return None;
    }
    Some((algorithm, bit_string(bits)?))
}

fn bit_string(contents: &[u8]) -> Option<&[u8]> {
    match contents.split_first() {
        Some((0, bits)) => Some(bits),
        _ => None,
    }
}

/// One DER TLV with a single-byte tag: (tag, contents, remaining input).
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        (bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b)), rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlv_reader_handles_long_lengths_and_rejects_truncation() {
        let mut long = vec![0x04, 0x82, 0x01, 0x00];
        long.extend(std::iter::repeat_n(7u8, 256));
        let (tag, contents, rest) = read_tlv(&long).expect("long form");
        assert_eq!((tag, contents.len(), rest.len()), (0x04, 256, 0));
        assert!(read_tlv(&long[..100]).is_none());
        assert!(read_tlv(&[0x30, 0x80]).is_none(), "indefinite length is not DER");
        assert!(read_tlv(&[]).is_none());
        assert!(split_signed(&[0x30, 0x00]).is_none());
    }
}
