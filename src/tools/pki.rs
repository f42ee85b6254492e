//! Certificate helpers.
//!
//! - `pki dev`: a throwaway development PKI, never for production. One CA (ECDSA P-256,
//!   `CA:TRUE, pathlen:0`), a server certificate for `localhost`, `127.0.0.1` and `::1`, and a
//!   client certificate issued directly by the CA (depth 1, as Cloudflare's own leaf is).
//! - `pki custom-ca` / `pki client`: the customer CA for zone-level and per-hostname AOP and a
//!   client leaf issued directly by it, as Cloudflare's recipe makes them with openssl.
//!
//! Keys are written mode 0600.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// The files `write_dev` creates, in order.
pub const DEV_FILES: [&str; 6] = [
    "ca.pem",
    "ca.key",
    "server.pem",
    "server.key",
    "client.pem",
    "client.key",
];

/// Writes `ca.pem ca.key server.pem server.key client.pem client.key` into `dir` (created if
/// missing). Certificates are valid from an hour ago for `valid_days`.
pub fn write_dev(dir: &Path, valid_days: i64, force: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create directory", dir.display()))?;
    if !force {
        if let Some(existing) = DEV_FILES.iter().map(|f| dir.join(f)).find(|p| p.exists()) {
            anyhow::bail!(
                "{}: already exists; not overwriting a PKI (a CA key above all) without --force",
                existing.display()
            );
        }
    }
    let not_before = OffsetDateTime::now_utc() - Duration::hours(1);
    let not_after = not_before + Duration::days(valid_days);

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = name("originguard development CA (not for production)");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let leaf = |cn: &str, sans: Vec<String>, eku: ExtendedKeyUsagePurpose| -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name = name(cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![eku];
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (server_pem, server_key) = leaf(
        "localhost",
        vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (client_pem, client_key) = leaf(
        "originguard-dev-client",
        vec!["client.originguard.invalid".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;

    write(dir, "ca.pem", &ca_cert.pem(), false)?;
    write(dir, "ca.key", &issuer.key().serialize_pem(), true)?;
    write(dir, "server.pem", &server_pem, false)?;
    write(dir, "server.key", &server_key, true)?;
    write(dir, "client.pem", &client_pem, false)?;
    write(dir, "client.key", &client_key, true)?;
    Ok(())
}

/// Parses a PEM key: any classical type rcgen recognises, or ML-DSA (which rcgen 0.14 cannot
/// load back, so it is wrapped here around aws-lc-rs' ML-DSA key pair).
fn parse_key(pem: &str) -> anyhow::Result<CaKey> {
    if let Ok(key) = KeyPair::from_pem(pem) {
        return Ok(CaKey::Rcgen(key));
    }
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("not a PEM private key: {e}"))?;
    let candidates: [(
        &'static aws_lc_rs::signature::PqdsaSigningAlgorithm,
        &'static rcgen::SignatureAlgorithm,
    ); 3] = [
        (&aws_lc_rs::signature::ML_DSA_44_SIGNING, &rcgen::PKCS_ML_DSA_44),
        (&aws_lc_rs::signature::ML_DSA_65_SIGNING, &rcgen::PKCS_ML_DSA_65),
        (&aws_lc_rs::signature::ML_DSA_87_SIGNING, &rcgen::PKCS_ML_DSA_87),
    ];
    for (signing, alg) in candidates {
        if let Ok(pair) = aws_lc_rs::signature::PqdsaKeyPair::from_pkcs8(signing, der.secret_der()) {
            use aws_lc_rs::signature::KeyPair as _;
            let public = pair.public_key().as_ref().to_vec();
            return Ok(CaKey::MlDsa {
                pair,
                signing,
                alg,
                public,
            });
        }
    }
    anyhow::bail!("not a private key of a supported type (RSA, ECDSA, ML-DSA)")
}

/// A CA's signing key as loaded from `ca.key`.
enum CaKey {
    Rcgen(KeyPair),
    MlDsa {
        pair: aws_lc_rs::signature::PqdsaKeyPair,
        signing: &'static aws_lc_rs::signature::PqdsaSigningAlgorithm,
        alg: &'static rcgen::SignatureAlgorithm,
        public: Vec<u8>,
    },
}

impl rcgen::PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        match self {
            CaKey::Rcgen(key) => key.der_bytes(),
            CaKey::MlDsa { public, .. } => public,
        }
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            CaKey::Rcgen(key) => key.algorithm(),
            CaKey::MlDsa { alg, .. } => alg,
        }
    }
}

impl rcgen::SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            CaKey::Rcgen(key) => key.sign(msg),
            CaKey::MlDsa { pair, signing, .. } => {
                let mut signature = vec![0u8; signing.signature_len()];
                let n = pair
                    .sign(msg, &mut signature)
                    .map_err(|_| rcgen::Error::RingUnspecified)?;
                signature.truncate(n);
                Ok(signature)
            }
        }
    }
}

/// Key algorithms for `pki custom-ca` and `pki client`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyType {
    Rsa4096,
    Rsa2048,
    P256,
    /// ML-DSA-44 (FIPS 204), post-quantum: Cloudflare accepts ML-DSA certificates for
    /// zone-level and per-hostname AOP.
    #[value(name = "ml-dsa-44")]
    MlDsa44,
    #[value(name = "ml-dsa-65")]
    MlDsa65,
    #[value(name = "ml-dsa-87")]
    MlDsa87,
}

impl KeyType {
    fn generate(self) -> anyhow::Result<KeyPair> {
        Ok(match self {
            KeyType::Rsa4096 => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096)?,
            KeyType::Rsa2048 => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)?,
            KeyType::P256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
            KeyType::MlDsa44 => KeyPair::generate_for(&rcgen::PKCS_ML_DSA_44)?,
            KeyType::MlDsa65 => KeyPair::generate_for(&rcgen::PKCS_ML_DSA_65)?,
            KeyType::MlDsa87 => KeyPair::generate_for(&rcgen::PKCS_ML_DSA_87)?,
        })
    }
}

/// Writes `ca.pem` and `ca.key`: a CA for Authenticated Origin Pulls client certificates
/// (`CA:TRUE, pathlen:0`, keyCertSign + cRLSign). Returns the path of `ca.pem`.
pub fn write_custom_ca(dir: &Path, key_type: KeyType, common_name: &str, valid_days: i64) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create directory", dir.display()))?;
    for file in ["ca.pem", "ca.key"] {
        if dir.join(file).exists() {
            anyhow::bail!(
                "{}: already exists; refusing to overwrite a CA",
                dir.join(file).display()
            );
        }
    }
    let not_before = OffsetDateTime::now_utc() - Duration::hours(1);
    let key = key_type.generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = not_before;
    params.not_after = not_before + Duration::days(valid_days);
    let cert = params.self_signed(&key)?;
    let path = write(dir, "ca.pem", &cert.pem(), false)?;
    write(dir, "ca.key", &key.serialize_pem(), true)?;
    Ok(path)
}

/// Writes `client.pem` and `client.key` into `out`: a leaf issued directly by the CA in `ca_dir`
/// (`ca.pem`, `ca.key`), EKU clientAuth — what Cloudflare presents for zone-level or
/// per-hostname AOP once uploaded.
pub fn write_client(
    ca_dir: &Path,
    out: &Path,
    key_type: KeyType,
    common_name: &str,
    valid_days: i64,
) -> anyhow::Result<()> {
    let ca_pem = std::fs::read_to_string(ca_dir.join("ca.pem"))
        .with_context(|| format!("{}: cannot read", ca_dir.join("ca.pem").display()))?;
    let ca_key = std::fs::read_to_string(ca_dir.join("ca.key"))
        .with_context(|| format!("{}: cannot read", ca_dir.join("ca.key").display()))?;
    let ca_key = parse_key(&ca_key).with_context(|| format!("{}: invalid key", ca_dir.join("ca.key").display()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .with_context(|| format!("{}: invalid CA certificate", ca_dir.join("ca.pem").display()))?;
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create directory", out.display()))?;
    let not_before = OffsetDateTime::now_utc() - Duration::hours(1);
    let key = key_type.generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, common_name);
    // keyEncipherment only where the key can encipher (RSA); ML-DSA and ECDSA keys only sign.
    params.key_usages = match key_type {
        KeyType::Rsa4096 | KeyType::Rsa2048 => {
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment]
        }
        _ => vec![KeyUsagePurpose::DigitalSignature],
    };
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = not_before;
    params.not_after = not_before + Duration::days(valid_days);
    let cert = params.signed_by(&key, &issuer)?;
    write(out, "client.pem", &cert.pem(), false)?;
    write(out, "client.key", &key.serialize_pem(), true)?;
    Ok(())
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "originguard dev");
    dn.push(DnType::CommonName, cn);
    dn
}

fn write(dir: &Path, file: &str, contents: &str, secret: bool) -> anyhow::Result<PathBuf> {
    let path = dir.join(file);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(&path)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(path)
}
