//! Shared bench fixtures: certificates made with rcgen, configs built through originguard's own
//! loader (so the benches measure the production ServerConfig and verifier).

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use originguard::config::Config;
use originguard::tls::PolicySet;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, RsaKeySize,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore};

/// Client certificate flavours.
#[derive(Clone, Copy, Debug)]
pub enum Flavour {
    /// P-256 CA and leaf.
    Ecdsa,
    /// As Cloudflare's origin-pull chain: RSA-4096 CA (SHA-512), RSA-2048 leaf.
    CloudflareLike,
    /// ML-DSA-44 CA and leaf (post-quantum AOP certificates).
    MlDsa44,
}

pub struct Pki {
    pub dir: tempfile::TempDir,
    pub server_ca: CertificateDer<'static>,
    pub client_chain: Vec<CertificateDer<'static>>,
    pub client_key: Vec<u8>,
}

fn ca(cn: &str, key: KeyPair) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, key).expect("CA")
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: Vec<String>,
    eku: ExtendedKeyUsagePurpose,
    key: &KeyPair,
) -> CertificateDer<'static> {
    let mut params = CertificateParams::new(names).expect("names");
    params.distinguished_name.push(DnType::CommonName, "leaf");
    params.extended_key_usages = vec![eku];
    params.signed_by(key, issuer).expect("leaf").der().clone()
}

impl Pki {
    pub fn new(flavour: Flavour) -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let server_ca = ca("bench server CA", KeyPair::generate().expect("key"));
        let server_key = KeyPair::generate().expect("key");
        let server = leaf(
            &server_ca,
            vec!["localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            &server_key,
        );
        let (client_ca, client_key) = match flavour {
            Flavour::Ecdsa => (
                ca("bench client CA", KeyPair::generate().expect("key")),
                KeyPair::generate().expect("key"),
            ),
            Flavour::CloudflareLike => (
                ca(
                    "bench origin-pull CA",
                    KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA512, RsaKeySize::_4096).expect("rsa 4096"),
                ),
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048).expect("rsa 2048"),
            ),
            Flavour::MlDsa44 => (
                ca(
                    "bench ML-DSA CA",
                    KeyPair::generate_for(&rcgen::PKCS_ML_DSA_44).expect("ml-dsa-44"),
                ),
                KeyPair::generate_for(&rcgen::PKCS_ML_DSA_44).expect("ml-dsa-44"),
            ),
        };
        let client = leaf(
            &client_ca,
            vec!["client.bench".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
            &client_key,
        );
        write(dir.path(), "server.pem", &pem(&server));
        write(dir.path(), "server.key", &server_key.serialize_pem());
        write(dir.path(), "client-ca.pem", &client_ca.pem());
        Pki {
            dir,
            server_ca: server_ca.der().clone(),
            client_chain: vec![client],
            client_key: client_key.serialize_der(),
        }
    }

    /// The policy set `serve` would build for this PKI (`extra` is appended to [client_auth]).
    pub fn policies(&self, client_auth_extra: &str, tls_extra: &str) -> (Config, PolicySet) {
        let d = self.dir.path().display();
        let text = format!(
            "[listener]\naddress = \"127.0.0.1:0\"\n[tls]\ncertificate = \"{d}/server.pem\"\nprivate_key = \"{d}/server.key\"\n{tls_extra}\n\
             [client_auth]\ntrust = [\"{d}/client-ca.pem\"]\n{client_auth_extra}\n[upstream]\nurl = \"http://127.0.0.1:9\"\n\
             [log]\naccess_log = false\n"
        );
        let config = Config::from_toml(&self.dir.path().join("bench.toml"), &text).expect("config");
        let policies = PolicySet::build(&config).expect("policies");
        (config, policies)
    }

    pub fn client_config(&self, resume: bool) -> Arc<ClientConfig> {
        self.client_config_with_groups(resume, None)
    }

    /// A client offering `groups` in order (a key share for the first only), or rustls' default
    /// (X25519MLKEM768 first).
    pub fn client_config_with_groups(
        &self,
        resume: bool,
        groups: Option<Vec<&'static dyn rustls::crypto::SupportedKxGroup>>,
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.server_ca.clone()).expect("root");
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        if let Some(groups) = groups {
            provider.kx_groups = groups;
        }
        let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(
                self.client_chain.clone(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.client_key.clone())),
            )
            .expect("client cert");
        if !resume {
            config.resumption = rustls::client::Resumption::disabled();
        }
        Arc::new(config)
    }
}

fn pem(der: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

fn write(dir: &Path, name: &str, contents: &str) {
    std::fs::write(dir.join(name), contents).expect("write");
}
