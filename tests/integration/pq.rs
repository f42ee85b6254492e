//! Post-quantum key agreement like Cloudflare's (issue 14): `tls.key_exchange`.

use std::sync::Arc;

use originguard::config::KeyExchange;
use rustls::crypto::aws_lc_rs::kx_group::{X25519, X25519MLKEM768};
use rustls::pki_types::pem::PemObject;
use rustls::{HandshakeKind, NamedGroup};

use crate::support::*;

/// A client whose first group gets the only key share (rustls sends one share, plus X25519
/// alongside a hybrid first): `[X25519, X25519MLKEM768]` is Cloudflare's default hello
/// ("supported": an X25519 share, the hybrid advertised), `[X25519MLKEM768, X25519]` its
/// "preferred" one.
fn client(fx: &Fixture, groups: &[&'static dyn rustls::crypto::SupportedKxGroup]) -> Arc<rustls::ClientConfig> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = groups.to_vec();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(fx.server_ca.der.clone()).expect("server CA");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(fx.client.chain.clone(), fx.client.key())
        .expect("client cert");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

async fn negotiated(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> (NamedGroup, HandshakeKind) {
    let tls = tls_connect(addr, config).await.expect("handshake");
    let session = tls.get_ref().1;
    let group = session.negotiated_key_exchange_group().expect("a group").name();
    (group, session.handshake_kind().expect("done"))
}

#[tokio::test]
#[cfg_attr(
    feature = "fips",
    ignore = "offers X25519 alone, which is not FIPS-approved: a FIPS server has X25519MLKEM768, P-256, P-384"
)]
async fn key_exchange_follows_the_setting_whatever_the_clients_group_order() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let cloudflare_default = client(&fx, &[X25519, X25519MLKEM768]);
    let cloudflare_preferred = client(&fx, &[X25519MLKEM768, X25519]);
    let classical_only = client(&fx, &[X25519]);
    let cases = [
        (
            KeyExchange::HybridPreferred,
            NamedGroup::X25519MLKEM768,
            HandshakeKind::FullWithHelloRetryRequest,
        ),
        (KeyExchange::HybridIfSent, NamedGroup::X25519, HandshakeKind::Full),
        (KeyExchange::Classical, NamedGroup::X25519, HandshakeKind::Full),
    ];
    for (setting, group, kind) in cases {
        let mut config = fx.config(&backend.url());
        config.tls.key_exchange = setting;
        let proxy = spawn_proxy(config).await;
        // Cloudflare's default hello: only the setting decides.
        assert_eq!(
            negotiated(proxy.addr, cloudflare_default.clone()).await,
            (group, kind),
            "{setting:?}"
        );
        // A hybrid share sent: used, with no extra round trip, unless classical.
        let expected = match setting {
            KeyExchange::Classical => NamedGroup::X25519,
            _ => NamedGroup::X25519MLKEM768,
        };
        assert_eq!(
            negotiated(proxy.addr, cloudflare_preferred.clone()).await,
            (expected, HandshakeKind::Full),
            "{setting:?}"
        );
        // A client without the hybrid is never asked for it.
        assert_eq!(
            negotiated(proxy.addr, classical_only.clone()).await,
            (NamedGroup::X25519, HandshakeKind::Full),
            "{setting:?}"
        );
        // And the requests still go through.
        assert_eq!(refusal(proxy.addr, cloudflare_default.clone()).await, None);
        proxy.stop().await;
    }
}

#[tokio::test]
async fn ml_dsa_client_certificates_from_ml_dsa_and_ecdsa_cas_are_verified_and_identified() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let mldsa_ca = Ca::root_alg("ML-DSA-65 origin-pull CA", &rcgen::PKCS_ML_DSA_65);
    let path = fx.write("mldsa-ca.pem", &mldsa_ca.pem);
    let mut config = fx.config(&backend.url());
    config
        .client_auth
        .trust
        .push(originguard::config::TrustSource::File(path));
    let proxy = spawn_proxy(config).await;

    let cases = [
        (
            "mldsa44-under-mldsa",
            mldsa_ca.leaf_alg(Leaf::client("mldsa44-under-mldsa"), &rcgen::PKCS_ML_DSA_44),
        ),
        (
            "mldsa65-under-mldsa",
            mldsa_ca.leaf_alg(Leaf::client("mldsa65-under-mldsa"), &rcgen::PKCS_ML_DSA_65),
        ),
        (
            "mldsa44-under-ecdsa",
            fx.client_ca
                .leaf_alg(Leaf::client("mldsa44-under-ecdsa"), &rcgen::PKCS_ML_DSA_44),
        ),
        ("ecdsa-under-mldsa", mldsa_ca.leaf(Leaf::client("ecdsa-under-mldsa"))),
    ];
    for (cn, leaf) in &cases {
        let (status, _, _) = request(proxy.addr, fx.client_config(Some(leaf)), get("/")).await;
        assert_eq!(status, 200, "{cn}");
        let xfcc = backend.last().headers["x-forwarded-client-cert"]
            .to_str()
            .expect("ascii")
            .to_string();
        assert!(xfcc.contains(&format!("Subject=\"CN={cn}\"")), "{cn}: {xfcc}");
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf.chain[0].as_ref());
        let hash: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert!(xfcc.starts_with(&format!("Hash={hash};")), "{cn}: {xfcc}");
    }
    // An ML-DSA CA the policy does not trust: unknown_ca.
    let stranger = Ca::root_alg("stranger ML-DSA CA", &rcgen::PKCS_ML_DSA_44)
        .leaf_alg(Leaf::client("intruder"), &rcgen::PKCS_ML_DSA_44);
    assert_eq!(
        refusal(proxy.addr, fx.client_config(Some(&stranger))).await,
        Some(rustls::AlertDescription::UnknownCA)
    );
    assert_eq!(backend.count(), cases.len());
    proxy.stop().await;
}

/// The whole client-certificate policy holds for ML-DSA chains: CRLs (signed with ML-DSA),
/// depth, allow-lists and the verified-chain cache.
#[test]
fn ml_dsa_chains_get_the_same_policy_crls_depth_allow_lists_and_cache() {
    use originguard::config::AllowLists;
    use originguard::tls::load;
    use originguard::tls::{ClientVerifier, Reason, Revocations};
    use rustls::pki_types::UnixTime;

    let ca = Ca::root_alg("ML-DSA-44 CA", &rcgen::PKCS_ML_DSA_44);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.pem).expect("write");
    let cas = load::trusted_cas(&ca_path).expect("an ML-DSA CA loads");
    let crl_path = dir.path().join("crl.pem");
    std::fs::write(&crl_path, ca.crl(&[77])).expect("write");
    let algs = rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms;
    let mut revocations = Revocations::default();
    for der in load::crls(&crl_path).expect("crl") {
        revocations
            .add(&der, &cas, algs.all)
            .expect("an ML-DSA-signed CRL verifies");
    }
    let allow = AllowLists {
        subjects: vec!["CN=allowed".into()],
        ..AllowLists::default()
    };
    let verifier = ClientVerifier::new(&cas, 1, revocations, allow, true, algs);
    let now = UnixTime::now();
    let reason = |c: &ClientCert| verifier.verify(&c.chain[0], &c.chain[1..], now).err().map(|(r, _)| r);
    let ml = &rcgen::PKCS_ML_DSA_44;

    let allowed = ca.leaf_alg(Leaf::client("allowed"), ml);
    assert_eq!(reason(&allowed), None);
    assert_eq!(reason(&allowed), None);
    assert_eq!(
        verifier.cache_stats(),
        Some((1, 1)),
        "the second verification was not a cache hit"
    );
    let revoked = ca.leaf_alg(
        Leaf {
            serial: Some(77),
            ..Leaf::client("allowed")
        },
        ml,
    );
    assert_eq!(reason(&revoked), Some(Reason::Revoked));
    assert_eq!(
        reason(&ca.leaf_alg(Leaf::client("someone-else"), ml)),
        Some(Reason::NotAllowed)
    );
    let via_intermediate = ca.intermediate("intermediate").leaf_alg(Leaf::client("allowed"), ml);
    assert_eq!(reason(&via_intermediate), Some(Reason::BadDepth));
}

#[tokio::test]
async fn pki_makes_ml_dsa_cas_and_clients_that_the_proxy_accepts() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_originguard"))
            .args(args)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (ca_dir, client_dir) = (fx.path("aop-ca"), fx.path("aop-client"));
    let (ca_dir, client_dir) = (ca_dir.to_str().expect("utf-8"), client_dir.to_str().expect("utf-8"));
    run(&["pki", "custom-ca", "--out", ca_dir, "--key-type", "ml-dsa-65"]);
    run(&[
        "pki",
        "client",
        "--ca",
        ca_dir,
        "--out",
        client_dir,
        "--key-type",
        "ml-dsa-44",
    ]);
    // check names the CA's algorithm.
    let toml = fx
        .toml("http://127.0.0.1:9")
        .set(
            "client_auth",
            format!("trust = [\"{}\"]", fx.path("aop-ca/ca.pem").display()),
        )
        .text();
    let checked = std::process::Command::new(env!("CARGO_BIN_EXE_originguard"))
        .args(["check", "--config"])
        .arg(fx.write("mldsa.toml", &toml))
        .output()
        .expect("run");
    let report = String::from_utf8_lossy(&checked.stdout);
    assert!(report.contains("key: ML-DSA-65"), "{report}");
    let mut config = fx.config(&backend.url());
    config.client_auth.trust = vec![originguard::config::TrustSource::File(fx.path("aop-ca/ca.pem"))];
    let proxy = spawn_proxy(config).await;
    let chain: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(fx.path("aop-client/client.pem"))
        .expect("client.pem")
        .map(|c| c.expect("certificate"))
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(fx.path("aop-client/client.key")).expect("client.key");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(fx.server_ca.der.clone()).expect("server CA");
    let mut client =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .expect("an ML-DSA client key");
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let (status, _, _) = request(proxy.addr, Arc::new(client), get("/")).await;
    assert_eq!(status, 200);
    proxy.stop().await;
}

#[tokio::test]
async fn loadtest_presents_an_ml_dsa_certificate_with_a_cloudflare_shaped_hello() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let ml_dsa = fx
        .client_ca
        .leaf_alg(Leaf::client("mldsa-load"), &rcgen::PKCS_ML_DSA_44);
    fx.write("mldsa-load.pem", &ml_dsa.pem);
    fx.write("mldsa-load.key", &ml_dsa.key_pem);
    let mut config = fx.config(&backend.url());
    config.admin = Some(originguard::config::AdminConfig {
        address: "127.0.0.1:0".parse().expect("addr"),
    });
    let proxy = spawn_proxy(config).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_originguard"))
        .args([
            "loadtest",
            "--target",
            &format!("https://localhost:{}/", proxy.addr.port()),
        ])
        .args([
            "--ca",
            fx.write("server-ca.pem", &fx.server_ca.pem).to_str().expect("utf-8"),
        ])
        .args(["--cert", fx.path("mldsa-load.pem").to_str().expect("utf-8")])
        .args(["--key", fx.path("mldsa-load.key").to_str().expect("utf-8")])
        .args(["--handshakes", "5", "--cloudflare-hello", "--quiet", "--json"])
        .output()
        .await
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(report["successes"], 5, "{report}");
    // hybrid-preferred (the default) asked each X25519-share hello for the hybrid.
    assert_eq!(
        proxy
            .metric("originguard_tls_negotiated_total{version=\"1.3\",group=\"X25519MLKEM768\"}")
            .await,
        5.0
    );
    assert!(backend.last().headers["x-forwarded-client-cert"]
        .to_str()
        .expect("ascii")
        .contains("CN=mldsa-load"));
    proxy.stop().await;
}
