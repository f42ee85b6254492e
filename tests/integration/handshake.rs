//! Who gets in: every accept and reject case of the client-certificate policy, over real
//! handshakes, with the alert the client reads and nothing reaching the backend.

use std::sync::Arc;

use rustls::pki_types::UnixTime;
use rustls::AlertDescription;
use time::{Duration, OffsetDateTime};

use crate::support::*;
use originguard::tls::{load, ClientVerifier, Reason, Revocations};

/// Spawns a proxy trusting the fixture's client CA (plus config changes), and returns the
/// alert `client` receives, asserting nothing reached the backend when refused.
async fn outcome(
    fx: &Fixture,
    client: Option<&ClientCert>,
    change: impl FnOnce(&mut originguard::config::Config),
) -> Option<AlertDescription> {
    let backend = Backend::tcp().await;
    let mut config = fx.config(&backend.url());
    change(&mut config);
    let proxy = spawn_proxy(config).await;
    let alert = refusal(proxy.addr, fx.client_config(client)).await;
    match alert {
        Some(_) => assert_eq!(backend.count(), 0, "a refused client reached the backend"),
        None => assert_eq!(backend.count(), 1, "an accepted client's request was forwarded"),
    }
    proxy.stop().await;
    alert
}

#[tokio::test]
async fn accepts_leaf_issued_directly_by_trusted_ca() {
    let fx = Fixture::new();
    assert_eq!(outcome(&fx, Some(&fx.client), |_| {}).await, None);
}

#[tokio::test]
async fn accepts_over_tls12_too() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.config(&backend.url())).await;
    let config = client_config(
        &fx.server_ca.der,
        Some(&fx.client),
        &[&rustls::version::TLS12],
        &[b"http/1.1"],
    );
    let (status, _, _) = request(proxy.addr, config, get("/")).await;
    assert_eq!(status, 200);
    let config = client_config(&fx.server_ca.der, None, &[&rustls::version::TLS12], &[b"http/1.1"]);
    assert!(refusal(proxy.addr, config).await.is_some());
    assert_eq!(backend.count(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn min_version_13_refuses_tls12_clients() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let mut config = fx.config(&backend.url());
    config.tls.min_version = originguard::config::MinVersion::Tls13;
    let proxy = spawn_proxy(config).await;
    let config = client_config(
        &fx.server_ca.der,
        Some(&fx.client),
        &[&rustls::version::TLS12],
        &[b"http/1.1"],
    );
    assert_eq!(
        refusal(proxy.addr, config).await,
        Some(AlertDescription::ProtocolVersion)
    );
    proxy.stop().await;
}

#[tokio::test]
async fn rejects_client_without_certificate() {
    let fx = Fixture::new();
    assert_eq!(
        outcome(&fx, None, |_| {}).await,
        Some(AlertDescription::CertificateRequired)
    );
}

#[tokio::test]
async fn rejects_leaf_from_untrusted_issuer() {
    let fx = Fixture::new();
    let stranger = Ca::root("stranger CA").leaf(Leaf::client("intruder"));
    assert_eq!(
        outcome(&fx, Some(&stranger), |_| {}).await,
        Some(AlertDescription::UnknownCA)
    );
}

#[tokio::test]
async fn rejects_self_signed_leaf_with_the_trusted_ca_name() {
    let fx = Fixture::new();
    // Same subject as the trusted CA, different key: the signature cannot verify.
    let impostor = Ca::root("test client CA").leaf(Leaf::client("impostor"));
    assert_eq!(
        outcome(&fx, Some(&impostor), |_| {}).await,
        Some(AlertDescription::DecryptError)
    );
}

#[tokio::test]
async fn rejects_leaf_signed_by_intermediate_at_depth_1() {
    let fx = Fixture::new();
    let via_intermediate = fx.client_ca.intermediate("intermediate").leaf(Leaf::client("deep"));
    assert_eq!(via_intermediate.chain.len(), 2, "the client sends its intermediate");
    assert_eq!(
        outcome(&fx, Some(&via_intermediate), |_| {}).await,
        Some(AlertDescription::UnknownCA)
    );
}

#[tokio::test]
async fn accepts_leaf_signed_by_intermediate_at_depth_2_but_not_two_intermediates() {
    let fx = Fixture::new();
    let one = fx.client_ca.intermediate("i1");
    let leaf = one.leaf(Leaf::client("deep"));
    assert_eq!(
        outcome(&fx, Some(&leaf), |c| c.client_auth.verify_depth = 2).await,
        None
    );
    let two = one.intermediate("i2").leaf(Leaf::client("deeper"));
    assert_eq!(
        outcome(&fx, Some(&two), |c| c.client_auth.verify_depth = 2).await,
        Some(AlertDescription::UnknownCA)
    );
    assert_eq!(outcome(&fx, Some(&two), |c| c.client_auth.verify_depth = 3).await, None);
}

#[tokio::test]
async fn rejects_expired_and_not_yet_valid_leaves() {
    let fx = Fixture::new();
    let now = OffsetDateTime::now_utc();
    let expired = fx.client_ca.leaf(Leaf {
        not_before: now - Duration::days(10),
        not_after: now - Duration::days(1),
        ..Leaf::client("expired")
    });
    assert_eq!(
        outcome(&fx, Some(&expired), |_| {}).await,
        Some(AlertDescription::CertificateExpired)
    );
    let future = fx.client_ca.leaf(Leaf {
        not_before: now + Duration::days(1),
        not_after: now + Duration::days(10),
        ..Leaf::client("future")
    });
    assert_eq!(
        outcome(&fx, Some(&future), |_| {}).await,
        Some(AlertDescription::CertificateExpired)
    );
}

#[tokio::test]
async fn rejects_ca_certificate_used_as_leaf() {
    let fx = Fixture::new();
    let ca_leaf = fx.client_ca.leaf(Leaf {
        is_ca: true,
        ..Leaf::client("sub-ca")
    });
    assert_eq!(
        outcome(&fx, Some(&ca_leaf), |_| {}).await,
        Some(AlertDescription::CertificateUnknown)
    );
}

#[tokio::test]
async fn rejects_leaf_whose_eku_excludes_client_auth() {
    let fx = Fixture::new();
    let server_only = fx.client_ca.leaf(Leaf {
        ekus: vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth],
        ..Leaf::client("server-only")
    });
    assert_eq!(
        outcome(&fx, Some(&server_only), |_| {}).await,
        Some(AlertDescription::UnsupportedCertificate)
    );
}

#[tokio::test]
async fn accepts_leaf_without_eku_like_cloudflares() {
    let fx = Fixture::new();
    let no_eku = fx.client_ca.leaf(Leaf {
        ekus: vec![],
        ..Leaf::client("no-eku")
    });
    assert_eq!(outcome(&fx, Some(&no_eku), |_| {}).await, None);
}

#[tokio::test]
async fn rejects_revoked_leaf_and_accepts_its_sibling() {
    let fx = Fixture::new();
    let revoked = fx.client_ca.leaf(Leaf {
        serial: Some(4242),
        ..Leaf::client("revoked")
    });
    let sibling = fx.client_ca.leaf(Leaf {
        serial: Some(4243),
        ..Leaf::client("sibling")
    });
    let crl = fx.write("client-ca.crl.pem", &fx.client_ca.crl(&[4242]));
    let with_crl = |c: &mut originguard::config::Config| c.client_auth.crl = vec![crl.clone()];
    assert_eq!(
        outcome(&fx, Some(&revoked), with_crl).await,
        Some(AlertDescription::CertificateRevoked)
    );
    assert_eq!(outcome(&fx, Some(&sibling), with_crl).await, None);
}

#[test]
fn forged_crl_fails_at_startup_not_at_the_first_connection() {
    let fx = Fixture::new();
    // Same issuer name as the trusted client CA, different key.
    let forger = Ca::root("test client CA");
    let crl = fx.write("forged.crl.pem", &forger.crl(&[1]));
    let mut config = fx.config("http://127.0.0.1:9");
    config.client_auth.crl = vec![crl];
    let error = originguard::tls::Policy::build(&config).expect_err("forged CRL refused");
    assert_eq!(error.key, "client_auth.crl[0]");
    assert!(error.message.contains("signature does not verify"), "{error}");
}

#[tokio::test]
async fn trusts_several_cas_at_once_for_rotation() {
    let fx = Fixture::new();
    let next_ca = Ca::root("next client CA");
    let bundle = fx.write("bundle.pem", &format!("{}{}", fx.client_ca.pem, next_ca.pem));
    let old_client = &fx.client;
    let new_client = next_ca.leaf(Leaf::client("new"));
    let trust_both = |c: &mut originguard::config::Config| {
        c.client_auth.trust = vec![originguard::config::TrustSource::File(bundle.clone())]
    };
    assert_eq!(outcome(&fx, Some(old_client), trust_both).await, None);
    assert_eq!(outcome(&fx, Some(&new_client), trust_both).await, None);
    // And as two separate entries, with the embedded Cloudflare CA alongside.
    let next_file = fx.write("next-ca.pem", &next_ca.pem);
    let two_entries = |c: &mut originguard::config::Config| {
        c.client_auth
            .trust
            .push(originguard::config::TrustSource::File(next_file.clone()));
        c.client_auth.trust.push(originguard::config::TrustSource::Cloudflare);
    };
    assert_eq!(outcome(&fx, Some(&new_client), two_entries).await, None);
}

#[tokio::test]
async fn certificate_request_names_the_trusted_cas() {
    /// Presents the fixture's client certificate and records the CA names (RFC 8446 §4.2.4
    /// `certificate_authorities`) that the server's CertificateRequest carried.
    #[derive(Debug)]
    struct RecordHints {
        key: Arc<rustls::sign::CertifiedKey>,
        seen: std::sync::Mutex<Vec<String>>,
    }
    impl rustls::client::ResolvesClientCert for RecordHints {
        fn resolve(&self, hints: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
            use x509_parser::prelude::FromDer;
            let names = hints
                .iter()
                .map(|der| match x509_parser::x509::X509Name::from_der(der) {
                    Ok(([], name)) => name.to_string(),
                    _ => format!("unparsable name {der:02x?}"),
                });
            self.seen.lock().expect("lock").extend(names);
            Some(self.key.clone())
        }
        fn has_certs(&self) -> bool {
            true
        }
    }
    async fn hints(fx: &Fixture, trust: Vec<originguard::config::TrustSource>) -> Vec<String> {
        let backend = Backend::tcp().await;
        let mut config = fx.config(&backend.url());
        config.client_auth.trust = trust;
        let proxy = spawn_proxy(config).await;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = provider
            .key_provider
            .load_private_key(fx.client.key())
            .expect("client key");
        let recorder = Arc::new(RecordHints {
            key: Arc::new(rustls::sign::CertifiedKey::new(fx.client.chain.clone(), key)),
            seen: std::sync::Mutex::new(Vec::new()),
        });
        let mut roots = rustls::RootCertStore::empty();
        roots.add(fx.server_ca.der.clone()).expect("server CA");
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_client_cert_resolver(recorder.clone());
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        let _ = refusal(proxy.addr, Arc::new(client)).await;
        proxy.stop().await;
        let seen = recorder.seen.lock().expect("lock").clone();
        seen
    }
    use originguard::config::TrustSource;
    let fx = Fixture::new();
    // Our CA alone: exactly its name, so a client with several certificates picks the right one.
    assert_eq!(
        hints(&fx, vec![TrustSource::File(fx.path("client-ca.pem"))]).await,
        ["CN=test client CA"]
    );
    // The embedded Cloudflare CA plus ours: both names, in order.
    let both = hints(
        &fx,
        vec![TrustSource::Cloudflare, TrustSource::File(fx.path("client-ca.pem"))],
    )
    .await;
    assert_eq!(both.len(), 2, "{both:?}");
    assert!(both[0].contains("CN=origin-pull.cloudflare.net"), "{both:?}");
    assert_eq!(both[1], "CN=test client CA");
    // And a client from our CA is refused as unknown when only Cloudflare's CA is trusted.
    let cloudflare_only = |c: &mut originguard::config::Config| c.client_auth.trust = vec![TrustSource::Cloudflare];
    assert_eq!(
        outcome(&fx, Some(&fx.client), cloudflare_only).await,
        Some(AlertDescription::UnknownCA)
    );
}

/// The verifier reports the precise reason behind each alert (what logs and metrics use).
#[test]
fn verifier_classifies_each_refusal() {
    let ca = Ca::root("reasons CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.pem).expect("write");
    let cas = load::trusted_cas(&ca_path).expect("ca");
    let crl_path = dir.path().join("crl.pem");
    std::fs::write(&crl_path, ca.crl(&[7])).expect("write");
    let algs = rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms;
    let mut revocations = Revocations::default();
    for der in load::crls(&crl_path).expect("crl") {
        revocations
            .add(&der, &cas, algs.all)
            .expect("a CRL signed by the trusted CA");
    }
    let verifier = ClientVerifier::new(&cas, 1, revocations, Default::default(), false, algs);
    let now = UnixTime::now();
    let reason = |c: &ClientCert| verifier.verify(&c.chain[0], &c.chain[1..], now).err().map(|(r, _)| r);

    let t = OffsetDateTime::now_utc();
    assert_eq!(reason(&ca.leaf(Leaf::client("ok"))), None);
    assert_eq!(
        reason(&Ca::root("other").leaf(Leaf::client("x"))),
        Some(Reason::UnknownIssuer)
    );
    assert_eq!(
        reason(&ca.intermediate("i").leaf(Leaf::client("x"))),
        Some(Reason::BadDepth)
    );
    let expired = Leaf {
        not_before: t - Duration::days(3),
        not_after: t - Duration::days(1),
        ..Leaf::client("x")
    };
    assert_eq!(reason(&ca.leaf(expired)), Some(Reason::Expired));
    let future = Leaf {
        not_before: t + Duration::days(1),
        not_after: t + Duration::days(3),
        ..Leaf::client("x")
    };
    assert_eq!(reason(&ca.leaf(future)), Some(Reason::NotYetValid));
    let revoked = Leaf {
        serial: Some(7),
        ..Leaf::client("x")
    };
    assert_eq!(reason(&ca.leaf(revoked)), Some(Reason::Revoked));
    assert_eq!(
        reason(&Ca::root("reasons CA").leaf(Leaf::client("x"))),
        Some(Reason::BadSignature)
    );
}

/// The verified-chain cache serves only what the policy would accept now.
#[test]
fn verify_cache_never_serves_an_expired_or_foreign_chain() {
    let ca = Ca::root("cache CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.pem).expect("write");
    let cas = load::trusted_cas(&ca_path).expect("ca");
    let algs = rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms;
    let verifier = ClientVerifier::new(&cas, 1, Revocations::default(), Default::default(), true, algs);
    let t = OffsetDateTime::now_utc();
    let leaf = ca.leaf(Leaf {
        not_after: t + Duration::days(2),
        ..Leaf::client("cached")
    });
    let now = UnixTime::now();
    let verify = |c: &ClientCert, at: UnixTime| verifier.verify(&c.chain[0], &c.chain[1..], at).err().map(|(r, _)| r);

    assert_eq!(verify(&leaf, now), None);
    assert_eq!(verify(&leaf, now), None);
    assert_eq!(
        verifier.cache_stats(),
        Some((1, 1)),
        "the second verification was a cache hit"
    );
    // Past the leaf's notAfter: not served from the cache, and refused for the right reason.
    let later = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.as_secs() + 3 * 86400));
    assert_eq!(verify(&leaf, later), Some(Reason::Expired));
    // Same names, another CA: a different chain, verified in full and refused.
    let impostor = Ca::root("cache CA").leaf(Leaf::client("cached"));
    assert_eq!(verify(&impostor, now), Some(Reason::BadSignature));
    // The same leaf sent with an extra intermediate is a different chain (verified in full).
    let mut padded = ca.leaf(Leaf::client("padded"));
    padded.chain.push(ca.der.clone());
    assert_eq!(verify(&padded, now), None);
    assert_eq!(verifier.cache_stats(), Some((1, 4)), "only the identical chain hit");
    // Refusals are never cached.
    let stranger = Ca::root("stranger").leaf(Leaf::client("x"));
    assert_eq!(verify(&stranger, now), Some(Reason::UnknownIssuer));
    assert_eq!(verify(&stranger, now), Some(Reason::UnknownIssuer));
    assert_eq!(verifier.cache_stats(), Some((1, 6)));
}

#[tokio::test]
async fn a_client_revoked_by_reload_is_refused_even_after_cached_verifications() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let client = fx.client_ca.leaf(Leaf {
        serial: Some(777),
        ..Leaf::client("cached-then-revoked")
    });
    // Full handshakes every time (no resumption), so only the cache could let it through.
    fx.write_config(&backend.url(), "", "");
    let proxy = spawn_proxy(fx.set_in_config("[tls]\n", "[tls]\nsession_resumption = \"off\"\n")).await;
    for _ in 0..3 {
        assert_eq!(refusal(proxy.addr, fx.client_config(Some(&client))).await, None);
    }
    let crl = fx.write("crl.pem", &fx.client_ca.crl(&[777]));
    fx.write_config(&backend.url(), &format!("crl = [\"{}\"]", crl.display()), "");
    fx.set_in_config("[tls]\n", "[tls]\nsession_resumption = \"off\"\n");
    let (status, body) = proxy.admin("POST", "/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        refusal(proxy.addr, fx.client_config(Some(&client))).await,
        Some(AlertDescription::CertificateRevoked)
    );
    proxy.stop().await;
}

/// `client_auth.crl_stale`: a CRL past its nextUpdate warns, or refuses its CA's clients.
#[test]
fn a_stale_crl_warns_or_refuses_as_configured() {
    let fx = Fixture::new();
    let next_update = OffsetDateTime::now_utc() - Duration::days(1);
    let stale = fx.client_ca.crl_until(&[4242], next_update);
    let crl = fx.write("stale.crl", &stale);
    let mut config = fx.config("http://127.0.0.1:9");
    config.client_auth.crl = vec![crl];
    let policies = originguard::tls::PolicySet::build(&config).expect("valid");
    let verifier = &policies.default.verifier;
    assert!(
        verifier.verify(&fx.client.chain[0], &[], UnixTime::now()).is_ok(),
        "warn mode refused"
    );
    let warnings = originguard::audit::warnings(&policies, OffsetDateTime::now_utc());
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("past its nextUpdate") && w.contains(&next_update.date().to_string())),
        "{warnings:?}"
    );

    config.client_auth.crl_stale_refuse = true;
    let policies = originguard::tls::PolicySet::build(&config).expect("valid");
    let refused = policies
        .default
        .verifier
        .verify(&fx.client.chain[0], &[], UnixTime::now());
    assert_eq!(refused.err().map(|(r, _)| r), Some(Reason::Revoked));
}
