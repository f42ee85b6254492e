//! PEM files to certificates, keys, trust anchors and CRLs. Every error carries the path.
//!
//! These functions are strict where rustls is lenient: a file that yields no certificate, a CA
//! file with one unparsable entry, or a CRL that does not parse is an error here, so a typo never
//! becomes an empty or partial trust store that fails at the first connection.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, TrustAnchor};

/// Cloudflare's Authenticated Origin Pulls CA, embedded so `trust = ["cloudflare"]` needs no file.
pub(crate) const CLOUDFLARE_ORIGIN_PULL_CA: &[u8] =
    include_bytes!("../../certs/cloudflare/authenticated_origin_pull_ca.pem");

/// A file that could not be turned into what it should hold.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct LoadError {
    pub path: PathBuf,
    pub message: String,
}

impl LoadError {
    fn new(path: &Path, message: impl Into<String>) -> Self {
        LoadError {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub(crate) fn at(path: &Path, message: impl Into<String>) -> Self {
        LoadError::new(path, message)
    }
}

/// A trusted client CA: its certificate (for reports) and its webpki trust anchor.
#[derive(Clone, Debug)]
pub struct TrustedCa {
    pub der: CertificateDer<'static>,
    pub anchor: TrustAnchor<'static>,
    /// Where it came from: a path, or `cloudflare (embedded)`.
    pub source: String,
}

/// Reads a PEM certificate chain (leaf first).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let bytes = read(path)?;
    certificates_from_pem(path, &bytes)
}

/// Reads a PKCS#8, SEC1 or PKCS#1 PEM private key.
pub(crate) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, LoadError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => LoadError::new(path, "no private key found (expected a PEM PRIVATE KEY block)"),
        e => LoadError::new(path, format!("invalid private key: {e}")),
    })
}

/// Reads every CA certificate in a PEM file (bundles allowed) as trust anchors.
pub fn trusted_cas(path: &Path) -> Result<Vec<TrustedCa>, LoadError> {
    let bytes = read(path)?;
    trusted_cas_from_pem(path, &bytes, &path.display().to_string())
}

/// Trust anchors from PEM bytes (unit tests elsewhere in the crate).
#[cfg(test)]
pub(crate) fn trusted_cas_for_test(pem: &[u8]) -> Vec<TrustedCa> {
    trusted_cas_from_pem(Path::new("test"), pem, "test").expect("test CA")
}

/// The embedded Cloudflare origin-pull CA.
pub(crate) fn cloudflare_ca() -> Vec<TrustedCa> {
    let name = Path::new("cloudflare");
    trusted_cas_from_pem(name, CLOUDFLARE_ORIGIN_PULL_CA, "cloudflare (embedded)")
        .expect("the embedded Cloudflare CA is a valid PEM certificate (checked by tests)")
}

/// Reads every CRL in a PEM file (parsed and verified later, against the trusted CAs).
pub fn crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, LoadError> {
    let bytes = read(path)?;
    let ders = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LoadError::new(path, format!("invalid PEM: {e}")))?;
    if ders.is_empty() {
        return Err(LoadError::new(path, "no CRL found (expected a PEM X509 CRL block)"));
    }
    Ok(ders)
}

fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|e| LoadError::new(path, format!("cannot read: {e}")))
}

fn certificates_from_pem(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LoadError::new(path, format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(LoadError::new(
            path,
            "no certificates found (expected PEM CERTIFICATE blocks)",
        ));
    }
    Ok(certs)
}

fn trusted_cas_from_pem(path: &Path, bytes: &[u8], source: &str) -> Result<Vec<TrustedCa>, LoadError> {
    certificates_from_pem(path, bytes)?
        .into_iter()
        .enumerate()
        .map(|(i, der)| {
            let anchor = webpki::anchor_from_trusted_cert(&der)
                .map_err(|e| LoadError::new(path, format!("certificate #{}: not a usable CA: {e}", i + 1)))?
                .to_owned();
            // webpki would take any certificate as an anchor; a leaf here verifies no client
            // (clients are issued by a CA, not by a leaf) and locks every one of them out.
            if !is_ca(&der) {
                return Err(LoadError::new(
                    path,
                    format!(
                        "certificate #{} is not a CA (no basicConstraints CA:TRUE): trust the CA that issued \
                         the client certificates, not a client or server certificate",
                        i + 1
                    ),
                ));
            }
            Ok(TrustedCa {
                der,
                anchor,
                source: source.to_string(),
            })
        })
        .collect()
}

/// Whether a certificate says it is a CA (basicConstraints CA:TRUE).
pub(crate) fn is_ca(der: &CertificateDer<'_>) -> bool {
    x509_parser::parse_x509_certificate(der.as_ref())
        .ok()
        .and_then(|(_, cert)| cert.basic_constraints().ok().flatten().map(|bc| bc.value.ca))
        .unwrap_or(false)
}

/// notAfter (Unix seconds) of a certificate, if it parses.
pub(crate) fn not_after(der: &CertificateDer<'_>) -> Option<i64> {
    x509_parser::parse_x509_certificate(der.as_ref())
        .ok()
        .map(|(_, cert)| cert.validity().not_after.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_cloudflare_ca_parses_and_is_the_published_one() {
        let cas = cloudflare_ca();
        assert_eq!(cas.len(), 1);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cas[0].der.as_ref());
        assert_eq!(
            hex::encode_upper(digest),
            "9A1AC2B4BE15F9F27EEE20A734CBA4E9898F61001B3BD7C84B69B56A3E25A2B9"
        );
    }

    #[test]
    fn files_yield_what_they_hold() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["leaf.test".to_string()]).expect("params");
        params.not_after = time::OffsetDateTime::from_unix_timestamp(2_000_000_000).expect("time");
        let leaf = params.self_signed(&key).expect("leaf");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&key).expect("ca");

        let chain = dir.path().join("chain.pem");
        std::fs::write(&chain, format!("{}{}", leaf.pem(), ca.pem())).expect("write");
        let certs = certificates(&chain).expect("chain");
        assert_eq!(certs, vec![leaf.der().clone(), ca.der().clone()]);
        assert_eq!(not_after(&certs[0]), Some(2_000_000_000));
        assert!(!is_ca(&certs[0]));
        assert!(is_ca(&certs[1]));
        let e = trusted_cas(&chain).expect_err("a leaf is no trust anchor");
        assert!(e.to_string().contains("certificate #1 is not a CA"), "{e}");

        let issuer = rcgen::Issuer::new(ca_params, key);
        let crl = rcgen::CertificateRevocationListParams {
            this_update: time::OffsetDateTime::now_utc(),
            next_update: time::OffsetDateTime::now_utc() + time::Duration::days(1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&issuer)
        .expect("crl");
        let path = dir.path().join("crl.pem");
        std::fs::write(&path, crl.pem().expect("pem")).expect("write");
        assert_eq!(crls(&path).expect("crl"), vec![crl.der().clone()]);
    }

    #[test]
    fn garbage_is_an_error_not_an_empty_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").expect("write");
        let e = trusted_cas(&path).expect_err("garbage");
        assert!(e.to_string().contains("no certificates found"), "{e}");
        let e = trusted_cas(&dir.path().join("missing.pem")).expect_err("missing");
        assert!(e.to_string().contains("missing.pem: cannot read"), "{e}");
    }
}
