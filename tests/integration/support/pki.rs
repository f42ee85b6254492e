//! Per-test certificates with rcgen: roots, intermediates and leaves with every defect the
//! verifier must catch (expired, not yet valid, CA:TRUE, wrong EKU, revoked).

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType,
    SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

/// A certificate authority whose key we hold.
pub struct Ca {
    pub issuer: Issuer<'static, KeyPair>,
    pub der: CertificateDer<'static>,
    pub pem: String,
    /// Certificates between this CA and its root, nearest first (empty for a root).
    pub chain: Vec<CertificateDer<'static>>,
}

/// A leaf certificate and its key.
pub struct ClientCert {
    /// Leaf first, then the issuing intermediates (what a client sends).
    pub chain: Vec<CertificateDer<'static>>,
    pub pem: String,
    pub key_pem: String,
    key_der: Vec<u8>,
}

impl ClientCert {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }
}

/// What to put in a leaf.
pub struct Leaf {
    pub cn: String,
    pub sans: Vec<String>,
    pub uris: Vec<String>,
    pub ekus: Vec<ExtendedKeyUsagePurpose>,
    pub is_ca: bool,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub serial: Option<u64>,
    /// KeyUsage of a non-CA leaf; `None`: digitalSignature alone.
    pub key_usages: Option<Vec<KeyUsagePurpose>>,
    /// A second CN attribute after `cn`, in its own RDN (at most one).
    pub extra_cns: Vec<String>,
}

impl Leaf {
    pub fn client(cn: &str) -> Leaf {
        let now = OffsetDateTime::now_utc();
        Leaf {
            cn: cn.to_string(),
            sans: vec![format!("{cn}.clients.test")],
            uris: vec![format!("spiffe://clients.test/{cn}")],
            ekus: vec![ExtendedKeyUsagePurpose::ClientAuth],
            is_ca: false,
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(90),
            serial: None,
            key_usages: None,
            extra_cns: Vec::new(),
        }
    }

    pub fn server() -> Leaf {
        Leaf {
            sans: vec![
                "localhost".into(),
                "127.0.0.1".into(),
                "::1".into(),
                "a.example".into(),
                "b.example".into(),
                "*.wild.example".into(),
                "other.example".into(),
                "deep.sub.wild.example".into(),
            ],
            uris: vec![],
            ekus: vec![ExtendedKeyUsagePurpose::ServerAuth],
            ..Leaf::client("localhost")
        }
    }
}

impl Ca {
    pub fn root(cn: &str) -> Ca {
        Ca::root_valid_for(cn, Duration::days(365))
    }

    /// A root CA that expires `validity` from now.
    pub fn root_valid_for(cn: &str, validity: Duration) -> Ca {
        Ca::root_with(cn, validity, KeyPair::generate().expect("key"))
    }

    /// A root CA whose key uses `alg` (e.g. `rcgen::PKCS_ML_DSA_44`).
    pub fn root_alg(cn: &str, alg: &'static rcgen::SignatureAlgorithm) -> Ca {
        Ca::root_with(cn, Duration::days(365), KeyPair::generate_for(alg).expect("key"))
    }

    fn root_with(cn: &str, validity: Duration, key: KeyPair) -> Ca {
        let mut params = ca_params(cn);
        params.not_after = OffsetDateTime::now_utc() + validity;
        let cert = params.self_signed(&key).expect("self-signed CA");
        Ca {
            der: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
            chain: Vec::new(),
        }
    }

    /// An intermediate CA issued by this one.
    pub fn intermediate(&self, cn: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let params = ca_params(cn);
        let cert = params.signed_by(&key, &self.issuer).expect("intermediate");
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.chain.iter().cloned());
        Ca {
            der: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
            chain,
        }
    }

    pub fn leaf(&self, leaf: Leaf) -> ClientCert {
        self.leaf_with(leaf, KeyPair::generate().expect("key"))
    }

    /// A leaf whose key uses `alg` (e.g. `rcgen::PKCS_ML_DSA_65`).
    pub fn leaf_alg(&self, leaf: Leaf, alg: &'static rcgen::SignatureAlgorithm) -> ClientCert {
        self.leaf_with(leaf, KeyPair::generate_for(alg).expect("key"))
    }

    fn leaf_with(&self, leaf: Leaf, key: KeyPair) -> ClientCert {
        let mut params = CertificateParams::new(leaf.sans).expect("sans");
        for uri in leaf.uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.try_into().expect("ia5 uri")));
        }
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, leaf.cn);
        // rcgen keeps one value per type: a second CN goes in under CN's OID as a custom type.
        for cn in leaf.extra_cns.into_iter().take(1) {
            params
                .distinguished_name
                .push(DnType::CustomDnType(vec![2, 5, 4, 3]), cn);
        }
        params.extended_key_usages = leaf.ekus;
        params.not_before = leaf.not_before;
        params.not_after = leaf.not_after;
        if leaf.is_ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        } else {
            params.key_usages = leaf.key_usages.unwrap_or(vec![KeyUsagePurpose::DigitalSignature]);
        }
        if let Some(serial) = leaf.serial {
            params.serial_number = Some(SerialNumber::from(serial));
        }
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.chain.iter().cloned());
        ClientCert {
            chain,
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }

    /// A PEM CRL from this CA revoking `serials`.
    pub fn crl(&self, serials: &[u64]) -> String {
        self.crl_until(serials, OffsetDateTime::now_utc() + Duration::days(7))
    }

    /// A PEM CRL from this CA revoking `serials`, with `next_update` (in the past: stale).
    pub fn crl_until(&self, serials: &[u64], next_update: OffsetDateTime) -> String {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: next_update.min(now) - Duration::days(8),
            next_update,
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|&s| RevokedCertParams {
                    serial_number: SerialNumber::from(s),
                    revocation_time: now - Duration::minutes(30),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).expect("crl").pem().expect("crl pem")
    }
}

fn ca_params(cn: &str) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(365);
    params
}
