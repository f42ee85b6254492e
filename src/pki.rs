//! `originguard pki dev`: a throwaway development PKI. Never for production.
//!
//! One CA (ECDSA P-256, `CA:TRUE, pathlen:0`), a server certificate for `localhost`,
//! `127.0.0.1` and `::1`, and a client certificate issued directly by the CA (depth 1, as
//! Cloudflare's own leaf is). Keys are written mode 0600.

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
pub fn write_dev(dir: &Path, valid_days: i64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create directory", dir.display()))?;
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
